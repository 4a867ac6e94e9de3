-- Rprop (Riedmiller & Braun, 1993), as torch.optim.Rprop: each element's
-- step size grows while its gradient keeps its sign and shrinks when it
-- flips; after a flip the gradient counts as zero for one step.
return {
  doc = "Rprop: resilient backpropagation, per-element step sizes from gradient signs",
  hyper = { lr = 1e-2, etas = {0.5, 1.2}, step_sizes = {1e-6, 50}, maximize = false },
  runtime = { "etas", "step_sizes" },   -- used only in arithmetic: may be passed per step
  infinite = { "step_sizes" },          -- (0, inf): no bound, as torch allows
  check = function (h)
    require_lr(h)
    require_that(0 < h.etas[1] and h.etas[1] < 1 and 1 < h.etas[2],
                 "Invalid eta values: %s, %s", h.etas[1], h.etas[2])
  end,
  state = { prev = 0, step_size = function (h) return h.lr end },
  update = function (p, g, s, h)
    local etaminus, etaplus = h.etas[1], h.etas[2]
    if h.maximize then g = -g end
    local sg = sign(g * s.prev)
    local factor = where(gt(sg, 0), etaplus, where(lt(sg, 0), etaminus, 1))
    s.step_size = clamp(s.step_size * factor, h.step_sizes[1], h.step_sizes[2])
    g = where(eq(factor, etaminus), 0, g)                            -- after a sign flip
    s.prev = g
    return p - sign(g) * s.step_size                                 -- addcmul_(value=-1)
  end,
}
