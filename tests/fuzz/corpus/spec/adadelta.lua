-- Adadelta (Zeiler, 2012), as torch.optim.Adadelta: the step is scaled by
-- the ratio of running RMS of past updates to that of the gradients.
return {
  doc = "Adadelta: per-element step sizes from running averages of updates and gradients",
  hyper = { lr = 1.0, rho = 0.9, eps = 1e-6, weight_decay = 0.0, maximize = false },
  runtime = { "lr", "rho", "eps" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_that(0 <= h.rho and h.rho <= 1, "Invalid rho value: %s", h.rho)
    require_eps(h)
    require_weight_decay(h)
  end,
  state = { square_avg = 0, acc_delta = 0 },
  update = function (p, g, s, h)
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then g = fma(p, h.weight_decay, g) end      -- g + wd·θ
    s.square_avg = fma((1 - h.rho) * g, g, s.square_avg * h.rho)     -- v·ρ + (1-ρ)·g²
    local std = sqrt(s.square_avg + h.eps)
    local delta = sqrt(s.acc_delta + h.eps) / std * g                  -- Δ
    s.acc_delta = fma((1 - h.rho) * delta, delta, s.acc_delta * h.rho) -- u·ρ + (1-ρ)·Δ²
    return fma(delta, -h.lr, p)                                        -- θ - lr·Δ
  end,
}
