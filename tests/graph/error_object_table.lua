-- error() with a table: Lua adds no position, jopt names the line.
return {
  hyper = {},
  update = function (p, g, s, h)
    if h then error({}) end
    return p
  end,
}
--[[expect
error: error_object_table.lua:5: error object is a table, not a string
]]
