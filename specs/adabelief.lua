-- AdaBelief (Zhuang et al., 2020, "AdaBelief Optimizer: Adapting Stepsizes
-- by the Belief in Observed Gradients"), as pytorch_optimizer 4.1.0's
-- AdaBelief: Adam's second moment replaced by the EMA of (g - m)², the
-- "belief" in the gradient; optional RAdam rectification and AMSBound.
-- pytorch_optimizer counts steps per group, and adds eps into the state.
return {
  doc = "AdaBelief: step size from the variance of the gradient around its EMA",
  hyper = { lr = 1e-3, betas = {0.9, 0.999}, weight_decay = 0.0,
            weight_decouple = true, fixed_decay = false, rectify = false,
            n_sma_threshold = 5, degenerated_to_sgd = true, ams_bound = false,
            eps = 1e-16, maximize = false },
  runtime = { "lr", "betas", "eps" },   -- used only in arithmetic
  steps = "group",
  check = function (h)
    require_that(h.lr >= 0, "learning rate must be positive. (%s > 0)", h.lr)
    require_that(0 <= h.betas[1] and h.betas[1] < 1, "beta1 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[2] and h.betas[2] < 1, "beta2 must be in the range [0.0, 1.0)")
    require_that(h.weight_decay >= 0, "weight_decay must be non-negative")
    require_that(h.eps >= 0, "eps must be non-negative")
  end,
  state = { exp_avg = 0, exp_avg_var = 0,
            max_exp_avg_var = function (h) return h.ams_bound and 0 end },
  update = function (p, g, s, h, t)
    local beta1, beta2 = h.betas[1], h.betas[2]
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then
      if h.weight_decouple then
        p = p * (1 - h.weight_decay * (h.fixed_decay and 1 or h.lr))
      elseif h.weight_decay > 0 then
        g = fma(p, h.weight_decay, g)
      end
    end
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)                         -- m
    local r = g - s.exp_avg                                           -- g - m, with the new m
    s.exp_avg_var = fma((1 - beta2) * r, r, s.exp_avg_var * beta2) + h.eps
    local v = s.exp_avg_var
    if h.ams_bound then
      s.max_exp_avg_var = max(s.max_exp_avg_var, v)
      v = s.max_exp_avg_var
    end
    local bias_correction1 = 1 - beta1 ^ t
    if not h.rectify then
      local step_size = h.lr / bias_correction1
      local denom = sqrt(v) / sqrt(1 - beta2 ^ t) + h.eps
      return p + (-step_size) * s.exp_avg / denom
    end
    -- RAdam's rectification: the length of the approximated SMA decides
    -- between an adaptive step and an SGD step (or none)
    local n_sma_max = 2 / (1 - beta2) - 1
    local beta2_t = beta2 ^ t
    local n_sma = n_sma_max - 2 * t * beta2_t / (1 - beta2_t)
    local rt = sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma
                    * n_sma_max / (n_sma_max - 2))
    local adaptive = ge(n_sma, h.n_sma_threshold)
    local step_size = h.lr * where(adaptive, rt, h.degenerated_to_sgd and 1 or -1)
                      / bias_correction1
    local denom = sqrt(v) + h.eps
    return where(adaptive, p + (-step_size) * s.exp_avg / denom,
                 where(gt(step_size, 0), fma(s.exp_avg, -step_size, p), p))
  end,
}
