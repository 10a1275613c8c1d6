"""cocotb tests of the generated Verilog of the PE (sim/bench_pe.py), bit for bit against
sw/pe_model.py, on Verilator and, when installed, Icarus."""

import numpy as np
import pytest

from rsaccel import preset
from rsaccel.sim import pe_bench
from rsaccel.sim.tools import icarus_available

needs_icarus = pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")


def sizes(config):
    return {"filter_depth": config.filter_spad_depth, "ifmap_depth": config.ifmap_spad_depth,
            "psum_depth": config.psum_spad_depth}


def check(report, prims):
    out, want = report["out"], report["expected"]
    assert len(out) == len(want)
    bad = np.flatnonzero(out != want)
    assert bad.size == 0, (f"{bad.size} of {len(want)} psums differ, first #{bad[0]}: "
                           f"got {out[bad[0]]:#010x}, want {want[bad[0]]:#010x}")
    for name, value in pe_bench.expected_events(prims).items():
        assert report["events"][name] == value, name
    assert len(report["cfg_cycles"]) == len(prims)


@pytest.mark.parametrize("name,seed", [("tiny", 1), ("small", 2)])
def test_pe_verilator_random_backpressure(name, seed):
    config = preset(name)
    rng = np.random.default_rng(seed)
    prims = pe_bench.random_primitives(rng, 16, **sizes(config), max_F=5)
    report = pe_bench.run_cocotb(config, prims, gap=0.3, stall=0.3, seed=seed, name="random")
    check(report, prims)


def test_pe_verilator_utilization_matches_prediction():
    """The benchmark's runs, unstalled and back to back: with p >= mac_stages every primitive
    takes exactly the predicted cycles (one MAC per cycle, one idle cycle between
    primitives); with fewer filters, within a cycle of it."""
    config = preset("tiny")
    cases = [(1, 2, 3, 1, 4), (3, 2, 3, 1, 5), (8, 1, 3, 2, 6), (4, 2, 4, 3, 3)]
    rows = pe_bench.run_utilization(config, cases)
    for row in rows:
        assert row["correct"], row
        if row["p"] >= config.mac_stages:
            assert row["cycles"] == row["predicted"], row
            assert row["utilization"] > 0.95
        else:
            assert row["predicted"] - 1 <= row["cycles"] <= row["predicted"], row
    assert sum(row["p"] >= config.mac_stages for row in rows) == 1
    text = pe_bench.format_utilization(rows)
    assert len(text.splitlines()) == len(cases) + 1


@needs_icarus
def test_pe_icarus_random_backpressure():
    config = preset("tiny")
    rng = np.random.default_rng(3)
    prims = pe_bench.random_primitives(rng, 4, **sizes(config), max_F=3)
    report = pe_bench.run_cocotb(config, prims, simulator="icarus", gap=0.2, stall=0.2, seed=3,
                                 name="random")
    check(report, prims)
