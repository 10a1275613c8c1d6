"""Tests of hw/pe.py in Amaranth's simulator, bit for bit against sw/pe_model.py; the cocotb runs
on the generated Verilog are in tests/test_sim_pe.py."""

import numpy as np
import pytest
from amaranth import Value

from rsaccel.hw.pe import PE, PEConfig, filter_group, pe_limits
from rsaccel.sim.pe_bench import (
    EVENT_NAMES,
    Primitive,
    expected_events,
    primitive_cycles,
    random_primitives,
    random_values16,
    stimulus,
)
from rsaccel.sim.streams import run_simulation, stream_get, stream_put
from rsaccel.sw import pe_model

TINY = {"filter_depth": 32, "ifmap_depth": 8, "psum_depth": 8}


def simulate(pe, prims, *, gap=0.0, stall=0.0, seed=0):
    """Run ``prims`` through ``pe`` with random input gaps and output stalls (rates).

    Returns the psums, the expected psums, event totals, the cycle of each cfg transfer, the
    cycles in which a MAC issued and the first idle cycle after the last psum.
    """
    rng = np.random.default_rng(seed)
    stim = stimulus(pe.config_layout, prims)
    n_out = len(stim["expected"])
    out, cfg_cycles, mac_cycles = [], [], []
    events = np.zeros(len(EVENT_NAMES), dtype=np.int64)
    done = []

    def delays(n, rate):
        return np.where(rng.random(n) < rate, rng.integers(1, 5, n), 0) if rate else [0] * n

    def producer(stream, words):
        waits = delays(len(words) + 1, gap)

        async def bench(ctx):
            if waits[-1]:
                await ctx.tick().repeat(int(waits[-1]))
            for k, word in enumerate(words):
                await stream_put(ctx, stream, int(word), gap=int(waits[k]))
        return bench

    stalls = delays(n_out, stall)

    async def consumer(ctx):
        for k in range(n_out):
            out.append(await stream_get(ctx, pe.psum_out, stall=int(stalls[k])))

    async def monitor(ctx):
        cycle = 0
        while True:
            *_, ev, idle, valid, ready = await ctx.tick().sample(
                pe.events.as_value(), pe.idle, pe.cfg.valid, pe.cfg.ready)
            if len(out) == n_out and idle and len(cfg_cycles) == len(prims):
                done.append(cycle)
                return
            if valid and ready:
                cfg_cycles.append(cycle)
            if ev:
                events[:] += [(ev >> k) & 1 for k in range(len(EVENT_NAMES))]
                if ev & 1 << EVENT_NAMES.index("mac_busy"):
                    mac_cycles.append(cycle)
            cycle += 1

    benches = [producer(pe.cfg, stim["cfg"]), producer(pe.filter_in, stim["filter"]),
               producer(pe.ifmap_in, stim["ifmap"]), producer(pe.psum_in, stim["psum_in"]),
               consumer, monitor]
    deadline = 2000 + 30 * (int(stim["macs"]) + len(stim["ifmap"]) + len(stim["filter"]))
    run_simulation(pe, *benches, deadline_cycles=deadline)
    return {"out": np.array(out, dtype=np.uint64), "expected": stim["expected"],
            "events": dict(zip(EVENT_NAMES, events.tolist())), "cfg_cycles": cfg_cycles,
            "mac_cycles": mac_cycles, "done": done[0]}


def assert_exact(result):
    out, want = result["out"], result["expected"]
    assert len(out) == len(want)
    bad = np.flatnonzero(out != want)
    assert bad.size == 0, (f"{bad.size} of {len(want)} psums differ, first #{bad[0]}: "
                           f"got {out[bad[0]]:#010x}, want {want[bad[0]]:#010x}")


def assert_event_totals(result, prims):
    events = result["events"]
    for name, value in expected_events(prims).items():
        assert events[name] == value, name
    psums = sum(prim.F * prim.p for prim in prims)
    assert events["psum_read"] <= events["mac_busy"] - psums     # first terms read none
    assert events["filter_load"] >= events["filter_write"]


def make(prims_spec, rng, *, psum=False):
    """Return primitives from ``(p, q, S, U, F, load)`` tuples (load False: reuse weights)."""
    prims = []
    for p, q, S, U, F, load in prims_spec:
        weights = random_values16(rng, (p, q, S)) if load else prims[-1].weights
        ifmap = random_values16(rng, (q, pe_model.ifmap_width(F, S, U)))
        psum_in = (rng.normal(0, 8, (F, p)).astype(np.float32).view(np.uint32)
                   if psum else None)
        prims.append(Primitive(weights, ifmap, psum_in, U, load))
    return prims


SMALL = {"filter_depth": 96, "ifmap_depth": 12, "psum_depth": 16}
EYERISS = {"filter_depth": 224, "ifmap_depth": 12, "psum_depth": 24}


