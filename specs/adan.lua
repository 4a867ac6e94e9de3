-- Adan (Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for
-- Faster Optimizing Deep Models"), as pytorch_optimizer 4.1.0's Adan: EMAs
-- of the gradient, of its difference from the last step's, and of the
-- square of their Nesterov combination; optional clipping by the global
-- gradient norm; proximal (coupled) or decoupled weight decay.  Steps are
-- counted per group.  The global norm is taken over the group's gradients
-- (the reference takes it over every group, with the optimizer's defaults).
return {
  doc = "Adan: adaptive Nesterov momentum with gradient differences",
  hyper = { lr = 1e-3, betas = {0.98, 0.92, 0.99}, weight_decay = 0.0,
            weight_decouple = false, max_grad_norm = 0.0, eps = 1e-8,
            maximize = false },
  runtime = { "lr", "betas", "eps" },   -- used only in arithmetic
  steps = "group",
  check = function (h)
    require_that(h.lr >= 0, "learning rate must be positive. (%s > 0)", h.lr)
    require_that(0 <= h.betas[1] and h.betas[1] < 1, "beta1 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[2] and h.betas[2] < 1, "beta2 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[3] and h.betas[3] <= 1, "beta3 must be in the range [0.0, 1.0]")
    require_that(h.weight_decay >= 0, "weight_decay must be non-negative")
    require_that(h.max_grad_norm >= 0, "max_grad_norm must be non-negative")
    require_that(h.eps >= 0, "eps must be non-negative")
  end,
  -- previous_grad holds -g of the last step; on the first it starts as the
  -- raw gradient times -clip, so that the first difference is 0
  state = { exp_avg = 0, exp_avg_sq = 0, exp_avg_diff = 0, previous_grad = unset },
  update = function (p, g, s, h, t)
    local beta1, beta2, beta3 = h.betas[1], h.betas[2], h.betas[3]
    -- clip = min(max_grad_norm / (‖g‖ + eps), 1), ‖g‖ over the group's
    -- gradients; torch's float32 ops on a one-element tensor
    local clip = 1
    if h.max_grad_norm ~= 0 then
      local norm = f32(f32(sqrt(f32(sum(g * g, "group")))) + f32(h.eps))
      clip = min(f32(f32(1 / norm) * f32(h.max_grad_norm)), 1)
    end
    local prev = s.previous_grad or g * -clip
    if h.maximize then g = -g end
    if clip ~= 1 then g = g * clip end
    local diff = prev + g                                             -- g - g_prev
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)                         -- m
    s.exp_avg_diff = lerp(s.exp_avg_diff, diff, 1 - beta2)            -- EMA of the differences
    local n = diff * beta2 + g                                        -- g + β2·(g - g_prev)
    s.exp_avg_sq = fma((1 - beta3) * n, n, s.exp_avg_sq * beta3)      -- n
    local denom = sqrt(s.exp_avg_sq) / sqrt(1 - beta3 ^ t) + h.eps
    if h.weight_decay ~= 0 and h.weight_decouple then
      p = p * (1 - h.lr * h.weight_decay)
    end
    p = p + (-h.lr / (1 - beta1 ^ t)) * s.exp_avg / denom
    p = p + (-h.lr * beta2 / (1 - beta2 ^ t)) * s.exp_avg_diff / denom
    if h.weight_decay ~= 0 and not h.weight_decouple then
      p = p / (1 + h.lr * h.weight_decay)                             -- proximal decay
    end
    s.previous_grad = -g
    return p
  end,
}
