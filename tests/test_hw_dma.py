"""Tests of hw/dma.py in Amaranth's simulator: constructor checks, and ``cancel`` against a Python
AXI4 memory with random stalls and protocol checks (copies under stalls: tests/test_sim_dma.py).
"""

from collections import deque

import numpy as np
import pytest
from amaranth.lib.wiring import In, Out

from rsaccel.hw.axi import AXI4Signature, AXILiteSignature
from rsaccel.hw.dma import Dma, DmaError, DmaRead, DmaWrite
from rsaccel.sim.streams import run_simulation, stream_get, stream_put

ADDR_WIDTH = 16                 # the memory model covers the whole address space
KWARGS = {"addr_width": ADDR_WIDTH, "len_width": 12, "max_burst": 4, "max_outstanding": 4}


@pytest.mark.parametrize("engine", [DmaRead, DmaWrite, Dma])
@pytest.mark.parametrize("kwargs, message", [
    ({"max_burst": 3}, "max_burst must be a power of two from 1 to 256, not 3"),
    ({"max_burst": 512}, "max_burst must be a power of two from 1 to 256, not 512"),
    ({"max_outstanding": 0}, "max_outstanding must be 1 to 64, not 0"),
    ({"len_width": 40}, "len_width must be 1 to addr_width, not 40"),
    ({"data_width": 48}, "AXI4 data_width must be a power of two bytes, not 48"),
    ({"addr_width": 8, "len_width": 4}, "AXI4 addr_width must be an integer >= 12, not 8"),
])
def test_engine_checks(engine, kwargs, message):
    with pytest.raises(ValueError, match=message):
        engine(**kwargs)


def test_signatures():
    sig = AXI4Signature(addr_width=32, data_width=64, id_width=4)
    assert sig.members["wstrb"].shape == 8
    assert sig.members["rdata"].flow == In and sig.members["araddr"].flow == Out
    with pytest.raises(ValueError, match="AXI4-Lite addr_width must be an integer >= 4"):
        AXILiteSignature(addr_width=2)


# -- AXI4 memory model -------------------------------------------------------------------------

