-- RMSprop (Hinton, 2012), as torch.optim.RMSprop: eps after the square
-- root, optional centering (Graves, 2013) and momentum.
return {
  doc = "RMSprop: steps scaled by a running RMS of the gradient",
  hyper = { lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.0,
            centered = false, maximize = false },
  runtime = { "lr", "alpha", "eps" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_eps(h)
    require_that(0 <= h.momentum, "Invalid momentum value: %s", h.momentum)
    require_weight_decay(h)
    require_that(0 <= h.alpha, "Invalid alpha value: %s", h.alpha)
  end,
  state = { square_avg = 0,
            momentum_buffer = function (h) return h.momentum > 0 and 0 end,
            grad_avg = function (h) return h.centered and 0 end },
  update = function (p, g, s, h)
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then g = fma(p, h.weight_decay, g) end      -- g + wd·θ
    s.square_avg = fma((1 - h.alpha) * g, g, s.square_avg * h.alpha)  -- v·α + (1-α)·g²
    local avg
    if h.centered then
      s.grad_avg = lerp(s.grad_avg, g, 1 - h.alpha)
      avg = sqrt(fma(-s.grad_avg, s.grad_avg, s.square_avg))           -- sqrt(v - ga²)
    else
      avg = sqrt(s.square_avg)
    end
    avg = avg + h.eps
    if h.momentum > 0 then
      s.momentum_buffer = s.momentum_buffer * h.momentum + g / avg     -- b·μ + g/avg
      return fma(s.momentum_buffer, -h.lr, p)                          -- θ - lr·b
    end
    return p + (-h.lr) * g / avg                                       -- addcdiv_
  end,
}
