-- A requirement of the step: require_that on a per-step condition is not
-- decided at construction; it is checked before every step, before
-- anything changes (`require` line).  `%` is Lua's modulo, per step.
-- Without the input, the kernel needs it to be a step where (t-1) % k ~= 0.
return {
  hyper = { lr = 0.1, k = 10 },
  inputs = { "h" },
  update = function (p, g, s, h, t)
    local est = input("h")
    if est == nil then
      require_that(ne((t - 1) % h.k, 0), "give 'h' at steps 1, 1 + %d, ...", h.k)
      return p - h.lr * g
    end
    return p - h.lr * g / est
  end,
}
--[[expect
graph step_require update
slot 0 param
slot 1 grad
%0 = load param  elem
%1 = load grad  elem
%2 = t  tensor
%3 = const 1
%4 = sub %2, %3  tensor
%5 = const 10
%6 = mod %4, %5  tensor
%7 = const 0
%8 = ne %6, %7  tensor bool
%9 = const 0.1
%10 = mul %9, %1  elem
%11 = sub %0, %10  elem
store 0 %11
require %8 line 11: give 'h' at steps 1, 1 + 10, ...
]]