class AxiMemory:
    """AXI4 subordinate on ``bus`` for a background testbench (``process``): byte memory over
    the whole address space, random stalls on every channel, bursts logged, protocol checked.

    Channels named in ``hold`` (``"ar"``, ``"aw"``, ``"w"``) are refused while named. W beats
    may come before their AW; bursts pair with AWs in order.
    """

    def __init__(self, bus, rng, *, stall=0.3):
        self.bus, self.rng, self.stall = bus, rng, stall
        self.word = len(bus.wdata) // 8
        self.mem = bytearray(rng.integers(0, 256, 1 << len(bus.araddr), dtype=np.uint8))
        self.hold = set()
        self.reads = deque()            # [address, beats left] of accepted AR
        self.writes = deque()           # (address, awlen) of accepted AW waiting for W
        self.w_bursts = deque()         # W bursts (lists of beats) waiting for their AW
        self.w_beats = []               # (data, strobe) of the W burst in progress
        self.responses = 0              # B responses not yet offered
        self.r = self.b = None          # the R beat (data, last) / B response on offer
        self.ar_log, self.aw_log = [], []
        self.bursts = []                # (address, awlen, W beats) of every finished write
        self.r_beats = self.b_count = 0
        self.violations = []

    def quiet(self):
        return not (self.reads or self.writes or self.w_bursts or self.w_beats or self.responses
                    or self.r or self.b)

    def _ready(self, channel):
        return channel not in self.hold and self.rng.random() >= self.stall

    def _write(self, address, awlen, beats):
        self.bursts.append((address, awlen, len(beats)))
        for k, (value, strobe) in enumerate(beats):
            for i in range(self.word):
                if strobe >> i & 1:
                    self.mem[address + k * self.word + i] = value >> 8 * i & 0xff
        self.responses += 1

    async def process(self, ctx):
        bus, w = self.bus, self.word
        names = ["arvalid", "arready", "araddr", "arlen", "awvalid", "awready", "awaddr",
                 "awlen", "wvalid", "wready", "wdata", "wstrb", "wlast", "rvalid", "rready",
                 "bvalid", "bready"]
        stable = {"ar": ("araddr", "arlen"), "aw": ("awaddr", "awlen"),
                  "w": ("wdata", "wstrb", "wlast")}
        waiting = {}                    # channel: payload offered and refused at the last edge
        while True:
            for channel in ("ar", "aw", "w"):
                ctx.set(getattr(bus, f"{channel}ready"), self._ready(channel))
            if self.r is None and self.reads and self._ready("r"):
                address, left = self.reads[0]
                self.r = int.from_bytes(self.mem[address:address + w], "little"), left == 1
                self.reads[0] = [address + w, left - 1]
                if left == 1:
                    self.reads.popleft()
            if self.b is None and self.responses and self._ready("b"):
                self.b, self.responses = 0, self.responses - 1
            ctx.set(bus.rvalid, self.r is not None)
            ctx.set(bus.rdata, self.r[0] if self.r else 0)
            ctx.set(bus.rlast, self.r is not None and self.r[1])
            ctx.set(bus.bvalid, self.b is not None)
            _, _, *values = await ctx.tick().sample(*(getattr(bus, n) for n in names))
            s = dict(zip(names, values))
            for channel, fields in stable.items():
                payload = tuple(s[f] for f in fields)
                if channel in waiting and not (s[f"{channel}valid"] and
                                               payload == waiting.pop(channel)):
                    self.violations.append(f"{channel} changed before its handshake")
                if s[f"{channel}valid"] and not s[f"{channel}ready"]:
                    waiting[channel] = payload
            if s["arvalid"] and s["arready"]:
                self.ar_log.append((s["araddr"], s["arlen"]))
                self.reads.append([s["araddr"], s["arlen"] + 1])
            if s["rvalid"] and s["rready"]:
                self.r, self.r_beats = None, self.r_beats + 1
            if s["awvalid"] and s["awready"]:
                self.aw_log.append((s["awaddr"], s["awlen"]))
                self.writes.append((s["awaddr"], s["awlen"]))
            if s["wvalid"] and s["wready"]:
                self.w_beats.append((s["wdata"], s["wstrb"]))
                if s["wlast"]:
                    self.w_bursts.append(self.w_beats)
                    self.w_beats = []
            while self.writes and self.w_bursts:
                self._write(*self.writes.popleft(), self.w_bursts.popleft())
            if s["bvalid"] and s["bready"]:
                self.b, self.b_count = None, self.b_count + 1


def words_at(mem, address, count, word):
    return [int.from_bytes(mem[address + k * word:address + (k + 1) * word], "little")
            for k in range(count)]


async def command(ctx, cmd, address, words):
    await stream_put(ctx, cmd, address | words << ADDR_WIDTH)


async def pulse(ctx, signal):
    ctx.set(signal, 1)
    await ctx.tick()
    ctx.set(signal, 0)


def check_drained(mem):
    """Every burst issued got all its beats and its response; no protocol rule was broken."""
    assert mem.violations == []
    assert mem.quiet(), "bursts left unfinished"
    assert mem.r_beats == sum(length + 1 for _, length in mem.ar_log)
    assert [(a, n, n + 1) for a, n in mem.aw_log] == mem.bursts
    assert mem.b_count == len(mem.aw_log)


def no_new_request(cancelled, late, valid, ready):
    """Check an address channel after a cancel (``cancelled`` cycles ago, 1 at the cancel edge);
    return whether a request refused at the cancel edge is still waiting (``late``)."""
    if cancelled == 1:
        return valid and not ready
    if cancelled:
        assert late or not valid, "a new address request after the cancel"
        return late and not ready
    return False


def setup(dut, seed):
    mem = AxiMemory(dut.bus, np.random.default_rng(seed))
    return mem, bytes(mem.mem)


async def set_window(ctx, dut):
    ctx.set(dut.window_base, 0)
    ctx.set(dut.window_size, 1 << ADDR_WIDTH)


