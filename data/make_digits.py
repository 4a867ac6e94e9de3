#!/usr/bin/env python3
"""Write data/digits.bin, the data set examples/demo.c trains on.

Source: scikit-learn's copy of the UCI "Optical Recognition of Handwritten
Digits" data (sklearn.datasets.load_digits, shipped inside the scikit-learn
package, so nothing is downloaded).  See data/README.md for provenance and
license.

File format (all integers unsigned 8-bit, no padding):

    bytes 0..      an ASCII header line: "digits <n> <d> <k>\n"
                   n = samples (1797), d = features per sample (64),
                   k = classes (10); exactly "digits 1797 64 10\n" here
    then           n * d feature bytes, sample-major: sample i's features are
                   bytes [i*d, (i+1)*d) of this block, the 8x8 image in
                   row-major order; each value 0..16
    then           n label bytes, each 0..k-1
    end of file    (nothing follows; the file is header + n*d + n bytes)

Samples are in scikit-learn's order (no shuffling here; the demo shuffles
with a fixed seed).

Usage:  python3 data/make_digits.py [OUTPUT]     (default: data/digits.bin
        next to this script)
"""
import os
import sys

import numpy as np
from sklearn.datasets import load_digits


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "digits.bin")

    ds = load_digits()
    x = np.asarray(ds.data)
    y = np.asarray(ds.target)
    n, d = x.shape
    k = int(y.max()) + 1

    # The values are integers 0..16 stored as floats; check before narrowing.
    assert np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 16, "features"
    assert y.shape == (n,) and y.min() >= 0 and k <= 256, "labels"

    header = f"digits {n} {d} {k}\n".encode("ascii")
    with open(out, "wb") as f:
        f.write(header)
        f.write(x.astype(np.uint8).tobytes(order="C"))
        f.write(y.astype(np.uint8).tobytes())
    size = len(header) + n * d + n
    print(f"wrote {out}: {n} samples, {d} features, {k} classes, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
