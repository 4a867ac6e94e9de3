#!/usr/bin/env python3
"""Generate kernels.ll: scalar loops in the shape jopt's emit.c produces (noalias
pointers, no fast-math), one per load/store/rounding form under test."""
import sys
CPU, VW = sys.argv[1], sys.argv[2]   # e.g. znver3 256

class B:
    def __init__(s): s.lines = []; s.k = 0
    def v(s, expr):
        s.k += 1; name = f"%t{s.k}"; s.lines.append(f"  {name} = {expr}"); return name
    def raw(s, line): s.lines.append("  " + line)

# ---- element helpers (return SSA names) ----
def gep(b, ty, base):           return b.v(f"getelementptr inbounds {ty}, ptr {base}, i64 %i")
def load(b, ty, base):          return b.v(f"load {ty}, ptr {gep(b, ty, base)}")
def store(b, ty, val, base):    b.raw(f"store {ty} {val}, ptr {gep(b, ty, base)}")

def bf16_load_int(b, base):
    h = load(b, "i16", base); z = b.v(f"zext i16 {h} to i32"); s = b.v(f"shl i32 {z}, 16")
    return b.v(f"bitcast i32 {s} to float")
def bf16_load_fpext(b, base):
    h = load(b, "bfloat", base); return b.v(f"fpext bfloat {h} to float")
def bf16_rne_int(b, f, nan):
    u = b.v(f"bitcast float {f} to i32"); sh = b.v(f"lshr i32 {u}, 16"); lsb = b.v(f"and i32 {sh}, 1")
    bias = b.v(f"add i32 {lsb}, 32767"); s = b.v(f"add i32 {u}, {bias}"); r = b.v(f"lshr i32 {s}, 16")
    t = b.v(f"trunc i32 {r} to i16"); isn = b.v(f"fcmp uno float {f}, 0.0")
    return b.v(f"select i1 {isn}, i16 {nan}, i16 {t}")
def bf16_store_int(b, f, base, nan=32704):  # 0x7fc0 = 32704 (c10 scalar); 0xffff = -1 (at::vec)
    store(b, "i16", bf16_rne_int(b, f, nan), base)
def bf16_store_fptrunc(b, f, base):
    t = b.v(f"fptrunc float {f} to bfloat"); store(b, "bfloat", t, base)
def f16_load_fpext(b, base):
    h = load(b, "half", base); return b.v(f"fpext half {h} to float")
def f16_load_intr(b, base):
    h = load(b, "i16", base); return b.v(f"call float @llvm.convert.from.fp16.f32(i16 {h})")
def f16_store_fptrunc(b, f, base):
    t = b.v(f"fptrunc float {f} to half"); store(b, "half", t, base)
def f16_store_intr(b, f, base):
    t = b.v(f"call i16 @llvm.convert.to.fp16.f32(float {f})"); store(b, "i16", t, base)

# ---- counter-based hashes: 32 random bits from (key, element index) ----
def h_lowbias32(b, key):
    x = b.v("trunc i64 %i to i32"); x = b.v(f"xor i32 {x}, {key}")
    for sh, mul in ((16, "2146121005"), (15, "-2073254261"), (16, None)):   # 0x7feb352d, 0x846ca68b
        t = b.v(f"lshr i32 {x}, {sh}"); x = b.v(f"xor i32 {x}, {t}")
        if mul: x = b.v(f"mul i32 {x}, {mul}")
    return x
def h_weyl_lowbias32(b, key):
    """lowbias32(index * 0x9E3779B9 + key): the Weyl step spreads consecutive indices
    before the hash (lowbias32(index ^ key) fails a chi-square test on 4M consecutive
    indices; this passes)."""
    x = b.v("trunc i64 %i to i32"); x = b.v(f"mul i32 {x}, -1640531527"); x = b.v(f"add i32 {x}, {key}")
    for sh, mul in ((16, "2146121005"), (15, "-2073254261"), (16, None)):
        t = b.v(f"lshr i32 {x}, {sh}"); x = b.v(f"xor i32 {x}, {t}")
        if mul: x = b.v(f"mul i32 {x}, {mul}")
    return x
