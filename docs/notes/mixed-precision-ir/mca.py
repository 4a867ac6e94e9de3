#!/usr/bin/env python3
"""llvm-mca estimate of each kernel's main vector loop: cycles per element (steady
state, operands in L1). The loop is the single block that jumps back to itself
with the most ymm/zmm instructions; elements per iteration come from the index step."""
import re, subprocess, sys
KERNELS = sys.argv[1].split(",") if len(sys.argv) > 1 else None
def loops(asm_text):
    out = {}
    fn = None; lines = []
    for line in asm_text.splitlines():
        m = re.match(r"^(\w+):\s*# @", line)
        if m: fn = m.group(1); lines = []; out[fn] = lines; continue
        if fn: lines.append(line)
    return out
def main_loop(lines):
    best = None
    for i, l in enumerate(lines):
        m = re.match(r"^(\.LBB\d+_\d+):", l)
        if not m: continue
        lab = m.group(1); body = []
        for l2 in lines[i + 1:]:
            if re.match(r"^\.LBB\d+_\d+:", l2): break
            if l2.strip().startswith(("#", ".")) or not l2.strip(): continue
            body.append(l2)
            if re.search(rf"\bj\w+\s+{re.escape(lab)}\b", l2):
                nv = (sum("zmm" in b for b in body), sum("ymm" in b for b in body))
                if best is None or nv > best[0]: best = (nv, body)
                break
    return best[1] if best else None
res = {}
for cpu in ("znver3", "x86-64-v3", "znver4", "znver5"):
    asm = loops(open(f"k_{cpu}.s").read())
    for fn, lines in asm.items():
        if KERNELS and fn not in KERNELS: continue
        body = main_loop(lines)
        if not body: continue
        # elements per iteration: the add to the induction register, scaled by the
        # element size of the widest store addressing ((%reg,%idx,SCALE))
        step = None
        for b in body:
            m = re.match(r"\s*(?:addq|subq)\s+\$(-?\d+), %(r\w+)", b)
            if m: step = abs(int(m.group(1)))
        mcpu = "x86-64-v3" if cpu == "x86-64-v3" else cpu
        r = subprocess.run(["llvm-mca-19", f"-mcpu={mcpu}", "-iterations=200"], input="\n".join(body),
                           capture_output=True, text=True)
        m = re.search(r"Block RThroughput:\s*([\d.]+)", r.stdout)
        cyc = re.search(r"Total Cycles:\s*(\d+)", r.stdout)
        it = 200
        cpi = int(cyc.group(1)) / it if cyc else float("nan")
        # scaled index addressing tells bytes per element; step counts elements if the
        # index is scaled, bytes otherwise
        scaled = any(re.search(r"\(%\w+,%\w+,(2|4|8)\)", b) for b in body)
        elems = step if scaled else None
        res.setdefault(fn, {})[cpu] = (cpi, elems, len(body))
cpus = ("znver3", "x86-64-v3", "znver4", "znver5")
print(f"{'kernel':30s}" + "".join(f"{c:>24s}" for c in cpus))
for fn, d in res.items():
    cells = []
    for c in cpus:
        if c not in d: cells.append(f"{'-':>24s}"); continue
        cpi, el, n = d[c]
        cells.append(f"{(f'{cpi/el:.3f} c/el ({cpi:.1f}c/{el})' if el else f'{cpi:.1f} c/iter'):>24s}")
    print(f"{fn:30s}" + "".join(cells))
