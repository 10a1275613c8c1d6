"""Drive one PE (top ``pe``) with primitives: stimulus, cocotb runs, and the utilization benchmark.

Shared by the Amaranth-simulator tests (stimulus and expected results), the cocotb tests (runs
through ``sim/bench_pe.py``) and ``rsaccel bench pe`` (:func:`run_utilization`,
:func:`format_utilization`).
"""

import os
from dataclasses import dataclass

import numpy as np
from amaranth.lib import data

from ..hw.pe import PEConfig, PEEvents
from ..sw import pe_model
from ..sw.numerics import f16_bits
from . import runner

__all__ = [
    "DEFAULT_CASES",
    "EVENT_NAMES",
    "Primitive",
    "expected_events",
    "format_utilization",
    "primitive_cycles",
    "random_primitives",
    "random_values16",
    "run_cocotb",
    "run_utilization",
    "steady_cycles",
    "stimulus",
]

#: Names of the PE's event strobes, least significant bit first.
EVENT_NAMES = tuple(name for name, _ in data.Layout.cast(PEEvents))


def _spad_sizes(config):
    return {"filter_depth": config.filter_spad_depth, "ifmap_depth": config.ifmap_spad_depth,
            "psum_depth": config.psum_spad_depth}


@dataclass
class Primitive:
    """One primitive for a PE: binary16 weights ``[p][q][S]`` and ifmap ``[q][W]``, binary32
    ``psum_in`` ``[F][p]`` or ``None``, stride ``U``, and whether it loads its weights (else the
    PE keeps those of the previous primitive, which must be the same)."""
    weights: np.ndarray
    ifmap: np.ndarray
    psum_in: np.ndarray | None
    U: int
    load_filter: bool = True

    @property
    def p(self):
        return self.weights.shape[0]

    @property
    def q(self):
        return self.weights.shape[1]

    @property
    def S(self):
        return self.weights.shape[2]

    @property
    def W(self):
        return self.ifmap.shape[1]

    @property
    def F(self):
        return (self.W - self.S) // self.U + 1

    @property
    def macs(self):
        return self.p * self.q * self.S * self.F

    def expected(self):
        """Return the model's psums, uint32 ``[F][p]``."""
        return pe_model.run_primitive(self.weights, self.ifmap, self.psum_in, self.U)


def random_values16(rng, shape, special_rate=0.02):
    """Return binary16 bits: values of either sign between about 1/8 and 8 (so sums cancel and
    round), and with ``special_rate`` any bit pattern (zeros, subnormals, Inf, NaN...)."""
    values = rng.uniform(0.125, 8.0, shape) * rng.choice([-1.0, 1.0], shape)
    bits = f16_bits(values)
    anything = rng.integers(0, 1 << 16, shape, dtype=np.uint16)
    return np.where(rng.random(shape) < special_rate, anything, bits).astype(np.uint16)


