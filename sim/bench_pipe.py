"""cocotb bench: stream words through a one-input, one-output pipeline (``i`` -> ``o``).

Used for the MAC and the output converter. The caller (``sim.pipe.stream_through``) writes the
input words and settings to a file, runs this bench, and checks the words that come out.
Inputs are offered with random gaps and outputs refused with random stalls, at the rates
given, so every handshake case occurs.

Environment: ``PIPE_VECTORS`` (npz: ``in_lo``, ``in_hi``, ``settings``), ``PIPE_OUT`` (npz
written: ``out_lo``, ``out_hi``, ``cycles``), ``PIPE_GAP`` and ``PIPE_STALL`` (rates, 0..1),
``PIPE_SEED``.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

MASK64 = (1 << 64) - 1


class TB:
    def __init__(self, dut):
        self.dut = dut
        Clock(dut.clk, 10, unit="ns").start()

    async def reset(self):
        dut = self.dut
        dut.rst.value = 1
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        for _ in range(2):
            await FallingEdge(dut.clk)
        dut.rst.value = 0


@cocotb.test()
async def stream_through(dut):
    data = np.load(os.environ["PIPE_VECTORS"])
    words = [int(lo) | int(hi) << 64 for lo, hi in zip(data["in_lo"], data["in_hi"])]
    settings = json.loads(str(data["settings"]))
    gap_rate = float(os.environ.get("PIPE_GAP", "0"))
    stall_rate = float(os.environ.get("PIPE_STALL", "0"))
    rng = np.random.default_rng(int(os.environ.get("PIPE_SEED", "0")))

    tb = TB(dut)
    for name, value in settings.items():
        getattr(dut, name).value = value
    await tb.reset()

    n = len(words)
    out = []
    sent = 0
    cycles = 0
    # Drive at the falling edge, then look at the settled signals to learn which transfers
    # the next rising edge makes.
    offer = rng.random(n + 1) >= gap_rate if gap_rate else None
    while len(out) < n:
        await FallingEdge(dut.clk)
        cycles += 1
        if cycles > 20 * n + 1000:
            raise TimeoutError(f"{len(out)} of {n} words out after {cycles} cycles")
        valid = sent < n and (offer is None or offer[sent] or rng.random() >= gap_rate)
        dut.i__valid.value = int(valid)
        if valid:
            dut.i__payload.value = words[sent]
        ready = not stall_rate or rng.random() >= stall_rate
        dut.o__ready.value = int(ready)
        await ReadOnly()
        if ready and dut.o__valid.value:
            out.append(int(dut.o__payload.value))
        if valid and dut.i__ready.value:
            sent += 1

    np.savez(os.environ["PIPE_OUT"],
             out_lo=np.array([w & MASK64 for w in out], dtype=np.uint64),
             out_hi=np.array([w >> 64 for w in out], dtype=np.uint64),
             cycles=cycles)
