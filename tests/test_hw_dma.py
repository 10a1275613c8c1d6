"""Constructor checks of hw/dma.py and hw/axi.py (behaviour: tests/test_sim_dma.py)."""

import pytest
from amaranth.lib.wiring import In, Out

from rsaccel.hw.axi import AXI4Signature, AXILiteSignature
from rsaccel.hw.dma import Dma, DmaRead, DmaWrite


@pytest.mark.parametrize("engine", [DmaRead, DmaWrite, Dma])
@pytest.mark.parametrize("kwargs, message", [
    ({"max_burst": 3}, "max_burst must be a power of two from 1 to 256, not 3"),
    ({"max_burst": 512}, "max_burst must be a power of two from 1 to 256, not 512"),
    ({"max_outstanding": 0}, "max_outstanding must be 1 to 64, not 0"),
    ({"len_width": 40}, "len_width must be 1 to addr_width, not 40"),
    ({"data_width": 48}, "AXI4 data_width must be a power of two bytes, not 48"),
    ({"addr_width": 8, "len_width": 4}, "AXI4 addr_width must be an integer >= 12, not 8"),
])
def test_engine_checks(engine, kwargs, message):
    with pytest.raises(ValueError, match=message):
        engine(**kwargs)


def test_signatures():
    sig = AXI4Signature(addr_width=32, data_width=64, id_width=4)
    assert sig.members["wstrb"].shape == 8
    assert sig.members["rdata"].flow == In and sig.members["araddr"].flow == Out
    with pytest.raises(ValueError, match="AXI4-Lite addr_width must be an integer >= 4"):
        AXILiteSignature(addr_width=2)