def h_splitmix64(b, key64):
    x = b.v(f"add i64 %i, {key64}")          # key64 = splitmix state for (seed, step, tensor)
    x = b.v(f"mul i64 {x}, -7046029254386353131")  # 0x9e3779b97f4a7c15 (golden gamma)
    for sh, mul in ((30, "-4658895280553007687"), (27, "-7723592293110705685"), (31, None)):
        t = b.v(f"lshr i64 {x}, {sh}"); x = b.v(f"xor i64 {x}, {t}")
        if mul: x = b.v(f"mul i64 {x}, {mul}")
    t = b.v(f"lshr i64 {x}, 32"); return b.v(f"trunc i64 {t} to i32")
def h_philox2x32_10(b, key):
    c0 = b.v("trunc i64 %i to i32"); c1 = "0"; k = key
    for r in range(10):
        a = b.v(f"zext i32 {c0} to i64"); p = b.v(f"mul nuw i64 {a}, 3528905107")  # 0xD256D193
        hi = b.v(f"lshr i64 {p}, 32"); hi = b.v(f"trunc i64 {hi} to i32"); lo = b.v(f"trunc i64 {p} to i32")
        n0 = b.v(f"xor i32 {hi}, {k}"); n0 = b.v(f"xor i32 {n0}, {c1}")
        c0, c1 = n0, lo
        if r < 9: k = b.v(f"add i32 {k}, -1640531527")  # 0x9E3779B9
    return c0
HASH = {"lowbias32": (h_lowbias32, "i32 %key"), "weyl_lowbias32": (h_weyl_lowbias32, "i32 %key"), "splitmix64": (h_splitmix64, "i64 %key"),
        "philox": (h_philox2x32_10, "i32 %key")}

def bf16_sr_bits(b, f, rnd32):
    """stochastic rounding: add 16 random bits below the kept ones, truncate; NaN kept
    as 0x7fc0 (adding could carry a NaN into the sign bit)."""
    u = b.v(f"bitcast float {f} to i32"); r = b.v(f"lshr i32 {rnd32}, 16")
    s = b.v(f"add i32 {u}, {r}"); t = b.v(f"lshr i32 {s}, 16"); t = b.v(f"trunc i32 {t} to i16")
    isn = b.v(f"fcmp uno float {f}, 0.0"); return b.v(f"select i1 {isn}, i16 32704, i16 {t}")

KERNELS = {}
FORCE = {}   # kernel name -> forced vectorization width (loop metadata)
def kernel(name, args, extra="", force=None):
    def deco(fn):
        KERNELS[name] = (args, extra, fn)
        if force: FORCE[name] = force
        return fn
    return deco

def f16_soft_rne(b, f):
    """c10's fp16_ieee_from_fp32_value without F16C (float and integer ops only)."""
    a = b.v(f"call float @llvm.fabs.f32(float {f})")
    base = b.v(f"fmul float {a}, 0x46F0000000000000")      # 2^112
    base = b.v(f"fmul float {base}, 0x3910000000000000")   # 2^-110
    w = b.v(f"bitcast float {f} to i32"); shl1 = b.v(f"shl i32 {w}, 1")
    sign = b.v(f"and i32 {w}, -2147483648")
    bias = b.v(f"and i32 {shl1}, -16777216")
    lt = b.v(f"icmp ult i32 {bias}, 1895825408")           # 0x71000000
    bias = b.v(f"select i1 {lt}, i32 1895825408, i32 {bias}")
    bb = b.v(f"lshr i32 {bias}, 1"); bb = b.v(f"add i32 {bb}, 125829120")  # 0x07800000
    bf = b.v(f"bitcast i32 {bb} to float"); base = b.v(f"fadd float {bf}, {base}")
    bits = b.v(f"bitcast float {base} to i32")
    e = b.v(f"lshr i32 {bits}, 13"); e = b.v(f"and i32 {e}, 31744")       # 0x7c00
    m = b.v(f"and i32 {bits}, 4095"); ns = b.v(f"add i32 {e}, {m}")
    isn = b.v(f"icmp ugt i32 {shl1}, -16777216")           # 0xff000000
    ns = b.v(f"select i1 {isn}, i32 32256, i32 {ns}")      # 0x7e00
    sg = b.v(f"lshr i32 {sign}, 16"); r = b.v(f"or i32 {sg}, {ns}")
    return b.v(f"trunc i32 {r} to i16")

