"""The ``rsaccel`` command line: generate, synthesize, map and benchmark the accelerator."""

import argparse
import json
import sys
import time
from pathlib import Path

from .config import DEFAULT_PRESET, PRESETS, preset
from .hw.tops import DEFAULT_TOP, TOPS

__all__ = ["main"]


def _config(args):
    return preset(args.preset).with_settings(args.set or [])


def _add_config_args(parser):
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                        help=f"design point to start from (default: {DEFAULT_PRESET})")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one configuration field (repeatable)")


def cmd_generate(args):
    from .generate import generate

    vpath, mpath = generate(_config(args), args.top, args.output, run_lint=not args.no_lint)
    print(f"wrote {vpath}")
    print(f"wrote {mpath}")


def cmd_synth(args):
    from .synth import format_report, synthesize

    report = synthesize(_config(args), args.top, target=args.target, outdir=args.output)
    print(format_report([report]))
    print(f"wrote {report['report_path']}")


def cmd_map(args):
    from .sw.layers import layer
    from .sw.mapper import CostModel, format_mapping, map_layer, predict

    model = CostModel(dram_bytes_per_cycle=args.dram_bandwidth)
    mapping = map_layer(layer(args.layer, batch=args.batch), _config(args), model=model)
    print(format_mapping(mapping, predict(mapping, model=model)))


