-- Per-step values: what depends only on the step count t and the options
-- is computed once per step, in double (pow of t here), and the per-step
-- values per-element code reads are numbered u0, u1, ...  Options a spec
-- lists as `runtime` are folded until they change.
return {
  hyper = { lr = 0.1, betas = {0.9, 0.99} },
  runtime = { "lr", "betas" },
  update = function (p, g, s, h, t)
    local bc = 1 - h.betas[1] ^ t
    return p - (h.lr / bc) * g
  end,
}
--[[expect
graph step update
slot 0 param
slot 1 grad
%0 = load param  elem
%1 = load grad  elem
%2 = t  step
%3 = const 0.9
%4 = pow %3, %2  step
%5 = const 1
%6 = sub %5, %4  step
%7 = const 0.1
%8 = div %7, %6  step u0
%9 = mul %8, %1  elem
%10 = sub %0, %9  elem
store 0 %10
]]
