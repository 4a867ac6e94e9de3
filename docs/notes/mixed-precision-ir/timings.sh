#!/bin/sh
# three runs of each harness, 16M elements (memory) and 64K x 256 (cache); min per kernel
for c in znver3 x86-64-v3; do
  for r in 1 2 3; do ./harness_$c > t_mem_${c}_$r.txt; ./harness_$c 65536 256 > t_l2_${c}_$r.txt; done
done
python3 - <<'PY'
import glob, re, collections
out = []
for kind in ("mem", "l2"):
    for c in ("znver3", "x86-64-v3"):
        best = collections.OrderedDict()
        for f in sorted(glob.glob(f"t_{kind}_{c}_*.txt")):
            for line in open(f):
                m = re.match(r"\s+(\S.*?)\s+([\d.]+) ns/elem\s+([\d.]+) GB/s", line)
                if m:
                    k = m.group(1); v = float(m.group(2))
                    if k not in best or v < best[k][0]: best[k] = (v, float(m.group(3)))
        out.append(f"== {kind} {c} (min of 3 runs): ns/elem GB/s")
        out += [f"  {k:32s} {v:7.3f} {g:7.1f}" for k, (v, g) in best.items()]
open("timings.txt", "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
