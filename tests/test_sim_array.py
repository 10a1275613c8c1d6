"""cocotb tests of the ``array`` top (real PEs on the NoC, generated Verilog): RS workloads
(sim/array_bench.py) checked bit for bit against the PE model."""

import numpy as np
import pytest

from rsaccel import preset
from rsaccel.sim import array_bench
from rsaccel.sim.tools import icarus_available


def check(config, work, **kwargs):
    got, cycles = array_bench.run_cocotb(config, work, **kwargs)
    assert set(got) == set(work.expected)
    for source, want in work.expected.items():
        assert np.array_equal(got[source], want), source
    return cycles


# The tiny preset here; whole layers on the small preset's array run through the accelerator
# top (tests/test_sw_driver.py).
@pytest.mark.parametrize("kwargs", [
    {"R": 3, "e": 4, "U": 1, "F": 6, "p": 3},               # one set filling the array
    {"R": 1, "e": 4, "r": 3, "U": 2, "F": 4},               # channel sets chained, stride 2
    {"R": 1, "e": 2, "t": 6, "F": 3, "q": 3, "S": 2},       # six filter sets sharing an ifmap
])
def test_array_tiny_verilator(kwargs):
    config = preset("tiny")
    check(config, array_bench.rs_workload(config, **kwargs, seed=7), gap=0.2)


@pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")
def test_array_tiny_icarus():
    config = preset("tiny")
    check(config, array_bench.rs_workload(config, R=3, e=4, F=3), simulator="icarus")


def test_workload_rejects_what_a_pe_cannot_hold():
    with pytest.raises(ValueError, match="exceed the ifmap scratchpad depth 8"):
        array_bench.rs_workload(preset("tiny"), R=1, e=2, q=3, S=3)
