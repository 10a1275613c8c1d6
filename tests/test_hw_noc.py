"""Tests of hw/noc.py in Amaranth's simulator (GINs, GON, routes, PEArray with stand-in PEs) and
of sw/noc_ids.py; the cocotb runs on the generated Verilog are in tests/test_sim_noc.py."""

import dataclasses
import itertools

import numpy as np
import pytest
from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rsaccel import ArrayConfig, preset
from rsaccel.hw.fp import FP16, FP32
from rsaccel.hw.noc import (
    ROUTE_FROM_GIN,
    ROUTE_TO_GON,
    GinEvents,
    GlobalInputNetwork,
    GlobalOutputNetwork,
    GonPacket,
    IdWrite,
    NoC,
    NocEvents,
    PEArray,
)
from rsaccel.hw.pe import PsumOut
from rsaccel.hw.plumbing import RoundRobin
from rsaccel.sim.noc_bench import check_noc, expected_gon, pack, rs_traffic, unpack
from rsaccel.sim.streams import run_simulation
from rsaccel.sw.noc_ids import (
    RSSet,
    Segment,
    destinations,
    noc_map,
    rs_placement,
    solve_ids,
)


def _bits_of(x):
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


def _mask(rng, n, stall):
    if stall <= 0:
        return (1 << n) - 1
    return sum(1 << k for k in range(n) if rng.random() >= stall)


# -- GIN ---------------------------------------------------------------------------------------

def id_pattern(kind, rows, cols, id_bits, rng):
    """Return (row_ids, col_ids) of a multicast pattern."""
    none = (1 << id_bits) - 1
    if kind == "unicast":
        return list(range(rows)), [list(range(cols)) for _ in range(rows)]
    if kind == "row":
        return list(range(rows)), [[0] * cols for _ in range(rows)]
    if kind == "column":
        return [0] * rows, [list(range(cols)) for _ in range(rows)]
    if kind == "diagonal":
        return [0] * rows, [[r + c for c in range(cols)] for r in range(rows)]
    if kind == "broadcast":
        return [0] * rows, [[0] * cols for _ in range(rows)]
    assert kind == "random"
    small = [0, 1, 2, none]
    return ([int(rng.choice(small)) for _ in range(rows)],
            [[int(rng.choice(small)) for _ in range(cols)] for _ in range(rows)])


def random_packets(rng, count, row_ids, col_ids, nval, width, id_bits, odd_counts=True):
    """Return ``(tag, values, count)`` packets: mostly tags some PE holds, some random ones."""
    none = (1 << id_bits) - 1
    held = sorted({(row_ids[r], c_id) for r in range(len(row_ids))
                   for c_id in col_ids[r] if row_ids[r] != none and c_id != none})
    packets = []
    for _ in range(count):
        if held and rng.random() < 0.8:
            tag = held[rng.integers(len(held))]
        else:
            tag = (int(rng.integers(0, none + 1)), int(rng.integers(0, none + 1)))
        values = rng.integers(0, 1 << width, nval).tolist()
        n = int(rng.integers(1, nval + 1))
        if odd_counts and rng.random() < 0.1:
            n = int(rng.choice([0, nval + 1])) if nval + 1 < 2 ** nval.bit_length() else 0
        packets.append((tuple(int(t) for t in tag), values, n))
    return packets


def gin_expected(rows, cols, row_ids, col_ids, id_bits, nval, packets):
    per_pe = {k: [] for k in range(rows * cols)}
    unmatched = matched = values = 0
    for tag, data, count in packets:
        n = nval if count == 0 or count > nval else count
        dests = destinations(row_ids, col_ids, tag, id_bits)
        unmatched += not dests
        matched += bool(dests)
        values += n if dests else 0
        for r, c in dests:
            per_pe[r * cols + c] += data[:n]
    return per_pe, {"packets": matched, "values": values, "unmatched": unmatched}


