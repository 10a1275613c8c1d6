"""cocotb tests of the generated NoC (top ``noc``, sim/bench_noc.py): random multicast traffic on
all three GINs with the GON, Row-Stationary patterns with local psum chains (Eyeriss's AlexNet
mappings on the eyeriss preset), and the benchmark, on Verilator and, when installed, Icarus."""

import functools

import numpy as np
import pytest

from rsaccel import preset
from rsaccel.sim import runner
from rsaccel.sim.noc_bench import (
    cfg_words,
    check_noc,
    expected_gin,
    expected_gon,
    gin_word,
    noc_benchmark,
    rs_traffic,
    run_noc,
    values_per_packet,
)
from rsaccel.sim.tools import icarus_available
from rsaccel.sw.noc_ids import rs_placement

needs_icarus = pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")


@functools.cache
def built(name, simulator="verilator"):
    """One build per preset and simulator for the whole session (conversion alone is seconds
    on eyeriss)."""
    return runner.build("noc", preset(name), simulator=simulator)


def _ids(kind, rows, cols, none, rng):
    if kind == "row":
        return list(range(rows)), [[0] * cols for _ in range(rows)]
    if kind == "diagonal":
        return [0] * rows, [[r + c for c in range(cols)] for r in range(rows)]
    if kind == "broadcast":
        return [0] * rows, [[0] * cols for _ in range(rows)]
    choice = [0, 1, 2, none]
    return ([int(rng.choice(choice)) for _ in range(rows)],
            [[int(rng.choice(choice)) for _ in range(cols)] for _ in range(rows)])


def random_traffic(config, seed, count=40, kinds=("row", "diagonal", "random")):
    """Return ``(scenario, expect)``: a different multicast pattern on each GIN, packets with
    random tags (some unmatched) and counts; every PE passes its psums on to the GON."""
    rng = np.random.default_rng(seed)
    rows, cols, n = config.rows, config.cols, config.num_pes
    none = (1 << config.noc_id_bits) - 1
    row_ids, col_ids, scenario, expect = {}, {}, {}, {"events": {}, "unmatched": {}}
    for net, kind in zip(("filter", "ifmap", "psum"), kinds):
        row_ids[net], col_ids[net] = _ids(kind, rows, cols, none, rng)
        held = sorted({(row_ids[net][r], c_id) for r in range(rows) for c_id in col_ids[net][r]
                       if none not in (row_ids[net][r], c_id)})
        nval = values_per_packet(config, net)
        width = 16 if net != "psum" else 32
        packets = []
        for _ in range(count):
            tag = held[rng.integers(len(held))] if held and rng.random() < 0.85 else \
                (int(rng.integers(0, none + 1)), int(rng.integers(0, none + 1)))
            packets.append((tag, rng.integers(0, 1 << width, int(rng.integers(1, nval + 1)))
                            .tolist()))
        scenario[net] = [gin_word(config, net, tag, values) for tag, values in packets]
        per_pe, unmatched = expected_gin(config, net, row_ids[net], col_ids[net], packets)
        key = "psum_in" if net == "psum" else net
        expect[key] = {r * cols + c: v for (r, c), v in per_pe.items()}
        expect["events"][f"{net}_unmatched"] = unmatched
        expect["events"][f"{net}_packets"] = count - unmatched
        expect["unmatched"][net] = int(unmatched > 0)
    scenario["cfg"] = cfg_words(config, row_ids, col_ids)
    # Each PE passes its psums on with a constant added, ``last`` on every 3rd and its final.
    add = [int(v) for v in rng.integers(0, 1 << 32, n)]
    lengths = [len(expect["psum_in"][k]) for k in range(n)]
    scenario.update(add=add, period=[3] * n, last_at=lengths)
    streams = {divmod(k, cols): [((v + add[k]) & 0xFFFFFFFF, int(m % 3 == 2 or m == lengths[k] - 1))
                                 for m, v in enumerate(expect["psum_in"][k])] for k in range(n)}
    expect["gon"] = expected_gon(config, {s: v for s, v in streams.items() if v})
    return scenario, expect


