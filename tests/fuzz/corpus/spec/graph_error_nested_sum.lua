-- One level of reductions: a sum over a value that depends on a sum would
-- need a third pass.
return {
  hyper = {},
  update = function (p, g, s, h)
    local n = sum(g * g)
    return p - sum(g / n) * g
  end,
}
--[[expect
error: a sum over a value that depends on another sum
]]
