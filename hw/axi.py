"""AMBA AXI4 and AXI4-Lite signatures, named as cocotbext-axi and most IP expect them.

A member flows out of the manager (master); ``.flip()`` gives the subordinate's side. With
Amaranth's flattened port names a bus called ``m_axi`` appears as ``m_axi__awaddr`` etc.
"""

from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXI4Signature", "AXILiteSignature", "Burst", "Resp"]


class Resp(enum.Enum, shape=2):
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class Burst(enum.Enum, shape=2):
    FIXED = 0
    INCR = 1
    WRAP = 2


class AXI4Signature(wiring.Signature):
    """Full AXI4 (manager side): five channels, bursts, IDs, write strobes."""

    def __init__(self, *, addr_width, data_width, id_width):
        for name, value, lo in (("addr_width", addr_width, 12), ("data_width", data_width, 8),
                                ("id_width", id_width, 1)):
            if not isinstance(value, int) or value < lo:
                raise ValueError(f"AXI4 {name} must be an integer >= {lo}, not {value!r}")
        if data_width & (data_width - 1) or data_width % 8:
            raise ValueError(f"AXI4 data_width must be a power of two bytes, not {data_width!r}")
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__({
            "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8),
            "awsize": Out(3), "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8),
            "arsize": Out(3), "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })


class AXILiteSignature(wiring.Signature):
    """AXI4-Lite (manager side), 32-bit data."""

    def __init__(self, *, addr_width):
        if not isinstance(addr_width, int) or addr_width < 4:
            raise ValueError(f"AXI4-Lite addr_width must be an integer >= 4, not {addr_width!r}")
        self.addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })
