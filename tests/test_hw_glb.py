"""Tests of hw/glb.py in Amaranth's simulator: banked reads and writes from several ports
under random backpressure, throughput, fairness, and refused addresses."""

import numpy as np
import pytest

from rsaccel.hw.glb import GlobalBuffer
from rsaccel.hw.plumbing import RoundRobin
from rsaccel.sim.streams import run_simulation, stream_get, stream_put


def make(read_ports=2, write_ports=2, banks=4):
    return GlobalBuffer(banks=banks, depth=16, word_bits=64, read_ports=read_ports,
                        write_ports=write_ports)


@pytest.mark.parametrize("banks", [4, 3])
def test_random_traffic_matches_a_memory_model(banks):
    dut = make(banks=banks)
    rng = np.random.default_rng(1)
    words = dut.words
    # Each write port owns half of the addresses, so the final contents are well defined.
    plans = [[(int(a), int(rng.integers(0, 1 << 63))) for a in rng.permutation(words)
              if a % 2 == k] for k in range(2)]
    written = {}
    results = [[], []]

    def writer(k):
        async def bench(ctx):
            for addr, value in plans[k]:
                await stream_put(ctx, dut.write[k], addr | value << dut.addr_width,
                                 gap=int(rng.integers(0, 2)))
                written[addr] = value
        return bench

    def reader(k):
        async def issue(ctx):
            await ctx.tick().repeat(2 * words + 20)     # after every write has landed
            for addr in range(k, words, 2):
                await stream_put(ctx, dut.read_addr[k], addr)

        async def collect(ctx):
            for _ in range(words // 2):
                results[k].append(await stream_get(ctx, dut.read_data[k],
                                                   stall=int(rng.integers(0, 3))))
        return issue, collect

    benches = [writer(0), writer(1), *reader(0), *reader(1)]
    run_simulation(dut, *benches, deadline_cycles=20 * words)
    for k in range(2):
        assert results[k] == [written[a] for a in range(k, words, 2)]


def test_one_word_per_cycle_per_port():
    dut = make(read_ports=2, write_ports=1)
    n = 40
    done = []

    async def issue(ctx):
        ctx.set(dut.read_addr[0].valid, 1)
        for addr in range(n):
            ctx.set(dut.read_addr[0].payload, addr % dut.words)
            await ctx.tick().until(dut.read_addr[0].ready)
        ctx.set(dut.read_addr[0].valid, 0)

    async def drain(ctx):
        ctx.set(dut.read_data[0].ready, 1)
        cycles = 0
        got = 0
        while got < n:
            *_, valid = await ctx.tick().sample(dut.read_data[0].valid)
            cycles += 1
            got += valid
        done.append(cycles)

    run_simulation(dut, issue, drain)
    assert done[0] <= n + 4


def test_round_robin_shares_a_bank_fairly():
    dut = make(read_ports=1, write_ports=3)
    taken = [0, 0, 0]

    async def hammer(ctx):
        for k in range(3):
            ctx.set(dut.write[k].valid, 1)
            ctx.set(dut.write[k].payload.addr, k)         # all in bank 0
        await ctx.tick().repeat(300)
        for k in range(3):
            ctx.set(dut.write[k].valid, 0)

    async def count(ctx):
        async for _, _, strobes in ctx.tick().sample(dut.writes):
            for k in range(3):
                taken[k] += strobes >> k & 1

    run_simulation(dut, hammer, background=[count])
    assert sum(taken) >= 298 and max(taken) - min(taken) <= 1


def test_outside_addresses_set_the_error_flag():
    dut = make(banks=3)         # 48 words: addresses 48 to 63 lie outside
    seen = []

    async def bench(ctx):
        await stream_put(ctx, dut.write[0], dut.words + 3 | 7 << dut.addr_width)
        await ctx.tick()
        seen.append(ctx.get(dut.error))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        seen.append(ctx.get(dut.error))
        await stream_put(ctx, dut.read_addr[1], dut.words + 1)
        seen.append(await stream_get(ctx, dut.read_data[1]))
        seen.append(ctx.get(dut.error))

    run_simulation(dut, bench)
    assert seen == [1, 0, 0, 1]


def test_round_robin_alone():
    dut = RoundRobin(4)
    grants = []

    async def bench(ctx):
        ctx.set(dut.advance, 1)
        ctx.set(dut.requests, 0b1011)
        for _ in range(6):
            grants.append(ctx.get(dut.grant))
            await ctx.tick()
        ctx.set(dut.requests, 0)
        grants.append(ctx.get(dut.grant))

    run_simulation(dut, bench)
    assert grants == [0b0001, 0b0010, 0b1000, 0b0001, 0b0010, 0b1000, 0]


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 12}, "bank depth must be a power of two, not 12"),
    ({"banks": 0}, "banks must be a positive integer, not 0"),
    ({"read_ports": 0}, "read_ports must be a positive integer"),
])
def test_constructor_checks(kwargs, message):
    args = {"banks": 2, "depth": 16, "word_bits": 64, "read_ports": 1, "write_ports": 1}
    with pytest.raises(ValueError, match=message):
        GlobalBuffer(**{**args, **kwargs})
