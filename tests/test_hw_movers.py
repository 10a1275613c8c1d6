"""Tests of hw/movers.py in Amaranth's simulator: the GIN sender, the GON receiver and the
output stage under random backpressure on every stream, checked bit for bit against plain
Python models; lane interleaving order, fences and completions, stall until a segment opens,
pending segments, in-order retirement, overflow, throughput."""

from collections import deque

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import wiring

from rsaccel.hw.glb import GlobalBuffer
from rsaccel.hw.movers import GinSender, GonReceiver, OutputStage
from rsaccel.sim.noc_bench import pack, unpack
from rsaccel.sim.streams import run_simulation, stream_get, stream_put
from rsaccel.sim.vectors import FP32_SPECIALS, cvt_random
from rsaccel.sw.numerics import relu32, to_fp16


def words_of(values, per_word, bits):
    """Pack ``values`` little end first, ``per_word`` to a word; the last word zero-padded."""
    out = []
    for k in range(0, len(values), per_word):
        out.append(sum(int(v) << (bits * i) for i, v in enumerate(values[k:k + per_word])))
    return out


def stall(rng, p=0.4, most=3):
    """Random backpressure: often none, sometimes a few cycles."""
    return int(rng.integers(1, most + 1)) if rng.random() < p else 0


# -- GinSender ---------------------------------------------------------------------------------

def sender(elem_bits=16, lanes=3, addr_width=7):
    return GinSender(elem_bits=elem_bits, values_per_packet=64 // elem_bits, word_bits=64,
                     glb_addr_width=addr_width, id_bits=6, lanes=lanes)


def gin_model(descs, lanes, V, memory, elem_bits):
    """Return the packets (row_tag, col_tag, count, values) in the documented order, for
    descriptors of 1 value or more offered without gaps."""
    queue = deque(d for d in descs if d["values"])
    slots = [None] * lanes
    last = -1
    out = []
    mask = (1 << elem_bits) - 1
    while queue or any(slots):
        for step in range(1, lanes + 1):
            s = (last + step) % lanes
            head = queue[0] if queue else None
            if slots[s] is None and head and not (head.get("fence") and any(slots)) and not any(
                    d and (d["row_tag"], d["col_tag"]) == (head["row_tag"], head["col_tag"])
                    for d in slots):
                slots[s] = dict(queue.popleft())
            if slots[s] is not None:
                d = slots[s]
                count = min(V, d["values"])
                word = memory[d["glb_addr"]]
                out.append((d["row_tag"], d["col_tag"], count,
                            [word >> (elem_bits * k) & mask for k in range(count)]))
                d["glb_addr"] += 1
                d["values"] -= count
                if not d["values"]:
                    slots[s] = None
                last = s
                break
    return out