def _reduced(lay, max_channels):
    """``lay`` with at most ``max_channels`` input and output channels (kept divisible by its
    groups)."""
    import dataclasses

    if max_channels is None:
        return lay
    g = lay.groups
    C = max(g, min(lay.C, max_channels) // g * g)
    M = max(g, min(lay.M, max_channels) // g * g)
    return dataclasses.replace(lay, C=C, M=M)


def _add_memory_args(p):
    p.add_argument("--dram-bandwidth", type=float, default=None, metavar="BYTES",
                   help="DRAM bytes per cycle, reads and writes together (default: one AXI "
                        "word); the mapper plans for it, the simulated memory keeps to it")
    p.add_argument("--dram-latency", type=int, default=0, metavar="CYCLES",
                   help="cycles from a read's address to its data (simulation)")


def _progress_bar(cycles, predicted):
    width = 30
    done = min(1.0, cycles / predicted) if predicted else 0.0
    bar = "#" * int(done * width) + "." * (width - int(done * width))
    print(f"\r  [{bar}] {cycles:,} cycles ({100 * done:.0f}% of predicted)", end="",
          file=sys.stderr, flush=True)


def run_layer(config, lay, *, backend, seed=0, waves=False, pause=0.0, progress=False,
              dram_bandwidth=None, dram_latency=0):
    """Run ``lay`` with random data on ``backend``; return a dict of the checks and figures."""
    import numpy as np

    from .sw import layer_model
    from .sw.driver import Accelerator

    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, lay.input_shape).astype(np.float16)
    w = (rng.uniform(-1, 1, lay.weight_shape) / np.sqrt(lay.Cg * lay.R * lay.S)) \
        .astype(np.float16)
    bias = rng.uniform(-0.5, 0.5, lay.M).astype(np.float32) if lay.bias else None
    acc = Accelerator(config, backend, waves=waves, pause=pause, seed=seed,
                      progress=_progress_bar if progress else None,
                      dram_bandwidth=dram_bandwidth, dram_latency=dram_latency)
    y = acc.conv2d(x, w, bias, stride=lay.stride, padding=lay.padding, groups=lay.groups,
                   relu=lay.relu)
    if progress:
        print(file=sys.stderr)
    ref = layer_model.run_layer(lay, acc.last_program.mapping, x, w, bias, out="fp16")
    y64, bound = layer_model.float64_bound(lay, x, w, bias, out="fp16")
    mismatches = int(np.count_nonzero(y.view(np.uint16) != ref.view(np.uint16)))
    outside = int(np.count_nonzero(np.abs(y.astype(np.float64) - y64) > bound))
    return {"layer": lay, "stats": acc.stats, "program": acc.last_program,
            "mismatches": mismatches, "outside_bound": outside, "outputs": y.size}


def format_run(result):
    """Return the text ``rsaccel run`` prints for ``result`` (:func:`run_layer`)."""
    from .sw.mapper import EYERISS_ALEXNET

    lay, s = result["layer"], result["stats"]
    lines = [
        (f"{lay.name}: N={lay.N} C={lay.C} M={lay.M} H={lay.H} W={lay.W} R={lay.R} S={lay.S} "
        f"stride={lay.stride} padding={lay.padding} groups={lay.groups} on {s.pes} PEs "
        f"({s.backend})"),
        (f"  check: {result['outputs']} outputs, {result['mismatches']} differ from the "
        f"bit-exact model, {result['outside_bound']} outside the float64 bound"),
        (f"  cycles {s.cycles:,} (model predicted {s.predicted_cycles:,}, "
        f"{s.cycles / max(1, s.predicted_cycles):.3f}x); MAC utilization "
        f"{100 * s.utilization:.1f}%"),
        "  accesses (16-bit): " + ", ".join(f"{k} {v:,}" for k, v in s.accesses.items()),
        f"  energy {s.energy:,.0f} (normalized), {s.energy_per_mac:.2f} per MAC",
        f"  wall {s.wall_seconds:.1f} s" + (
            f", simulation {s.sim_seconds:.1f} s: {s.cycles / max(s.sim_seconds, 1e-9):,.0f} "
            f"simulated cycles/s" if s.sim_seconds is not None else ""),
    ]
    ref = EYERISS_ALEXNET.get(lay.name)
    if ref is not None:
        lines.append(f"  Eyeriss (JSSC 2017, batch 4): utilization "
                     f"{100 * ref['utilization']:.0f}%, DRAM {ref['dram_bytes'] / 1e6:.1f} MB")
    return "\n".join(lines)


def cmd_run(args):
    from .sw.layers import layer

    lay = _reduced(layer(args.layer, batch=args.batch), args.max_channels)
    result = run_layer(_config(args), lay, backend=args.backend, seed=args.seed,
                       waves=args.waves, pause=args.pause, progress=args.backend != "model",
                       dram_bandwidth=args.dram_bandwidth, dram_latency=args.dram_latency)
    print(format_run(result))
    return 0 if result["mismatches"] == 0 and result["outside_bound"] == 0 else 1


def _print_check(report, seconds):
    softfloat = (f"{report['softfloat_checked']} against SoftFloat, "
                 f"{report['softfloat_mismatches']} mismatches"
                 if report["softfloat_checked"] else "SoftFloat has no ReLU to compare with")
    print(f"{report['block']}: {report['checked']} vectors checked against numpy float32, "
          f"{report['mismatches']} mismatches; {softfloat}")
    for line in report["first_mismatches"]:
        print(f"  mismatch: {line}")
    print(f"  {report['cycles']} cycles for {report['checked']} results "
          f"({report['checked'] / report['cycles']:.3f} per cycle), "
          f"{report['cycles'] / seconds:,.0f} simulated cycles/s")


def _bench_alexnet(config, args):
    """Run AlexNet CONV1-5 on ``args.backend``; print the table against Eyeriss. Returns
    whether any check failed."""
    from .sw.layers import layer
    from .sw.mapper import EYERISS_ALEXNET

    rows, failed = [], False
    for k in range(1, 6):
        lay = _reduced(layer(f"alexnet.conv{k}", batch=args.batch), args.max_channels)
        result = run_layer(config, lay, backend=args.backend, seed=args.seed,
                           progress=args.backend != "model", dram_bandwidth=args.dram_bandwidth,
                           dram_latency=args.dram_latency)
        print(format_run(result), flush=True)
        failed |= bool(result["mismatches"] or result["outside_bound"])
        rows.append((lay, result["stats"], EYERISS_ALEXNET[lay.name]))
    print(f"\nAlexNet on {config.name} ({config.num_pes} PEs), batch {args.batch}, "
          f"{args.backend}" + (f", at most {args.max_channels} channels"
                               if args.max_channels else "")
          + f", DRAM {args.dram_bandwidth or config.axi_data_bits / 8:g} bytes/cycle"
          + "; Eyeriss: JSSC 2017, batch 4")
    print(f"{'layer':<14}{'cycles':>12}{'predicted':>12}{'rtl/pred':>9}{'util':>7}"
          f"{'Eyeriss':>8}{'DRAM MB':>9}{'Eyeriss':>8}{'GLB acc':>12}{'energy/MAC':>11}"
          f"{'sim s':>8}{'cyc/s':>9}")
    for lay, s, ref in rows:
        dram_mb = 2 * s.accesses["dram"] / 1e6
        print(f"{lay.name:<14}{s.cycles:>12,}{s.predicted_cycles:>12,}"
              f"{s.cycles / max(1, s.predicted_cycles):>9.3f}{100 * s.utilization:>6.1f}%"
              f"{100 * ref['utilization']:>7.0f}%{dram_mb:>9.2f}{ref['dram_bytes'] / 1e6:>8.1f}"
              f"{s.accesses['glb']:>12,}{s.energy_per_mac:>11.2f}"
              + (f"{s.sim_seconds:>8.1f}{s.cycles / max(s.sim_seconds, 1e-9):>9,.0f}"
                 if s.sim_seconds is not None else f"{'-':>8}{'-':>9}"))
    return failed


def cmd_bench(args):
    from .sim import checks

    config = _config(args)
    failed = False
    if args.what in ("mac", "numerics"):
        start = time.monotonic()
        report = checks.check_mac(config, args.count, simulator=args.simulator, seed=args.seed,
                                  softfloat=args.softfloat)
        _print_check(report, time.monotonic() - start)
        failed |= bool(report["mismatches"] or report["softfloat_mismatches"])
    if args.what in ("outcvt", "numerics"):
        for relu in (False, True):
            start = time.monotonic()
            report = checks.check_outcvt(config, args.count, simulator=args.simulator,
                                         seed=args.seed, relu=relu, softfloat=args.softfloat)
            _print_check(report, time.monotonic() - start)
            failed |= bool(report["mismatches"] or report["softfloat_mismatches"])
    if args.what == "pe":
        from .sim.pe_bench import format_utilization, run_utilization

        print(format_utilization(run_utilization(config, simulator=args.simulator,
                                                 seed=args.seed)))
    if args.what == "alexnet":
        failed |= _bench_alexnet(config, args)
    if args.what == "noc":
        from .sim.noc_bench import noc_benchmark

        noc_benchmark(config, simulator=args.simulator, seed=args.seed)
    if args.what == "mac-depth":
        from .synth import format_report, synthesize

        reports = []
        for depth in args.depths:
            reports.append(synthesize(config.replace(mac_stages=depth), "mac",
                                      target="ecp5", outdir=args.output / f"mac{depth}"))
        print(format_report(reports, key="mac_stages"))
        path = args.output / "mac_depth.json"
        path.write_text(json.dumps(reports, indent=2) + "\n")
        print(f"wrote {path}")
    return 1 if failed else 0


def _depths(text):
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="rsaccel", description="Generate, synthesize, map and benchmark the rsaccel "
                                    "Row-Stationary accelerator.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write Verilog and manifest.json for a top")
    _add_config_args(p)
    p.add_argument("--top", default=DEFAULT_TOP, choices=sorted(TOPS))
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    p.add_argument("--no-lint", action="store_true", help="skip the Verilator lint")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("synth", help="synthesize, place and route a top; print its resources")
    _add_config_args(p)
    p.add_argument("--top", default="pe", choices=sorted(TOPS))
    p.add_argument("--target", default="ecp5", choices=["ecp5"])
    p.add_argument("-o", "--output", type=Path, default=Path("build/synth"))
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("run", help="run a layer with random data on a backend; check it "
                                   "against the bit-exact model and float64; print figures")
    _add_config_args(p)
    p.add_argument("--layer", required=True, help="e.g. alexnet.conv3, vgg16.conv4_2")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backend", default="verilator", choices=["model", "verilator", "icarus"])
    p.add_argument("--max-channels", type=int, help="cap C and M (a reduced layer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pause", type=float, default=0.0,
                   help="random AXI stalls at this rate, with cocotbext-axi's memory in Python "
                        "(simulation; slow)")
    p.add_argument("--waves", action="store_true", help="record a waveform (simulation)")
    _add_memory_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("map", help="map a layer onto the array; print the mapping and its "
                                   "predicted cycles, accesses and energy")
    _add_config_args(p)
    p.add_argument("--layer", required=True, help="e.g. alexnet.conv3, vgg16.conv4_2")
    p.add_argument("--batch", type=int, default=4)
    _add_memory_args(p)
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    p.add_argument("what", choices=["mac", "outcvt", "numerics", "mac-depth", "pe", "noc",
                                    "alexnet"],
                   help="mac/outcvt/numerics: vectors through the RTL against the references; "
                        "mac-depth: ECP5 resources and fmax per MAC pipeline depth; "
                        "pe: MAC utilization of one PE fed without stalls; "
                        "noc: sustained packets per cycle per multicast pattern; "
                        "alexnet: AlexNet CONV1-5 through the whole accelerator, against "
                        "Eyeriss")
    _add_config_args(p)
    p.add_argument("--count", type=int, default=1_000_000, help="random vectors (default 1M)")
    p.add_argument("--softfloat", type=int, default=None,
                   help="check only the first N vectors against SoftFloat (default: all)")
    p.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"])
    p.add_argument("--backend", default="verilator", choices=["model", "verilator", "icarus"],
                   help="alexnet: where the layers run")
    p.add_argument("--batch", type=int, default=4, help="alexnet: images")
    p.add_argument("--max-channels", type=int, help="alexnet: cap C and M (reduced layers)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--depths", type=_depths, default=_depths("1-6"),
                   help="MAC pipeline depths for mac-depth, e.g. 1-6")
    p.add_argument("-o", "--output", type=Path, default=Path("build/bench"))
    _add_memory_args(p)
    p.set_defaults(func=cmd_bench)

    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, TypeError) as error:
        parser.exit(2, f"rsaccel: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