@kernel("bf16_load_int", ["out", "in"])
def _(b): store(b, "float", bf16_load_int(b, "%in"), "%out")
@kernel("bf16_load_fpext", ["out", "in"])
def _(b): store(b, "float", bf16_load_fpext(b, "%in"), "%out")
@kernel("bf16_store_int_c10", ["out", "in"])
def _(b): bf16_store_int(b, load(b, "float", "%in"), "%out", 32704)
@kernel("bf16_store_int_vecnan", ["out", "in"])
def _(b): bf16_store_int(b, load(b, "float", "%in"), "%out", -1)
@kernel("bf16_store_fptrunc", ["out", "in"])
def _(b): bf16_store_fptrunc(b, load(b, "float", "%in"), "%out")
@kernel("f16_load_fpext", ["out", "in"])
def _(b): store(b, "float", f16_load_fpext(b, "%in"), "%out")
@kernel("f16_load_intrinsic", ["out", "in"])
def _(b): store(b, "float", f16_load_intr(b, "%in"), "%out")
@kernel("f16_store_fptrunc", ["out", "in"])
def _(b): f16_store_fptrunc(b, load(b, "float", "%in"), "%out")
@kernel("f16_store_intrinsic", ["out", "in"])
def _(b): f16_store_intr(b, load(b, "float", "%in"), "%out")
@kernel("f16_store_soft", ["out", "in"])
def _(b): store(b, "i16", f16_soft_rne(b, load(b, "float", "%in")), "%out")
VFMAX = 16 if VW == "512" else 8
@kernel("f16_load_fpext_forcevf", ["out", "in"], force=VFMAX)
def _(b): store(b, "float", f16_load_fpext(b, "%in"), "%out")
@kernel("f16_store_fptrunc_forcevf", ["out", "in"], force=VFMAX)
def _(b): f16_store_fptrunc(b, load(b, "float", "%in"), "%out")
@kernel("bf16_load_fpext_forcevf", ["out", "in"], force=VFMAX)
def _(b): store(b, "float", bf16_load_fpext(b, "%in"), "%out")
@kernel("bf16_store_fptrunc_forcevf", ["out", "in"], force=VFMAX)
def _(b): bf16_store_fptrunc(b, load(b, "float", "%in"), "%out")
for hn, (hf, karg) in HASH.items():
    def mk(hf=hf):
        def body(b): store(b, "i16", bf16_sr_bits(b, load(b, "float", "%in"), hf(b, "%key")), "%out")
        return body
    kernel(f"bf16_sr_{hn}", ["out", "in"], karg)(mk())
    def mk2(hf=hf):
        def body(b): store(b, "i32", hf(b, "%key"), "%out")
        return body
    kernel(f"hash_{hn}", ["out", "in"], karg)(mk2())

# ---- Adam in jopt's form (lerp two-branch folded: w=0.1 < 0.5 -> fma(w, g-m, m)) ----
def adam_core(b, p, g, m, v):
    d = b.v(f"fsub float {g}, {m}")
    m2 = b.v(f"call float @llvm.fma.f32(float %w, float {d}, float {m})")
    cg = b.v(f"fmul float %c2, {g}"); vb = b.v(f"fmul float {v}, %b2")
    v2 = b.v(f"call float @llvm.fma.f32(float {cg}, float {g}, float {vb})")
    sq = b.v(f"call float @llvm.sqrt.f32(float {v2})"); q = b.v(f"fdiv float {sq}, %bc2s")
    den = b.v(f"fadd float {q}, %eps"); nm = b.v(f"fmul float %nss, {m2}")
    up = b.v(f"fdiv float {nm}, {den}"); p2 = b.v(f"fadd float {p}, {up}")
    return p2, m2, v2