# -- cancel ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, data_width, cancel_cycles", [(1, 64, 1), (2, 32, 1), (3, 64, 3)])
def test_read_cancel_mid_transfer(seed, data_width, cancel_cycles):
    dut = DmaRead(data_width=data_width, **KWARGS)
    mem, _ = setup(dut, seed)
    w = mem.word
    rng = np.random.default_rng(seed + 100)
    start, words = 0x1000 - 24 * w, 300        # crosses a page, 75+ bursts
    expect = words_at(mem.mem, start, words, w)
    got = []

    async def bench(ctx):
        await set_window(ctx, dut)
        await command(ctx, dut.cmd, start, words)
        cancelled, late = 0, False                # cycles since the cancel began
        while True:
            if not cancelled and len(got) >= 20 and len(mem.reads) >= 3:
                cancelled = 1
            ctx.set(dut.cancel, 0 < cancelled <= cancel_cycles)
            ready = not cancelled and rng.random() < 0.7      # draining needs no data.ready
            ctx.set(dut.data.ready, ready)
            _, _, valid, payload, busy, cmd_ready, arvalid, arready = await ctx.tick().sample(
                dut.data.valid, dut.data.payload, dut.busy, dut.cmd.ready, dut.bus.arvalid,
                dut.bus.arready)
            late = no_new_request(cancelled, late, arvalid, arready)
            assert cancelled <= 1 or not valid, "a word offered on data after the cancel"
            if valid and ready:
                got.append(payload)
            assert cmd_ready == (not busy and not 0 < cancelled <= cancel_cycles)
            if cancelled:
                cancelled += 1
                if not busy and cancelled > cancel_cycles:
                    break
            assert len(got) < words, "the transfer ended before the cancel"
        assert got == expect[:len(got)]
        assert ctx.get(dut.error) == DmaError.NONE
        check_drained(mem)
        assert sum(n + 1 for _, n in mem.ar_log) < words     # cut short
        # A following read returns the right words.
        await command(ctx, dut.cmd, 0x2000 + 8 * w, 37)
        again = [await stream_get(ctx, dut.data, stall=int(rng.integers(0, 2))) for _ in range(37)]
        assert again == words_at(mem.mem, 0x2000 + 8 * w, 37, w)
        await ctx.tick().until(~dut.busy)
        check_drained(mem)

    run_simulation(dut, bench, background=[mem.process], deadline_cycles=5000)


@pytest.mark.parametrize("seed, data_width", [(11, 64), (12, 32)])
def test_read_commands_pipelined(seed, data_width):
    """A command is taken once the one before has requested all its bursts, while its words are
    still coming: the words of all leave in order, a refused one in between streams nothing."""
    dut = DmaRead(data_width=data_width, **KWARGS)
    mem, before = setup(dut, seed)
    w = mem.word
    rng = np.random.default_rng(seed + 100)
    reads = [(0x1000 - 3 * w, 9), (0x2000, 1), (0x2000 + 1, 4), (0x3000 + 8 * w, 22),
             (0x500, 2)]        # the third is misaligned: refused
    expect = [v for a, n in reads if a % w == 0 for v in words_at(before, a, n, w)]
    got, taken_busy = [], 0

    async def bench(ctx):
        nonlocal taken_busy
        await set_window(ctx, dut)
        pending = list(reads)
        while len(got) < len(expect) or pending:
            if pending:
                ctx.set(dut.cmd.valid, 1)
                ctx.set(dut.cmd.payload, {"addr": pending[0][0], "words": pending[0][1]})
            ctx.set(dut.data.ready, rng.random() < 0.6)
            _, _, cv, cr, busy, valid, ready, payload = await ctx.tick().sample(
                dut.cmd.valid, dut.cmd.ready, dut.busy, dut.data.valid, dut.data.ready,
                dut.data.payload)
            if cv and cr:
                taken_busy += busy
                pending.pop(0)
                ctx.set(dut.cmd.valid, 0)
            if valid and ready:
                got.append(payload)
        await ctx.tick().until(~dut.busy)
        assert got == expect
        assert ctx.get(dut.error) == DmaError.ALIGN
        check_drained(mem)
        assert taken_busy >= 2, "no command was taken while words of another were coming"

    run_simulation(dut, bench, background=[mem.process], deadline_cycles=5000)


