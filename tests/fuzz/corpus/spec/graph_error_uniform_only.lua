-- exp, log and pow take per-step values only.
return {
  hyper = {},
  update = function (p, g, s, h) return p - exp(g) end,
}
--[[expect
error: exp takes per-step values only
]]
