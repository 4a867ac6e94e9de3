-- error(42) in check(): a number is an error object too.
return {
  hyper = { lr = 0.1 },
  check = function (h)
    error(42)
  end,
  update = function (p, g, s, h) return p - h.lr * g end,
}
--[[expect
error: error_object_number.lua:5: error object is a number (42), not a string
]]