def run_gin(*, rows, cols, nval, id_bits, row_ids, col_ids, packets, elem=FP16, stall=0.0,
            gap=0.0, seed=0):
    """Write the IDs, send ``packets`` with random gaps while the PEs refuse values at random;
    return per-lane values, event totals, the sticky flag, the flag after a clear, and the
    cycle of every accepted packet."""
    dut = GlobalInputNetwork(rows=rows, cols=cols, elem=elem, values=nval, id_bits=id_bits)
    n, width = rows * cols, dut.width
    rng = np.random.default_rng(seed)
    words = [pack(dut.packet_layout, {"row_tag": tag[0], "col_tag": tag[1], "count": count,
                                      "data": data}) for tag, data, count in packets]
    want, _ = gin_expected(rows, cols, row_ids, col_ids, id_bits, nval, packets)
    total = sum(len(v) for v in want.values())
    wlayout = IdWrite(rows, cols, id_bits)
    elayout = GinEvents(nval)
    got = {k: [] for k in range(n)}
    events = {"packets": 0, "values": 0, "stalled": 0, "unmatched": 0}
    result = {}

    async def bench(ctx):
        ctx.set(dut.write.valid, 1)
        for r in range(rows):
            ctx.set(dut.write.payload.as_value(),
                    pack(wlayout, {"pe": 0, "row": r, "value": row_ids[r]}))
            await ctx.tick()
            for c in range(cols):
                ctx.set(dut.write.payload.as_value(),
                        pack(wlayout, {"pe": 1, "row": r, "col": c, "value": col_ids[r][c]}))
                await ctx.tick()
        ctx.set(dut.write.valid, 0)
        sent = received = quiet = cycle = 0
        accepted = []
        while quiet < 4:
            cycle += 1
            offer = sent < len(words) and rng.random() >= gap
            ctx.set(dut.i.valid, offer)
            if offer:
                ctx.set(dut.i.payload.as_value(), words[sent])
            ready = _mask(rng, n, stall)
            ctx.set(dut.o.ready, ready)
            _, _, i_ready, o_valid, o_payload, ev = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload, dut.events.as_value())
            if offer and i_ready:
                sent += 1
                accepted.append(cycle)
            for k in _bits_of(o_valid & ready):
                got[k].append((o_payload >> (k * width)) & ((1 << width) - 1))
                received += 1
            for name, value in unpack(elayout, ev).items():
                events[name] += value
            done = sent == len(words) and received >= total
            quiet = quiet + 1 if done else 0
        ctx.set(dut.i.valid, 0)
        result["unmatched"] = ctx.get(dut.unmatched)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        result["cleared"] = ctx.get(dut.unmatched)
        result["accepted"] = accepted

    run_simulation(dut, bench, deadline_cycles=200 * len(packets) + 1000)
    return got, events, result


KINDS = ["unicast", "row", "column", "diagonal", "broadcast", "random"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows, cols, nval, elem, stall", [
    (3, 4, 4, FP16, 0.3),
    (6, 8, 2, FP32, 0.5),
    (2, 3, 1, FP16, 0.2),
])
def test_gin_patterns_under_backpressure(kind, rows, cols, nval, elem, stall):
    """Every packet reaches exactly the matching PEs, once, values in order; unmatched ones are
    counted and flagged, and nothing else is."""
    id_bits = 4
    rng = np.random.default_rng(KINDS.index(kind) * 100 + rows * 10 + nval)
    row_ids, col_ids = id_pattern(kind, rows, cols, id_bits, rng)
    width = 16 if elem is FP16 else 32
    packets = random_packets(rng, 60, row_ids, col_ids, nval, width, id_bits)
    got, events, result = run_gin(rows=rows, cols=cols, nval=nval, id_bits=id_bits,
                                  row_ids=row_ids, col_ids=col_ids, packets=packets, elem=elem,
                                  stall=stall, gap=0.2, seed=rows + nval)
    want, want_events = gin_expected(rows, cols, row_ids, col_ids, id_bits, nval, packets)
    for k in range(rows * cols):
        assert got[k] == want[k], f"PE {divmod(k, cols)}"
    assert {k: events[k] for k in want_events} == want_events
    assert result["unmatched"] == (want_events["unmatched"] > 0)
    assert result["cleared"] == 0
    assert events["stalled"] > 0 or stall == 0


def test_gin_unmatched_only_when_nothing_matches():
    """The unused ID (all ones) matches nothing, not even a tag of all ones."""
    rows, cols, id_bits = 2, 3, 3
    row_ids, col_ids = [0, 7], [[0, 1, 7], [0, 1, 2]]       # row 1 and PE (0, 2) unused
    packets = [((0, 1), [5, 6], 2), ((0, 7), [1], 1), ((7, 0), [2], 1), ((7, 7), [3], 1),
               ((0, 0), [7], 1)]
    got, events, result = run_gin(rows=rows, cols=cols, nval=2, id_bits=id_bits,
                                  row_ids=row_ids, col_ids=col_ids, packets=packets)
    assert got == {0: [7], 1: [5, 6], 2: [], 3: [], 4: [], 5: []}
    assert events["unmatched"] == 3 and events["packets"] == 2 and events["values"] == 3
    assert result["unmatched"] == 1 and result["cleared"] == 0


def test_gin_no_unmatched_flag_when_all_match():
    row_ids, col_ids = id_pattern("unicast", 3, 4, 4, None)
    rng = np.random.default_rng(3)
    packets = [((r, c), rng.integers(0, 1 << 16, 4).tolist(), 4)
               for r in range(3) for c in range(4)]
    _, events, result = run_gin(rows=3, cols=4, nval=4, id_bits=4, row_ids=row_ids,
                                col_ids=col_ids, packets=packets)
    assert events["unmatched"] == 0 and result["unmatched"] == 0


