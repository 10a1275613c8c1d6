"""cocotb tests of the ``dma`` top (hw/dma.py) with cocotbext-axi memory: sim/bench_dma.py."""

import pytest

from rsaccel import preset
from rsaccel.sim import runner
from rsaccel.sim.tools import icarus_available


@pytest.mark.parametrize("name, data_bits", [("tiny", 64), ("small", 32), ("eyeriss", 128)])
def test_dma_verilator(name, data_bits):
    config = preset(name).replace(axi_data_bits=data_bits)
    bld = runner.build("dma", config)
    runner.run(bld, "rsaccel.sim.bench_dma", name="dma",
               env={"DMA_SEED": str(data_bits), "DMA_TRANSFERS": "25"})


@pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")
def test_dma_icarus():
    bld = runner.build("dma", preset("tiny"), simulator="icarus")
    runner.run(bld, "rsaccel.sim.bench_dma", name="dma", env={"DMA_TRANSFERS": "6"})
