"""cocotb bench: run primitives through one PE (top ``pe``) and record what comes out.

The caller (``sim.pe_bench.run_cocotb``) writes the words of every input stream to a file,
runs this bench, and checks the psums and counts it writes back. Each input stream offers its
next word after a random gap (rate ``PE_GAP``) and holds it until taken; ``psum_out`` is
refused at random (rate ``PE_STALL``), so every handshake case occurs.

Environment: ``PE_VECTORS`` (npz: ``cfg``, ``filter``, ``ifmap``, ``psum_in``, ``expected``, ``macs``),
``PE_OUT`` (npz written: ``out``, ``events`` (total per strobe, ``hw.pe.PEEvents`` order),
``cfg_cycles`` (cycle of each cfg transfer), ``last_cycles`` (cycle of each primitive's last
psum), ``done_cycle``, ``cycles``), ``PE_GAP``,
``PE_STALL``, ``PE_SEED``.
"""

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from .pe_bench import EVENT_NAMES

INPUTS = ("cfg", "filter_in", "ifmap_in", "psum_in")


class Source:
    """Offer words on one input stream: after a random gap, held until taken."""

    def __init__(self, dut, name, words, gap_rate, rng):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.words = [int(w) for w in words]
        self.gap_rate = gap_rate
        self.rng = rng
        self.sent = 0
        self.offered = False
        self.valid.value = 0

    def drive(self):
        if not self.offered and self.sent < len(self.words):
            self.offered = not self.gap_rate or self.rng.random() >= self.gap_rate
            if self.offered:
                self.payload.value = self.words[self.sent]
        self.valid.value = int(self.offered)

    def sample(self):
        """Return whether the coming edge transfers a word (call in the ReadOnly phase)."""
        if self.offered and self.ready.value:
            self.sent += 1
            self.offered = False
            return True
        return False


@cocotb.test()
async def run_primitives(dut):
    data = np.load(os.environ["PE_VECTORS"])
    gap_rate = float(os.environ.get("PE_GAP", "0"))
    stall_rate = float(os.environ.get("PE_STALL", "0"))
    rng = np.random.default_rng(int(os.environ.get("PE_SEED", "0")))
    n_out = len(data["expected"])

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    sources = [Source(dut, name, data[key], gap_rate, rng)
               for name, key in zip(INPUTS, ("cfg", "filter", "ifmap", "psum_in"))]
    dut.psum_out__ready.value = 0
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0

    events = np.zeros(len(EVENT_NAMES), dtype=np.int64)
    out, cfg_cycles, last_cycles = [], [], []
    # Generous: every MAC may wait for the whole MAC pipeline, every word for a few gaps.
    limit = 1000 + 20 * (sum(len(s.words) for s in sources) + n_out) + 10 * int(data["macs"])
    cycle = 0
    done_cycle = None
    while done_cycle is None:
        await FallingEdge(dut.clk)
        cycle += 1
        if cycle > limit:
            raise TimeoutError(f"{len(out)} of {n_out} psums out after {cycle} cycles; "
                               f"inputs taken: {[s.sent for s in sources]}")
        for source in sources:
            source.drive()
        ready = not stall_rate or rng.random() >= stall_rate
        dut.psum_out__ready.value = int(ready)
        await ReadOnly()
        if len(out) == n_out and dut.idle.value and sources[0].sent == len(sources[0].words):
            done_cycle = cycle
        if sources[0].sample():
            cfg_cycles.append(cycle)
        for source in sources[1:]:
            source.sample()
        if ready and dut.psum_out__valid.value:
            word = int(dut.psum_out__payload.value)
            out.append(word)
            if word >> 32:                                  # PsumOut.last
                last_cycles.append(cycle)
        bits = int(dut.events.value)
        if bits:
            events += [(bits >> k) & 1 for k in range(len(EVENT_NAMES))]

    np.savez(os.environ["PE_OUT"], out=np.array(out, dtype=np.uint64), events=events,
             cfg_cycles=np.array(cfg_cycles, dtype=np.int64),
             last_cycles=np.array(last_cycles, dtype=np.int64), done_cycle=done_cycle,
             cycles=cycle)
