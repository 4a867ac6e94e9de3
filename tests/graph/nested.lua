-- A sum over a value that depends on another sum: a third level.  Level 0
-- sums g*g, level 1 sums g / n (knowing n), level 2 stores the parameter.
return {
  hyper = {},
  update = function (p, g, s, h)
    local n = sum(g * g)
    return p - sum(g / n) * g
  end,
}
--[[expect
graph nested update
slot 0 param
slot 1 grad
%0 = load param  elem
%1 = load grad  elem
%2 = t  tensor
%3 = mul %1, %1  elem
%4 = sum %3  tensor u0 r0 @1
%5 = div %1, %4  elem @1
%6 = sum %5  tensor u1 r1 @2
%7 = mul %6, %1  elem @2
%8 = sub %0, %7  elem @2
store 0 %8 @2
]]