def test_gin_one_packet_per_cycle():
    """Row multicast to 6 rows of 4-value packets, PEs always ready: one packet per cycle."""
    rows, cols, nval = 6, 8, 4
    row_ids, col_ids = id_pattern("row", rows, cols, 4, None)
    rng = np.random.default_rng(1)
    packets = [((k % rows, 0), rng.integers(0, 1 << 16, nval).tolist(), nval)
               for k in range(60)]
    _got, events, result = run_gin(rows=rows, cols=cols, nval=nval, id_bits=4, row_ids=row_ids,
                                  col_ids=col_ids, packets=packets)
    acc = result["accepted"]
    assert acc[-1] - acc[0] == len(acc) - 1
    assert events["stalled"] == 0


def test_gin_pe_gets_one_value_per_cycle_across_packets():
    """Back-to-back packets to one PE reach it without a bubble between them."""
    rows, cols, nval = 2, 2, 4
    dut = GlobalInputNetwork(rows=rows, cols=cols, elem=FP16, values=nval, id_bits=2)
    wlayout = IdWrite(rows, cols, 2)
    cycles = []

    async def bench(ctx):
        ctx.set(dut.write.valid, 1)
        for word in ({"pe": 0, "row": 1, "value": 0}, {"pe": 1, "row": 1, "col": 0, "value": 0}):
            ctx.set(dut.write.payload.as_value(), pack(wlayout, word))
            await ctx.tick()
        ctx.set(dut.write.valid, 0)
        ctx.set(dut.o.ready, 0b1111)
        ctx.set(dut.i.valid, 1)
        sent = 0
        for cycle in range(40):
            ctx.set(dut.i.payload.as_value(),
                    pack(dut.packet_layout, {"count": 3 if sent % 2 else 4,
                                             "data": [sent * 4 + v for v in range(4)]}))
            _, _, i_ready, valid = await ctx.tick().sample(dut.i.ready, dut.o.valid)
            sent += i_ready
            if valid & 0b0100:
                cycles.append(cycle)

    run_simulation(dut, bench)
    assert len(cycles) > 30 and cycles == list(range(cycles[0], cycles[0] + len(cycles)))


def test_gin_rejects_bad_parameters():
    with pytest.raises(ValueError, match="GIN rows must be a positive integer, not 0"):
        GlobalInputNetwork(rows=0, cols=2, elem=FP16, values=4, id_bits=4)
    with pytest.raises(ValueError, match="GIN values per packet"):
        GlobalInputNetwork(rows=2, cols=2, elem=FP16, values=0, id_bits=4)
    with pytest.raises(ValueError, match="id_bits of 2 cannot name 4 rows or columns"):
        GlobalInputNetwork(rows=4, cols=2, elem=FP16, values=4, id_bits=2)


# -- GON ---------------------------------------------------------------------------------------

def run_gon(*, rows, cols, nval, streams, gap=0.0, stall=0.0, seed=0, max_packets=None):
    """Offer each lane's psums ``streams[k]`` (``(data, last)``) with random gaps, take packets
    with random refusals; return the packets (``unpack``ed) and the cycle each left."""
    dut = GlobalOutputNetwork(rows=rows, cols=cols, values=nval)
    n = rows * cols
    rng = np.random.default_rng(seed)
    layout = GonPacket(rows, cols, nval)
    want = sum(len(p) for p in expected_gon(_cfg(rows, cols, nval), {
        k: s for k, s in enumerate(streams) if s}).values())
    if max_packets is not None:
        want = max_packets
    heads = [0] * n
    out, when = [], []

    async def bench(ctx):
        cycle = 0
        while len(out) < want:
            cycle += 1
            valid = word = 0
            for k in range(n):
                if heads[k] < len(streams[k]) and rng.random() >= gap:
                    value, last = streams[k][heads[k]]
                    valid |= 1 << k
                    word |= (value | last << 32) << (33 * k)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, word)
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            _, _, i_ready, o_valid, o_payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload.as_value())
            for k in _bits_of(valid & i_ready):
                heads[k] += 1
            if ready and o_valid:
                out.append(unpack(layout, o_payload))
                when.append(cycle)

    run_simulation(dut, bench, deadline_cycles=50 * (want + 20))
    return out, when, heads


def _cfg(rows, cols, nval):
    return preset("tiny").replace(rows=rows, cols=cols, gon_bus_bits=32 * nval)


