-- atan2 per element (the C library's atan2f, called by the JIT too), and
-- an option that may be None though its default is a number (`optional`):
-- eps=None selects it.
return {
  hyper = { lr = 0.1, eps = 1e-8 },
  optional = { "eps" },
  state = { m = 0, v = 0 },
  update = function (p, g, s, h)
    s.m = lerp(s.m, g, 0.1)
    s.v = fma(0.001 * g, g, s.v * 0.999)
    if h.eps ~= none then return p - h.lr * s.m / (sqrt(s.v) + h.eps) end
    return fma(atan2(s.m, sqrt(s.v)), -h.lr, p)
  end,
}
--[[expect
options: eps=None
graph atan2 update
slot 0 param
slot 1 grad
slot 2 m array init 0
slot 3 v array init 0
%0 = load m  elem
%1 = load v  elem
%2 = load param  elem
%3 = load grad  elem
%4 = t  tensor
%5 = const 0.1
%6 = lerp %0, %3, %5  elem
%7 = const 0.001
%8 = mul %7, %3  elem
%9 = const 0.999
%10 = mul %1, %9  elem
%11 = fma %8, %3, %10  elem
%12 = sqrt %11  elem
%13 = atan2 %6, %12  elem
%14 = const -0.1
%15 = fma %13, %14, %2  elem
store 0 %15
store 2 %6
store 3 %11
]]
