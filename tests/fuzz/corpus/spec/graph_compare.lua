-- Comparisons are truth values (bool); where() picks between numbers;
-- a condition on constants is decided while tracing.
return {
  hyper = { lr = 0.1, clip = 1 },
  update = function (p, g, s, h)
    local c = where(gt(abs(g), h.clip), sign(g) * h.clip, g)
    local keep = and_(ne(g, 0), not_(lt(p, -10)))
    return where(keep, p - h.lr * c, p)
  end,
}
--[[expect
graph compare update
slot 0 param
slot 1 grad
%0 = load param  elem
%1 = load grad  elem
%2 = t  step
%3 = abs %1  elem
%4 = const 1
%5 = gt %3, %4  elem bool
%6 = sign %1  elem
%7 = mul %6, %4  elem
%8 = where %5, %7, %1  elem
%9 = const 0
%10 = ne %1, %9  elem bool
%11 = const -10
%12 = lt %0, %11  elem bool
%13 = not_ %12  elem bool
%14 = and_ %10, %13  elem bool
%15 = const 0.1
%16 = mul %15, %8  elem
%17 = sub %0, %16  elem
%18 = where %14, %17, %0  elem
store 0 %18
]]