@pytest.mark.parametrize("rows, cols, nval, gap, stall", [
    (3, 4, 2, 0.3, 0.3),
    (2, 5, 4, 0.5, 0.6),
    (4, 2, 1, 0.2, 0.2),
])
def test_gon_every_psum_once_in_order(rows, cols, nval, gap, stall):
    rng = np.random.default_rng(rows * cols + nval)
    streams = []
    for _ in range(rows * cols):
        length = int(rng.integers(0, 12))
        lasts = rng.random(length) < 0.3
        if length:
            lasts[-1] = True
        streams.append([(int(v), int(lt)) for v, lt in
                        zip(rng.integers(0, 1 << 32, length), lasts)])
    out, _, _ = run_gon(rows=rows, cols=cols, nval=nval, streams=streams, gap=gap,
                        stall=stall, seed=nval)
    want = expected_gon(_cfg(rows, cols, nval), {k: s for k, s in enumerate(streams) if s})
    got = {}
    for p in out:
        assert 1 <= p["count"] <= nval
        got.setdefault(p["src_row"] * cols + p["src_col"], []).append(
            (p["count"], p["last"], p["data"][:p["count"]]))
    assert got == want


def test_gon_round_robin_fair_under_contention():
    """Every PE always has psums: each gets one packet in every rows * cols, one per cycle."""
    rows, cols, nval = 3, 4, 2
    n = rows * cols
    streams = [[(k << 16 | i, 0) for i in range(200)] for k in range(n)]
    out, when, _ = run_gon(rows=rows, cols=cols, nval=nval, streams=streams,
                           max_packets=10 * n)
    assert when[-1] - when[0] == len(when) - 1                 # one packet per cycle
    sources = [p["src_row"] * cols + p["src_col"] for p in out]
    for start in range(n, len(sources) - n + 1, n):
        assert sorted(sources[start:start + n]) == list(range(n))
    for p in out:                                              # psums stay with their source
        assert all(v >> 16 == p["src_row"] * cols + p["src_col"] for v in p["data"])


def test_gon_no_starvation_with_one_busy_row():
    """A lone PE in one row still gets its turn while a full row contends all the time."""
    rows, cols, nval = 2, 4, 1
    streams = [[(k, 0) for _ in range(400)] for k in range(cols)] + \
        [[], [], [(99, 0)] * 40, []]
    out, _, _ = run_gon(rows=rows, cols=cols, nval=nval, streams=streams, max_packets=120)
    lone = [i for i, p in enumerate(out) if (p["src_row"], p["src_col"]) == (1, 2)]
    assert len(lone) >= 40 and max(b - a for a, b in itertools.pairwise(lone)) <= rows


def test_round_robin_rejects_bad_width():
    with pytest.raises(ValueError, match="round-robin width must be a positive integer"):
        RoundRobin(0)


def test_gon_rejects_bad_parameters():
    with pytest.raises(ValueError, match="GON values per packet must be a positive integer"):
        GlobalOutputNetwork(rows=2, cols=2, values=0)


# -- NoC with stand-in PEs ---------------------------------------------------------------------

