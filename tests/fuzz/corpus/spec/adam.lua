-- Adam (Kingma & Ba, 2015), as torch.optim.Adam in PyTorch 2.x: lerp for the
-- first moment, the FMAs ATen's CPU kernels make, bias corrections per step
-- in double.
return {
  doc = "Adam: first and second moment estimates with bias correction",
  hyper = { lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.0,
            amsgrad = false, maximize = false, decoupled_weight_decay = false },
  runtime = { "lr", "betas", "eps" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_eps(h)
    require_betas(h)
    require_weight_decay(h)
  end,
  state = { exp_avg = 0, exp_avg_sq = 0,
            max_exp_avg_sq = function (h) return h.amsgrad and 0 end },
  update = function (p, g, s, h, t)
    local beta1, beta2 = h.betas[1], h.betas[2]
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then
      if h.decoupled_weight_decay then
        p = p * (1 - h.lr * h.weight_decay)                        -- θ·(1 - lr·wd)
      else
        g = fma(p, h.weight_decay, g)                               -- g + wd·θ
      end
    end
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)                       -- m
    s.exp_avg_sq = fma((1 - beta2) * g, g, s.exp_avg_sq * beta2)    -- v·β2 + (1-β2)·g·g
    local bias_correction1 = 1 - beta1 ^ t
    local bias_correction2 = 1 - beta2 ^ t
    local step_size = h.lr / bias_correction1
    local v = s.exp_avg_sq
    if h.amsgrad then
      s.max_exp_avg_sq = max(s.max_exp_avg_sq, v)
      v = s.max_exp_avg_sq
    end
    local denom = sqrt(v) / bias_correction2 ^ 0.5 + h.eps
    return p + (-step_size) * s.exp_avg / denom                     -- addcdiv_
  end,
}
