-- Averaged SGD (Polyak & Juditsky, 1992), as torch.optim.ASGD: SGD with a
-- decaying step eta, and a running average ax of the iterates from step t0.
-- eta and mu are per-tensor scalars stored in float32, as in torch.
return {
  doc = "ASGD: averaged stochastic gradient descent",
  hyper = { lr = 1e-2, lambd = 1e-4, alpha = 0.75, t0 = 1e6, weight_decay = 0.0,
            maximize = false },
  runtime = { "lambd", "alpha", "t0" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_weight_decay(h)
  end,
  state = { eta = function (h) return scalar(h.lr) end, mu = scalar(1), ax = 0 },
  update = function (p, g, s, h, t)
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then g = fma(p, h.weight_decay, g) end    -- g + wd·θ
    local eta = s.eta                                                -- as stored last step
    p = p * (1 - h.lambd * eta)                                      -- θ·(1 - λη)
    p = fma(g, -eta, p)                                              -- θ - η·g
    s.ax = where(ne(s.mu, 1), s.ax + (p - s.ax) * s.mu, p)           -- average from t0 on
    s.eta = h.lr / (1 + h.lambd * h.lr * t) ^ h.alpha                -- for the next step
    s.mu = 1 / max(1, t - h.t0)
    return p
  end,
}