def random_descs(rng, count, words, V, max_values=14, zeros=True, fences=0.0):
    tags = rng.choice(64 * 64, count, replace=False)
    descs = []
    for k in range(count):
        values = int(rng.integers(0 if zeros else 1, max_values + 1))
        need = max(1, -(-values // V))
        descs.append({"glb_addr": int(rng.integers(0, words - need + 1)), "values": values,
                      "row_tag": int(tags[k]) // 64, "col_tag": int(tags[k]) % 64,
                      "fence": int(rng.random() < fences)})
    return descs


def run_sender(dut, descs, memory, rng, desc_gaps, trace=None):
    """Run ``descs`` through ``dut`` with a Python GLB read port; return the packets.

    If ``trace`` is a list, append to it, per cycle: the descriptor transferred on ``desc``
    (a dict, or None), the packet transferred on ``gin`` (a dict, or None) and ``done``."""
    V, elem_bits = dut.values_per_packet, 64 // dut.values_per_packet
    layout = dut.gin.payload.shape()
    expected = sum(-(-d["values"] // V) for d in descs)
    pending = deque()
    got = []

    async def feed(ctx):
        for d in descs:
            await stream_put(ctx, dut.desc, pack(dut.desc.payload.shape(), d),
                             gap=stall(rng) if desc_gaps else 0)

    async def glb(ctx):
        # A read port answering in order, after a random delay, under random backpressure.
        # (Cycle by cycle: a background bench must not be dropped inside ``until``.)
        addr_ready = data_valid = 0
        async for _, _, addr_valid, addr, data_ready in ctx.tick().sample(
                dut.glb_addr.valid, dut.glb_addr.payload, dut.glb_data.ready):
            if addr_ready and addr_valid:
                pending.append(addr)
            if data_valid and data_ready:
                data_valid = 0
            if not data_valid and pending and rng.random() < 0.7:
                data_valid = 1
                ctx.set(dut.glb_data.payload, memory[pending.popleft()])
            addr_ready = int(rng.random() < 0.7)
            ctx.set(dut.glb_addr.ready, addr_ready)
            ctx.set(dut.glb_data.valid, data_valid)

    async def collect(ctx):
        while len(got) < expected:
            p = unpack(layout, await stream_get(ctx, dut.gin, stall=stall(rng)))
            got.append((p["row_tag"], p["col_tag"], p["count"], p["data"][:p["count"]]))
        await ctx.tick().repeat(10)
        assert ctx.get(dut.idle) and not ctx.get(dut.gin.valid)

    async def monitor(ctx):
        desc_layout = dut.desc.payload.shape()
        async for _, _, dv, dr, d, gv, gr, g, done in ctx.tick().sample(
                dut.desc.valid, dut.desc.ready, dut.desc.payload.as_value(), dut.gin.valid,
                dut.gin.ready, dut.gin.payload.as_value(), dut.done):
            trace.append((unpack(desc_layout, d) if dv and dr else None,
                          unpack(layout, g) if gv and gr else None, done))

    run_simulation(dut, feed, collect, background=[glb] + ([monitor] if trace is not None
                                                           else []),
                   deadline_cycles=40 * expected + 500)
    assert all(0 <= v < 1 << elem_bits for *_, vals in got for v in vals)
    return got


async def span(ctx, strobe, count):
    """Return the cycles from the first of ``count`` cycles with ``strobe`` high to the last."""
    cycle = first = seen = 0
    while seen < count:
        *_, high = await ctx.tick().sample(strobe)
        cycle += 1
        if high:
            first = first or cycle
            seen += 1
    return cycle - first + 1


@pytest.mark.parametrize("elem_bits, lanes", [(16, 3), (32, 1), (16, 4)])
def test_sender_rows_arrive_whole_and_in_order(elem_bits, lanes):
    rng = np.random.default_rng(lanes * 100 + elem_bits)
    dut = sender(elem_bits, lanes)
    V = dut.values_per_packet
    memory = [int(w) for w in rng.integers(0, 1 << 63, 128, dtype=np.uint64)]
    descs = random_descs(rng, 60, 128, V)
    got = run_sender(dut, descs, memory, rng, desc_gaps=True)
    # Per row (tags are unique), the packets are the row's values, in order.
    want = {}
    for d in descs:
        want[(d["row_tag"], d["col_tag"])] = gin_model([d], 1, V, memory, elem_bits)
    rows = {key: [] for key in want}
    for packet in got:
        rows[packet[:2]].append(packet)
    assert rows == want


@pytest.mark.parametrize("elem_bits, lanes", [(16, 3), (32, 2), (16, 1), (16, 5)])
def test_sender_interleaves_lanes_as_documented(elem_bits, lanes):
    # Descriptors offered without gaps: the order is exactly the model's, whatever the
    # backpressure on the GLB and GIN sides.
    rng = np.random.default_rng(7 + lanes)
    dut = sender(elem_bits, lanes)
    V = dut.values_per_packet
    memory = [int(w) for w in rng.integers(0, 1 << 63, 128, dtype=np.uint64)]
    descs = random_descs(rng, 40, 128, V, zeros=False)
    got = run_sender(dut, descs, memory, rng, desc_gaps=False)
    assert got == gin_model(descs, lanes, V, memory, elem_bits)


def test_sender_round_robin_pattern():
    # Rows of 3, 1 and 2 packets on two lanes: A0 B0 A1 C0 A2 C1 (C takes B's slot in turn).
    rng = np.random.default_rng(3)
    dut = sender(16, 2)
    memory = list(range(128))           # the first value of each word is its address
    descs = [{"glb_addr": a, "values": v, "row_tag": t, "col_tag": 0}
             for a, v, t in ((0, 12, 1), (10, 4, 2), (20, 7, 3))]
    got = run_sender(dut, descs, memory, rng, desc_gaps=False)
    assert [(tag, vals[0], count) for tag, _, count, vals in got] == [
        (1, 0, 4), (2, 10, 4), (1, 1, 4), (3, 20, 4), (1, 2, 4), (3, 21, 3)]


@pytest.mark.parametrize("elem_bits, lanes", [(16, 3), (32, 2), (16, 1), (16, 4)])
def test_sender_fences_wait_for_earlier_rows(elem_bits, lanes):
    # Random fences (some on rows of 0 values), random gaps and backpressure: a fenced row is
    # taken only once every packet of the rows before it has left; a row closes in the cycle
    # of its last packet (or of its descriptor, for 0 values), and ``done`` retires the rows
    # in order, one a cycle, each from the cycle after it and every earlier row closed.
    rng = np.random.default_rng(50 + lanes * 10 + elem_bits)
    dut = sender(elem_bits, lanes)
    V = dut.values_per_packet
    memory = [int(w) for w in rng.integers(0, 1 << 63, 128, dtype=np.uint64)]
    descs = random_descs(rng, 60, 128, V, fences=0.3)
    assert sum(d["fence"] for d in descs) > 5
    trace = []
    got = run_sender(dut, descs, memory, rng, desc_gaps=True, trace=trace)
    packets = {(d["row_tag"], d["col_tag"]): -(-d["values"] // V) for d in descs}
    assert len(got) == sum(packets.values())

    taken = [d for d, _, _ in trace if d is not None]
    assert [(d["row_tag"], d["col_tag"]) for d in taken] == list(packets)
    order = list(packets)
    sent, seen, closed, retired, out_of_order = 0, {key: 0 for key in packets}, set(), 0, 0
    for d, p, done in trace:
        assert done == (retired in closed)
        retired += done
        if d is not None:
            k = order.index((d["row_tag"], d["col_tag"]))
            if d["fence"]:
                assert sent == sum(list(packets.values())[:k]), f"fenced row {k} early"
            if not d["values"]:
                closed.add(k)
        if p is not None:
            key = (p["row_tag"], p["col_tag"])
            seen[key] += 1
            sent += 1
            if seen[key] == packets[key]:
                k = order.index(key)
                out_of_order += any(j not in closed for j in range(k))
                closed.add(k)
    while retired in closed:
        retired += 1
    assert retired == len(descs)
    assert out_of_order or lanes == 1                   # rows did close out of order


def test_sender_orders_rows_with_the_same_tags():
    # Rows repeat tags (as a pass's rows do in the next pass): a row waits until the row with
    # its tags has sent its last packet, holding back the rows behind it, and the order is
    # the documented one.
    rng = np.random.default_rng(9)
    dut = sender(16, 4)
    V = dut.values_per_packet
    memory = [int(w) for w in rng.integers(0, 1 << 63, 128, dtype=np.uint64)]
    descs = random_descs(rng, 40, 128, V, zeros=False)
    for k, d in enumerate(descs):
        d["row_tag"], d["col_tag"] = k % 5, 0
    got = run_sender(dut, descs, memory, rng, desc_gaps=False)
    assert got == gin_model(descs, 4, V, memory, 16)
    want = {}
    for d in descs:
        want.setdefault(d["row_tag"], []).extend(gin_model([d], 1, V, memory, 16))
    rows = {}
    for packet in got:
        rows.setdefault(packet[0], []).append(packet)
    assert rows == want


@pytest.mark.parametrize("elem_bits, lanes", [(16, 3), (32, 2), (16, 5)])
def test_sender_interleaves_around_fences_as_documented(elem_bits, lanes):
    # Without gaps, the order is the model's: a fenced row waits until every slot is empty
    # and then takes the slot after the last one visited; unfenced rows interleave as usual.
    rng = np.random.default_rng(70 + lanes)
    dut = sender(elem_bits, lanes)
    V = dut.values_per_packet
    memory = [int(w) for w in rng.integers(0, 1 << 63, 128, dtype=np.uint64)]
    descs = random_descs(rng, 40, 128, V, zeros=False, fences=0.2)
    got = run_sender(dut, descs, memory, rng, desc_gaps=False)
    assert got == gin_model(descs, lanes, V, memory, elem_bits)


def test_sender_fence_pattern():
    # Two lanes: A (3 packets), B (1), C fenced (2), D (1): A0 B0 A1 A2, then C0 D0 C1 once
    # A's last packet has left.
    rng = np.random.default_rng(4)
    dut = sender(16, 2)
    memory = list(range(128))
    descs = [{"glb_addr": a, "values": v, "row_tag": t, "col_tag": 0, "fence": f}
             for a, v, t, f in ((0, 12, 1, 0), (10, 4, 2, 0), (20, 7, 3, 1), (30, 2, 4, 0))]
    got = run_sender(dut, descs, memory, rng, desc_gaps=False)
    assert [(tag, vals[0]) for tag, _, _, vals in got] == [
        (1, 0), (2, 10), (1, 1), (1, 2), (3, 20), (4, 30), (3, 21)]


class SenderOnGlb(Elaboratable):
    """A GinSender reading a real GlobalBuffer (one read port, one write port to preload)."""

    def __init__(self, lanes):
        self.glb = GlobalBuffer(banks=2, depth=64, word_bits=64, read_ports=1, write_ports=1)
        self.sender = GinSender(elem_bits=16, values_per_packet=4, word_bits=64,
                                glb_addr_width=self.glb.addr_width, id_bits=6, lanes=lanes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.glb, m.submodules.sender = self.glb, self.sender
        wiring.connect(m, self.sender.glb_addr, self.glb.read_addr[0])
        wiring.connect(m, self.glb.read_data[0], self.sender.glb_data)
        return m


def test_sender_one_packet_per_cycle_from_the_glb():
    rng = np.random.default_rng(5)
    top = SenderOnGlb(lanes=3)
    dut = top.sender
    memory = [int(w) for w in rng.integers(0, 1 << 63, top.glb.words, dtype=np.uint64)]
    descs = [{"glb_addr": 30 * k, "values": 4 * 30 - k, "row_tag": k, "col_tag": 5}
             for k in range(4)]
    want = gin_model(descs, 3, 4, memory, 16)
    got, spans = [], []

    async def bench(ctx):
        for addr, word in enumerate(memory):
            await stream_put(ctx, top.glb.write[0], addr | word << top.glb.addr_width)
        for d in descs:
            await stream_put(ctx, dut.desc, pack(dut.desc.payload.shape(), d))

    async def collect(ctx):
        ctx.set(dut.gin.ready, 1)
        layout = dut.gin.payload.shape()
        cycle = first = 0
        while len(got) < len(want):
            *_, valid, payload = await ctx.tick().sample(dut.gin.valid,
                                                         dut.gin.payload.as_value())
            cycle += 1
            if valid:
                first = first or cycle
                p = unpack(layout, payload)
                got.append((p["row_tag"], p["col_tag"], p["count"], p["data"][:p["count"]]))
        spans.append(cycle - first + 1)

    run_simulation(top, bench, collect, deadline_cycles=5000)
    assert got == want
    assert spans[0] <= len(want) + 2


@pytest.mark.parametrize("kwargs, message", [
    ({"elem_bits": 8}, "elem_bits must be 16 or 32, not 8"),
    ({"values_per_packet": 2}, r"must equal word_bits \(64\), not 2 \* 16"),
    ({"lanes": 0}, "lanes must be a positive integer, not 0"),
    ({"id_bits": True}, "id_bits must be a positive integer, not True"),
])
def test_sender_constructor_checks(kwargs, message):
    args = {"elem_bits": 16, "values_per_packet": 4, "word_bits": 64, "glb_addr_width": 8,
            "id_bits": 6, "lanes": 2}
    with pytest.raises(ValueError, match=message):
        GinSender(**{**args, **kwargs})


# -- GonReceiver -------------------------------------------------------------------------------

def receiver(rows=3, cols=4, V=2, word_bits=64):
    return GonReceiver(rows=rows, cols=cols, values_per_packet=V, word_bits=word_bits,
                       glb_addr_width=8)


def gon_packet(dut, row, col, psums, last=0):
    return pack(dut.gon.payload.shape(), {"src_row": row, "src_col": col, "count": len(psums),
                                          "last": last, "data": psums})


def segment(dut, row, col, addr, values):
    return pack(dut.segment.payload.shape(), {"src_row": row, "src_col": col,
                                              "glb_addr": addr, "values": values})


def run_receiver(dut, rng, segments, packets, words, segment_gap, background=()):
    """Offer ``segments`` (gaps from ``segment_gap()``) and ``packets`` to receiver ``dut``
    under random stalls; return the ``words`` writes as ``(addr, data)``, and check that the
    receiver ends idle, without error, with every segment retired."""
    got = []

    async def open_segments(ctx):
        for s in segments:
            await stream_put(ctx, dut.segment, s, gap=segment_gap())

    async def send(ctx):
        for p in packets:
            await stream_put(ctx, dut.gon, p, gap=stall(rng))

    async def collect(ctx):
        while len(got) < words:
            w = await stream_get(ctx, dut.write, stall=stall(rng))
            got.append((w & 0xFF, w >> 8))
        await ctx.tick().repeat(10)
        assert not ctx.get(dut.busy) and not ctx.get(dut.error)
        assert ctx.get(dut.retired) == len(segments)

    run_simulation(dut, open_segments, send, collect, background=list(background),
                   deadline_cycles=40_000)
    return got


def receiver_monitor(dut, log):
    """Return a background bench appending, per cycle, the segment taken (or None), the write
    transferred (``(addr, data)`` or None), ``retired`` and ``busy``."""
    async def monitor(ctx):
        async for _, _, sv, sr, seg, wv, wr, w, retired, busy in ctx.tick().sample(
                dut.segment.valid, dut.segment.ready, dut.segment.payload.as_value(),
                dut.write.valid, dut.write.ready, dut.write.payload.as_value(), dut.retired,
                dut.busy):
            log.append({"segment": unpack(dut.segment.payload.shape(), seg) if sv and sr
                        else None, "write": (w & 0xFF, w >> 8) if wv and wr else None,
                        "retired": retired, "busy": busy})
    return monitor


def close_cycles(log, P, rows=3, cols=4):
    """Return the cycle each segment in ``log`` closed, in the order taken: its take, for one
    of 0 values or outside the array, else the transfer of its last word (addresses are
    written once)."""
    written = {w[0]: k for k, entry in enumerate(log) if (w := entry["write"])}
    out = []
    for k, entry in enumerate(log):
        s = entry["segment"]
        if s is None:
            continue
        if not s["values"] or s["src_row"] >= rows or s["src_col"] >= cols:
            out.append(k)
        else:
            out.append(written[s["glb_addr"] + -(-s["values"] // P) - 1])
    return out


def check_retired(log, P, rows=3, cols=4):
    """``retired`` never counts a segment before it and every earlier one have closed, steps
    by at most one and ends at the number of segments."""
    closes = close_cycles(log, P, rows, cols)
    leading = [max(closes[:k + 1]) for k in range(len(closes))]   # cycle k+1 lead closed
    previous = 0
    for cycle, entry in enumerate(log):
        retired = entry["retired"]
        assert retired - previous in (0, 1)
        assert retired == 0 or leading[retired - 1] < cycle
        previous = retired
    assert log[-1]["retired"] == len(closes)


def split(rng, psums, V):
    """Cut ``psums`` into packets of 1 to V psums."""
    parts, k = [], 0
    while k < len(psums):
        n = int(rng.integers(1, V + 1))
        parts.append(psums[k:k + n])
        k += n
    return parts


def interleave(rng, queues):
    """Merge lists at random, keeping the order within each."""
    queues = [deque(q) for q in queues if q]
    out = []
    while queues:
        k = int(rng.integers(0, len(queues)))
        out.append(queues[k].popleft())
        if not queues[k]:
            queues.pop(k)
    return out


@pytest.mark.parametrize("V, word_bits", [(2, 64), (1, 64), (2, 128)])
def test_receiver_random_segments_and_packets(V, word_bits):
    rng = np.random.default_rng(V * 1000 + word_bits)
    dut = receiver(V=V, word_bits=word_bits)
    P = word_bits // 32
    sources = [(r, c) for r in range(3) for c in range(4)]
    chosen = [sources[k] for k in rng.choice(len(sources), 9, replace=False)]
    segments, packets, want = [], [], {}
    addr = 0
    for _ in range(3):                  # rounds: every source's segment, then the next
        round_segments, round_packets = [], []
        for row, col in chosen:
            values = int(rng.integers(0, 12))
            psums = [int(x) for x in rng.integers(0, 1 << 32, values, dtype=np.uint64)]
            round_segments.append(segment(dut, row, col, addr, values))
            for k, w in enumerate(words_of(psums, P, 32)):
                want[addr + k] = w
            addr += -(-values // P)
            round_packets.append([gon_packet(dut, row, col, part) for part in split(rng, psums,
                                                                                    V)])
        segments += [round_segments[k] for k in rng.permutation(len(round_segments))]
        packets += interleave(rng, round_packets)
    got = run_receiver(dut, rng, segments, packets, len(want), lambda: stall(rng, most=6))
    assert sorted(got) == sorted(want.items())          # each word once, at its address


@pytest.mark.parametrize("V, word_bits", [(2, 64), (1, 64), (2, 128)])
def test_receiver_pending_segments_with_overlapping_rounds(V, word_bits):
    # Every source gets a segment per round; segments are queued round by round as fast as
    # they are taken, and a round's packets may start as soon as the round two before it is
    # over, so most segments are taken while their source's previous one is still open.
    rng = np.random.default_rng(V * 300 + word_bits)
    dut = receiver(V=V, word_bits=word_bits)
    P = word_bits // 32
    rounds = 5
    sources = [(r, c) for r in range(3) for c in range(4)]
    chosen = [sources[k] for k in rng.choice(len(sources), 10, replace=False)]
    segments, queues, want = [], {s: deque() for s in chosen}, {}
    addr = 0
    for r in range(rounds):
        round_segments = []
        for row, col in chosen:
            values = int(rng.integers(0, 10))
            psums = [int(x) for x in rng.integers(0, 1 << 32, values, dtype=np.uint64)]
            round_segments.append(segment(dut, row, col, addr, values))
            for k, w in enumerate(words_of(psums, P, 32)):
                want[addr + k] = w
            addr += -(-values // P)
            queues[row, col].extend((r, gon_packet(dut, row, col, part))
                                    for part in split(rng, psums, V))
        segments += [round_segments[k] for k in rng.permutation(len(round_segments))]
    assert addr < 256
    packets = []
    while any(queues.values()):
        oldest = min(q[0][0] for q in queues.values() if q)
        ready = [q for q in queues.values() if q and q[0][0] <= oldest + 1]
        packets.append(ready[int(rng.integers(0, len(ready)))].popleft()[1])
    log = []
    got = run_receiver(dut, rng, segments, packets, len(want), lambda: stall(rng, p=0.2),
                       background=[receiver_monitor(dut, log)])
    assert sorted(got) == sorted(want.items())
    check_retired(log, P)


def test_receiver_two_segments_of_a_source_before_its_packets():
    # (1, 2)'s two segments are queued ahead of (0, 0)'s and (2, 3)'s, whose packets come
    # first: the second one waits in the pending slot without holding the others back.
    dut = receiver()
    got, log = [], []

    async def open_segments(ctx):
        for row, col, addr, values in ((1, 2, 0, 3), (1, 2, 10, 2), (0, 0, 20, 2),
                                       (2, 3, 30, 1)):
            await stream_put(ctx, dut.segment, segment(dut, row, col, addr, values))

    async def send(ctx):
        for row, col, psums in ((0, 0, [0xA, 0xB]), (2, 3, [0xC]), (1, 2, [1, 2]),
                                (1, 2, [3]), (1, 2, [4, 5])):
            await stream_put(ctx, dut.gon, gon_packet(dut, row, col, psums))

    async def collect(ctx):
        rng = np.random.default_rng(1)
        for _ in range(5):
            w = await stream_get(ctx, dut.write, stall=stall(rng))
            got.append((w & 0xFF, w >> 8))
        await ctx.tick().repeat(5)
        assert not ctx.get(dut.busy) and ctx.get(dut.retired) == 4

    run_simulation(dut, open_segments, send, collect, background=[receiver_monitor(dut, log)],
                   deadline_cycles=500)
    assert got == [(20, 0xB << 32 | 0xA), (30, 0xC), (0, 2 << 32 | 1), (1, 3), (10, 5 << 32 | 4)]
    check_retired(log, 2)


def test_receiver_waits_for_its_segment_then_packs_across_packets():
    dut = receiver()
    got, ready_seen = [], []

    async def send(ctx):
        # A packet from (1, 2) with no open segment waits, and holds up (0, 1)'s behind it.
        for row, col, psums in ((1, 2, [0x11]), (0, 1, [0xA, 0xB]), (1, 2, [0x22, 0x33])):
            await stream_put(ctx, dut.gon, gon_packet(dut, row, col, psums))

    async def open_segments(ctx):
        await stream_put(ctx, dut.segment, segment(dut, 0, 1, 40, 2))
        for _ in range(20):
            *_, ready = await ctx.tick().sample(dut.gon.ready)
            ready_seen.append(ready)
        await stream_put(ctx, dut.segment, segment(dut, 1, 2, 10, 3))

    async def collect(ctx):
        ctx.set(dut.write.ready, 1)
        for _ in range(60):
            *_, valid, payload = await ctx.tick().sample(dut.write.valid,
                                                         dut.write.payload.as_value())
            if valid:
                got.append((payload & 0xFF, payload >> 8))

    run_simulation(dut, send, open_segments, collect)
    assert not any(ready_seen)
    # (1, 2): 0x11 then 0x22, 0x33 packed across packets; the last word padded. Two words
    # from one packet: the full one, then the padded one.
    assert got == [(40, 0xB << 32 | 0xA), (10, 0x22 << 32 | 0x11), (11, 0x33)]


def test_receiver_queues_a_sources_next_segment_behind_the_open_one():
    dut = receiver()
    got = []

    async def open_segments(ctx):
        for addr, values in ((3, 2), (20, 3), (9, 1)):     # back to back, one source
            await stream_put(ctx, dut.segment, segment(dut, 2, 1, addr, values))

    async def send(ctx):
        await ctx.tick().repeat(8)
        for psums in ([1, 2], [3, 4], [5], [6]):
            await stream_put(ctx, dut.gon, gon_packet(dut, 2, 1, psums))

    async def collect(ctx):
        for _ in range(4):
            w = await stream_get(ctx, dut.write)
            got.append((w & 0xFF, w >> 8))

    run_simulation(dut, open_segments, send, collect)
    assert got == [(3, 2 << 32 | 1), (20, 4 << 32 | 3), (21, 5), (9, 6)]


def test_receiver_third_segment_waits_only_until_the_first_closes():
    dut = receiver()
    got, log = [], []

    async def open_segments(ctx):
        for row, col, addr, values in ((2, 1, 0, 2), (2, 1, 5, 2), (2, 1, 9, 2), (0, 3, 20, 1)):
            await stream_put(ctx, dut.segment, segment(dut, row, col, addr, values))

    async def send(ctx):
        await ctx.tick().repeat(15)
        for row, col, psums in ((2, 1, [1, 2]), (0, 3, [7]), (2, 1, [3, 4]), (2, 1, [5, 6])):
            await stream_put(ctx, dut.gon, gon_packet(dut, row, col, psums))

    async def collect(ctx):
        ctx.set(dut.write.ready, 1)
        while len(got) < 4:
            *_, valid, payload = await ctx.tick().sample(dut.write.valid,
                                                         dut.write.payload.as_value())
            if valid:
                got.append((payload & 0xFF, payload >> 8))
        await ctx.tick().repeat(5)

    run_simulation(dut, open_segments, send, collect, background=[receiver_monitor(dut, log)],
                   deadline_cycles=500)
    assert got == [(0, 2 << 32 | 1), (20, 7), (5, 4 << 32 | 3), (9, 6 << 32 | 5)]
    takes = [k for k, entry in enumerate(log) if entry["segment"]]
    first_closed = next(k for k, entry in enumerate(log) if entry["write"])
    # The first three back to back (the third held inside, with ``segment.ready`` low); the
    # fourth only once the packet closing the first segment is processed (its word is
    # transferred on ``write`` from the next cycle on).
    assert takes[:3] == list(range(takes[0], takes[0] + 3))
    assert takes[3] - takes[2] > 12
    assert first_closed - 1 <= takes[3] <= first_closed + 1
    check_retired(log, 2)


def test_receiver_retires_in_order():
    # Segments 0 and 1 for two sources, then one of 0 values: 1 and 2 close first, but
    # ``retired`` waits for 0, then counts all three.
    dut = receiver()
    log, seen = [], []

    async def bench(ctx):
        for row, col, addr, values in ((0, 0, 0, 2), (1, 1, 4, 2), (2, 2, 8, 0)):
            await stream_put(ctx, dut.segment, segment(dut, row, col, addr, values))
        await stream_put(ctx, dut.gon, gon_packet(dut, 1, 1, [3, 4]))
        for _ in range(10):
            await ctx.tick()
            seen.append(ctx.get(dut.retired))
        await stream_put(ctx, dut.gon, gon_packet(dut, 0, 0, [1, 2]))
        await ctx.tick().repeat(6)
        seen.append(ctx.get(dut.retired))

    async def collect(ctx):
        ctx.set(dut.write.ready, 1)
        await ctx.tick().repeat(40)

    run_simulation(dut, bench, collect, background=[receiver_monitor(dut, log)])
    assert seen == [0] * 10 + [3]
    written = [entry["write"] for entry in log if entry["write"]]
    assert written == [(4, 4 << 32 | 3), (0, 2 << 32 | 1)]
    check_retired(log, 2)


def test_receiver_waits_when_the_sequence_window_is_full():
    # A 1 x 2 array: window of 4. One open segment and three of 0 values fill it; the fifth
    # waits until the first closes.
    dut = GonReceiver(rows=1, cols=2, values_per_packet=2, word_bits=64, glb_addr_width=8)
    assert dut.window == 4
    log, ready_seen = [], []

    async def open_segments(ctx):
        await stream_put(ctx, dut.segment, segment(dut, 0, 0, 3, 1))
        for _ in range(4):
            await stream_put(ctx, dut.segment, segment(dut, 0, 1, 0, 0))

    async def send(ctx):
        for _ in range(12):
            *_, ready = await ctx.tick().sample(dut.segment.ready)
            ready_seen.append(ready)
        assert ctx.get(dut.retired) == 0 and ctx.get(dut.busy)
        await stream_put(ctx, dut.gon, gon_packet(dut, 0, 0, [9]))
        await ctx.tick().repeat(10)
        assert ctx.get(dut.retired) == 5 and not ctx.get(dut.busy)

    async def collect(ctx):
        ctx.set(dut.write.ready, 1)

    run_simulation(dut, open_segments, send, collect, background=[receiver_monitor(dut, log)])
    assert not any(ready_seen[6:])
    assert [entry["write"] for entry in log if entry["write"]] == [(3, 9)]
    check_retired(log, 2, rows=1, cols=2)


def test_receiver_restart():
    # ``clear`` leaves ``retired``; ``restart`` zeroes it and numbering starts again.
    dut = receiver()
    got, seen = [], []

    async def layer(ctx, base):
        for k in range(3):
            await stream_put(ctx, dut.segment, segment(dut, k, k, base + k, 1))
        for k in range(3):
            await stream_put(ctx, dut.gon, gon_packet(dut, k, k, [base + k]))
        await ctx.tick().repeat(8)

    async def bench(ctx):
        await layer(ctx, 0)
        await stream_put(ctx, dut.segment, segment(dut, 3, 0, 0, 1))     # outside: error
        await ctx.tick().repeat(4)
        seen.append((ctx.get(dut.retired), ctx.get(dut.error), ctx.get(dut.busy)))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        seen.append((ctx.get(dut.retired), ctx.get(dut.error), ctx.get(dut.busy)))
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        seen.append((ctx.get(dut.retired), ctx.get(dut.error), ctx.get(dut.busy)))
        await layer(ctx, 100)
        seen.append((ctx.get(dut.retired), ctx.get(dut.error), ctx.get(dut.busy)))

    async def collect(ctx):
        for _ in range(6):
            w = await stream_get(ctx, dut.write)
            got.append((w & 0xFF, w >> 8))

    run_simulation(dut, bench, collect)
    assert seen == [(4, 1, 0), (4, 0, 0), (0, 0, 1), (3, 0, 0)]       # busy: clearing
    assert got == [(0, 0), (1, 1), (2, 2), (100, 100), (101, 101), (102, 102)]


def test_receiver_restart_clears_segments_left_open():
    # A layer stopped with a segment open and one pending: after ``restart`` the source's
    # psums go to the new layer's segment.
    dut = receiver()
    got = []

    async def bench(ctx):
        await stream_put(ctx, dut.segment, segment(dut, 1, 2, 10, 4))
        await stream_put(ctx, dut.segment, segment(dut, 1, 2, 20, 4))
        await stream_put(ctx, dut.gon, gon_packet(dut, 1, 2, [5]))
        await ctx.tick().repeat(4)
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        await stream_put(ctx, dut.segment, segment(dut, 1, 2, 50, 1))
        await stream_put(ctx, dut.gon, gon_packet(dut, 1, 2, [7]))
        await ctx.tick().repeat(8)
        assert ctx.get(dut.retired) == 1 and not ctx.get(dut.busy)

    async def collect(ctx):
        w = await stream_get(ctx, dut.write)
        got.append((w & 0xFF, w >> 8))

    run_simulation(dut, bench, collect)
    assert got == [(50, 7)]


def test_receiver_overflow_sets_the_error_flag():
    dut = receiver()
    got, flags = [], []

    async def bench(ctx):
        await stream_put(ctx, dut.segment, segment(dut, 2, 3, 7, 3))
        await stream_put(ctx, dut.gon, gon_packet(dut, 2, 3, [1, 2]))
        await stream_put(ctx, dut.gon, gon_packet(dut, 2, 3, [3, 4]))    # one psum too many
        await ctx.tick().repeat(4)
        flags.append(ctx.get(dut.error))
        flags.append(ctx.get(dut.busy))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        flags.append(ctx.get(dut.error))
        await stream_put(ctx, dut.segment, segment(dut, 3, 0, 0, 1))     # outside the array
        await ctx.tick().repeat(2)
        flags.append(ctx.get(dut.error))

    async def collect(ctx):
        for _ in range(2):
            w = await stream_get(ctx, dut.write)
            got.append((w & 0xFF, w >> 8))

    run_simulation(dut, bench, collect)
    assert got == [(7, 2 << 32 | 1), (8, 3)]
    assert flags == [1, 0, 0, 1]


def test_receiver_one_packet_per_cycle():
    dut = receiver(rows=12, cols=14)
    n = 60
    spans = []

    async def bench(ctx):
        await stream_put(ctx, dut.segment, segment(dut, 11, 13, 0, 2 * n))
        await stream_put(ctx, dut.segment, segment(dut, 11, 0, 100, 2 * n))
        ctx.set(dut.gon.valid, 1)
        for k in range(2 * n):
            ctx.set(dut.gon.payload.as_value(), gon_packet(dut, 11, 13 * (k % 2), [k, k + 1]))
            await ctx.tick().until(dut.gon.ready)
        ctx.set(dut.gon.valid, 0)

    async def collect(ctx):
        ctx.set(dut.write.ready, 1)
        spans.append(await span(ctx, dut.write.valid, 2 * n))

    run_simulation(dut, bench, collect)
    assert spans[0] == 2 * n


def test_receiver_one_packet_per_cycle_across_segments():
    # One source, its open and pending segments queued first: the packets stream from one
    # into the next without a bubble.
    dut = receiver(rows=12, cols=14)
    n = 30
    spans = []

    async def bench(ctx):
        await stream_put(ctx, dut.segment, segment(dut, 5, 7, 0, 2 * n))
        await stream_put(ctx, dut.segment, segment(dut, 5, 7, 100, 2 * n))
        ctx.set(dut.gon.valid, 1)
        for k in range(2 * n):
            ctx.set(dut.gon.payload.as_value(), gon_packet(dut, 5, 7, [k, k + 1]))
            await ctx.tick().until(dut.gon.ready)
        ctx.set(dut.gon.valid, 0)

    async def collect(ctx):
        ctx.set(dut.write.ready, 1)
        spans.append(await span(ctx, dut.write.valid, 2 * n))
        await ctx.tick().repeat(4)
        assert ctx.get(dut.retired) == 2 and not ctx.get(dut.busy)

    run_simulation(dut, bench, collect)
    assert spans[0] == 2 * n


@pytest.mark.parametrize("kwargs, message", [
    ({"word_bits": 48}, "word_bits must be a multiple of 32, not 48"),
    ({"values_per_packet": 3}, "values_per_packet must be at most 2, not 3"),
    ({"rows": 0}, "rows must be a positive integer, not 0"),
])
def test_receiver_constructor_checks(kwargs, message):
    args = {"rows": 3, "cols": 4, "values_per_packet": 2, "word_bits": 64,
            "glb_addr_width": 8}
    with pytest.raises(ValueError, match=message):
        GonReceiver(**{**args, **kwargs})


# -- OutputStage -------------------------------------------------------------------------------

def output_model(values, fp16, relu, word_bits):
    values = np.asarray(values, dtype=np.uint32)
    if fp16:
        return words_of(to_fp16(values, relu), word_bits // 16, 16)
    return words_of(relu32(values) if relu else values, word_bits // 32, 32)


@pytest.mark.parametrize("word_bits", [64, 32, 128])
def test_output_stage_matches_the_model(word_bits):
    rng = np.random.default_rng(word_bits)
    dut = OutputStage(word_bits=word_bits, values_bits=8)
    P = word_bits // 32
    rows, inputs, want = [], [], []
    specials = np.concatenate([FP32_SPECIALS, np.array([0x477FF000, 0x33000001, 0x80000000],
                                                       dtype=np.uint32)])
    for _ in range(150):
        n = int(rng.integers(0, 12))
        x = cvt_random(rng, n)
        x = np.where(rng.random(n) < 0.2, rng.choice(specials, n), x).astype(np.uint32)
        fp16, relu = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        rows.append(pack(dut.desc.payload.shape(), {"values": n, "fp16": fp16, "relu": relu}))
        # Junk past the row's end in its last word must be ignored.
        junk = [int(v) for v in rng.integers(0, 1 << 32, -n % P, dtype=np.uint64)]
        inputs += words_of([int(v) for v in x] + junk, P, 32)
        want += output_model(x, fp16, relu, word_bits)
    got = []

    async def describe(ctx):
        for d in rows:
            await stream_put(ctx, dut.desc, d, gap=stall(rng))

    async def feed(ctx):
        for w in inputs:
            await stream_put(ctx, dut.i, w, gap=stall(rng))

    async def collect(ctx):
        while len(got) < len(want):
            got.append(await stream_get(ctx, dut.data, stall=stall(rng)))
        await ctx.tick().repeat(5)
        assert not ctx.get(dut.busy)

    run_simulation(dut, describe, feed, collect, deadline_cycles=10_000)
    assert [hex(w) for w in got] == [hex(w) for w in want]


def test_output_stage_one_input_word_per_cycle():
    # Rows back to back, FP16 and FP32 mixed, odd and even lengths: no bubble between rows.
    dut = OutputStage(word_bits=64)
    rng = np.random.default_rng(2)
    rows = [(int(n), k % 2) for k, n in enumerate(rng.integers(1, 16, 12))]
    inputs = sum(-(-n // 2) for n, _ in rows)
    spans = []

    async def describe(ctx):
        for n, fp16 in rows:
            await stream_put(ctx, dut.desc, pack(dut.desc.payload.shape(),
                                                 {"values": n, "fp16": fp16, "relu": 1}))

    async def feed(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.data.ready, 1)
        spans.append(await span(ctx, dut.i.ready, inputs))

    run_simulation(dut, describe, feed)
    assert spans == [inputs]


@pytest.mark.parametrize("kwargs, message", [
    ({"word_bits": 48}, "word_bits must be a multiple of 32, not 48"),
    ({"word_bits": 64, "values_bits": 0}, "values_bits must be a positive integer, not 0"),
])
def test_output_stage_constructor_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OutputStage(**kwargs)
