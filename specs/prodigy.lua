-- Prodigy (Mishchenko & Defazio, 2023, "Prodigy: An Expeditiously Adaptive
-- Parameter-Free Learner"), as pytorch_optimizer 4.1.0's Prodigy: Adam
-- whose step is scaled by d, an estimate of the distance to the solution
--   d̂ = d_coef · Σ ⟨g, θ0 - θ⟩·(d/d0)·d·lr (EMA, β3) / Σ |s|,
--   s = EMA of (d/d0)·d·lr·g,        d ← min(max(d, d̂), d·growth_rate)
-- with sums over the group's tensors.  The update takes the old d's lr and
-- the new d in eps; eps = None takes Adam-atan2's update.  The running
-- sums d_numerator and d_de_nom are float32, as the reference's tensors.
-- The reference shares one d across all groups (group 0's); here each
-- group has its own.  Steps are counted per group.
return {
  doc = "Prodigy: Adam with a step size that estimates the distance to the solution",
  hyper = { lr = 1.0, betas = {0.9, 0.999}, beta3 = none, d0 = 1e-6, d_coef = 1.0,
            growth_rate = math.huge, weight_decay = 0.0, weight_decouple = true,
            fixed_decay = false, bias_correction = false, safeguard_warmup = false,
            eps = 1e-8, maximize = false },
  optional = { "eps" },       -- eps=None selects the atan2 update
  runtime = { "lr" },         -- used only in arithmetic
  infinite = { "growth_rate" },  -- inf: no bound on the growth of d
  steps = "group",
  check = function (h)
    require_that(h.lr >= 0, "learning rate must be positive. (%s > 0)", h.lr)
    require_that(0 <= h.betas[1] and h.betas[1] < 1, "beta1 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[2] and h.betas[2] < 1, "beta2 must be in the range [0.0, 1.0)")
    require_that(h.beta3 == none or (0 <= h.beta3 and h.beta3 <= 1),
                 "beta3 must be in the range [0.0, 1.0]")
    require_that(h.weight_decay >= 0, "weight_decay must be non-negative")
    require_that(h.eps == none or h.eps >= 0, "eps must be non-negative")
  end,
  state = {
    s = 0, exp_avg = 0, exp_avg_sq = 0,
    p0 = unset,                                  -- the parameter at its first step
    d = function (h) return group(h.d0) end,
    d_max = function (h) return group(h.d0) end,
    d_hat = group(0),
    d_numerator = group(0, "float"),
    d_de_nom = group(0, "float"),
  },
  update = function (p, g, s, h, t)
    local beta1, beta2 = h.betas[1], h.betas[2]
    local beta3 = h.beta3 == none and sqrt(beta2) or h.beta3
    local bias_correction = 1
    if h.bias_correction then bias_correction = (1 - beta1 ^ t) / sqrt(1 - beta2 ^ t) end
    local d, d0 = s.d, h.d0
    local d_lr = d * h.lr / bias_correction
    if h.maximize then g = -g end
    local p0 = s.p0
    if p0 == nil then p0 = p; s.p0 = p end
    s.exp_avg = fma(g, d * (1 - beta1), s.exp_avg * beta1)
    s.exp_avg_sq = fma(d * d * (1 - beta2) * g, g, s.exp_avg_sq * beta2)
    s.s = fma(g, d / d0 * (h.safeguard_warmup and d or d_lr), s.s * beta3)
    -- the distance estimate, from sums over the group
    s.d_numerator = f32(s.d_numerator * f32(beta3))
                    + f32(d / d0 * d_lr) * sum(g * (p0 - p), "group")
    local de_nom = f32(sum(abs(s.s), "group"))
    local d_hat = f32(f32(f32(h.d_coef) * s.d_numerator) / de_nom)
    local d_max = max(s.d_max, d_hat)
    local d_new = min(d_max, where(eq(d, d0), max(d, d_hat), d) * h.growth_rate)
    local moved = ne(de_nom, 0)                  -- else the reference stops here
    s.d = where(moved, d_new, d)
    s.d_max = where(moved, d_max, s.d_max)
    s.d_hat = where(moved, d_hat, s.d_hat)
    s.d_de_nom = where(moved, de_nom, s.d_de_nom)
    local q = p
    if h.weight_decay ~= 0 and h.weight_decouple then
      q = q * (1 - h.weight_decay * (h.fixed_decay and 1 or d_lr))
    end
    local denom = sqrt(s.exp_avg_sq)
    if h.eps ~= none then
      q = q + (-d_lr) * s.exp_avg / (denom + s.d * h.eps)
    else
      q = fma(atan2(s.exp_avg, denom), -d_lr, q)
    end
    return where(moved, q, p)
  end,
}
