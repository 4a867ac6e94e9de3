-- The same spec folded under other options: the branch is taken, and the
-- constants change with the values.
return {
  hyper = { lr = 0.5, beta = 0.25, flag = false },
  update = function (p, g, s, h)
    local k = (1 - h.beta) * 2
    if h.flag then k = k * 100 end
    return p - (h.lr * 2) * g * k
  end,
}
--[[expect
options: lr=0.125 flag=true
graph fold_options update
slot 0 param
slot 1 grad
%0 = load param  elem
%1 = load grad  elem
%2 = t  step
%3 = const 0.25
%4 = mul %3, %1  elem
%5 = const 150
%6 = mul %4, %5  elem
%7 = sub %0, %6  elem
store 0 %7
]]
