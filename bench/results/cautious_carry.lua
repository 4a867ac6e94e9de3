-- A bench experiment, not a shipped spec (bench/RESULTS.md, "Cautious AdamW
-- with its denominator carried over"): specs/cautious_adamw.lua with the
-- denominator stored by the first pass into a third state array, which the
-- second pass then reads back instead of recomputing it from exp_avg_sq.
-- Cautious AdamW (Liang et al., 2024, "Cautious Optimizers: Improving
-- Training with One Line of Code"): AdamW whose update is kept only where
-- it agrees in sign with the gradient, rescaled by numel / (kept + 1).
-- pytorch_optimizer 4.1.0 has it as a flag, not a class: this is its
-- AdEMAMix(alpha=0, weight_decouple=True, cautious=True), op for op (the
-- slow EMA it still updates enters with weight 0, so it is not kept), with
-- steps counted per group.  Options and defaults are torch.optim.AdamW's.
local function cautious(u, g)
  local mask = where(gt(u * g, 0), 1, 0)
  return u * (mask * f32(f32(1 / f32(sum(mask) + 1)) * numel()))
end

return {
  doc = "Cautious AdamW: AdamW's update masked where it disagrees with the gradient",
  hyper = { lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2,
            maximize = false },
  runtime = { "lr", "betas", "eps" },   -- used only in arithmetic
  steps = "group",
  check = function (h)
    require_that(h.lr >= 0, "learning rate must be positive. (%s > 0)", h.lr)
    require_that(0 <= h.betas[1] and h.betas[1] < 1, "beta1 must be in the range [0.0, 1.0)")
    require_that(0 <= h.betas[2] and h.betas[2] < 1, "beta2 must be in the range [0.0, 1.0)")
    require_that(h.weight_decay >= 0, "weight_decay must be non-negative")
    require_that(h.eps >= 0, "eps must be non-negative")
  end,
  state = { exp_avg = 0, exp_avg_sq = 0, denom = 0 },
  update = function (p, g, s, h, t)
    local beta1, beta2 = h.betas[1], h.betas[2]
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then p = p * (1 - h.weight_decay * h.lr) end
    s.exp_avg = lerp(s.exp_avg, g, 1 - beta1)                         -- m
    s.exp_avg_sq = fma((1 - beta2) * g, g, s.exp_avg_sq * beta2)      -- v
    s.denom = sqrt(s.exp_avg_sq) / sqrt(1 - beta2 ^ t) + h.eps
    local denom = s.denom
    local u = cautious(s.exp_avg, g) / (1 - beta1 ^ t)
    return p + (-h.lr) * u / denom                                    -- addcdiv_
  end,
}
