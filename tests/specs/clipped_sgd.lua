-- SGD with momentum on gradients clipped to a norm over the whole group,
-- as torch.nn.utils.clip_grad_norm_(group's params, max_norm) before
-- optim.SGD: a test spec for group sums (a reduction across tensors), a
-- group state (the last norm) and a named kernel.
return {
  doc = "SGD on the group's gradients clipped to max_norm (a test spec)",
  hyper = { lr = 1e-2, momentum = 0.9, max_norm = 1.0 },
  runtime = { "lr" },
  state = { momentum_buffer = 0, total_norm = group(0) },
  update = function (p, g, s, h)
    local total = sqrt(sum(g * g, "group"))          -- ‖g‖ over the group
    s.total_norm = total
    local coef = min(h.max_norm / (total + 1e-6), 1)  -- torch's clip_coef, clamped
    s.momentum_buffer = fma(s.momentum_buffer, h.momentum, g * coef)
    return fma(s.momentum_buffer, -h.lr, p)
  end,
  kernels = {
    shrink = function (p, s, h) return p * 0.5 end,  -- changes only p
  },
}
