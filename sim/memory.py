"""Simulated host memory for cocotb benches: cocotbext-axi's AxiRam with strict bounds.

Unlike AxiRam, which wraps addresses modulo its size, an access beyond ``size`` fails and is
answered SLVERR, and every access is recorded so benches can check where the design went.
"""

from cocotbext.axi import AxiBus, AxiRam

__all__ = ["HostMemory"]


class HostMemory(AxiRam):
    """AXI4 memory of ``size`` bytes on the manager port ``prefix`` of ``dut``."""

    def __init__(self, dut, prefix, size, *, clock=None, reset=None):
        super().__init__(AxiBus.from_prefix(dut, prefix), clock or dut.clk,
                         reset if reset is not None else dut.rst, size=size)
        self.accesses = []          # (kind, address, length) in arrival order
        self.read_if._read = self._checked_read
        self.write_if._write = self._checked_write

    def _check(self, kind, address, length):
        self.accesses.append((kind, address, length))
        if address < 0 or address + length > self.size:
            raise IndexError(f"{kind} of {length} bytes at {address:#x} outside memory")

    async def _checked_read(self, address, length):
        self._check("read", address, length)
        return self.read(address, length)

    async def _checked_write(self, address, data):
        self._check("write", address, len(data))
        self.write(address, data)

    def pause(self, generator_factory):
        """Stall every channel with pause patterns from ``generator_factory()``."""
        for channel in (self.write_if.aw_channel, self.write_if.w_channel,
                        self.write_if.b_channel, self.read_if.ar_channel,
                        self.read_if.r_channel):
            channel.set_pause_generator(generator_factory())