ADAM_U = "float %w, float %c2, float %b2, float %bc2s, float %eps, float %nss"
@kernel("adam_f32", ["p", "g", "m", "v"], ADAM_U)
def _(b):
    p2, m2, v2 = adam_core(b, load(b, "float", "%p"), load(b, "float", "%g"), load(b, "float", "%m"), load(b, "float", "%v"))
    store(b, "float", m2, "%m"); store(b, "float", v2, "%v"); store(b, "float", p2, "%p")
@kernel("adam_bf16pg_f32state", ["p", "g", "m", "v"], ADAM_U)
def _(b):
    p2, m2, v2 = adam_core(b, bf16_load_int(b, "%p"), bf16_load_int(b, "%g"), load(b, "float", "%m"), load(b, "float", "%v"))
    store(b, "float", m2, "%m"); store(b, "float", v2, "%v"); bf16_store_int(b, p2, "%p")
@kernel("adam_bf16_all_rne", ["p", "g", "m", "v"], ADAM_U)
def _(b):
    p2, m2, v2 = adam_core(b, bf16_load_int(b, "%p"), bf16_load_int(b, "%g"), bf16_load_int(b, "%m"), bf16_load_int(b, "%v"))
    bf16_store_int(b, m2, "%m"); bf16_store_int(b, v2, "%v"); bf16_store_int(b, p2, "%p")
@kernel("adam_bf16_all_sr", ["p", "g", "m", "v"], ADAM_U + ", i32 %kp, i32 %km, i32 %kv")
def _(b):
    p2, m2, v2 = adam_core(b, bf16_load_int(b, "%p"), bf16_load_int(b, "%g"), bf16_load_int(b, "%m"), bf16_load_int(b, "%v"))
    for val, base, key in ((m2, "%m", "%km"), (v2, "%v", "%kv"), (p2, "%p", "%kp")):
        store(b, "i16", bf16_sr_bits(b, val, h_weyl_lowbias32(b, key)), base)
def _adam_f16(b):
    p2, m2, v2 = adam_core(b, f16_load_fpext(b, "%p"), f16_load_fpext(b, "%g"), load(b, "float", "%m"), load(b, "float", "%v"))
    store(b, "float", m2, "%m"); store(b, "float", v2, "%v"); f16_store_fptrunc(b, p2, "%p")
kernel("adam_f16pg_f32state", ["p", "g", "m", "v"], ADAM_U)(_adam_f16)
kernel("adam_f16pg_f32state_forcevf", ["p", "g", "m", "v"], ADAM_U, force=VFMAX)(_adam_f16)

out = [f'target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"',
       'target triple = "x86_64-pc-linux-gnu"', ""]
for name, (args, extra, fn) in KERNELS.items():
    b = B(); fn(b)
    params = ", ".join(f"ptr noalias nocapture %{a}" for a in args) + ", i64 %n" + (", " + extra if extra else "")
    out += [f"define void @{name}({params}) #0 {{", "entry:", "  %c = icmp sgt i64 %n, 0",
            "  br i1 %c, label %loop, label %done", "loop:",
            "  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]"] + b.lines + [
            "  %i.next = add nuw nsw i64 %i, 1", "  %e = icmp slt i64 %i.next, %n",
            "  br i1 %e, label %loop, label %done" + (f", !llvm.loop !{FORCE[name]}" if name in FORCE else ""),
            "done:", "  ret void", "}", ""]
out += ["declare float @llvm.convert.from.fp16.f32(i16)", "declare i16 @llvm.convert.to.fp16.f32(float)",
        "declare float @llvm.fma.f32(float, float, float)", "declare float @llvm.sqrt.f32(float)",
        "declare float @llvm.fabs.f32(float)", ""]
for w in sorted(set(FORCE.values())):
    out += [f"!{w} = distinct !{{!{w}, !{w+100}, !{w+200}}}", f'!{w+100} = !{{!"llvm.loop.vectorize.width", i32 {w}}}',
            f'!{w+200} = !{{!"llvm.loop.vectorize.enable", i1 true}}']
out += [

        f'attributes #0 = {{ nounwind "target-cpu"="{CPU}" "prefer-vector-width"="{VW}" }}']
print("\n".join(out))
