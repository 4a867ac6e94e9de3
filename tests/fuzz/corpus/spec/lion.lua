-- Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"):
-- the sign of an interpolation of momentum and gradient, with decoupled
-- weight decay.  torch.optim has no Lion; this follows the paper's Program 1.
return {
  doc = "Lion: sign of interpolated momentum",
  hyper = { lr = 1e-4, betas = {0.9, 0.99}, weight_decay = 0.0, maximize = false },
  runtime = { "lr", "betas" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_betas(h)
    require_weight_decay(h)
  end,
  state = { exp_avg = 0 },
  update = function (p, g, s, h)
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then p = p * (1 - h.lr * h.weight_decay) end  -- θ·(1 - lr·λ)
    local c = lerp(s.exp_avg, g, 1 - h.betas[1])                    -- β1·m + (1-β1)·g
    p = fma(sign(c), -h.lr, p)                                      -- θ - lr·sign(c)
    s.exp_avg = lerp(s.exp_avg, g, 1 - h.betas[2])                  -- β2·m + (1-β2)·g
    return p
  end,
}
