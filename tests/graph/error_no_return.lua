-- update() that returns nothing: named by the line update starts on.
return {
  hyper = {},
  update = function (p, g, s, h)
    local x = p - g
  end,
}
--[[expect
error: error_no_return.lua:4: update() must return the new parameter value
]]
