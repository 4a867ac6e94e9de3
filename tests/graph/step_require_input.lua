-- The same spec with its input given: no requirement, an input slot.
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
inputs: h
graph step_require_input update
slot 0 param
slot 1 grad
slot 2 h input
%0 = load param  elem
%1 = load grad  elem
%2 = t  tensor
%3 = load h  elem
%4 = const 0.1
%5 = mul %4, %1  elem
%6 = div %5, %3  elem
%7 = sub %0, %6  elem
store 0 %7
]]
