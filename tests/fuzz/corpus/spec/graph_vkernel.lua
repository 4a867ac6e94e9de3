-- A closure optimizer's vector kernel: its arrays are slots 0.., its
-- scalars are hyper nodes read per call, and its results are per-call
-- values (a sum, a maximum and what is computed from them).
return {
  method = "lbfgs",
  hyper = {},
  kernels = {
    step = { arrays = "y x", scalars = "a",
             run = function (v, a)
               v.y = fma(v.x, a, v.y)
               return sum(v.x * v.y), maxall(abs(v.y)), sqrt(sum(v.y * v.y))
             end },
  },
}
--[[expect
kernel: step
graph vkernel kernel step
slot 0 y
slot 1 x
%0 = load y  elem
%1 = load x  elem
%2 = hyper a  step u0
%3 = fma %1, %2, %0  elem from 0
%4 = mul %1, %3  elem
%5 = sum %4  step u1 r0
%6 = abs %3  elem
%7 = maxall %6  step u2 r1
%8 = mul %3, %3  elem
%9 = sum %8  step r2
%10 = sqrt %9  step u3
store 0 %3
result 0 %5
result 1 %7
result 2 %10
]]
