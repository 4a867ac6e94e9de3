-- Lua cannot see a traced condition: `if gt(g, 0)` takes it as true.
return {
  hyper = {},
  update = function (p, g, s, h)
    if gt(g, 0) then return p - g end
    return p
  end,
}
--[[expect
error: error_condition.lua:5: a condition on traced values is computed but never used
]]
