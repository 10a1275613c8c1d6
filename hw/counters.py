"""Performance counters: sum per-cycle strobes (or small per-cycle counts) into wide counters."""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.hdl import Shape
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["EventCounters"]


class EventCounters(wiring.Component):
    """Add a struct of per-cycle event values into one saturating counter per field.

    ``events`` has the given layout: every field an unsigned count for this cycle (a 1-bit
    strobe, or a small number when an array sums the strobes of its PEs). ``counts`` has the
    same field names, each ``width`` bits. Every cycle each counter adds its field's value;
    a counter that would pass ``2**width - 1`` stays there (saturates: a full counter reads "at
    least this many", never a wrapped small number). ``clear`` sets every counter to zero,
    ignoring that cycle's events. Counts appear one cycle after the events.

    Parameters
    ----------
    layout : data.StructLayout (or a data.Struct subclass)
        Flat layout of unsigned fields, the event values.
    width : int
        Width of each counter, at least as wide as every field.
    """

    def __init__(self, layout, width=32):
        if isinstance(layout, type) and issubclass(layout, data.Struct):
            layout = data.Layout.cast(layout)
        if not isinstance(layout, data.StructLayout):
            raise TypeError(f"event layout must be a data.StructLayout, not {layout!r}")
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"counter width must be a positive integer, not {width!r}")
        for name, field in layout:
            shape = field.shape
            if not isinstance(shape, (int, range, Shape)) or Shape.cast(shape).signed:
                raise TypeError(f"event field {name!r} must be an unsigned shape, not {shape!r}")
            shape = Shape.cast(shape)
            if shape.width > width:
                raise ValueError(f"event field {name!r} is {shape.width} bits, wider than the "
                                 f"counter width {width}")
        self._layout = layout
        self._width = width
        counts = data.StructLayout({name: unsigned(width) for name, _ in layout})
        super().__init__({
            "events": In(layout),
            "clear": In(1),
            "counts": Out(counts),
        })

    @property
    def layout(self):
        return self._layout

    @property
    def width(self):
        return self._width

    def elaborate(self, platform):
        m = Module()
        top = (1 << self.width) - 1
        for name, _ in self.layout:
            count = self.counts[name]
            total = Signal(self.width + 1, name=f"{name}_next")
            m.d.comb += total.eq(count + self.events[name])
            with m.If(self.clear):
                m.d.sync += count.eq(0)
            with m.Else():
                m.d.sync += count.eq(Mux(total[self.width], top, total[:self.width]))
        return m
