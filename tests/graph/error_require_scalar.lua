-- A requirement may not read a tensor's scalar state: the step may be
-- about to create it.
return {
  hyper = {},
  state = { n = scalar(0) },
  update = function (p, g, s, h, t)
    require_that(lt(s.n, 100), "at most 100 steps")
    s.n = s.n + 1
    return p - g
  end,
}
--[[expect
error: error_require_scalar.lua:7: require_that on a traced value may read t
]]
