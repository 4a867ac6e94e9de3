-- AdEMAMix (Pagliardini et al., 2024, "The AdEMAMix Optimizer: Better,
-- Faster, Older"), as pytorch_optimizer 4.1.0's AdEMAMix: Adam's update
-- plus alpha times a slow EMA of the gradient (beta3 close to 1), with
-- alpha and beta3 warmed up over t_alpha_beta3 steps; pytorch_optimizer's
-- `cautious` flag masks the fast moment where it disagrees with the
-- gradient (Liang et al., 2024).  Steps are counted per group.
-- Cautious Optimizers (Liang et al., 2024): keep the update where it agrees
-- in sign with the gradient, rescaled by numel / (kept + 1), as
-- pytorch_optimizer's apply_cautious computes it in float32
local function cautious(u, g)
  local mask = where(gt(u * g, 0), 1, 0)
  return u * (mask * f32(f32(1 / f32(sum(mask) + 1)) * numel()))
end

return {
  doc = "AdEMAMix: Adam plus a slow gradient EMA mixed in with weight alpha",
  hyper = { lr = 1e-3, betas = {0.9, 0.999, 0.9999}, weight_decay = 0.0,
            weight_decouple = false, fixed_decay = false, alpha = 5.0,
            t_alpha_beta3 = none, eps = 1e-8, maximize = false, cautious = false },
  runtime = { "lr", "betas", "alpha", "eps" },   -- used only in arithmetic
  steps = "group",
  check = function (h)
    require_that(h.lr >= 0, "learning rate must be positive. (%s > 0)", h.lr)
    require_that(0 <= h.betas[1] and h.betas[1] < 1, "beta1 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[2] and h.betas[2] < 1, "beta2 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[3] and h.betas[3] <= 1, "beta3 must be in the range [0.0, 1.0]")
    require_that(h.alpha >= 0, "alpha must be non-negative")
    require_that(h.t_alpha_beta3 == none or h.t_alpha_beta3 >= 0,
                 "t_alpha_beta3 must be non-negative")
    require_that(h.weight_decay >= 0, "weight_decay must be non-negative")
    require_that(h.eps >= 0, "eps must be non-negative")
  end,
  state = { exp_avg = 0, exp_avg_sq = 0, exp_avg_slow = 0 },
  update = function (p, g, s, h, t)
    local beta1, beta2, beta3 = h.betas[1], h.betas[2], h.betas[3]
    local alpha_t, beta3_t = h.alpha, beta3
    if h.t_alpha_beta3 ~= none then                   -- the warmups of alpha and beta3
      local T = h.t_alpha_beta3
      alpha_t = min(t * h.alpha / T, h.alpha)
      local log_beta1, log_beta3 = log(beta1), log(beta3)
      beta3_t = min(exp(log_beta1 * log_beta3 /
                        ((1 - t / T) * log_beta3 + (t / T) * log_beta1)), beta3)
    end
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then
      if h.weight_decouple then
        p = p * (1 - h.weight_decay * (h.fixed_decay and 1 or h.lr))
      elseif h.weight_decay > 0 then
        g = fma(p, h.weight_decay, g)
      end
    end
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)                         -- m1, fast
    s.exp_avg_sq = fma((1 - beta2) * g, g, s.exp_avg_sq * beta2)      -- v
    s.exp_avg_slow = lerp(s.exp_avg_slow, g, 1 - beta3_t)             -- m2, slow
    local denom = sqrt(s.exp_avg_sq) / sqrt(1 - beta2 ^ t) + h.eps
    local u = s.exp_avg
    if h.cautious then u = cautious(u, g) end
    u = fma(s.exp_avg_slow, alpha_t, u / (1 - beta1 ^ t))             -- m1/bc1 + α·m2
    return p + (-h.lr) * u / denom                                    -- addcdiv_
  end,
}