def random_primitives(rng, count, *, filter_depth, ifmap_depth, psum_depth, max_F=6, max_U=4,
                      reuse_rate=0.3, psum_rate=0.5, special_rate=0.02):
    """Return ``count`` random primitives that fit a PE of these sizes.

    The first loads its filter; later ones keep the previous filter (same ``p``, ``q``, ``S``)
    with probability ``reuse_rate``. ``psum_in`` is given with probability ``psum_rate``.
    """
    prims = []
    for k in range(count):
        if k and rng.random() < reuse_rate:
            prev = prims[-1]
            weights, load = prev.weights, False
        else:
            S = int(rng.integers(1, min(filter_depth, ifmap_depth) + 1))
            q = int(rng.integers(1, min(ifmap_depth // S, filter_depth // S) + 1))
            p = int(rng.integers(1, min(psum_depth, filter_depth // (q * S)) + 1))
            weights, load = random_values16(rng, (p, q, S), special_rate), True
        p, q, S = weights.shape
        U = int(rng.integers(1, max_U + 1))
        F = int(rng.integers(1, max_F + 1))
        pe_model.check_primitive(p, q, S, U, F, filter_depth=filter_depth,
                                 ifmap_depth=ifmap_depth, psum_depth=psum_depth)
        ifmap = random_values16(rng, (q, pe_model.ifmap_width(F, S, U)), special_rate)
        psum_in = None
        if rng.random() < psum_rate:
            psum_in = np.where(rng.random((F, p)) < special_rate,
                               rng.integers(0, 1 << 32, (F, p), dtype=np.uint32),
                               rng.normal(0, 16, (F, p)).astype(np.float32).view(np.uint32))
        prims.append(Primitive(weights, ifmap, psum_in, U, load))
    return prims


def stimulus(layout, prims):
    """Return the words each PE stream carries for ``prims``, and the expected outputs.

    ``layout`` is the PE's ``cfg`` layout (``PE.config_layout``). Returns a dict of numpy arrays:
    ``cfg`` (uint64), ``filter`` and ``ifmap`` (uint16), ``psum_in`` (uint32), ``expected``
    (uint64 ``psum_out`` words: the psum, and ``last`` at bit 32 on each primitive's final one),
    and ``macs``, their total.
    """
    cfg, filt, ifmap, psum_in, expected = [], [], [], [], []
    for prim in prims:
        cfg.append(layout.const({
            "S": prim.S, "U": prim.U, "p": prim.p, "q": prim.q, "F": prim.F,
            "load_filter": int(prim.load_filter), "use_psum_in": int(prim.psum_in is not None),
        }).as_bits())
        if prim.load_filter:
            filt.append(prim.weights.transpose(2, 1, 0).ravel())    # (s * q + c) * p + f
        ifmap.append(prim.ifmap.T.ravel())                          # column by column
        if prim.psum_in is not None:
            psum_in.append(prim.psum_in.ravel())                    # (x, f)
        words = prim.expected().ravel().astype(np.uint64)
        words[-1] |= np.uint64(1 << 32)                             # last
        expected.append(words)

    def join(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return {"cfg": np.array(cfg, dtype=np.uint64), "filter": join(filt, np.uint16),
            "ifmap": join(ifmap, np.uint16), "psum_in": join(psum_in, np.uint32),
            "expected": join(expected, np.uint64),
            "macs": np.int64(sum(prim.macs for prim in prims))}


def expected_events(prims):
    """Return the event totals that do not depend on timing, for ``prims`` run in sequence."""
    macs = sum(prim.macs for prim in prims)
    finals = sum(prim.F * prim.p for prim in prims)
    kept = 0
    for prim in prims:
        step = min(prim.U, prim.S)
        kept += prim.q * ((prim.F - 1) * step + prim.S)       # columns some output uses
    return {
        "mac_busy": macs,
        "filter_read": macs,
        "ifmap_read": macs,
        "filter_write": sum(prim.p * prim.q * prim.S for prim in prims if prim.load_filter),
        "ifmap_write": kept,
        "psum_write": macs - finals,
    }


def steady_cycles(prim, mac_stages):
    """Return the cycles a primitive adds when it follows another back to back, fed and
    drained without stalls, when one ifmap value per cycle keeps up (``hw.pe.PE`` timing: with
    ``p >= mac_stages`` its first MAC issues two cycles after the last one of the primitive
    before, after its filter load; with fewer filters, one or two). ``per_x`` is as in
    :func:`primitive_cycles`."""
    p, q, S, F = prim.p, prim.q, prim.S, prim.F
    per_x = p * q * S if p >= mac_stages else p + (q * S - 1) * mac_stages
    return (p * q * S if prim.load_filter else 0) + F * per_x + 1


def primitive_cycles(prim, mac_stages):
    """Return the cycles from a primitive's ``cfg`` transfer until the PE is idle again, fed
    and drained without stalls (``hw.pe.PE`` timing), when one ifmap value per cycle keeps up.

    Per output column: one MAC per cycle when ``p >= mac_stages``; otherwise the first
    ``(s, c)`` step takes ``p`` cycles and every later one ``mac_stages`` (each waits for its
    psum to leave the MAC, bypassed into the next MAC in the same cycle).
    """
    p, q, S, F = prim.p, prim.q, prim.S, prim.F
    per_x = p * q * S if p >= mac_stages else p + (q * S - 1) * mac_stages
    start = p * q * S if prim.load_filter else 1
    return start + F * per_x + mac_stages + 3


def run_cocotb(config, prims, *, simulator="verilator", gap=0.0, stall=0.0, seed=0,
               name="pe", waves=False):
    """Run ``prims`` through the ``pe`` top of ``config`` in cocotb (``sim/bench_pe.py``).

    Inputs are offered after random gaps (rate ``gap``) and outputs refused at random (rate
    ``stall``). Returns a dict: ``out`` (``psum_out`` words in order, as ``expected``), ``events``
    (totals per strobe), ``cfg_cycles`` (cycle of each ``cfg`` transfer), ``last_cycles``
    (cycle of each primitive's last psum), ``done_cycle`` (first idle cycle after the last
    output) and ``cycles``.
    """
    stim = stimulus(PEConfig(**_spad_sizes(config)), prims)
    bld = runner.build("pe", config, simulator=simulator, waves=waves)
    run_dir = bld.directory / "runs" / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    vectors = run_dir / f"{name}-{seed}-{os.getpid()}.npz"
    result = run_dir / f"{name}-{seed}-{os.getpid()}-out.npz"
    np.savez(vectors, **stim)
    runner.run(bld, "rsaccel.sim.bench_pe", name=name, env={
        "PE_VECTORS": str(vectors), "PE_OUT": str(result), "PE_GAP": str(gap),
        "PE_STALL": str(stall), "PE_SEED": str(seed)})
    with np.load(result) as out:
        report = {
            "out": out["out"].astype(np.uint64),
            "expected": stim["expected"],
            "events": dict(zip(EVENT_NAMES, (int(v) for v in out["events"]))),
            "cfg_cycles": out["cfg_cycles"].astype(np.int64),
            "last_cycles": out["last_cycles"].astype(np.int64),
            "done_cycle": int(out["done_cycle"]),
            "cycles": int(out["cycles"]),
        }
    return report


#: (p, q, S, U, F) of the utilization benchmark: fewer filters than MAC stages, just enough,
#: and AlexNet-like rows (CONV1: S=11 U=4 q=1; CONV2: S=5 q=2; CONV3-5: S=3 q=4 / q=3).
DEFAULT_CASES = (
    (1, 4, 3, 1, 13),
    (2, 4, 3, 1, 13),
    (3, 4, 3, 1, 13),
    (4, 3, 3, 1, 13),
    (8, 2, 3, 2, 13),
    (16, 1, 11, 4, 55),
    (16, 2, 5, 1, 27),
    (16, 4, 3, 1, 13),
    (16, 3, 3, 1, 13),
    (16, 12, 1, 1, 13),
)


def run_utilization(config, cases=DEFAULT_CASES, *, simulator="verilator", seed=1):
    """Measure the MAC utilization of one PE fed and drained without stalls, per case.

    Each case ``(p, q, S, U, F)`` runs twice in a row on the generated Verilog, loading its
    filter, then keeping it, and the cases run back to back; ``p`` is lowered to what
    ``config``'s scratchpads hold, and a case whose ``q * S`` ifmap values do not fit is left
    out. Returns one dict per case run: the sizes, ``macs``, ``cycles_load`` and ``cycles``
    (from the last psum of the primitive before to this one's; for the very first, from its
    ``cfg`` transfer, so start-up included), their utilizations (MACs per cycle),
    ``predicted`` (:func:`steady_cycles` without load) and ``correct`` (psums equal to the
    model's).
    """
    sizes = _spad_sizes(config)
    rng = np.random.default_rng(seed)
    prims, rows = [], []
    for p, q, S, U, F in cases:
        p = min(p, sizes["psum_depth"], sizes["filter_depth"] // (q * S))
        try:
            pe_model.check_primitive(p, q, S, U, F, **sizes)
        except ValueError:
            continue                                # q * S too large for this PE
        weights = random_values16(rng, (p, q, S), 0)
        first = Primitive(weights, random_values16(rng, (q, pe_model.ifmap_width(F, S, U)), 0),
                          None, U, True)
        second = Primitive(weights, random_values16(rng, first.ifmap.shape, 0), None, U, False)
        prims += [first, second]
        rows.append({"p": p, "q": q, "S": S, "U": U, "F": F, "macs": first.macs,
                     "predicted": steady_cycles(second, config.mac_stages)})
    report = run_cocotb(config, prims, simulator=simulator, seed=seed, name="utilization")
    spans = np.diff(np.concatenate([report["cfg_cycles"][:1], report["last_cycles"]]))
    correct = report["out"] == report["expected"]
    offset = 0
    for k, row in enumerate(rows):
        n = 2 * row["F"] * row["p"]
        row["correct"] = bool(correct[offset:offset + n].all())
        offset += n
        row["cycles_load"], row["cycles"] = int(spans[2 * k]), int(spans[2 * k + 1])
        row["utilization_load"] = row["macs"] / row["cycles_load"]
        row["utilization"] = row["macs"] / row["cycles"]
    return rows


def format_utilization(rows):
    """Return the utilization rows of :func:`run_utilization` as a text table."""
    head = (f"{'p':>3} {'q':>3} {'S':>3} {'U':>2} {'F':>3} {'MACs':>6} {'cycles':>7} "
            f"{'predicted':>9} {'util':>6} {'+load cycles':>12} {'util':>6}  ok")
    lines = [head]
    for r in rows:
        lines.append(f"{r['p']:>3} {r['q']:>3} {r['S']:>3} {r['U']:>2} {r['F']:>3} "
                     f"{r['macs']:>6} {r['cycles']:>7} {r['predicted']:>9} "
                     f"{r['utilization']:>6.1%} {r['cycles_load']:>12} "
                     f"{r['utilization_load']:>6.1%}  {'yes' if r['correct'] else 'NO'}")
    return "\n".join(lines)