@pytest.mark.parametrize("seed, data_width, refused_beat, cancel_cycles", [
    (1, 64, False, 1), (2, 32, True, 1), (3, 64, True, 3), (4, 32, False, 3)])
def test_write_cancel_mid_transfer(seed, data_width, refused_beat, cancel_cycles):
    """``refused_beat``: memory refuses the W beat on offer when the cancel comes."""
    dut = DmaWrite(data_width=data_width, **KWARGS)
    mem, before = setup(dut, seed)
    w = mem.word
    rng = np.random.default_rng(seed + 100)
    start, words = 0x3000 - 20 * w, 300
    values = [int(v) for v in rng.integers(0, 1 << 31, words + 1)]
    taken = []

    async def bench(ctx):
        await set_window(ctx, dut)
        await command(ctx, dut.cmd, start, words)
        cancelled, offering, stuck, late, answered = 0, False, False, False, False
        while True:
            # Cancel just after a B response, when an engine that ignored cancel would raise AW.
            if not cancelled and len(taken) >= 30 and len(mem.aw_log) - mem.b_count >= 2 and (
                    answered or "w" in mem.hold):
                if refused_beat and "w" not in mem.hold:
                    mem.hold.add("w")           # cancel once a W beat waits for wready
                    stuck = False
                elif stuck or not refused_beat:
                    cancelled = 1
            ctx.set(dut.cancel, 0 < cancelled <= cancel_cycles)
            offering = offering or rng.random() < 0.8
            ctx.set(dut.data.valid, offering)
            ctx.set(dut.data.payload, values[len(taken)])
            _, _, ready, busy, wvalid, wready, awvalid, awready, bvalid = await ctx.tick().sample(
                dut.data.ready, dut.busy, dut.bus.wvalid, dut.bus.wready, dut.bus.awvalid,
                dut.bus.awready, dut.bus.bvalid)
            answered = bvalid and not awvalid
            late = no_new_request(cancelled, late, awvalid, awready)
            stuck = wvalid and not wready
            assert cancelled != 1 or stuck or not refused_beat
            if offering and ready:
                assert cancelled <= 1, "a word was taken from data after the cancel"
                taken.append(values[len(taken)])
                offering = False
            if cancelled:
                mem.hold.discard("w")
                cancelled += 1
                if not busy and cancelled > cancel_cycles:
                    break
            assert len(taken) < words, "the transfer ended before the cancel"
        ctx.set(dut.data.valid, 0)
        check_drained(mem)
        assert sum(n + 1 for _, n in mem.aw_log) < words
        # The words taken are in memory; no other byte changed.
        expect = bytearray(before)
        expect[start:start + len(taken) * w] = b"".join(v.to_bytes(w, "little") for v in taken)
        assert mem.mem == expect
        assert ctx.get(dut.error) == DmaError.NONE and ctx.get(dut.cmd.ready)
        # A following write works.
        again = values[:23]
        await command(ctx, dut.cmd, 0x5000, len(again))
        for v in again:
            await stream_put(ctx, dut.data, v, gap=int(rng.integers(0, 2)))
        await ctx.tick().until(~dut.busy)
        expect[0x5000:0x5000 + 23 * w] = b"".join(v.to_bytes(w, "little") for v in again)
        assert mem.mem == expect
        check_drained(mem)

    run_simulation(dut, bench, background=[mem.process], deadline_cycles=5000)


