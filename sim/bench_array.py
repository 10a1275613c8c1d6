"""cocotb bench of the ``array`` top: run an RS workload (``sim/array_bench.py``) on real PEs.

The NoC configuration, then every PE's configuration, then the filter and ifmap packets
(concurrently); GON packets are collected (refused at random at rate ``ARRAY_GAP``) until the
expected number of packets is out. Environment: ``ARRAY_VECTORS`` (npz in), ``ARRAY_OUT``
(npz out: raw GON packet words and the cycle count), ``ARRAY_GAP``, ``ARRAY_SEED``.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly


async def send(dut, prefix, words):
    """Offer ``words`` back to back on stream ``prefix``, each until it is taken."""
    valid, payload, ready = (getattr(dut, f"{prefix}__{n}") for n in ("valid", "payload", "ready"))
    await FallingEdge(dut.clk)
    for word in words:
        valid.value = 1
        payload.value = int(word)
        while True:
            await ReadOnly()
            taken = bool(ready.value)
            await FallingEdge(dut.clk)
            if taken:
                break
    valid.value = 0


@cocotb.test()
async def run_workload(dut):
    data = np.load(os.environ["ARRAY_VECTORS"], allow_pickle=True)
    rng = random.Random(int(os.environ.get("ARRAY_SEED", "0")))
    gap = float(os.environ.get("ARRAY_GAP", "0"))
    Clock(dut.clk, 10, unit="ns").start()
    for name in ("cfg__valid", "filter__valid", "ifmap__valid", "psum__valid", "gon__ready",
                 "pe_cfg_valid"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0

    await send(dut, "cfg", data["noc_cfg"])
    width = len(dut.pe_cfg_data) // len(dut.pe_cfg_valid)
    word, mask = 0, 0
    for lane, cfg in zip(data["pe_lane"], data["pe_cfg"]):
        word |= int(cfg) << (int(lane) * width)
        mask |= 1 << int(lane)
    await FallingEdge(dut.clk)
    dut.pe_cfg_data.value = word
    while mask:
        dut.pe_cfg_valid.value = mask
        await ReadOnly()
        mask &= ~int(dut.pe_cfg_ready.value)
        await FallingEdge(dut.clk)
    dut.pe_cfg_valid.value = 0

    cocotb.start_soon(send(dut, "filter", data["filter"]))
    cocotb.start_soon(send(dut, "ifmap", data["ifmap"]))
    want, packets, cycles = int(data["packets"]), [], 0
    while len(packets) < want:
        await FallingEdge(dut.clk)
        cycles += 1
        if cycles > 200_000:
            raise TimeoutError(f"{len(packets)} of {want} GON packets after {cycles} cycles")
        ready = rng.random() >= gap
        dut.gon__ready.value = int(ready)
        await ReadOnly()
        if ready and dut.gon__valid.value:
            packets.append(int(dut.gon__payload.value))
    np.savez(os.environ["ARRAY_OUT"], packets=np.array(packets, dtype=object), cycles=cycles)
