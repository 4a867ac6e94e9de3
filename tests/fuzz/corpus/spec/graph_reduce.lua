-- A sum splits the update in two passes: pass 0 accumulates the sum and
-- stores what does not depend on it (m); pass 1 stores the rest (late) and
-- reads m back from its array rather than recomputing it (from 2).
return {
  hyper = { lr = 0.1, beta = 0.9 },
  state = { m = 0 },
  update = function (p, g, s, h)
    s.m = lerp(s.m, g, 1 - h.beta)
    local norm = sqrt(sum(s.m * s.m))
    local w = sqrt(sum(p * p))
    return p - h.lr * where(gt(w, 0), w / norm, 1) * s.m
  end,
}
--[[expect
graph reduce update
slot 0 param
slot 1 grad
slot 2 m array init 0
%0 = load m  elem
%1 = load param  elem
%2 = load grad  elem
%3 = t  step
%4 = const 0.09999999999999998
%5 = lerp %0, %2, %4  elem from 2
%6 = mul %5, %5  elem
%7 = sum %6  step r0
%8 = sqrt %7  step
%9 = mul %1, %1  elem
%10 = sum %9  step r1
%11 = sqrt %10  step
%12 = const 0
%13 = gt %11, %12  step bool
%14 = div %11, %8  step
%15 = const 1
%16 = where %13, %14, %15  step
%17 = const 0.1
%18 = mul %17, %16  step u0
%19 = mul %18, %5  elem
%20 = sub %1, %19  elem
store 0 %20 late
store 2 %5
]]
