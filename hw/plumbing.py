"""Stream plumbing shared by the blocks: a skid buffer, a round-robin arbiter and in-order
retirement."""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Retirement", "RoundRobin", "SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Pass a stream through with a registered ``i.ready``: one cycle of latency, one transfer
    per cycle sustained, nothing lost or reordered under backpressure.

    Parameters
    ----------
    shape : shape-like
        Payload shape.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        spare = Signal(self._shape)
        spare_valid = Signal()
        m.d.comb += self.i.ready.eq(~spare_valid)
        with m.If(~self.o.valid | self.o.ready):
            with m.If(spare_valid):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(spare), spare_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.i.valid & ~spare_valid):
            m.d.sync += [spare.eq(self.i.payload), spare_valid.eq(1)]
        return m


class RoundRobin(wiring.Component):
    """Grant one of ``n`` requests, round robin.

    ``grant`` (one-hot, combinational) picks the first requester after the one granted last,
    cyclically; the choice is remembered when ``advance`` is set, so a requester that keeps
    requesting is granted within ``n`` advances.
    """

    def __init__(self, n):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"round-robin width must be a positive integer, not {n!r}")
        self._n = n
        super().__init__({"requests": In(n), "grant": Out(n), "advance": In(1)})

    @property
    def n(self):
        return self._n

    def elaborate(self, platform):
        m = Module()
        n = self._n
        above = Signal(n)                     # requesters after the last grant come first
        masked = Signal(n)
        m.d.comb += masked.eq(self.requests & above)

        def lowest(x):
            return (x & (~x + 1))[:n]

        m.d.comb += self.grant.eq(Mux(masked.any(), lowest(masked), lowest(self.requests)))
        with m.If(self.advance & self.requests.any()):
            m.d.sync += above.eq(~(self.grant | (self.grant - 1)[:n]))
        return m


class Retirement(wiring.Component):
    """Number items in the order they are taken and retire them in that order, whatever the
    order in which they close.

    ``take``: an item is taken in this cycle; it gets number ``seq`` (the cycle's value).
    ``full``: ``window`` items are taken and not retired (the smallest power of two at least
    ``at_least``): take none. ``close[k]`` (``valid``, ``seq``; ``ports`` of them): item
    ``seq`` closes in this cycle. ``retire``: the oldest item retires in this cycle; at most
    one a cycle, from the cycle after it closes. ``pending``: an item is taken and not retired.
    ``restart``: forget every item and number from 0 again (no item may be taken then).
    The closed flags are a ``window`` bit register.
    """

    def __init__(self, at_least, ports):
        self._bits = max(1, (at_least - 1).bit_length())
        self._ports = ports
        close = data.StructLayout({"valid": 1, "seq": self._bits})
        super().__init__({"take": In(1), "seq": Out(self._bits), "full": Out(1),
                          "close": In(data.ArrayLayout(close, ports)), "retire": Out(1),
                          "pending": Out(1), "restart": In(1)})

    @property
    def window(self):
        return 1 << self._bits

    def elaborate(self, platform):
        m = Module()
        S, W = self._bits, self.window
        # ``tail`` is the next number given, ``head`` the oldest unretired item's (one more bit
        # than a number, to tell full from empty).
        tail = Signal(S + 1)
        head = Signal(S + 1)
        closed = Signal(W)

        def flag(enable, seq):
            return Mux(enable, (Const(1, W) << seq)[:W], 0)

        m.d.comb += [
            self.seq.eq(tail[:S]),
            self.full.eq((tail[:S] == head[:S]) & (tail[S] != head[S])),
            self.pending.eq(tail != head),
            self.retire.eq(closed.bit_select(head[:S], 1)),
        ]
        now = 0
        for k in range(self._ports):
            now = now | flag(self.close[k].valid, self.close[k].seq)
        m.d.sync += closed.eq((closed | now) & ~flag(self.retire, head[:S]))
        with m.If(self.take):
            m.d.sync += tail.eq(tail + 1)
        with m.If(self.retire):
            m.d.sync += head.eq(head + 1)
        with m.If(self.restart):
            m.d.sync += [tail.eq(0), head.eq(0), closed.eq(0)]
        return m
