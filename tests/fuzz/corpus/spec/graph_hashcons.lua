-- Hash-consing: equal subexpressions are one node, however they are
-- written; the same constant is one node; g * g twice is one product.
return {
  hyper = { lr = 0.1 },
  update = function (p, g, s, h)
    local a = g * g
    local b = g * g
    local c = fma(g, g, a)
    local d = fma(g, g, b)               -- the same node as c
    return p - h.lr * (c + d)
  end,
}
--[[expect
graph hashcons update
slot 0 param
slot 1 grad
%0 = load param  elem
%1 = load grad  elem
%2 = t  step
%3 = mul %1, %1  elem
%4 = fma %1, %1, %3  elem
%5 = add %4, %4  elem
%6 = const 0.1
%7 = mul %6, %5  elem
%8 = sub %0, %7  elem
store 0 %8
]]
