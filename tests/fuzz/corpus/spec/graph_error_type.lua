-- where() wants a truth value first.
return {
  hyper = {},
  update = function (p, g, s, h) return where(g, p, 0) end,
}
--[[expect
error: where: a truth value where a number is needed
]]
