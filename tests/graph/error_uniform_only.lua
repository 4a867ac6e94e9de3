-- exp, log and pow take per-step values only.
return {
  hyper = {},
  update = function (p, g, s, h) return p - exp(g) end,
}
--[[expect
error: error_uniform_only.lua:4: exp takes per-step values only
]]
