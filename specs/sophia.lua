-- Sophia (Liu et al., 2023, "Sophia: A Scalable Stochastic Second-order
-- Optimizer for Language Model Pre-training"): a momentum step divided by
-- an EMA of a diagonal Hessian estimate, clipped element-wise to [-ρ, ρ].
-- As pytorch_optimizer 4.1.0's SophiaH with the estimate given: Sophia-G's
-- Gauss-Newton-Bartlett estimate (or Hutchinson's) is computed by the
-- caller and passed as the input `hessian`, on the steps where the
-- reference would estimate it ((t - 1) % update_period == 0) and whenever
-- else the caller has one.  Steps are counted per group.
return {
  doc = "Sophia: clipped steps preconditioned by a diagonal Hessian estimate (an input)",
  hyper = { lr = 6e-2, betas = {0.96, 0.99}, weight_decay = 0.0,
            weight_decouple = true, fixed_decay = false, p = 1e-2,
            update_period = 10, num_samples = 1,
            hessian_distribution = {"gaussian", "rademacher"}, eps = 1e-12,
            maximize = false },
  runtime = { "lr", "betas", "p", "eps" },   -- used only in arithmetic
  steps = "group",
  inputs = { "hessian" },
  check = function (h)
    require_that(h.lr >= 0, "learning rate must be positive. (%s > 0)", h.lr)
    require_that(0 <= h.betas[1] and h.betas[1] < 1, "beta1 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[2] and h.betas[2] < 1, "beta2 must be in the range [0.0, 1.0)")
    require_that(h.weight_decay >= 0, "weight_decay must be non-negative")
    require_that(h.p >= 0, "p (gradient clip) must be non-negative")
    require_that(h.update_period >= 1, "update_period must be positive. (%s > 0)",
                 h.update_period)
    require_that(h.num_samples > 0, "num_samples must be positive")
    require_that(h.eps >= 0, "eps must be non-negative")
  end,
  state = { momentum = 0, hessian_moment = 0 },
  update = function (p, g, s, h, t)
    local beta1, beta2 = h.betas[1], h.betas[2]
    local hessian = input("hessian")
    if hessian == nil then
      require_that(ne((t - 1) % h.update_period, 0),
                   "at steps 1, 1 + %d, 1 + 2*%d, ... SophiaH estimates the Hessian "
                   .. "itself: give the estimate as input 'hessian'",
                   h.update_period, h.update_period)
    end
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then
      if h.weight_decouple then
        p = p * (1 - h.weight_decay * (h.fixed_decay and 1 or h.lr))
      elseif h.weight_decay > 0 then
        g = fma(p, h.weight_decay, g)
      end
    end
    s.momentum = lerp(s.momentum, g, 1 - beta1)                           -- m
    if hessian ~= nil then
      s.hessian_moment = lerp(s.hessian_moment, hessian, 1 - beta2)       -- EMA of ĥ
    end
    local u = clamp(s.momentum / max(s.hessian_moment, h.eps), -h.p, h.p)
    return fma(u, -h.lr, p)
  end,
}
