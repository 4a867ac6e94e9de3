-- An axis the tensor lacks: the spec's line names it.
return {
  hyper = {},
  update = function (p, g, s, h)
    return p - sum(g * g, -3) * g
  end,
}
--[[expect
rank: 2
error: error_axis.lua:5: sum: axis -3: the tensor has 2 dimensions
]]
