"""Integration of hw/pe.py and hw/noc.py: real PEs in a PEArray run a Row-Stationary PE set
(DESIGN.md: filter rows across PE rows, ifmap rows along diagonals, psums up the columns and
out through the GON), checked bit for bit against the PE model chained in the same order."""

import numpy as np
import pytest

from rsaccel import preset
from rsaccel.hw.noc import PEArray
from rsaccel.hw.pe import PE
from rsaccel.sim.noc_bench import gin_word, unpack
from rsaccel.sim.pe_bench import random_values16
from rsaccel.sim.streams import run_simulation, stream_put
from rsaccel.sw import pe_model
from rsaccel.sw.noc_ids import noc_map, rs_placement


def chunks(values, size):
    return [values[k:k + size] for k in range(0, len(values), size)]


@pytest.mark.parametrize("U", [1, 2])
def test_rs_set_on_real_pes(U):
    config = preset("tiny")                     # 3 x 4 PEs: one 3 x 4 set, R = 3, e = 4
    R, e, p, q, S, F = 3, config.cols, 2, 2, 3, 7
    W = (F - 1) * U + S
    H = (e - 1) * U + R                         # ifmap rows the set uses
    rng = np.random.default_rng(U)
    weights = random_values16(rng, (p, q, R, S))
    ifmap = random_values16(rng, (q, H, W))

    # Reference: each output row j is the column of PEs (i, j), i = 0..R-1, chained.
    want = {}
    for j in range(e):
        acc = None
        for i in range(R):
            acc = pe_model.run_primitive(weights[:, :, i, :], ifmap[:, j * U + i, :], acc, U)
        want[j] = acc.ravel()                   # (x, f) order

    sets, segments = rs_placement(config, R=R, e=e, U=U)
    nm = noc_map(config, sets, segments)
    array = PEArray(config, lambda r, c: PE(
        filter_depth=config.filter_spad_depth, ifmap_depth=config.ifmap_spad_depth,
        psum_depth=config.psum_spad_depth, mac_stages=config.mac_stages))
    vf, vi = config.filter_values_per_packet, config.ifmap_values_per_packet
    layout = PE(filter_depth=config.filter_spad_depth, ifmap_depth=config.ifmap_spad_depth,
                psum_depth=config.psum_spad_depth, mac_stages=config.mac_stages).config_layout
    received = {j: [] for j in range(e)}
    gon_layout = array.gon.payload.shape()

    async def configure(ctx):
        for word in nm.writes():
            await stream_put(ctx, array.cfg, word)
        for r in range(R):
            for c in range(e):
                pe = array.pes[r][c]
                await stream_put(ctx, pe.cfg, layout.const({
                    "S": S, "U": U, "p": p, "q": q, "F": F, "load_filter": 1,
                    "use_psum_in": int(r > 0)}).as_bits())

    async def filters(ctx):
        await ctx.tick().repeat(len(nm.writes()) + 2)
        for i in range(R):
            row = weights[:, :, i, :].transpose(2, 1, 0).ravel()      # (s * q + c) * p + f
            for part in chunks([int(v) for v in row], vf):
                await stream_put(ctx, array.filter, gin_word(config, "filter",
                                                             nm.filter_tag(0, i), part))

    async def ifmaps(ctx):
        await ctx.tick().repeat(len(nm.writes()) + 2)
        # Rows are interleaved packet by packet: a diagonal can only advance as fast as the
        # psums from the diagonal below it, so sending one whole row first would deadlock.
        rows = {h: chunks([int(v) for v in ifmap[:, h, :].T.ravel()], vi)
                for h in sets[0].ifmap_rows}
        for k in range(max(len(parts) for parts in rows.values())):
            for h, parts in rows.items():
                if k < len(parts):
                    await stream_put(ctx, array.ifmap, gin_word(config, "ifmap",
                                                                nm.ifmap_tag(0, h), parts[k]))

    async def collect(ctx):
        ctx.set(array.gon.ready, 1)
        while sum(len(v) for v in received.values()) < e * F * p:
            payload, = await ctx.tick().sample(array.gon.payload.as_value()).until(
                array.gon.valid)
            packet = unpack(gon_layout, payload)
            col = packet["src_col"]
            assert (packet["src_row"], col) == nm.gon_source(0, col)
            received[col] += packet["data"][:packet["count"]]

    run_simulation(array, configure, filters, ifmaps, collect, deadline_cycles=20_000)
    for j in range(e):
        assert np.array_equal(np.array(received[j], np.uint32), want[j]), f"output row {j}"
