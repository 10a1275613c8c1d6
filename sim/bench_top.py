"""cocotb bench of the accelerator top: runs a script of host actions (``sim.top_session``).

Two memories: on the plain top, cocotbext-axi's AxiRam (strict bounds, ``sim.memory``) on
``m_axi``, with random stalls on every channel when asked, and the clock from cocotb; in the HDL
harness (``sim/hdl/harness.v``), the harness's memory and clock, loaded and dumped through
files, so that no Python runs while the accelerator works. Registers go through an
AxiLiteMaster on ``s_axil`` in both.
Environment: ``TOP_SCRIPT`` (pickle: memory size, pause rate, seed, harness settings and the
steps), ``TOP_OUT`` (pickle: one result per step) and optionally ``TOP_PROGRESS`` (a file the
cycles waited so far are written to during ``wait_irq``).
"""

import os
import pickle
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
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

    async def wait_some(self, most):
        """Let up to ``most`` cycles pass, fewer when ``irq`` rises (at most 2**16 at a time)."""
        await First(RisingEdge(self.dut.irq), Timer(min(most, 1 << 16) * PERIOD_NS, "ns"))

    @property
    def cycle(self):
        """Clock cycles since time 0 (no coroutine per cycle: Python per cycle is slow)."""
        return int(get_sim_time("ns")) // PERIOD_NS

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
            # so far go to the file ``TOP_PROGRESS`` names (if any) now and then.
            (limit,) = args
            start = self.cycle
            progress = os.environ.get("TOP_PROGRESS")
            while not self.dut.irq.value:
                if self.cycle - start >= limit:
                    return None
                await self.wait_some(limit - (self.cycle - start))
                if progress:
                    _write(progress, str(self.cycle - start))
            return self.cycle - start
        if kind == "fault":
            return None
        if kind == "accesses":
            out, self.mem.accesses = self.mem.accesses, []
            return out
        if kind == "cycle":
            return self.cycle
        if kind == "time":
            return time.monotonic()
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


class HarnessTB(TB):
    """The accelerator in the HDL harness: its memory is written and read through files."""

    def __init__(self, dut, job):
        self.dut, self.mem = dut, None
        self.word = job["word_bytes"]
        for name in ("mem_load", "mem_dump", "dump_first", "dump_last"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        dut.bw_num.value, dut.bw_den.value = job["bandwidth"]
        dut.latency.value = job["latency"]
        self.regs = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)

    async def step(self, kind, *args):
        if kind == "mem_write":
            addr, data = args
            first, start = divmod(addr, self.word)
            last = (addr + len(data) - 1) // self.word
            words = bytearray(self.word * (last - first + 1))
            if start:           # partial words at the ends keep the bytes around them
                words[:self.word] = await self.read_words(first, first)
            if (addr + len(data)) % self.word:
                words[-self.word:] = await self.read_words(last, last)
            words[start:start + len(data)] = data
            # One word a line, most significant byte first.
            text = np.frombuffer(bytes(words), "u1").reshape(-1, self.word)[:, ::-1].tobytes().hex()
            n = 2 * self.word
            Path("mem_load.hex").write_text(
                f"@{first:x}\n" + "\n".join(text[i:i + n] for i in range(0, len(text), n)) + "\n")
            await self.pulse(self.dut.mem_load)
            return None
        if kind == "mem_read":
            addr, length = args
            first = addr // self.word
            data = await self.read_words(first, (addr + length - 1) // self.word)
            return data[addr - first * self.word:][:length]
        if kind == "fault":
            return int(self.dut.fault_addr.value) if self.dut.fault.value else None
        return await super().step(kind, *args)

    async def pulse(self, signal):
        signal.value = 1
        await Timer(1, "ns")
        signal.value = 0
        await Timer(1, "ns")

    async def read_words(self, first, last):
        """Return memory words ``first`` to ``last`` (inclusive) as bytes."""
        self.dut.dump_first.value, self.dut.dump_last.value = first, last
        await self.pulse(self.dut.mem_dump)
        hexes = [line for line in map(str.strip, Path("mem_dump.hex").read_text().splitlines())
                 if line and not line.startswith(("//", "@"))]
        raw = bytes.fromhex("".join(line.rjust(2 * self.word, "0") for line in hexes))
        return np.frombuffer(raw, "u1").reshape(-1, self.word)[:, ::-1].tobytes()


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
    tb = HarnessTB(dut, job) if job.get("harness") else TB(dut, job)
    await tb.reset()
    results = [await tb.step(*step) for step in job["steps"]]
    _dump(os.environ["TOP_OUT"], results)
