-- States: an array starting at a number, one starting unset (read as nil on
-- a parameter's first step: this is the steady kernel), one not kept, and a
-- per-tensor scalar rounded to float32 when stored.
return {
  hyper = { lr = 0.1, momentum = 0.9 },
  state = { buf = unset, acc = 0, unused = false, count = scalar(1) },
  update = function (p, g, s, h, t)
    s.acc = s.acc + g * g
    local b = s.buf
    if b == nil then b = g else b = fma(b, h.momentum, g) end
    s.buf = b
    s.count = s.count * 0.5 + t
    return p - h.lr * s.count * b / sqrt(s.acc + 1e-8)
  end,
}
--[[expect
graph state update
slot 0 param
slot 1 grad
slot 2 acc array init 0
slot 3 buf array init unset
slot 4 count scalar init 1
%0 = load acc  elem
%1 = load buf  elem
%2 = scalar count  step
%3 = load param  elem
%4 = load grad  elem
%5 = t  step
%6 = mul %4, %4  elem
%7 = add %0, %6  elem
%8 = const 0.9
%9 = fma %1, %8, %4  elem
%10 = const 0.5
%11 = mul %2, %10  step
%12 = add %11, %5  step
%13 = f32 %12  step
%14 = const 0.1
%15 = mul %14, %13  step u0
%16 = mul %15, %9  elem
%17 = const 1e-08
%18 = add %7, %17  elem
%19 = sqrt %18  elem
%20 = div %16, %19  elem
%21 = sub %3, %20  elem
store 0 %21
store 2 %7
store 3 %9
store 4 %13
]]
