-- Adagrad (Duchi et al., 2011), as torch.optim.Adagrad (dense gradients):
-- steps shrink with the accumulated squared gradient.  torch fills `sum`
-- from the optimizer-wide initial_accumulator_value; jopt uses the group's.
return {
  doc = "Adagrad: step sizes from the sum of squared gradients",
  hyper = { lr = 1e-2, lr_decay = 0.0, weight_decay = 0.0, initial_accumulator_value = 0.0,
            eps = 1e-10, maximize = false },
  runtime = { "lr", "lr_decay", "eps" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_that(0 <= h.lr_decay, "Invalid lr_decay value: %s", h.lr_decay)
    require_weight_decay(h)
    require_that(0 <= h.initial_accumulator_value,
                 "Invalid initial_accumulator_value value: %s", h.initial_accumulator_value)
    require_eps(h)
  end,
  state = { sum = function (h) return h.initial_accumulator_value end },
  update = function (p, g, s, h, t)
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then g = fma(p, h.weight_decay, g) end    -- g + wd·θ
    local clr = h.lr / (1 + (t - 1) * h.lr_decay)
    s.sum = fma(g, g, s.sum)                                         -- sum + g·g
    local std = sqrt(s.sum) + h.eps
    return p + (-clr) * g / std                                      -- addcdiv_
  end,
}
