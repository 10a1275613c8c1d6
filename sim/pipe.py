"""Run words through a generated pipeline top (MAC, converter) in a cocotb simulation."""

import json

import numpy as np

from . import runner

__all__ = ["pack_mac_ops", "stream_through", "unpack_mac_results"]

_MASK64 = (1 << 64) - 1


def stream_through(top, config, words, *, simulator="verilator", settings=None, gap=0.0,
                   stall=0.0, seed=0, waves=False, name="pipe"):
    """Stream ``words`` (Python ints) into ``top``'s ``i`` port; return the ``o`` words and the
    cycle count. ``settings`` maps other input ports to constant values."""
    bld = runner.build(top, config, simulator=simulator, waves=waves)
    run_dir = bld.directory / "runs" / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    vectors = run_dir / f"{name}-{seed}.npz"
    result = run_dir / f"{name}-{seed}-out.npz"
    np.savez(vectors,
             in_lo=np.array([w & _MASK64 for w in words], dtype=np.uint64),
             in_hi=np.array([w >> 64 for w in words], dtype=np.uint64),
             settings=json.dumps(settings or {}))
    runner.run(bld, "rsaccel.sim.bench_pipe", name=name, env={
        "PIPE_VECTORS": str(vectors), "PIPE_OUT": str(result),
        "PIPE_GAP": str(gap), "PIPE_STALL": str(stall), "PIPE_SEED": str(seed)})
    with np.load(result) as out:
        lo, hi = out["out_lo"], out["out_hi"]
        cycles = int(out["cycles"])
    return [int(a) | int(b) << 64 for a, b in zip(lo, hi)], cycles


def pack_mac_ops(a, b, c, tags):
    """Return MAC operation words (layout ``hw.mac.MacOp``) for arrays of operands and tags."""
    return [int(x) | int(y) << 16 | int(z) << 32 | int(t) << 64
            for x, y, z, t in zip(a, b, c, tags)]


def unpack_mac_results(words):
    """Return (sums, tags) arrays from MAC result words (layout ``hw.mac.MacResult``)."""
    sums = np.array([w & 0xFFFFFFFF for w in words], dtype=np.uint32)
    tags = np.array([w >> 32 for w in words], dtype=np.int64)
    return sums, tags
