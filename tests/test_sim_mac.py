"""cocotb tests of the generated Verilog of the MAC and the converter (sim/bench_pipe.py),
against numpy float32 and SoftFloat, on Verilator and, when installed, Icarus."""

import pytest

from rsaccel import preset
from rsaccel.sim import checks
from rsaccel.sim.tools import icarus_available

needs_icarus = pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")


def assert_clean(report):
    assert report["mismatches"] == 0, report["first_mismatches"]
    assert report["softfloat_mismatches"] == 0


@pytest.mark.parametrize("name", ["tiny", "small", "eyeriss"])
def test_mac_verilator_all_directed(name):
    """Every special-class combination and rounding ties, plus random vectors."""
    report = checks.check_mac(preset(name), 10_000, softfloat=15_000, seed=3)
    assert report["checked"] > 110_000
    assert report["cycles"] <= report["checked"] + 10       # one result per cycle
    assert_clean(report)


@pytest.mark.parametrize("stages", [1, 2, 4, 5, 7])
def test_mac_verilator_depths_under_backpressure(stages):
    config = preset("tiny").replace(mac_stages=stages)
    report = checks.check_mac(config, 5_000, directed=2_000, softfloat=2_000, gap=0.3,
                              stall=0.3, seed=stages)
    assert_clean(report)


@needs_icarus
def test_mac_icarus():
    report = checks.check_mac(preset("tiny"), 1_000, directed=1_500, gap=0.2, stall=0.2,
                              simulator="icarus")
    assert_clean(report)


def test_outcvt_verilator_every_tie():
    report = checks.check_outcvt(preset("small"), 10_000, softfloat=20_000)
    assert report["checked"] > 250_000
    assert_clean(report)


def test_outcvt_verilator_relu_backpressure():
    report = checks.check_outcvt(preset("tiny"), 5_000, directed=5_000, relu=True, gap=0.3,
                                 stall=0.3)
    assert_clean(report)


@needs_icarus
@pytest.mark.parametrize("relu", [False, True])
def test_outcvt_icarus(relu):
    report = checks.check_outcvt(preset("tiny"), 500, directed=1_000, relu=relu, gap=0.2,
                                 stall=0.2, simulator="icarus")
    assert_clean(report)
