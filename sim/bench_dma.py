"""cocotb bench of the ``dma`` top: copies through the read and write engines, window and
alignment refusals, and memory error responses, with random stalls on every AXI channel.

Environment: ``DMA_SEED``, ``DMA_TRANSFERS`` (random copies), ``DMA_PAUSE`` (0/1).
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from ..hw.dma import DmaError
from .memory import HostMemory

MEMORY = 1 << 20
WINDOW_BASE = 0x10000
WINDOW_SIZE = 0x40000


class TB:
    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.word = len(dut.read_data__payload) // 8
        Clock(dut.clk, 10, unit="ns").start()
        self.mem = HostMemory(dut, "bus_", MEMORY)
        for name in ("read_cmd__valid", "write_cmd__valid", "write_data__valid",
                     "read_data__ready", "clear", "cancel"):
            getattr(dut, name).value = 0
        dut.window_base.value = WINDOW_BASE
        dut.window_size.value = WINDOW_SIZE

    def pause(self):
        rng = self.rng

        def pattern():
            while True:
                yield rng.random() < 0.3
        self.mem.pause(pattern)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def command(self, prefix, addr, words):
        dut = self.dut
        getattr(dut, f"{prefix}_cmd__payload").value = addr | words << len(dut.window_base)
        getattr(dut, f"{prefix}_cmd__valid").value = 1
        while True:
            await RisingEdge(dut.clk)
            if getattr(dut, f"{prefix}_cmd__ready").value:
                break
        getattr(dut, f"{prefix}_cmd__valid").value = 0

    async def read(self, addr, words):
        """Read ``words`` words at ``addr`` through the read engine; return them."""
        dut = self.dut
        await self.command("read", addr, words)
        out = []
        while len(out) < words:
            ready = self.rng.random() < 0.8
            dut.read_data__ready.value = int(ready)
            await RisingEdge(dut.clk)
            if ready and dut.read_data__valid.value:
                out.append(int(dut.read_data__payload.value))
            if dut.read_error.value != DmaError.NONE.value:
                break
        dut.read_data__ready.value = 0
        return out

    async def write(self, addr, values):
        dut = self.dut
        await self.command("write", addr, len(values))
        k = 0
        while k < len(values):
            offer = self.rng.random() < 0.8
            dut.write_data__valid.value = int(offer)
            dut.write_data__payload.value = values[k]
            await RisingEdge(dut.clk)
            if offer and dut.write_data__ready.value:
                k += 1
        dut.write_data__valid.value = 0
        await self.idle()

    async def idle(self, limit=100_000):
        for _ in range(limit):
            await RisingEdge(self.dut.clk)
            if not (self.dut.read_busy.value or self.dut.write_busy.value):
                return
        raise TimeoutError("DMA still busy")

    async def clear(self):
        self.dut.clear.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.clear.value = 0
        await RisingEdge(self.dut.clk)


@cocotb.test()
async def copies(dut):
    """Random copies inside the window, page crossings and long transfers included."""
    tb = TB(dut, int(os.environ.get("DMA_SEED", "1")))
    if os.environ.get("DMA_PAUSE", "1") == "1":
        tb.pause()
    await tb.reset()
    w = tb.word
    tb.mem.write(WINDOW_BASE, bytes(tb.rng.getrandbits(8) for _ in range(WINDOW_SIZE)))
    for _ in range(int(os.environ.get("DMA_TRANSFERS", "20"))):
        words = tb.rng.choice([1, 2, 3, 15, 16, 17, tb.rng.randint(1, 700)])
        span = words * w
        src = WINDOW_BASE + tb.rng.randrange(0, (WINDOW_SIZE // 2 - span) // w) * w
        dst = WINDOW_BASE + WINDOW_SIZE // 2 + tb.rng.randrange(0, (WINDOW_SIZE // 2 - span) // w) * w
        values = await tb.read(src, words)
        assert len(values) == words
        expect = tb.mem.read(src, span)
        assert b"".join(v.to_bytes(w, "little") for v in values) == expect, f"read {src:#x}"
        await tb.write(dst, values)
        assert tb.mem.read(dst, span) == expect, f"copy {src:#x} -> {dst:#x} ({words} words)"
    assert dut.read_error.value == DmaError.NONE.value
    assert dut.write_error.value == DmaError.NONE.value
    for kind, address, length in tb.mem.accesses:
        assert WINDOW_BASE <= address and address + length <= WINDOW_BASE + WINDOW_SIZE, kind
        assert address // 4096 == (address + length - 1) // 4096, "burst crosses a 4 KiB page"


@cocotb.test()
async def refusals(dut):
    """Transfers outside the window, misaligned or empty are refused before any access."""
    tb = TB(dut, 2)
    await tb.reset()
    w = tb.word
    end = WINDOW_BASE + WINDOW_SIZE
    cases = [
        ("read", WINDOW_BASE - w, 1, DmaError.WINDOW),
        ("read", end - w, 2, DmaError.WINDOW),
        ("write", end, 1, DmaError.WINDOW),
        ("write", WINDOW_BASE - 64 * w, 65, DmaError.WINDOW),
        ("read", WINDOW_BASE + 1, 1, DmaError.ALIGN),
        ("write", WINDOW_BASE, 0, DmaError.ALIGN),
    ]
    for prefix, addr, words, code in cases:
        await tb.command(prefix, addr, words)
        await ClockCycles(dut.clk, 20)
        assert getattr(dut, f"{prefix}_error").value == code.value, (prefix, hex(addr), words)
        assert not getattr(dut, f"{prefix}_busy").value
        await tb.clear()
        assert getattr(dut, f"{prefix}_error").value == DmaError.NONE.value
    assert tb.mem.accesses == [], "a refused transfer touched memory"
    # The last word of the window is still reachable.
    assert len(await tb.read(end - w, 1)) == 1


@cocotb.test()
async def memory_errors(dut):
    """SLVERR from memory (inside the window but beyond the memory) is reported."""
    tb = TB(dut, 3)
    dut.window_size.value = 2 * MEMORY          # the window reaches past the memory
    await tb.reset()
    w = tb.word
    await tb.read(MEMORY - 2 * w, 4)
    await tb.idle()
    assert dut.read_error.value == DmaError.RESPONSE.value
    await tb.write(MEMORY - w, [1, 2])
    assert dut.write_error.value == DmaError.RESPONSE.value