@pytest.mark.parametrize("name, stall, gap", [("tiny", 0.4, 0.3), ("small", 0.3, 0.1)])
def test_random_multicast_all_networks(name, stall, gap):
    config = preset(name)
    scenario, expect = random_traffic(config, seed=len(name))
    scenario.update(stall=stall, gap=gap, gon_stall=0.3, seed=5)
    result = run_noc(config, scenario, bld=built(name), name="random")
    assert check_noc(config, result, expect) == []
    assert result["events"]["filter_stalled"] > 0


@pytest.mark.parametrize("name, layer", [
    ("tiny", {"R": 1, "e": 4, "r": 3}),
    ("small", {"R": 3, "e": 4, "U": 2, "r": 2, "t": 2}),
    ("small", {"R": 2, "e": 11}),
])
def test_rs_patterns_small(name, layer):
    config = preset(name)
    scenario, expect = rs_traffic(config, *rs_placement(config, **layer), seed=3)
    scenario.update(stall=0.3, gon_stall=0.3)
    result = run_noc(config, scenario, bld=built(name), name="rs")
    assert check_noc(config, result, expect) == []


#: Eyeriss's AlexNet mappings (DESIGN.md): CONV4 and CONV5 share one.
ALEXNET = {
    "CONV1": {"R": 11, "e": 7, "U": 4, "t": 2},
    "CONV2": {"R": 5, "e": 27},
    "CONV3": {"R": 3, "e": 13, "t": 4},
    "CONV4_5": {"R": 3, "e": 13, "r": 2, "t": 2},
}


@pytest.mark.parametrize("layer", sorted(ALEXNET))
def test_alexnet_patterns_eyeriss(layer):
    """Filter rows across PE rows, ifmap rows along diagonals (strides 1 and 4), psums up the
    columns (through two chained sets for CONV4/5) and out through the GON, under
    backpressure, on the 12 x 14 array."""
    config = preset("eyeriss")
    scenario, expect = rs_traffic(config, *rs_placement(config, **ALEXNET[layer]), values=24,
                                  psums=8, seed=7)
    scenario.update(stall=0.25, gon_stall=0.25, seed=1)
    expect["unmatched"] = {"filter": 0, "ifmap": 0, "psum": 0}
    result = run_noc(config, scenario, bld=built("eyeriss"), name=f"alexnet-{layer}")
    assert check_noc(config, result, expect) == []


@needs_icarus
def test_icarus_short_run():
    """4-state simulation: no X reaches an output on a short mixed run."""
    config = preset("tiny")
    scenario, expect = random_traffic(config, seed=9, count=12)
    scenario.update(stall=0.3, gap=0.2, gon_stall=0.2)
    result = run_noc(config, scenario, bld=built("tiny", "icarus"), name="icarus-random")
    assert check_noc(config, result, expect) == []
    scenario, expect = rs_traffic(config, *rs_placement(config, R=1, e=6), values=3, psums=2)
    result = run_noc(config, scenario, bld=built("tiny", "icarus"), name="icarus-rs")
    assert check_noc(config, result, expect) == []


def test_benchmark_runs_and_bounds_hold(capsys):
    config = preset("tiny")
    rows = noc_benchmark(config, packets=200, patterns=("broadcast", "row multicast"))
    out = capsys.readouterr().out
    assert "NoC throughput on tiny" in out and "GON, all PEs" in out
    by = {(r["pattern"], r["stall"]): r for r in rows}
    nval = config.ifmap_values_per_packet
    # Broadcast: every PE takes each packet, one value per cycle: one packet per V cycles.
    assert by["broadcast", 0.0]["packets_per_cycle"] == pytest.approx(1 / nval, rel=0.05)
    assert by["row multicast", 0.0]["packets_per_cycle"] == pytest.approx(
        min(1, config.rows / nval), rel=0.05)
    assert by["GON, all PEs", 0.0]["packets_per_cycle"] > 0.95
    for r in rows:                          # a window's edges may hold one packet more
        assert r["packets_per_cycle"] <= r["bound"] * 1.03
