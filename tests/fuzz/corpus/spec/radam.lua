-- RAdam (Liu et al., 2020), as torch.optim.RAdam: Adam whose adaptive step
-- is switched on, and rectified, once the variance estimate is tractable
-- (rho_t > 5): a per-step condition, decided in the kernel by a select.
return {
  doc = "RAdam: rectified Adam",
  hyper = { lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.0,
            decoupled_weight_decay = false, maximize = false },
  runtime = { "lr", "betas", "eps" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_eps(h)
    require_betas(h)
    require_weight_decay(h)
  end,
  state = { exp_avg = 0, exp_avg_sq = 0 },
  update = function (p, g, s, h, t)
    local beta1, beta2 = h.betas[1], h.betas[2]
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then
      if h.decoupled_weight_decay then
        p = p * (1 - h.lr * h.weight_decay)                          -- θ·(1 - lr·wd)
      else
        g = fma(p, h.weight_decay, g)                                -- g + wd·θ
      end
    end
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)
    s.exp_avg_sq = fma((1 - beta2) * g, g, s.exp_avg_sq * beta2)
    local bias_correction1 = 1 - beta1 ^ t
    local bias_correction2 = 1 - beta2 ^ t
    local m_hat = s.exp_avg / bias_correction1
    local rho_inf = 2 / (1 - beta2) - 1
    local rho_t = rho_inf - 2 * t * beta2 ^ t / bias_correction2
    local rect = ((rho_t - 4) * (rho_t - 2) * rho_inf /
                  ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ^ 0.5
    -- torch: bias_correction2**0.5 / (sqrt(v) + eps), a Python float over a
    -- tensor, which torch computes as reciprocal() * float
    local adaptive_lr = (1 / (sqrt(s.exp_avg_sq) + h.eps)) * bias_correction2 ^ 0.5
    return where(gt(rho_t, 5),
                 p - m_hat * h.lr * adaptive_lr * rect,              -- rectified
                 p - m_hat * h.lr)                                   -- SGD with momentum
  end,
}
