-- Each level of nested reductions is a pass over the data: at most 7.
return {
  hyper = {},
  update = function (p, g, s, h)
    local x = g
    for _ = 1, 8 do x = g / sum(x * x) end
    return p - x
  end,
}
--[[expect
error: error_nesting.lua:6: reductions nested 8 deep
]]
