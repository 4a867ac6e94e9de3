-- At most 16 sums in one update: the 17th's line is named.
return {
  hyper = {},
  update = function (p, g, s, h)
    local acc = 0
    for i = 1, 16 do acc = acc + sum(g * i) end
    return p - (acc + sum(p * 17)) * g
  end,
}
--[[expect
error: error_too_many_sums.lua:7: more than 16 reductions of this kind (sum) in one update
]]
