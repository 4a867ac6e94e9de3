-- Adafactor (Shazeer & Stern, 2018), as torch.optim.Adafactor (torch 2.13):
-- a matrix's second moment factored into the running means of its rows'
-- and columns' squared gradients (state smaller than the tensor), a step
-- relative to the parameter's RMS, clipped by the update's own RMS.
-- Norms are sums in jopt's fixed order (docs/specs.md), where torch's are
-- float32 sums in ATen's order.
return {
  doc = "Adafactor: factored second moment, relative step size",
  hyper = { lr = 1e-2, beta2_decay = -0.8, eps = {none, 1e-3}, d = 1.0,
            weight_decay = 0.0, maximize = false },
  runtime = { "lr", "d" },
  check = function (h)
    require_that(0 <= h.lr, "Learning rate should be >= 0 but is: %s", h.lr)
    require_that(h.beta2_decay <= 0, "beta2_decay should be <= 0 but is: %s", h.beta2_decay)
    require_that(h.eps[1] == none or 0 <= h.eps[1], "epsilon1 should be >= 0 but is: %s", h.eps[1])
    require_that(0 <= h.eps[2], "epsilon2 should be >= 0 but is: %s", h.eps[2])
    require_that(1 <= h.d, "Clipping threshold d should be >= 1 but is: %s", h.d)
    require_that(0 <= h.weight_decay, "weight_decay should be >= 0 but is: %s", h.weight_decay)
  end,
  -- a matrix (or a stack of them) keeps a mean per row and per column of
  -- its last two axes; a vector keeps its full second moment
  state = {
    row_var = function (h) return dim() > 1 and rows(0) end,
    col_var = function (h) return dim() > 1 and cols(0) end,
    variance = function (h) return dim() <= 1 and 0 end,
  },
  update = function (p, g, s, h, t)
    if h.maximize then g = -g end
    local eps1 = h.eps[1] == none and 1.1920928955078125e-07 or h.eps[1]  -- finfo(float32).eps
    local b = t ^ h.beta2_decay                          -- 1 - beta2_t, per step in double
    local rho = min(h.lr, 1 / t ^ 0.5)
    local norm = function (x) return f32(sqrt(f32(sum(x * x)))) end  -- float32, as torch's
    local alpha = max(h.eps[2], norm(p) / numel() ^ 0.5) * rho   -- RMS before decay
    if h.weight_decay ~= 0 then p = p * (1 - h.lr * h.weight_decay) end
    local var
    if dim() > 1 then
      local row = sqrt(sum(g * g, -1))                   -- torch.norm over the last axis
      local col = sqrt(sum(g * g, -2))
      s.row_var = lerp(s.row_var, row * row / size(-1), b)
      s.col_var = lerp(s.col_var, col * col / size(-2), b)
      var = s.row_var * s.col_var / max(mean(s.row_var, -2), eps1)
    else
      s.variance = lerp(s.variance, g * g, b)
      var = s.variance
    end
    local u = 1 / sqrt(max(var, eps1 * eps1)) * g        -- torch's rsqrt: 1 / sqrt
    local denom = max(1, norm(u) / (numel() ^ 0.5 * h.d))
    return fma(u, -alpha / denom, p)
  end,
}
