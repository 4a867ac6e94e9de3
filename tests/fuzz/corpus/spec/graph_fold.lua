-- Constant folding: everything that depends only on folded hyperparameters
-- is one constant (1 - beta, lr * 2, the branch on a boolean), and a
-- constant operand of a per-element op stays a constant, not a u slot.
return {
  hyper = { lr = 0.5, beta = 0.25, flag = false },
  update = function (p, g, s, h)
    local k = (1 - h.beta) * 2          -- 1.5
    if h.flag then k = k * 100 end       -- decided here, not in the kernel
    return p - (h.lr * 2) * g * k
  end,
}
--[[expect
graph fold update
slot 0 param
slot 1 grad
%0 = load param  elem
%1 = load grad  elem
%2 = t  step
%3 = const 1
%4 = mul %3, %1  elem
%5 = const 1.5
%6 = mul %4, %5  elem
%7 = sub %0, %6  elem
store 0 %7
]]
