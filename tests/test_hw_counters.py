"""Tests of hw/counters.py in Amaranth's simulator, and its Verilog lint."""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.lib import data

from rsaccel.generate import lint
from rsaccel.hw.counters import EventCounters
from rsaccel.hw.pe import PEEvents
from rsaccel.sim.streams import run_simulation

LAYOUT = data.StructLayout({"strobe": 1, "count": range(8)})


def test_counts_saturate_and_clear():
    width, n = 6, 400
    dut = EventCounters(LAYOUT, width=width)
    rng = np.random.default_rng(1)
    strobe = rng.integers(0, 2, n)
    count = rng.integers(0, 8, n)
    clear = rng.random(n) < 0.01
    clear[250:] = False                     # leave time to saturate at the end
    seen = []

    async def bench(ctx):
        for k in range(n):
            ctx.set(dut.events, {"strobe": int(strobe[k]), "count": int(count[k])})
            ctx.set(dut.clear, bool(clear[k]))
            await ctx.tick()
            seen.append((ctx.get(dut.counts.strobe), ctx.get(dut.counts.count)))

    run_simulation(dut, bench)
    top = (1 << width) - 1
    want = {"strobe": 0, "count": 0}
    for k in range(n):
        for name, values in (("strobe", strobe), ("count", count)):
            want[name] = 0 if clear[k] else min(top, want[name] + int(values[k]))
        assert seen[k] == (want["strobe"], want["count"]), k
    assert seen[-1][1] == top               # the wide field did saturate


def test_pe_events_counters_lint(tmp_path):
    dut = EventCounters(PEEvents)
    assert dut.width == 32
    assert [name for name, _ in dut.counts.shape()] == [name for name, _ in dut.layout]
    path = tmp_path / "counters.v"
    path.write_text(verilog.convert(dut, name="rsaccel_counters"))
    lint(path, "rsaccel_counters")


def test_constructor_checks():
    with pytest.raises(TypeError, match="StructLayout, not 8"):
        EventCounters(8)
    with pytest.raises(TypeError, match="'s' must be an unsigned shape"):
        EventCounters(data.StructLayout({"s": data.ArrayLayout(1, 2)}))
    with pytest.raises(TypeError, match="unsigned shape"):
        EventCounters(data.StructLayout({"s": range(-2, 2)}))
    with pytest.raises(ValueError, match="width must be a positive integer, not 0"):
        EventCounters(LAYOUT, width=0)
    with pytest.raises(ValueError, match="'count' is 3 bits, wider than the counter width 2"):
        EventCounters(LAYOUT, width=2)
