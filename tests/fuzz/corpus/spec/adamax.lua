-- Adamax (Kingma & Ba, 2015, section 7.1), as torch.optim.Adamax: Adam with
-- the infinity norm in place of the second moment.
return {
  doc = "Adamax: Adam with an exponentially weighted infinity norm",
  hyper = { lr = 2e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.0,
            maximize = false },
  runtime = { "lr", "betas", "eps" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_eps(h)
    require_betas(h)
    require_weight_decay(h)
  end,
  state = { exp_avg = 0, exp_inf = 0 },
  update = function (p, g, s, h, t)
    local beta1, beta2 = h.betas[1], h.betas[2]
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then g = fma(p, h.weight_decay, g) end    -- g + wd·θ
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)                        -- m
    s.exp_inf = max(s.exp_inf * beta2, abs(g) + h.eps)               -- u = max(u·β2, |g| + eps)
    local clr = h.lr / (1 - beta1 ^ t)
    return p + (-clr) * s.exp_avg / s.exp_inf                        -- addcdiv_
  end,
}