@pytest.mark.parametrize("sizes,mac_stages,gap,stall,seed,count", [
    (TINY, 3, 0.3, 0.3, 1, 20),
    (TINY, 1, 0.5, 0.0, 2, 20),
    (TINY, 5, 0.0, 0.5, 3, 20),
    (TINY, 2, 0.6, 0.6, 4, 20),
    (SMALL, 3, 0.2, 0.2, 5, 16),
    (EYERISS, 4, 0.3, 0.3, 6, 10),
])
def test_random_primitives_under_backpressure(sizes, mac_stages, gap, stall, seed, count):
    """Back-to-back random primitives (filters reused or loaded, psum_in or not), every input
    starved and the output refused at random: psums bit-exact, event totals exact."""
    rng = np.random.default_rng(seed)
    prims = random_primitives(rng, count, **sizes, max_F=5)
    result = simulate(PE(**sizes, mac_stages=mac_stages), prims, gap=gap, stall=stall,
                      seed=seed)
    assert_exact(result)
    assert_event_totals(result, prims)


def test_edge_primitives():
    """Smallest primitive, full scratchpads, stride above the filter width, reused filters."""
    rng = np.random.default_rng(4)
    spec = [
        (1, 1, 1, 1, 1, True),      # one MAC
        (1, 1, 1, 1, 9, True),      # one value per column, used once: loader in lockstep
        (1, 1, 1, 4, 5, False),     # U > S: three of every four columns dropped
        (4, 2, 4, 1, 3, True),      # p*q*S == filter depth, q*S == ifmap depth
        (4, 2, 4, 3, 4, False),
        (1, 8, 1, 2, 3, True),      # q*S == ifmap depth, S == 1
        (8, 1, 4, 6, 3, True),      # p == psum depth, U > S
        (2, 1, 8, 8, 2, True),      # S == ifmap depth, U == S
        (2, 1, 8, 7, 2, False),
    ]
    for psum in (False, True):
        prims = make(spec, rng, psum=psum)
        for gap, stall, seed in ((0.0, 0.0, 0), (0.4, 0.4, 5)):
            result = simulate(PE(**TINY, mac_stages=3), prims, gap=gap, stall=stall, seed=seed)
            assert_exact(result)
            assert_event_totals(result, prims)


@pytest.mark.parametrize("mac_stages", [1, 2])
def test_one_entry_scratchpads(mac_stages):
    """Scratchpads of one entry each run 1x1x1 primitives of any stride and width."""
    rng = np.random.default_rng(mac_stages)
    prims = make([(1, 1, 1, 1, 4, True), (1, 1, 1, 3, 3, False), (1, 1, 1, 15, 2, True)],
                 rng, psum=True)
    pe = PE(filter_depth=1, ifmap_depth=1, psum_depth=1, mac_stages=mac_stages)
    for gap, stall in ((0.0, 0.0), (0.5, 0.5)):
        result = simulate(pe, prims, gap=gap, stall=stall, seed=mac_stages)
        assert_exact(result)
        assert_event_totals(result, prims)


# (p, q, S, U, F): p >= mac_stages (one MAC per cycle) and below (waits for psums); all with
# U <= p * S, so that one ifmap value per cycle keeps up (U == p * S in the last ones).
FULL_RATE = [(3, 2, 3, 1, 6), (4, 1, 5, 2, 5), (8, 1, 3, 4, 4), (5, 3, 2, 1, 5), (3, 1, 1, 1, 8),
             (3, 2, 1, 3, 5), (4, 1, 1, 4, 4)]
SLOW = [(1, 2, 3, 1, 4), (2, 1, 4, 2, 3), (1, 1, 1, 1, 6), (2, 4, 1, 1, 3)]


