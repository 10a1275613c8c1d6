"""Row-Stationary workloads for the PE array (``hw.noc.PEArray`` / the ``array`` top): the
stimulus that runs a placement of RS sets, and the outputs the PE model says must come out.

One workload is one primitive per PE: every set of an Eyeriss-style placement
(:func:`rsaccel.sw.noc_ids.rs_placement`) convolves ``p`` filters x ``q`` channels of width
``S`` against its ifmap rows. Filter rows go across PE rows, ifmap rows along diagonals
(interleaved packet by packet, as the array needs), psums up the columns (through chained
sets) and out through the GON.
"""

import os
from dataclasses import dataclass

import numpy as np

from ..hw.noc import GonPacket
from ..hw.pe import PEConfig
from ..sw import pe_model
from ..sw.noc_ids import noc_map, rs_placement
from . import runner
from .noc_bench import gin_word, unpack
from .pe_bench import random_values16

__all__ = ["RSWorkload", "rs_workload", "run_cocotb"]


def _chunks(values, size):
    return [values[k:k + size] for k in range(0, len(values), size)]


@dataclass
class RSWorkload:
    """Everything a bench needs to run one RS workload on the array, and what must come out.

    ``noc_cfg``: NoC configuration words; ``pe_cfg``: ``{(row, col): cfg word}`` for the PEs
    in use; ``filter``, ``ifmap``: GIN packet words in sending order; ``expected``:
    ``{(row, col): psums}`` per GON source PE, in order (uint32 binary32 bits).
    """
    noc_cfg: list
    pe_cfg: dict
    filter: list
    ifmap: list
    expected: dict


def rs_workload(config, *, R, e, U=1, r=1, t=1, p=2, q=2, S=3, F=4, seed=0):
    """Return the :class:`RSWorkload` of ``r * t`` sets of ``R x e`` PEs (``rs_placement``).

    Raises ValueError, naming the limit, for a primitive the PEs cannot hold.
    """
    pe_model.check_primitive(p, q, S, U, F, filter_depth=config.filter_spad_depth,
                             ifmap_depth=config.ifmap_spad_depth,
                             psum_depth=config.psum_spad_depth)
    rng = np.random.default_rng(seed)
    sets, segments = rs_placement(config, R=R, e=e, U=U, r=r, t=t)
    nm = noc_map(config, sets, segments)
    W = (F - 1) * U + S
    H = (e - 1) * U + R
    weights = {(s.out, s.chan): random_values16(rng, (p, q, R, S)) for s in sets}
    ifmaps = {s.chan: random_values16(rng, (q, H, W)) for s in sets}
    layout = PEConfig(filter_depth=config.filter_spad_depth,
                      ifmap_depth=config.ifmap_spad_depth, psum_depth=config.psum_spad_depth)

    pe_cfg = {}
    for seg in nm.segments:
        for i in range(sets[seg.set].height):
            for j in range(seg.j0, seg.j0 + seg.width):
                pe_cfg[nm.pe(seg.set, i, j)] = layout.const({
                    "S": S, "U": U, "p": p, "q": q, "F": F, "load_filter": 1,
                    "use_psum_in": int(i > 0 or seg.chain)}).as_bits()

    filters = []
    for k, s in enumerate(sets):
        for i in range(R):
            row = weights[s.out, s.chan][:, :, i, :].transpose(2, 1, 0).ravel()
            filters += [gin_word(config, "filter", nm.filter_tag(k, i), part)
                        for part in _chunks([int(v) for v in row], config.filter_values_per_packet)]
    # Sets sharing an ifmap share its packets (multicast); rows go interleaved.
    rows = {}
    for k, s in enumerate(sets):
        for h in s.ifmap_rows:
            tag = nm.ifmap_tag(k, h)
            if tag not in rows:
                values = [int(v) for v in ifmaps[s.chan][:, h, :].T.ravel()]
                rows[tag] = _chunks(values, config.ifmap_values_per_packet)
    ifmap = [gin_word(config, "ifmap", tag, parts[n])
             for n in range(max(len(parts) for parts in rows.values()))
             for tag, parts in rows.items() if n < len(parts)]

    # A column's psums pass through the sets of its chain, bottom to top.
    expected = {}
    for k, s in enumerate(sets):
        if s.chan:
            continue                            # chained above set (out, 0): counted there
        for j in range(e):
            acc = None
            for chan in range(r):
                w, x = weights[s.out, chan], ifmaps[chan]
                for i in range(R):
                    acc = pe_model.run_primitive(w[:, :, i, :], x[:, j * U + i, :], acc, U)
            expected[nm.gon_source(k, j)] = acc.ravel()
    return RSWorkload(nm.writes(), pe_cfg, filters, ifmap, expected)


def run_cocotb(config, workload, *, simulator="verilator", gap=0.0, seed=0, name="array"):
    """Run ``workload`` on the ``array`` top of ``config`` (``sim/bench_array.py``); return
    ``({(row, col): psums}, cycles)``. The GON output is refused at random (rate ``gap``)."""
    bld = runner.build("array", config, simulator=simulator)
    run_dir = bld.directory / "runs" / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    stem = run_dir / f"{name}-{seed}-{os.getpid()}"
    lanes = sorted(workload.pe_cfg)
    np.savez(f"{stem}.npz",
             noc_cfg=np.array(workload.noc_cfg, dtype=object),
             pe_lane=np.array([r * config.cols + c for r, c in lanes], dtype=np.int64),
             pe_cfg=np.array([workload.pe_cfg[rc] for rc in lanes], dtype=object),
             filter=np.array(workload.filter, dtype=object),
             ifmap=np.array(workload.ifmap, dtype=object),
             packets=np.int64(sum(-(-len(v) // config.gon_values_per_packet)
                                  for v in workload.expected.values())))
    runner.run(bld, "rsaccel.sim.bench_array", name=name, env={
        "ARRAY_VECTORS": f"{stem}.npz", "ARRAY_OUT": f"{stem}-out.npz", "ARRAY_GAP": str(gap),
        "ARRAY_SEED": str(seed)})
    layout = GonPacket(config.rows, config.cols, config.gon_values_per_packet)
    with np.load(f"{stem}-out.npz", allow_pickle=True) as out:
        packets = [unpack(layout, int(word)) for word in out["packets"]]
        cycles = int(out["cycles"])
    got = {}
    for packet in packets:
        got.setdefault((packet["src_row"], packet["src_col"]), []).extend(
            packet["data"][:packet["count"]])
    return {rc: np.array(v, dtype=np.uint32) for rc, v in got.items()}, cycles
