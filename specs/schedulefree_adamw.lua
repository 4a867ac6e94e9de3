-- Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled"),
-- as pytorch_optimizer 4.1.0's ScheduleFreeAdamW.  Three sequences: z
-- takes the plain (Adam-normalised) gradient steps, x is their weighted
-- running average, and the gradient is taken at y, between the two:
--   y = (1 - β1)·z + β1·x,  z ← z - lr·ĝ,  x ← (1 - c)·x + c·z
-- The parameter holds y while training and x while evaluating: the
-- kernels `eval` and `train` swap one for the other in place.  The
-- update keeps y and z, so x = (y - (1-β1)·z)/β1 is never stored.
return {
  doc = "Schedule-Free AdamW: averaging instead of a learning-rate schedule",
  hyper = { lr = 2.5e-3, betas = {0.9, 0.999}, weight_decay = 0.0, r = 0.0,
            weight_lr_power = 2.0, warmup_steps = 0, decoupling_c = 0,
            ams_bound = false, eps = 1e-8, maximize = false },
  runtime = { "lr", "eps" },   -- used only in arithmetic
  steps = "group",
  check = function (h)
    require_that(h.lr >= 0, "learning rate must be positive. (%s > 0)", h.lr)
    require_that(0 <= h.betas[1] and h.betas[1] < 1, "beta1 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[2] and h.betas[2] < 1, "beta2 must be in the range [0.0, 1.0)")
    require_that(0 < h.betas[1], "beta1 must be in the range (0.0, 1.0)")
    require_that(h.decoupling_c >= 0, "decoupling_c must be non-negative")
    require_that(h.weight_decay >= 0, "weight_decay must be non-negative")
    require_that(h.eps >= 0, "eps must be non-negative")
  end,
  state = {
    z = unset,                           -- the parameter at its first step
    exp_avg_sq = 0,
    max_exp_avg_sq = function (h) return h.ams_bound and 0 end,
    -- per group, as the reference keeps them in its param_groups
    weight_sum = group(0.0),
    lr_max = group(-1.0),
    train_mode = group(1),
  },
  update = function (y, g, s, h, t)
    local beta1, beta2 = h.betas[1], h.betas[2]
    -- the averaging weight c_t = w_t / Σ w, w_t = t^r · max(lr_t)^power
    local schedule = where(lt(t, h.warmup_steps), t / h.warmup_steps, 1)
    local lr = h.lr * schedule
    s.lr_max = max(lr, s.lr_max)
    local weight = t ^ h.r * s.lr_max ^ h.weight_lr_power
    s.weight_sum = s.weight_sum + weight
    local c = where(ne(s.weight_sum, 0), weight / s.weight_sum, 0)
    if h.decoupling_c > 0 then c = min(1, c * (1 - beta1) * h.decoupling_c) end
    if h.maximize then g = -g end
    s.exp_avg_sq = fma((1 - beta2) * g, g, s.exp_avg_sq * beta2)
    local v = s.exp_avg_sq / (1 - beta2 ^ t)                  -- bias-corrected
    if h.ams_bound then
      s.max_exp_avg_sq = max(s.max_exp_avg_sq, v)
      v = s.max_exp_avg_sq
    end
    g = g / (sqrt(v + 1e-15) + h.eps)                          -- Adam-normalised
    if h.weight_decay > 0 then g = fma(y, h.weight_decay, g) end  -- at y
    local z = s.z or y
    y = lerp(y, z, c)                                          -- y with x's new average
    y = fma(g, lr * (beta1 * (1 - c) - 1), y)
    s.z = fma(g, -lr, z)                                       -- z ← z - lr·ĝ
    return y
  end,
  kernels = {
    -- y → x: x = y + (1 - 1/β1)·(z - y)
    eval = function (y, s, h)
      local train = ne(s.train_mode, 0)
      s.train_mode = 0
      return where(train, lerp(y, s.z, 1 - 1 / h.betas[1]), y)
    end,
    -- x → y: y = x + (1 - β1)·(z - x)
    train = function (x, s, h)
      local train = ne(s.train_mode, 0)
      s.train_mode = 1
      return where(train, x, lerp(x, s.z, 1 - h.betas[1]))
    end,
  },
}
