-- A row sum has no sum over the last axis: it is reduced already (torch
-- would sum over a size-1 axis, the value itself); jopt refuses it.
return {
  hyper = {},
  update = function (p, g, s, h)
    local row = sum(g * g, -1)
    return p - sum(row, -1) * g
  end,
}
--[[expect
rank: 2
error: error_reduced_axis.lua:7: sum: this value does not vary over what sum reduces
]]
