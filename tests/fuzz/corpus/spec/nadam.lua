-- NAdam (Dozat, 2016), as torch.optim.NAdam: Adam with Nesterov momentum and
-- a momentum schedule mu_t; mu_product is a per-tensor float32 scalar.
return {
  doc = "NAdam: Adam with Nesterov momentum",
  hyper = { lr = 2e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.0,
            momentum_decay = 4e-3, decoupled_weight_decay = false, maximize = false },
  runtime = { "lr", "betas", "eps", "momentum_decay" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_eps(h)
    require_betas(h)
    require_weight_decay(h)
    require_that(0 <= h.momentum_decay, "Invalid momentum_decay value: %s", h.momentum_decay)
  end,
  state = { mu_product = scalar(1), exp_avg = 0, exp_avg_sq = 0 },
  update = function (p, g, s, h, t)
    local beta1, beta2, psi = h.betas[1], h.betas[2], h.momentum_decay
    if h.maximize then g = -g end
    local bias_correction2 = 1 - beta2 ^ t
    if h.weight_decay ~= 0 then
      if h.decoupled_weight_decay then
        p = p * (1 - h.lr * h.weight_decay)                          -- θ·(1 - lr·wd)
      else
        g = fma(p, h.weight_decay, g)                                -- g + wd·θ
      end
    end
    local mu = beta1 * (1 - 0.5 * 0.96 ^ (t * psi))
    local mu_next = beta1 * (1 - 0.5 * 0.96 ^ ((t + 1) * psi))
    s.mu_product = s.mu_product * f32(mu)                            -- float32 tensor *= mu
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)
    s.exp_avg_sq = fma((1 - beta2) * g, g, s.exp_avg_sq * beta2)
    local denom = sqrt(s.exp_avg_sq / bias_correction2) + h.eps
    local mu_product_next = s.mu_product * mu_next
    p = p + (-h.lr * (1 - mu) / (1 - s.mu_product)) * g / denom      -- addcdiv_
    return p + (-h.lr * mu_next / (1 - mu_product_next)) * s.exp_avg / denom
  end,
}
