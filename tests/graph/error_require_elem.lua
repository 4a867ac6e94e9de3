-- require_that on a per-element condition cannot be checked before the
-- step: refused at construction, with the line.
return {
  hyper = {},
  update = function (p, g, s, h)
    require_that(gt(g, 0), "gradients must be positive")
    return p - g
  end,
}
--[[expect
error: error_require_elem.lua:6: require_that takes a per-step condition
]]
