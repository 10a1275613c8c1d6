"""Integration of hw/pe.py and hw/noc.py: real PEs in a PEArray run Row-Stationary PE sets
(DESIGN.md: filter rows across PE rows, ifmap rows along diagonals, psums up the columns and
out through the GON), checked bit for bit against the PE model chained in the same order.
Amaranth's simulator on the tiny preset here; tests/test_sim_array.py runs the Verilog."""

import gc

import numpy as np
import pytest

from rsaccel import preset
from rsaccel.hw.noc import PEArray
from rsaccel.hw.pe import PE
from rsaccel.sim.array_bench import rs_workload
from rsaccel.sim.noc_bench import unpack
from rsaccel.sim.streams import run_simulation, stream_put


def run_array(config, work, *, deadline=30_000):
    array = PEArray(config, lambda r, c: PE(
        filter_depth=config.filter_spad_depth, ifmap_depth=config.ifmap_spad_depth,
        psum_depth=config.psum_spad_depth, mac_stages=config.mac_stages))
    gon_layout = array.gon.payload.shape()
    received = {}
    want = sum(len(v) for v in work.expected.values())

    async def configure(ctx):
        for word in work.noc_cfg:
            await stream_put(ctx, array.cfg, word)
        for (r, c), word in work.pe_cfg.items():
            await stream_put(ctx, array.pes[r][c].cfg, word)

    def sender(stream, words):
        async def bench(ctx):
            await ctx.tick().repeat(len(work.noc_cfg) + 2)
            for word in words:
                await stream_put(ctx, stream, word)
        return bench

    async def collect(ctx):
        ctx.set(array.gon.ready, 1)
        while sum(len(v) for v in received.values()) < want:
            payload, = await ctx.tick().sample(array.gon.payload.as_value()).until(
                array.gon.valid)
            packet = unpack(gon_layout, payload)
            received.setdefault((packet["src_row"], packet["src_col"]), []).extend(
                packet["data"][:packet["count"]])

    run_simulation(array, configure, sender(array.filter, work.filter),
                   sender(array.ifmap, work.ifmap), collect, deadline_cycles=deadline)
    return received


@pytest.mark.parametrize("kwargs", [
    {"R": 3, "e": 4, "U": 1, "F": 7},               # one set filling the array
    {"R": 3, "e": 4, "U": 2, "F": 5},               # stride 2
    {"R": 1, "e": 4, "r": 3, "F": 4, "S": 2},       # three channel sets chained up a column
    {"R": 1, "e": 2, "t": 6, "F": 3},               # six filter sets sharing one ifmap
])
def test_rs_sets_on_real_pes(kwargs):
    config = preset("tiny")
    work = rs_workload(config, **kwargs, seed=len(kwargs))
    received = run_array(config, work)
    assert set(received) == set(work.expected)
    for source, want in work.expected.items():
        assert np.array_equal(np.array(received[source], np.uint32), want), source


# The simulation is abandoned at the deadline; its testbench coroutines are then closed
# mid-await, which Python reports as unraisable exceptions.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_rows_sent_one_after_another_deadlock():
    """Why the workload interleaves ifmap rows: sent whole, one row after the other, a diagonal
    waits on psums from the diagonal below, whose row is queued behind it (once more psums
    than the PEs' psum FIFOs hold are held up)."""
    config = preset("tiny")
    work = rs_workload(config, R=3, e=4, F=30)
    tags = [w & ((1 << 2 * config.noc_id_bits) - 1) for w in work.ifmap]
    work.ifmap = [w for _, w in sorted(zip(tags, work.ifmap), key=lambda tw: tw[0])]
    with pytest.raises(TimeoutError):
        run_array(config, work, deadline=5_000)
    gc.collect()                # close the abandoned coroutines within this test
