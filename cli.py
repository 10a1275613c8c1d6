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
    from .sw.mapper import format_mapping, map_layer, predict

    mapping = map_layer(layer(args.layer, batch=args.batch), _config(args))
    print(format_mapping(mapping, predict(mapping)))


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

    p = sub.add_parser("map", help="map a layer onto the array; print the mapping and its "
                                   "predicted cycles, accesses and energy")
    _add_config_args(p)
    p.add_argument("--layer", required=True, help="e.g. alexnet.conv3, vgg16.conv4_2")
    p.add_argument("--batch", type=int, default=4)
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    p.add_argument("what", choices=["mac", "outcvt", "numerics", "mac-depth", "pe", "noc"],
                   help="mac/outcvt/numerics: vectors through the RTL against the references; "
                        "mac-depth: ECP5 resources and fmax per MAC pipeline depth; "
                        "pe: MAC utilization of one PE fed without stalls; "
                        "noc: sustained packets per cycle per multicast pattern")
    _add_config_args(p)
    p.add_argument("--count", type=int, default=1_000_000, help="random vectors (default 1M)")
    p.add_argument("--softfloat", type=int, default=None,
                   help="check only the first N vectors against SoftFloat (default: all)")
    p.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--depths", type=_depths, default=_depths("1-6"),
                   help="MAC pipeline depths for mac-depth, e.g. 1-6")
    p.add_argument("-o", "--output", type=Path, default=Path("build/bench"))
    p.set_defaults(func=cmd_bench)

    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, TypeError) as error:
        parser.exit(2, f"rsaccel: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