def test_cancel_while_idle():
    """Nothing happens but a command is refused in the cancel cycle; errors stay."""
    dut = Dma(**KWARGS)
    mem, before = setup(dut, 5)
    w = mem.word

    async def bench(ctx):
        await set_window(ctx, dut)
        await command(ctx, dut.read_cmd, 0x100 + 1, 2)          # misaligned: refused
        await ctx.tick()
        assert ctx.get(dut.read_error) == DmaError.ALIGN
        ctx.set(dut.read_cmd.valid, 1)
        ctx.set(dut.read_cmd.payload, {"addr": 0x100, "words": 2})
        ctx.set(dut.cancel, 1)
        _, _, ready = await ctx.tick().sample(dut.read_cmd.ready)
        assert not ready, "a command was taken while cancel was high"
        ctx.set(dut.cancel, 0)
        ctx.set(dut.read_cmd.valid, 0)
        for _ in range(5):
            _, _, *flags = await ctx.tick().sample(dut.read_busy, dut.write_busy,
                                                   dut.bus.arvalid, dut.bus.awvalid)
            assert flags == [0, 0, 0, 0]
        assert ctx.get(dut.read_cmd.ready) and ctx.get(dut.write_cmd.ready)
        assert ctx.get(dut.read_error) == DmaError.ALIGN
        assert ctx.get(dut.write_error) == DmaError.NONE
        assert mem.ar_log == [] and mem.aw_log == []
        await pulse(ctx, dut.clear)
        assert ctx.get(dut.read_error) == DmaError.NONE
        # Both engines still work.
        await command(ctx, dut.read_cmd, 0x100, 5)
        got = [await stream_get(ctx, dut.read_data) for _ in range(5)]
        assert got == words_at(before, 0x100, 5, w)
        await command(ctx, dut.write_cmd, 0x200, 3)
        for v in (1, 2, 3):
            await stream_put(ctx, dut.write_data, v)
        await ctx.tick().until(~dut.write_busy & ~dut.read_busy)
        assert words_at(mem.mem, 0x200, 3, w) == [1, 2, 3]
        check_drained(mem)

    run_simulation(dut, bench, background=[mem.process], deadline_cycles=2000)


@pytest.mark.parametrize("seed", [6, 7])
def test_cancel_with_address_requests_waiting(seed):
    """AR and AW are up but refused when the cancel comes: they stay up, and once accepted
    their bursts are drained (R discarded, W padded)."""
    dut = Dma(**KWARGS)
    mem, before = setup(dut, seed)
    w = mem.word
    values = list(range(1, 41))
    taken = []

    async def bench(ctx):
        await set_window(ctx, dut)
        mem.hold.update({"ar", "aw"})
        await command(ctx, dut.read_cmd, 0x400, 40)
        await command(ctx, dut.write_cmd, 0x800, 40)
        cancelled = 0
        while True:
            if not cancelled and ctx.get(dut.bus.arvalid) and ctx.get(dut.bus.awvalid):
                cancelled = 1
            ctx.set(dut.cancel, cancelled == 1)
            if cancelled == 6:
                mem.hold.clear()
            ctx.set(dut.write_data.valid, 1)
            ctx.set(dut.write_data.payload, values[len(taken)])
            _, _, *s = await ctx.tick().sample(
                dut.write_data.ready, dut.read_data.valid, dut.read_busy, dut.write_busy,
                dut.bus.arvalid, dut.bus.awvalid)
            taken_now, read_valid, read_busy, write_busy, arvalid, awvalid = s
            if taken_now:
                assert cancelled <= 1, "a word was taken from write_data after the cancel"
                taken.append(values[len(taken)])
            assert not read_valid, "a word left on read_data"
            if 1 <= cancelled < 6:
                assert arvalid and awvalid and read_busy and write_busy
            if cancelled:
                cancelled += 1
                if not (read_busy or write_busy):
                    break
        ctx.set(dut.write_data.valid, 0)
        assert mem.ar_log == [(0x400, 3)] and mem.aw_log == [(0x800, 3)]
        check_drained(mem)
        expect = bytearray(before)
        expect[0x800:0x800 + len(taken) * w] = b"".join(v.to_bytes(w, "little") for v in taken)
        assert mem.mem == expect
        assert ctx.get(dut.read_error) == DmaError.NONE == ctx.get(dut.write_error)
        await command(ctx, dut.read_cmd, 0x800, 6)
        got = [await stream_get(ctx, dut.read_data) for _ in range(6)]
        assert got == words_at(expect, 0x800, 6, w)

    run_simulation(dut, bench, background=[mem.process], deadline_cycles=2000)
