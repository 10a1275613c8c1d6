"""cocotb bench of the accelerator top: runs a script of host actions (``sim.top_session``).

The memory is cocotbext-axi's AxiRam (strict bounds, ``sim.memory``) on ``m_axi``, with random
stalls on every channel when asked; registers go through an AxiLiteMaster on ``s_axil``.
Environment: ``TOP_SCRIPT`` (pickle: memory size, pause rate, seed and the steps),
``TOP_OUT`` (pickle: one result per step) and optionally ``TOP_PROGRESS`` (a file the cycles
waited so far are written to during ``wait_irq``).
"""

import os
import pickle
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from .memory import HostMemory

PERIOD_NS = 10


class TB:
    def __init__(self, dut, job):
        self.dut = dut
        self.rng = random.Random(job["seed"])
        dut.rst.value = 1               # before the first edge: Icarus starts inputs at X
        Clock(dut.clk, PERIOD_NS, unit="ns").start()
        self.mem = HostMemory(dut, "m_axi_", job["memory"])
        self.regs = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        rate = job["pause"]
        if rate:
            rng = self.rng

            def pattern():
                while True:
                    yield rng.random() < rate
            self.mem.pause(pattern)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    @property
    def cycle(self):
        """Clock cycles since time 0 (no coroutine per cycle: Python per cycle is slow)."""
        return get_sim_time("ns") // PERIOD_NS

    async def step(self, kind, *args):
        """Run one step; return its result."""
        if kind == "mem_write":
            addr, data = args
            self.mem.write(addr, data)
            return None
        if kind == "mem_read":
            addr, length = args
            return bytes(self.mem.read(addr, length))
        if kind == "reg_write":
            addr, value = args
            resp = await self.regs.write(addr, int(value).to_bytes(4, "little"))
            return int(resp.resp)
        if kind == "reg_read":
            (addr,) = args
            resp = await self.regs.read(addr, 4)
            return int.from_bytes(resp.data, "little"), int(resp.resp)
        if kind == "cycles":
            await ClockCycles(self.dut.clk, args[0])
            return self.cycle
        if kind == "wait_irq":
            # Returns the cycles waited, or None when ``irq`` did not rise in time. The cycles
            # so far go to the file ``TOP_PROGRESS`` names (if any) every 2**14 cycles.
            (limit,) = args
            start = self.cycle
            progress = os.environ.get("TOP_PROGRESS")
            while not self.dut.irq.value:
                if self.cycle - start >= limit:
                    return None
                await ClockCycles(self.dut.clk, 16)
                if progress and (self.cycle - start) % (1 << 14) < 16:
                    _write(progress, str(self.cycle - start))
            return self.cycle - start
        if kind == "accesses":
            out, self.mem.accesses = self.mem.accesses, []
            return out
        if kind == "cycle":
            return self.cycle
        if kind == "peek":
            # Internal signals by hierarchical name (builds with waves make them visible).
            out = {}
            for path in args:
                handle = self.dut
                for part in path.split("."):
                    handle = getattr(handle, part)
                out[path] = str(handle.value)
            return out
        raise ValueError(f"unknown step {kind!r}")


def _load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _dump(path, value):
    with open(path, "wb") as f:
        pickle.dump(value, f)


@cocotb.test()
async def run_script(dut):
    job = _load(os.environ["TOP_SCRIPT"])
    tb = TB(dut, job)
    await tb.reset()
    results = [await tb.step(*step) for step in job["steps"]]
    _dump(os.environ["TOP_OUT"], results)
