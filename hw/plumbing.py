"""Stream plumbing shared by the blocks: a skid buffer and a round-robin arbiter."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RoundRobin", "SkidBuffer"]


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