@pytest.mark.parametrize("cases,mac_stages", [(FULL_RATE, 3), (SLOW, 3), (FULL_RATE[:3], 2)])
def test_throughput_unstalled(cases, mac_stages):
    """Fed and drained without stalls, one primitive alone takes exactly ``primitive_cycles``:
    with p >= mac_stages, ``p*q*S*F`` MAC cycles plus ``mac_stages + 3`` plus the filter load
    (``p*q*S``) or one cycle for the first ifmap value to land. Back to back, the next one is
    taken while this one runs and its first MAC issues two cycles after this one's last (plus
    its filter load): the MAC pipeline drains once, at the end."""
    rng = np.random.default_rng(6)
    spec = []
    for p, q, S, U, F in cases:
        spec += [(p, q, S, U, F, True), (p, q, S, U, F, False)]
    prims = make(spec, rng, psum=True)
    pe = PE(**TINY, mac_stages=mac_stages)
    alone = simulate(pe, prims[:1])
    assert alone["done"] - alone["cfg_cycles"][0] == primitive_cycles(prims[0], mac_stages)
    result = simulate(pe, prims)
    assert_exact(result)
    assert_event_totals(result, prims)
    full_rate = all(prim.p >= mac_stages for prim in prims)
    macs = np.cumsum([0] + [prim.macs for prim in prims])
    first = [result["mac_cycles"][k] for k in macs[:-1]]
    last = [result["mac_cycles"][k - 1] for k in macs[1:]]
    for k, prim in enumerate(prims):
        load = prim.p * prim.q * prim.S if prim.load_filter else 0
        if k:
            assert result["cfg_cycles"][k] <= last[k - 1]         # before it drains
            gap = first[k] - last[k - 1]
            assert gap == 2 + load if full_rate else 1 <= gap <= 2 + load
        if full_rate:
            assert last[k] - first[k] + 1 == prim.macs          # one MAC per cycle
    assert result["done"] == last[-1] + mac_stages + 2
    events = result["events"]
    assert events["stall_output"] == events["stall_psum_in"] == 0
    assert events["stall_ifmap"] <= sum(not prim.load_filter for prim in prims)
    if full_rate:
        assert events["stall_dependency"] == 0


