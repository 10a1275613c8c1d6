"""Tests of hw/mac.py in Amaranth's simulator; the cocotb runs on the generated Verilog are in
tests/test_sim_mac.py."""

import numpy as np
import pytest

from rsaccel.hw.mac import FMac, Fp32ToFp16
from rsaccel.sim import vectors
from rsaccel.sim.streams import run_simulation, stream_get, stream_put
from rsaccel.sw import numerics


def run_mac(a, b, c, *, stages, tag_bits=4, stall_rate=0.0, gap_rate=0.0, seed=0):
    """Push every (a, b, c) through an FMac; return the sums and tags in output order."""
    dut = FMac(stages=stages, tag_bits=tag_bits)
    rng = np.random.default_rng(seed)
    n = len(a)
    tags = rng.integers(0, 1 << tag_bits, n)
    gaps = np.where(rng.random(n) < gap_rate, rng.integers(1, 4, n), 0)
    stalls = np.where(rng.random(n) < stall_rate, rng.integers(1, 4, n), 0)
    out_sum, out_tag = [], []

    async def producer(ctx):
        for k in range(n):
            word = int(a[k]) | int(b[k]) << 16 | int(c[k]) << 32 | int(tags[k]) << 64
            await stream_put(ctx, dut.i, word, gap=int(gaps[k]))

    async def consumer(ctx):
        for k in range(n):
            word = await stream_get(ctx, dut.o, stall=int(stalls[k]))
            out_sum.append(word & 0xFFFFFFFF)
            out_tag.append(word >> 32)

    run_simulation(dut, producer, consumer, deadline_cycles=10 * n + 100)
    return np.array(out_sum, dtype=np.uint32), np.array(out_tag), tags


def check_mac(a, b, c, got):
    want = numerics.mac(a, b, c)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{bad.size} of {len(a)} mismatches, first: a={a[bad[0]]:#06x} b={b[bad[0]]:#06x} "
        f"c={c[bad[0]]:#010x} got {got[bad[0]]:#010x} want {want[bad[0]]:#010x}")


@pytest.mark.parametrize("stages", [1, 2, 3, 4, 5, 6, 7])
def test_mac_random_and_ties(stages):
    rng = np.random.default_rng(stages)
    a1, b1, c1 = vectors.mac_random(rng, 600)
    a2, b2, c2 = vectors.mac_ties(rng, 200)
    a, b, c = (np.concatenate(x) for x in ((a1, a2), (b1, b2), (c1, c2)))
    got, tags_out, tags_in = run_mac(a, b, c, stages=stages)
    check_mac(a, b, c, got)
    assert (tags_out == tags_in).all()


def test_mac_specials():
    a, b, c = vectors.mac_directed()
    pick = np.random.default_rng(7).choice(len(a), 3000, replace=False)
    a, b, c = a[pick], b[pick], c[pick]
    got, _, _ = run_mac(a, b, c, stages=3)
    check_mac(a, b, c, got)


def test_mac_backpressure_keeps_order_and_tags():
    rng = np.random.default_rng(11)
    a, b, c = vectors.mac_random(rng, 400)
    got, tags_out, tags_in = run_mac(a, b, c, stages=4, stall_rate=0.3, gap_rate=0.3, seed=3)
    check_mac(a, b, c, got)
    assert (tags_out == tags_in).all()


def test_mac_throughput_one_per_cycle():
    """Fed and drained without stalls, n operations take n + stages cycles."""
    stages, n = 3, 50
    dut = FMac(stages=stages, tag_bits=1)
    cycles = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        seen = 0
        for cycle in range(n + stages + 5):
            ctx.set(dut.i.valid, cycle < n)
            *_, valid = await ctx.tick().sample(dut.o.valid)
            seen += valid
            if seen == n:
                cycles.append(cycle + 1)
                return

    run_simulation(dut, bench)
    assert cycles == [n + stages]


def test_mac_rejects_bad_parameters():
    with pytest.raises(ValueError, match="stages"):
        FMac(stages=0)
    with pytest.raises(ValueError, match="tag_bits"):
        FMac(tag_bits=0)


@pytest.mark.parametrize("relu", [False, True])
def test_converter(relu):
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.choice(vectors.cvt_directed(), 2500, replace=False),
                        vectors.cvt_random(rng, 500)])
    dut = Fp32ToFp16()
    got = []

    async def producer(ctx):
        ctx.set(dut.relu, relu)
        for value in x:
            await stream_put(ctx, dut.i, int(value))

    async def consumer(ctx):
        for k in range(len(x)):
            got.append(await stream_get(ctx, dut.o, stall=k % 3 == 0))

    run_simulation(dut, producer, consumer)
    want = numerics.to_fp16(x, relu=relu)
    got = np.array(got, dtype=np.uint16)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} mismatches, first: {x[bad[0]]:#010x} -> "
                           f"{got[bad[0]]:#06x}, want {want[bad[0]]:#06x}")
