-- After a sum, pass 1 cannot see the value pass 0 overwrote.
return {
  hyper = {},
  state = { m = 0 },
  update = function (p, g, s, h)
    local old = s.m
    s.m = g
    return p - old * sum(g)
  end,
}
--[[expect
error: error_old_value.lua:8: uses the old value of array 2 after a reduction
]]