def test_software_check_rejects_what_the_pe_cannot_hold():
    ok = {"p": 4, "q": 2, "S": 4, "U": 1, "F": 10}
    pe_model.check_primitive(**ok, **TINY)
    for change, match in [
        ({"q": 3, "S": 3}, "ifmap scratchpad depth 8"),
        ({"p": 5}, "filter scratchpad depth 32"),
        ({"p": 9, "q": 1, "S": 1}, "psum scratchpad depth 8"),
        ({"U": 16}, "stride U"),
        ({"U": 0}, "U must be a positive"),
        ({"F": 0}, "F must be a positive"),
        ({"F": 4096}, "max_width 4095"),
        ({"S": 0}, "S must be a positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            pe_model.check_primitive(**{**ok, **change}, **TINY)


def test_config_layout_fits_the_limits():
    layout = PEConfig(**TINY, max_width=100)
    assert PE(**TINY, mac_stages=2, max_width=100).config_layout == layout
    limits = pe_limits(**TINY, max_width=100)
    assert limits == {"S": 8, "p": 8, "q": 8, "F": 100}
    for name, value in limits.items():
        assert layout.size and value < 2 ** layout[name].shape.width
    assert layout["U"].shape.width == 4


def test_constructor_checks_and_properties():
    pe = PE(filter_depth=224, ifmap_depth=12, psum_depth=24, mac_stages=3)
    assert (pe.filter_depth, pe.ifmap_depth, pe.psum_depth, pe.mac_stages, pe.max_width) == (
        224, 12, 24, 3, 4095)
    with pytest.raises(AttributeError):
        pe.mac_stages = 4
    for bad, match in [({"filter_depth": 0}, "filter_depth must be a positive integer, not 0"),
                       ({"ifmap_depth": 1.5}, "ifmap_depth .* not 1.5"),
                       ({"psum_depth": -1}, "psum_depth .* not -1"),
                       ({"mac_stages": 0}, "mac_stages .* not 0"),
                       ({"max_width": True}, "max_width .* not True")]:
        with pytest.raises(ValueError, match=match):
            PE(**{**TINY, "mac_stages": 3, **bad})


@pytest.mark.parametrize("q,S,U", [(2, 2, 1), (3, 1, 2), (1, 3, 1), (2, 2, 3)])
def test_ifmap_runs_ahead_of_its_window(q, S, U):
    """The ifmap scratchpad is a ring of as many whole columns as it holds (``depth // q``),
    not just the window of ``S``: a PE waiting for its filter takes that many columns, so that
    PEs sharing an ifmap row a few columns apart do not hold each other up."""
    rng = np.random.default_rng(q * 10 + S)
    F = 6
    (prim,) = make([(1, q, S, U, F, True)], rng)
    pe = PE(**TINY, mac_stages=2)
    stim = stimulus(pe.config_layout, [prim])
    taken = []

    async def bench(ctx):
        await stream_put(ctx, pe.cfg, int(stim["cfg"][0]))
        ctx.set(pe.ifmap_in.valid, 1)
        for word in stim["ifmap"]:
            ctx.set(Value.cast(pe.ifmap_in.payload), int(word))
            for _ in range(20):
                *_, ready = await ctx.tick().sample(pe.ifmap_in.ready)
                if ready:
                    break
            else:
                return
            taken.append(word)

    run_simulation(pe, bench, deadline_cycles=2000)
    # No filter, no MAC: the PE takes columns until the ring is full (dropping, when U > S,
    # the columns no output uses, which need no entry).
    width = pe_model.ifmap_width(F, S, U)
    kept = [c for c in range(width) if c < S or (c - S) % U >= U - S]
    ring = TINY["ifmap_depth"] // q
    assert ring > S
    assert len(taken) == (kept[ring] if ring < len(kept) else width) * q


def test_psums_buffered_a_column_ahead():
    """``psum_in`` and ``psum_out`` each buffer ``psum_depth`` values: a PE takes the initial
    psums of later columns before it needs them (even before its ``cfg``), and goes on
    computing the next column while a whole column of final psums waits for ``psum_out``."""
    rng = np.random.default_rng(11)
    p, q, S, F = 4, 1, 2, 5                     # 8 psums: two columns per FIFO of TINY
    (prim,) = make([(p, q, S, 1, F, True)], rng, psum=True)
    pe = PE(**TINY, mac_stages=2)
    stim = stimulus(pe.config_layout, [prim])
    count = {"psum_in": 0, "macs": 0}

    def producer(stream, words, start=0):
        async def bench(ctx):
            await ctx.tick().repeat(start + 1)
            for word in words:
                await stream_put(ctx, stream, int(word))
                count[stream] = count.get(stream, 0) + 1
        return bench

    held = {}

    async def bench(ctx):
        for _ in range(20):                     # nothing configured yet
            *_, ready = await ctx.tick().sample(pe.psum_in.ready)
        assert count.get(pe.psum_in, 0) == TINY["psum_depth"] and not ready
        for _ in range(4 * prim.macs):          # psum_out is never ready: the PE holds
            *_, busy = await ctx.tick().sample(pe.events.mac_busy)
            count["macs"] += busy
        held.update(macs=count["macs"], psum_in=count[pe.psum_in])
        out = [await stream_get(ctx, pe.psum_out) for _ in stim["expected"]]
        assert out == list(stim["expected"])    # and, released, finishes exactly

    run_simulation(pe, bench, background=[
        producer(pe.psum_in, stim["psum_in"]), producer(pe.cfg, stim["cfg"], 20),
        producer(pe.filter_in, stim["filter"], 20), producer(pe.ifmap_in, stim["ifmap"], 20)])
    # Two columns' final psums wait in the FIFO and the first filter group's of the third column
    # in the MAC pipeline: the MAC has gone through that group and no further, and the psum_in
    # FIFO is full again behind the initial psums it took.
    G = filter_group(p, pe.mac_stages)
    assert G < p
    assert held["macs"] == 2 * p * q * S + G * q * S
    assert held["psum_in"] == 2 * p + G + TINY["psum_depth"]


@pytest.mark.parametrize("p,q,S,mac_stages", [(8, 1, 3, 3), (16, 2, 3, 6), (5, 2, 2, 3)])
def test_filter_groups_finish_early(p, q, S, mac_stages):
    """Filters are interleaved in groups of ``G = filter_group(p, mac_stages)``: a group's
    psums leave together, one per cycle, the first ``(q*S - 1) * size + mac_stages + 1``
    cycles after the group's first MAC, and the groups' MACs follow each other without a gap
    (one per cycle)."""
    G = filter_group(p, mac_stages)
    assert mac_stages <= G <= p and (p % G == 0 or p % G >= mac_stages)
    rng = np.random.default_rng(p * q * S)
    F = 3
    (prim,) = make([(p, q, S, 1, F, True)], rng, psum=True)
    pe = PE(**EYERISS, mac_stages=mac_stages)
    stim = stimulus(pe.config_layout, [prim])
    first_mac, out_cycles, out = [], [], []

    async def monitor(ctx):
        cycle = 0
        while True:
            *_, busy, valid = await ctx.tick().sample(pe.events.mac_busy, pe.psum_out.valid)
            if busy and not first_mac:
                first_mac.append(cycle)
            if valid:                           # psum_out is always ready
                out_cycles.append(cycle)
            cycle += 1

    async def consumer(ctx):
        for _ in stim["expected"]:
            out.append(await stream_get(ctx, pe.psum_out))

    def producer(stream, words):
        async def bench(ctx):
            for word in words:
                await stream_put(ctx, stream, int(word))
        return bench

    run_simulation(pe, consumer, *(producer(getattr(pe, name), stim[key]) for name, key in (
        ("cfg", "cfg"), ("filter_in", "filter"), ("ifmap_in", "ifmap"), ("psum_in", "psum_in"))),
        background=[monitor], deadline_cycles=20 * prim.macs)
    assert out == list(stim["expected"])
    want = []
    for k in range(F):
        for g in range(0, p, G):                # group of filters g .. g + size - 1
            size = min(G, p - g)
            start = first_mac[0] + (k * p + g) * q * S
            want += [start + (q * S - 1) * size + mac_stages + 1 + j for j in range(size)]
    assert out_cycles == want
