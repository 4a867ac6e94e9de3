-- LAMB (You et al., 2020, "Large Batch Optimization for Deep Learning"):
-- Adam's direction, scaled per tensor by the trust ratio ‖θ‖ / ‖r‖.
-- torch.optim has no LAMB; moments as torch's Adam, norms in double.
return {
  doc = "LAMB: Adam direction with a per-tensor trust ratio",
  hyper = { lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-6, weight_decay = 0.0,
            maximize = false },
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
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)                       -- m
    s.exp_avg_sq = fma((1 - beta2) * g, g, s.exp_avg_sq * beta2)    -- v
    local m_hat = s.exp_avg / (1 - beta1 ^ t)
    local v_hat = s.exp_avg_sq / (1 - beta2 ^ t)
    local r = m_hat / (sqrt(v_hat) + h.eps)                         -- Adam's direction
    if h.weight_decay ~= 0 then r = fma(p, h.weight_decay, r) end   -- r + wd·θ
    local p_norm = sqrt(sum(p * p))                                 -- ‖θ‖, per step
    local r_norm = sqrt(sum(r * r))                                 -- ‖r‖
    local trust = where(and_(gt(p_norm, 0), gt(r_norm, 0)), p_norm / r_norm, 1)
    return p - (h.lr * trust) * r
  end,
}
