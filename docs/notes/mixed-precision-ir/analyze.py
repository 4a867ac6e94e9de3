#!/usr/bin/env python3
"""For each target: opt-19 -O3, llc-19 -O3; report per kernel whether the loop was
vectorized, at what width (elements per vector op of the main loop), interleave,
and any calls left in the machine code."""
import re, subprocess, sys, collections
TARGETS = [("znver3", "256"), ("x86-64-v3", "256"), ("znver4", "512"), ("znver5", "512")]
def run(cmd, **kw): return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout
def funcs(text, start_re, end_re):
    out = {}; cur = None
    for line in text.splitlines():
        m = re.match(start_re, line)
        if m: cur = m.group(1); out[cur] = []; continue
        if cur is not None:
            out[cur].append(line)
            if re.match(end_re, line): cur = None
    return out
rows = collections.OrderedDict()
for cpu, vw in TARGETS:
    ll = run(["python3", "gen.py", cpu, vw])
    open(f"k_{cpu}.ll", "w").write(ll)
    run(["opt-19", "-O3", f"k_{cpu}.ll", "-S", "-o", f"k_{cpu}.opt.ll"])
    run(["llc-19", "-O3", f"k_{cpu}.opt.ll", "-o", f"k_{cpu}.s"])
    run(["llc-19", "-O3", "-filetype=obj", f"k_{cpu}.opt.ll", "-o", f"k_{cpu}.o"])
    ir = funcs(open(f"k_{cpu}.opt.ll").read(), r"define .*@(\w+)\(", r"^}")
    asm = funcs(open(f"k_{cpu}.s").read(), r"^(\w+):\s*# @", r"\s*\.cfi_endproc")
    for name, lines in ir.items():
        body = "\n".join(lines)
        vec = "vector.body" in body
        # the widest vector type on a load/store of the main loop
        widths = [int(w) for w in re.findall(r"(?:load|store) <(\d+) x", body)]
        vf = max(widths) if widths else 1
        m = re.search(r"llvm.loop.interleave.count|!{!\"llvm.loop.isvectorized\"", body)
        calls = sorted(set(re.findall(r"call\s+\w*\s*(__\w+|\w+@PLT)", "\n".join(asm.get(name, [])))))
        ncall = len(re.findall(r"\bcall", "\n".join(asm.get(name, []))))
        zmm = sum("zmm" in l for l in asm.get(name, [])); ymm = sum("ymm" in l for l in asm.get(name, []))
        rows.setdefault(name, {})[cpu] = (vec, vf, calls, ncall, zmm, ymm)
cpus = [c for c, _ in TARGETS]
print(f"{'kernel':28s} " + " ".join(f"{c:>22s}" for c in cpus))
for name, d in rows.items():
    cells = []
    for c in cpus:
        vec, vf, calls, ncall, zmm, ymm = d[c]
        s = (f"VF{vf}" if vec else "scalar") + (f" +{ncall}call" if ncall else "") + (f" z{zmm}" if zmm else f" y{ymm}")
        cells.append(f"{s:>22s}")
    print(f"{name:28s} " + " ".join(cells))
    for c in cpus:
        if d[c][2]: print(f"{'':28s}   {c}: calls {d[c][2]}")