class StandInPE(wiring.Component):
    """Test fixture, not a PE: takes filter and ifmap values (and drops them) and passes psums
    through, ``add`` added (mod 2**32), with ``last`` on every ``period``-th. Each input refuses
    values on a pseudo-random quarter of the cycles (an LFSR seeded by ``seed``)."""

    def __init__(self, *, add, period, seed):
        self._add, self._period, self._seed = add, period, seed
        super().__init__({
            "filter_in": In(stream.Signature(FP16)),
            "ifmap_in": In(stream.Signature(FP16)),
            "psum_in": In(stream.Signature(FP32)),
            "psum_out": Out(stream.Signature(PsumOut)),
        })

    def elaborate(self, platform):
        m = Module()
        lfsr = Signal(16, init=(self._seed * 40503) % 65535 + 1)
        m.d.sync += lfsr.eq(lfsr[1:] ^ (lfsr[0] * 0xB400))
        count = Signal(range(self._period))
        out = self.psum_out
        m.d.comb += [
            self.filter_in.ready.eq(lfsr[0] | lfsr[1]),
            self.ifmap_in.ready.eq(lfsr[2] | lfsr[3]),
            self.psum_in.ready.eq((lfsr[4] | lfsr[5]) & (~out.valid | out.ready)),
        ]
        with m.If(out.valid & out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(self.psum_in.valid & self.psum_in.ready):
            at_end = count == self._period - 1
            value = self.psum_in.payload.as_value() + self._add
            m.d.sync += [out.valid.eq(1), count.eq(Mux(at_end, 0, count + 1))]
            m.d.sync += [out.payload.data.eq(value), out.payload.last.eq(at_end)]
        return m


def run_rs(config, sets, segments, *, seed=0, gon_stall=0.3):
    """Configure a PEArray of stand-in PEs with the map of a placement, send every filter row,
    ifmap row and psum column it needs (:func:`rs_traffic`), and check what each PE and the GON
    get."""
    scenario, expect = rs_traffic(config, sets, segments, seed=seed)
    rows, cols = config.rows, config.cols
    array = PEArray(config, lambda r, c: StandInPE(add=scenario["add"][r * cols + c],
                                                  period=scenario["period"][0],
                                                  seed=r * cols + c + seed))
    noc = array.noc
    nets = ("filter", "ifmap", "psum")
    result = {"filter": [[] for _ in range(rows * cols)], "ifmap": [[] for _ in range(rows * cols)],
              "gon": [], "events": {}, "unmatched": {}}
    glayout = GonPacket(rows, cols, config.gon_values_per_packet)
    links = [(r * cols + c, getattr(noc.pe[r][c], f"{net}_in"), net)
             for r in range(rows) for c in range(cols) for net in ("filter", "ifmap")]
    watched = []
    for _, link, _ in links:
        watched += [link.valid, link.ready, link.payload.as_value()]
    want_values = sum(len(v) for net in ("filter", "ifmap") for v in expect[net].values())
    want_packets = sum(len(p) for p in expect["gon"].values())

    async def bench(ctx):
        for word in scenario["cfg"]:
            ctx.set(array.cfg.valid, 1)
            ctx.set(array.cfg.payload.as_value(), word)
            await ctx.tick()
        ctx.set(array.cfg.valid, 0)
        sent = dict.fromkeys(nets, 0)
        received = 0
        rng = np.random.default_rng(seed + 1)
        while received < want_values or len(result["gon"]) < want_packets:
            for net in nets:
                port, words = getattr(array, net), scenario[net]
                ctx.set(port.valid, sent[net] < len(words))
                if sent[net] < len(words):
                    ctx.set(port.payload.as_value(), words[sent[net]])
            ready = rng.random() >= gon_stall
            ctx.set(array.gon.ready, ready)
            _, _, *sampled = await ctx.tick().sample(
                *(getattr(array, net).ready for net in nets), array.gon.valid,
                array.gon.payload.as_value(), *watched)
            for net, taken in zip(nets, sampled):
                sent[net] += bool(taken and sent[net] < len(scenario[net]))
            if ready and sampled[3]:
                p = unpack(glayout, sampled[4])
                result["gon"].append([p["src_row"], p["src_col"], p["count"], p["last"],
                                      p["data"][:p["count"]]])
            states = sampled[5:]
            for (k, _, net), valid, rdy, payload in zip(links, states[0::3], states[1::3],
                                                        states[2::3]):
                if valid and rdy:
                    result[net][k].append(payload)
                    received += 1
        flags = ctx.get(array.unmatched.as_value())
        result["unmatched"] = {net: flags >> b & 1 for b, net in enumerate(nets)}

    run_simulation(array, bench, deadline_cycles=4000)
    expect["unmatched"] = dict.fromkeys(nets, 0)
    assert check_noc(config, result, expect) == []


@pytest.mark.parametrize("name, layer", [
    ("tiny", {"R": 3, "e": 4}),                      # the whole array, one set
    ("tiny", {"R": 2, "e": 2, "U": 2, "t": 2}),      # two sets side by side, stride 2
    ("tiny", {"R": 1, "e": 4, "r": 3}),              # three channel sets chained up
    ("tiny", {"R": 1, "e": 6}),                      # a set wider than the array, folded
    ("small", {"R": 3, "e": 8, "t": 2}),             # CONV3-like: stacked sets
    ("small", {"R": 3, "e": 4, "U": 2, "r": 2, "t": 2}),  # CONV4-like: chained pairs
    ("small", {"R": 2, "e": 11}),                    # CONV2-like: 8 + 3 columns stacked
    ("small", {"R": 5, "e": 3, "U": 4, "t": 2}),     # CONV1-like: stride 4, side by side
])
def test_rs_patterns_on_pe_array(name, layer):
    config = preset(name)
    sets, segments = rs_placement(config, **layer)
    run_rs(config, sets, segments, seed=len(segments))


def test_psum_waits_when_pe_above_takes_from_gin():
    """A psum routed up to a PE that takes from the GIN is held, not dropped or misrouted."""
    config = preset("tiny")
    array = PEArray(config, lambda r, c: StandInPE(add=1, period=1, seed=r * 4 + c))
    seen = []

    async def bench(ctx):
        from rsaccel.sim.noc_bench import cfg_words
        routes = [[ROUTE_FROM_GIN | ROUTE_TO_GON] * 4 for _ in range(3)]
        routes[0][1] = ROUTE_FROM_GIN                     # (0, 1) sends up; (1, 1) won't take
        none = (1 << config.noc_id_bits) - 1
        ids = {"psum": [0, none, none]}
        cols = {"psum": [[0, 1, 2, 3], [none] * 4, [none] * 4]}
        for word in cfg_words(config, ids, cols, routes):
            ctx.set(array.cfg.valid, 1)
            ctx.set(array.cfg.payload.as_value(), word)
            await ctx.tick()
        ctx.set(array.cfg.valid, 0)
        layout = array.psum.payload.shape()
        ctx.set(array.psum.valid, 1)
        ctx.set(array.psum.payload.as_value(),
                pack(layout, {"row_tag": 0, "col_tag": 1, "count": 1, "data": [41]}))
        await ctx.tick().until(array.psum.ready)
        ctx.set(array.psum.valid, 0)
        ctx.set(array.gon.ready, 1)
        for _ in range(30):
            _, _, valid, stuck = await ctx.tick().sample(
                array.gon.valid, array.noc.pe[0][1].psum_out.valid)
            seen.append((valid, stuck))

    run_simulation(array, bench)
    assert not any(v for v, _ in seen) and seen[-1][1] == 1


def test_psum_gin_value_waits_for_its_route():
    """A psum GIN value for a PE that takes from below waits in its register (the PE does not
    see it, it is not lost) and goes on once the route says GIN."""
    config = preset("tiny")
    array = PEArray(config, lambda r, c: StandInPE(add=0, period=1, seed=r * 4 + c))
    none = (1 << config.noc_id_bits) - 1
    from rsaccel.sim.noc_bench import cfg_words
    ids = ({"psum": [none, 0, none]}, {"psum": [[none] * 4, [0, 1, 2, 3], [none] * 4]})
    seen = []

    async def bench(ctx):
        routes = [[ROUTE_FROM_GIN | ROUTE_TO_GON] * 4 for _ in range(3)]
        routes[1][2] = ROUTE_TO_GON                               # (1, 2) takes from below
        for word in cfg_words(config, *ids, routes):
            ctx.set(array.cfg.valid, 1)
            ctx.set(array.cfg.payload.as_value(), word)
            await ctx.tick()
        ctx.set(array.cfg.valid, 0)
        ctx.set(array.psum.valid, 1)
        ctx.set(array.psum.payload.as_value(),
                pack(array.psum.payload.shape(), {"row_tag": 0, "col_tag": 2, "count": 1,
                                                  "data": [1234]}))
        await ctx.tick().until(array.psum.ready)
        ctx.set(array.psum.valid, 0)
        ctx.set(array.gon.ready, 1)
        for _ in range(20):
            _, _, valid = await ctx.tick().sample(array.gon.valid)
            seen.append(valid)
        routes[1][2] |= ROUTE_FROM_GIN
        words = cfg_words(config, routes=routes, clear=False)
        layout = GonPacket(3, 4, config.gon_values_per_packet)
        for cycle in range(40):
            ctx.set(array.cfg.valid, cycle < len(words))
            if cycle < len(words):
                ctx.set(array.cfg.payload.as_value(), words[cycle])
            _, _, valid, payload = await ctx.tick().sample(array.gon.valid,
                                                           array.gon.payload.as_value())
            if valid:
                seen.append(unpack(layout, payload))

    run_simulation(array, bench)
    assert not any(seen[:20])
    assert [(p["src_row"], p["src_col"], p["data"][0]) for p in seen[20:]] == [(1, 2, 1234)]


def test_local_link_only_when_routed():
    """A psum the PE below sends to the GON does not also reach the PE above, even when that
    one takes from its local link; each psum leaves once."""
    config = preset("tiny")
    array = PEArray(config, lambda r, c: StandInPE(add=1 << (8 * r), period=1, seed=r * 4 + c))
    none = (1 << config.noc_id_bits) - 1
    out = []

    async def bench(ctx):
        from rsaccel.sim.noc_bench import cfg_words
        routes = [[ROUTE_FROM_GIN | ROUTE_TO_GON] * 4, [ROUTE_TO_GON] * 4,
                  [ROUTE_FROM_GIN | ROUTE_TO_GON] * 4]
        for word in cfg_words(config, {"psum": [0, none, none]},
                              {"psum": [[0, 1, 2, 3], [none] * 4, [none] * 4]}, routes):
            ctx.set(array.cfg.valid, 1)
            ctx.set(array.cfg.payload.as_value(), word)
            await ctx.tick()
        ctx.set(array.cfg.valid, 0)
        layout = array.psum.payload.shape()
        for c in range(4):
            ctx.set(array.psum.valid, 1)
            ctx.set(array.psum.payload.as_value(),
                    pack(layout, {"row_tag": 0, "col_tag": c, "count": 1, "data": [c]}))
            await ctx.tick().until(array.psum.ready)
        ctx.set(array.psum.valid, 0)
        ctx.set(array.gon.ready, 1)
        layout = GonPacket(3, 4, config.gon_values_per_packet)
        for _ in range(40):
            _, _, valid, payload = await ctx.tick().sample(array.gon.valid,
                                                           array.gon.payload.as_value())
            if valid:
                out.append(unpack(layout, payload))

    run_simulation(array, bench)
    assert sorted((p["src_row"], p["src_col"], p["data"][0]) for p in out) == \
        [(0, c, c + 1) for c in range(4)]


def test_events_feed_event_counters():
    counters = pytest.importorskip("rsaccel.hw.counters")
    layout = NocEvents(preset("eyeriss"))
    assert [name for name, _ in layout][:4] == ["filter_packets", "filter_values",
                                                "filter_stalled", "filter_unmatched"]
    counters.EventCounters(layout, 32)


def test_noc_and_array_reject_bad_arguments():
    with pytest.raises(TypeError, match="config must be an ArrayConfig, not 'tiny'"):
        NoC("tiny")
    with pytest.raises(TypeError, match="make_pe must be callable"):
        PEArray(preset("tiny"), None)
    with pytest.raises(TypeError, match=r"PE \(0, 0\) made by make_pe has no 'filter_in'"):
        PEArray(preset("tiny"), lambda r, c: GlobalOutputNetwork(rows=1, cols=1, values=1))


# -- sw/noc_ids --------------------------------------------------------------------------------

EYERISS_ALEXNET = {
    "CONV1": ({"R": 11, "e": 7, "U": 4, "t": 2}, 154),
    "CONV2": ({"R": 5, "e": 27}, 135),
    "CONV3": ({"R": 3, "e": 13, "t": 4}, 156),
    "CONV4": ({"R": 3, "e": 13, "r": 2, "t": 2}, 156),
}


@pytest.mark.parametrize("diagonal", [True, False], ids=["diagonal", "per-row"])
@pytest.mark.parametrize("layer", sorted(EYERISS_ALEXNET))
def test_alexnet_maps_reach_exactly_the_right_pes(layer, diagonal):
    """Each tag reaches exactly the PEs that need its data (an ifmap row: its diagonal, or
    the PEs of one filter row on it); routes chain each set column."""
    config = preset("eyeriss")
    kwargs, active = EYERISS_ALEXNET[layer]
    sets, segments = rs_placement(config, **kwargs)
    sets = [dataclasses.replace(s, diagonal=diagonal) for s in sets]
    nm = noc_map(config, sets, segments)
    idb = config.noc_id_bits
    pes = {}
    for k, s in enumerate(sets):
        for i in range(s.height):
            for j in range(s.width):
                pes[nm.pe(k, i, j)] = (k, i, j)
    assert len(pes) == active
    for k, s in enumerate(sets):
        for i in range(s.height):
            want = {pe for pe, (k2, i2, _) in pes.items()
                    if i2 == i and (sets[k2].out, sets[k2].chan) == (s.out, s.chan)}
            assert destinations(nm.row_ids["filter"], nm.col_ids["filter"],
                                nm.filter_tag(k, i), idb) == want
        for h in s.ifmap_rows:
            for i in range(s.height) if not diagonal else (None,):
                want = {pe for pe, (k2, i2, j2) in pes.items()
                        if sets[k2].ifmap_row(i2, j2) == h and sets[k2].chan == s.chan
                        and i in (None, i2)}
                if want:
                    assert destinations(nm.row_ids["ifmap"], nm.col_ids["ifmap"],
                                        nm.ifmap_tag(k, h, i), idb) == want
                else:
                    with pytest.raises(ValueError, match="needs a filter row i of a PE"):
                        nm.ifmap_tag(k, h, i)
        for j in range(s.width):
            chain = nm.chain(k, j)
            assert all(nm.routes[r][c] & ROUTE_TO_GON == 0 for r, c in chain[:-1])
            assert nm.routes[chain[-1][0]][chain[-1][1]] & ROUTE_TO_GON
            try:
                tag = nm.psum_tag(k, j)
            except ValueError:
                assert nm.routes[chain[0][0]][chain[0][1]] & ROUTE_FROM_GIN == 0
                continue
            assert destinations(nm.row_ids["psum"], nm.col_ids["psum"], tag, idb) == {chain[0]}
    unused = {(r, c) for r in range(12) for c in range(14)} - set(pes)
    for r, c in unused:
        assert nm.col_ids["filter"][r][c] == (1 << idb) - 1


def test_alexnet_placements_as_eyeriss():
    config = preset("eyeriss")
    _, conv1 = rs_placement(config, R=11, e=7, U=4, t=2)
    assert [(s.row, s.col, s.width) for s in conv1] == [(0, 0, 7), (0, 7, 7)]
    _, conv2 = rs_placement(config, R=5, e=27)
    assert [(s.row, s.col, s.j0, s.width) for s in conv2] == [(0, 0, 0, 14), (5, 0, 14, 13)]
    _, conv4 = rs_placement(config, R=3, e=13, r=2, t=2)
    assert [(s.set, s.row, s.chain) for s in conv4] == \
        [(0, 0, False), (1, 3, True), (2, 6, False), (3, 9, True)]
    nm = noc_map(config, *rs_placement(config, R=3, e=13, r=2, t=2))
    assert nm.chain(0, 4) == [(r, 4) for r in range(6)] and nm.gon_source(0, 4) == (5, 4)
    assert nm.ifmap_tag(0, 2) == nm.ifmap_tag(2, 2) != nm.ifmap_tag(1, 2)
    with pytest.raises(ValueError, match="takes its psums from the PE below"):
        nm.psum_tag(1, 0)
    # Stride 4 leaves ifmap rows 3 of an R=3 set unused.
    nm1 = noc_map(config, [RSSet(3, 4, 4)], [Segment(0, 0, 0)])
    with pytest.raises(ValueError, match="ifmap row 3 is used by no PE of set 0"):
        nm1.ifmap_tag(0, 3)


@pytest.mark.parametrize("sets, segments, message", [
    ([RSSet(3, 4)], [Segment(0, 10, 0)], "does not fit the 12 x 14 array"),
    ([RSSet(3, 15)], [Segment(0, 0, 0)], "does not fit the 12 x 14 array"),
    ([RSSet(3, 4), RSSet(3, 4)], [Segment(0, 0, 0), Segment(1, 2, 3)],
     r"PE \(2, 3\) is in segments 0 and 1"),
    ([RSSet(3, 4)], [Segment(0, 0, 0, 0, 2)], r"columns \[2, 3\] of set 0 are not placed"),
    ([RSSet(3, 4)], [Segment(0, 0, 0), Segment(0, 3, 0, 1, 2)], "placed twice"),
    ([RSSet(3, 4)], [Segment(0, 3, 0, chain=True)], "no segment ends right below it"),
    ([RSSet(3, 4), RSSet(3, 4, out=1)], [Segment(0, 0, 0), Segment(1, 3, 0, chain=True)],
     "no segment ends right below it"),
    ([RSSet(3, 4)], [Segment(1, 0, 0)], "names set 1"),
    ([RSSet(3, 4)], [Segment(0, 0, 0, 3, 2)], "covers columns 3 to 4 of set 0"),
])
def test_noc_map_rejects_bad_placements(sets, segments, message):
    with pytest.raises(ValueError, match=message):
        noc_map(preset("eyeriss"), sets, segments)


def test_noc_map_rejects_too_few_id_bits():
    # CONV2's 31 ifmap rows share one row group: 5 bits hold them (31 IDs), 4 do not.
    sets, segments = rs_placement(preset("eyeriss"), R=5, e=27)
    noc_map(preset("eyeriss").replace(noc_id_bits=5), sets, segments)
    with pytest.raises(ValueError, match="the ifmap network needs 31 column IDs among rows "
                                         "0, 1, .* noc_id_bits=4 gives; raise noc_id_bits"):
        noc_map(preset("eyeriss").replace(noc_id_bits=4), sets, segments)


def test_rs_placement_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match="4 sets of 5 x 14 PEs .* do not fit the 12 x 14"):
        rs_placement(preset("eyeriss"), R=5, e=14, t=4)
    with pytest.raises(ValueError, match="R must be an integer of at least 1, not 0"):
        rs_placement(preset("eyeriss"), R=0, e=4)
    with pytest.raises(ValueError, match="set stride must be a positive integer"):
        RSSet(3, 4, 0)
    with pytest.raises(TypeError, match="config must be an ArrayConfig"):
        noc_map("eyeriss", [], [])


def test_solve_ids_groups_rows_that_share_keys():
    config = ArrayConfig(rows=3, cols=3, noc_id_bits=3)
    keys = [["a", "b", None], ["c", "a", None], [None, None, "z"]]
    row_ids, col_ids, tags = solve_ids(config, keys)
    assert row_ids[0] == row_ids[1] != row_ids[2]
    for key, tag in tags.items():
        assert destinations(row_ids, col_ids, tag, 3) == {
            (r, c) for r in range(3) for c in range(3) if keys[r][c] == key}
    assert col_ids[0][2] == 7
