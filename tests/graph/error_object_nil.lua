-- error(nil) while the spec's chunk runs.
local function fail() error(nil) end
fail()
return { hyper = {}, update = function (p) return p end }
--[[expect
error: error_object_nil.lua:2: error object is nil, not a string
]]
