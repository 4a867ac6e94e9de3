-- A sum over the group's tensors (Prodigy, Adan's global norm): each
-- tensor's sum, then the group's, in call order; a group state in float
-- (rounded when stored) and one in double.
return {
  hyper = { lr = 0.1 },
  steps = "group",
  state = { m = 0, num = group(0, "float"), d = group(1) },
  update = function (p, g, s, h, t)
    s.m = lerp(s.m, g, 0.1)
    s.num = s.num * 0.5 + sum(g * p, "group")
    s.d = max(s.d, s.num / sum(abs(s.m), "group"))
    return p - h.lr * s.d * s.m
  end,
}
--[[expect
graph group_sums update
slot 0 param
slot 1 grad
slot 2 m array init 0
group 0 d double init 1
group 1 num float init 0
%0 = gstate d  group
%1 = load m  elem
%2 = gstate num  group
%3 = load param  elem
%4 = load grad  elem
%5 = t  group
%6 = const 0.1
%7 = lerp %1, %4, %6  elem
%8 = const 0.5
%9 = mul %2, %8  group
%10 = mul %4, %3  elem
%11 = sum %10  tensor u0 r0 @1
%12 = groupsum %11  group r0 @2
%13 = add %9, %12  group @2
%14 = f32 %13  group u1 @2
%15 = abs %7  elem
%16 = sum %15  tensor u2 r1 @1
%17 = groupsum %16  group r1 @2
%18 = div %14, %17  group @2
%19 = max %0, %18  group u3 @2
%20 = mul %6, %19  group u4 @2
%21 = mul %20, %7  elem @2
%22 = sub %3, %21  elem @2
store 0 %22 @2
store 2 %7
gstore 0 %19
gstore 1 %14
]]
