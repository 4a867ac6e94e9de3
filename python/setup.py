"""Build hook of the jopt Python package (the metadata is in pyproject.toml).

`pip install ./python` (or building a wheel) records where libjopt.so was
found at install time in jopt/_install.py, so that the installed package
finds it from anywhere: $JOPT_LIBRARY at install time, else the checkout's
build/libjopt.so (../build from this file), else pkg-config's libdir for
jopt (an installed jopt).  Nothing is recorded if none is found: the
package then searches at import time (jopt/_lib.py)."""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def find_library():
    env = os.environ.get("JOPT_LIBRARY")
    if env and os.path.exists(env):
        return os.path.realpath(env)
    built = os.path.join(HERE, "..", "build", "libjopt.so")
    if os.path.exists(built):
        return os.path.realpath(built)
    try:
        libdir = subprocess.run(["pkg-config", "--variable=libdir", "jopt"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    lib = os.path.join(libdir, "libjopt.so")
    return os.path.realpath(lib) if os.path.exists(lib) else None


class build_py_recording(build_py):
    def run(self):
        super().run()
        lib = find_library()
        target = os.path.join(self.build_lib, "jopt", "_install.py")
        with open(target, "w") as f:
            f.write('"""Written by setup.py when the package was built."""\n')
            f.write("LIBRARY = %r\n" % lib)
        print("jopt: recorded libjopt at %s" % lib)


setup(cmdclass={"build_py": build_py_recording})
