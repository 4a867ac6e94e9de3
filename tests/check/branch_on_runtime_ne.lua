-- A spec that tests a runtime option with `~=`: Lua never asks a traced
-- value about `~=` against a number, so the test is always true when lr is
-- passed per step, and the update silently changes.  `jopt check` compares
-- the results with lr folded and per step, and must fail.
return {
  hyper = { lr = 0.1, weight_decay = 0.0 },
  runtime = { "lr", "weight_decay" },
  update = function (p, g, s, h)
    if h.weight_decay ~= 0 then g = g + h.weight_decay * p + 1 end
    return p - h.lr * g
  end,
}
