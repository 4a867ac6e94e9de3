-- SGD with momentum (Polyak, 1964; Sutskever et al., 2013), as torch.optim.SGD:
-- lr is applied outside the buffer, and the first step copies the gradient
-- into the buffer without dampening.  fused = true: torch's fused=True CPU
-- kernel (its scalar loop: the vector loop of torch 2.13 is broken for 16-bit
-- types, pytorch#191763), which fuses the momentum's other product.
return {
  doc = "SGD: stochastic gradient descent, with momentum, dampening and Nesterov",
  hyper = { lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0,
            nesterov = false, maximize = false, fused = false },
  runtime = { "lr", "dampening" },   -- used only in arithmetic: may be passed per step
  check = function (h)
    require_lr(h)
    require_that(h.momentum >= 0, "Invalid momentum value: %s", h.momentum)
    require_weight_decay(h)
    require_that(not h.nesterov or (h.momentum > 0 and h.dampening == 0),
                 "Nesterov momentum requires a momentum and zero dampening")
  end,
  state = { momentum_buffer = function (h) return h.momentum ~= 0 and unset end },
  update = function (p, g, s, h)
    if h.maximize then g = -g end
    if h.weight_decay ~= 0 then g = fma(p, h.weight_decay, g) end  -- g + wd·θ
    if h.momentum ~= 0 then
      local b = s.momentum_buffer
      if b == nil then
        b = g                                                       -- clone(g)
      elseif h.fused then
        b = fma(b, h.momentum, g * (1 - h.dampening))               -- one rounding fewer
      else
        b = fma(g, 1 - h.dampening, b * h.momentum)                 -- b·μ + (1-τ)·g
      end
      s.momentum_buffer = b
      if h.nesterov then g = fma(b, h.momentum, g) else g = b end   -- g + μ·b
    end
    return fma(g, -h.lr, p)                                         -- θ - lr·g
  end,
}
