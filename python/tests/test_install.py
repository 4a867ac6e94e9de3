#!/usr/bin/env python3
"""`pip install ./python` (a real install, not -e) into a temporary venv
(--system-site-packages, so torch and numpy are the system's), then, from
another folder with $JOPT_LIBRARY unset:

- the installed package finds the libjopt.so recorded at install time
  ($JOPT_LIBRARY when pip ran; else the checkout's build/libjopt.so; else
  pkg-config's) and steps an optimizer;
- $JOPT_LIBRARY, when set, wins; a wrong one is an ImportError that lists
  what was tried;
- with the recorded file gone, the usual library search (here
  LD_LIBRARY_PATH) finds it.

The build tree is not touched: pip builds from a copy of python/.  Runs as
a script: exit 0 on success, 77 (ctest SKIP) without venv/pip or without a
built libjopt.so, 1 on failure."""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(HERE)
# 77: ctest's SKIP; with $JOPT_REQUIRE_PYTHON set (CI), a missing dependency fails
SKIP = 1 if os.environ.get("JOPT_REQUIRE_PYTHON") else 77

CHECK = r"""
import os, sys
import jopt
print("library", jopt.library_path)
print("module", jopt.__file__)
ctx = jopt.Context()
try:
    import numpy as np, jopt.numpy
    w = np.ones(10, np.float32); g = np.full(10, 0.5, np.float32)
    opt = jopt.numpy.SGD([w], lr=0.1, grads=[g], jopt_context=ctx)
    opt.step()
    assert abs(float(w[0]) - 0.95) < 1e-6, w
    print("stepped", float(w[0]))
except ImportError:
    print("no numpy: context only", ctx.stats())
"""


def run(py, env, cwd):
    return subprocess.run([py, "-c", CHECK], env=env, cwd=cwd, capture_output=True, text=True)


def main():
    lib = os.environ.get("JOPT_LIBRARY") or os.path.join(PKG, "..", "build", "libjopt.so")
    if not os.path.exists(lib):
        print("SKIP: no libjopt.so (build it, or set JOPT_LIBRARY)")
        return SKIP
    lib = os.path.realpath(lib)
    try:
        import venv  # noqa: F401
        import ensurepip  # noqa: F401
    except ImportError as e:
        print("SKIP: %s" % e)
        return SKIP
    with tempfile.TemporaryDirectory() as tmp:
        env_dir = os.path.join(tmp, "venv")
        r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", env_dir],
                           capture_output=True, text=True)
        if r.returncode:
            print("SKIP: python3 -m venv failed: %s" % r.stderr.strip()[-300:])
            return SKIP
        py = os.path.join(env_dir, "bin", "python")
        src = os.path.join(tmp, "src")  # pip builds here; the checkout stays clean
        shutil.copytree(PKG, src, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__", "tests"))
        env = dict(os.environ, JOPT_LIBRARY=lib)
        env.pop("PYTHONPATH", None)
        r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                            "--no-index", src], env=env, capture_output=True, text=True)
        if r.returncode:
            print("FAIL: pip install:\n%s%s" % (r.stdout[-2000:], r.stderr[-2000:]))
            return 1
        shutil.rmtree(src)
        env = dict(os.environ)
        env.pop("JOPT_LIBRARY", None)
        env.pop("PYTHONPATH", None)
        # 1: the recorded path, from another folder
        r = run(py, env, tmp)
        assert r.returncode == 0, r.stderr
        assert "library %s" % lib in r.stdout, r.stdout
        assert os.path.join(env_dir, "lib") in r.stdout, r.stdout  # the installed copy
        print("ok   installed package finds the recorded %s and steps" % lib)
        # 2: $JOPT_LIBRARY wins; a wrong one says what was tried
        r = run(py, dict(env, JOPT_LIBRARY=os.path.join(tmp, "nope.so")), tmp)
        assert r.returncode == 0 and "library %s" % lib in r.stdout, (r.stdout, r.stderr)
        copy = os.path.join(tmp, "libjopt-copy.so")
        shutil.copy(lib, copy)
        r = run(py, dict(env, JOPT_LIBRARY=copy), tmp)
        assert r.returncode == 0 and "library %s" % copy in r.stdout, (r.stdout, r.stderr)
        print("ok   $JOPT_LIBRARY wins over the recorded path")
        # 3: the recorded file gone: the usual search (LD_LIBRARY_PATH)
        site = subprocess.run([py, "-c", "import jopt._install as i; print(i.__file__)"],
                              env=env, cwd=tmp, capture_output=True, text=True).stdout.strip()
        with open(site, "w") as f:
            f.write("LIBRARY = %r\n" % os.path.join(tmp, "gone", "libjopt.so"))
        for c in ("__pycache__",):
            shutil.rmtree(os.path.join(os.path.dirname(site), c), ignore_errors=True)
        r = run(py, env, tmp)
        if r.returncode == 0:  # the system's search found an installed jopt: fine
            print("ok   recorded path gone: found %s" % r.stdout.split()[1])
        else:
            assert "recorded at install time; no such file now" in r.stderr, r.stderr
            libdir = os.path.join(tmp, "lib")
            os.makedirs(libdir)
            shutil.copy(lib, os.path.join(libdir, "libjopt.so"))
            r = run(py, dict(env, LD_LIBRARY_PATH=libdir), tmp)
            assert r.returncode == 0, r.stderr
            print("ok   recorded path gone: ImportError lists it; LD_LIBRARY_PATH finds %s"
                  % r.stdout.split()[1])
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
