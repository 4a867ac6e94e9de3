#!/usr/bin/env python3
"""mixed_report.py - bench/RESULTS.md's mixed-precision tables from
bench_mixed's CSVs (jopt) and bench_mixed_torch.py's CSV (torch fused,
DeepSpeed): per optimizer, workload and thread count, each configuration's
step time, its speed-up over jopt's float32 step, its share of its own
memory-only loop, and torch's and DeepSpeed's times on the same dtypes.

    python3 bench/mixed_report.py JOPT.csv [JOPT2.csv ...] --torch TORCH.csv
"""
import csv
import sys


def main(argv):
    jfiles, tfile = [], None
    it = iter(argv[1:])
    for a in it:
        if a == "--torch":
            tfile = next(it)
        else:
            jfiles.append(a)
    j = {}
    for f in jfiles:
        for r in csv.DictReader(open(f)):
            j[(r["optimizer"], r["workload"], int(r["threads"]), r["config"])] = r
    t = {}
    if tfile:
        for r in csv.DictReader(open(tfile)):
            if r.get("median_s"):
                t[(r["optimizer"], r["workload"], int(r["threads"]), r["impl"], r["dtype"])] = \
                    float(r["median_s"]) * 1e3
    opts = sorted({k[0] for k in j}, key=["adam", "adamw", "sgd"].index)
    order = ["1M", "4M", "16M", "64M", "resnet50"]
    for o in opts:
        print("\n### %s\n" % o)
        print("| workload | thr | f32 ms | bf16 p+g: ms, x f32, of mem | bf16 p+g+state | "
              "+ stochastic | f16 p+g | torch fused f32 / bf16 / f16 ms | DeepSpeed f32 / bf16 ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        for w in order:
            for th in (1, 2):
                base = j.get((o, w, th, "f32"))
                if not base:
                    continue
                cells = ["%.2f (mem %.0f%%)" % (float(base["jopt_ms"]), 100 * float(base["vs_mem"]))]
                for c in ("bf16", "bf16s", "bf16s_sr", "f16"):
                    r = j.get((o, w, th, c))
                    cells.append("%.2f, %.2fx, %.0f%%" % (float(r["jopt_ms"]), float(r["vs_f32"]),
                                                          100 * float(r["vs_mem"])) if r else "")
                tf = " / ".join("%.2f" % t[(o, w, th, "fused", d)] if (o, w, th, "fused", d) in t
                                else "-" for d in ("float32", "bfloat16", "float16"))
                ds = " / ".join("%.2f" % t[(o, w, th, "deepspeed", d)]
                                if (o, w, th, "deepspeed", d) in t else "-"
                                for d in ("float32", "bfloat16"))
                print("| %s | %d | %s | %s | %s |" % (w, th, " | ".join(cells), tf, ds))


if __name__ == "__main__":
    main(sys.argv)
