-- A spec that branches on an option it lists as runtime: with lr folded,
-- `h.lr > 0.5` is a Lua comparison decided at construction; passed per
-- step (after a scheduler's first change), lr is a traced value and the
-- comparison an error.  `jopt check` traces with runtime options on, and
-- must fail.
return {
  hyper = { lr = 0.1 },
  runtime = { "lr" },
  update = function (p, g, s, h)
    if h.lr > 0.5 then return p - 0.5 * g end
    return p - h.lr * g
  end,
}
