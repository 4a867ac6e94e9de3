-- A named kernel (Schedule-Free's eval): it takes the parameter, the
-- state and the options, and returns the new parameter; it may set state.
return {
  hyper = { beta = 0.9 },
  state = { z = 0, mode = group(1) },
  update = function (p, g, s, h)
    s.z = s.z - g
    return lerp(p, s.z, 0.1)
  end,
  kernels = {
    eval = function (y, s, h)
      local on = ne(s.mode, 0)
      s.mode = 0
      return where(on, lerp(y, s.z, 1 - 1 / h.beta), y)
    end,
  },
}
--[[expect
kernel: eval
graph named_kernel kernel eval
slot 0 param
slot 1 grad
slot 2 z array init 0
group 0 mode double init 1
%0 = gstate mode  group
%1 = load z  elem
%2 = load param  elem
%3 = t  tensor
%4 = const 0 u0
%5 = ne %0, %4  group bool u1
%6 = const -0.11111111111111116
%7 = lerp %2, %1, %6  elem
%8 = where %5, %7, %2  elem
store 0 %8
gstore 0 %4
]]
