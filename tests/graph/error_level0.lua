-- error(msg, 0) asks Lua for no position; the spec's line is named anyway.
return {
  hyper = {},
  state = { m = function (h) error("no state today", 0) end },
  update = function (p, g, s, h) return p end,
}
--[[expect
error: error_level0.lua:4: no state today
]]
