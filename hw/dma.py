"""DMA engines: move whole words between host memory (AXI4) and streams, inside a window.

Every transfer is whole bus words at a word-aligned byte address; the host driver lays tensors
out to suit. Before a transfer issues any request it is checked against the address window
``[window_base, window_base + window_size)``; a transfer that leaves it, or is misaligned or
empty, is refused without touching memory and reported in ``error``. A non-OKAY response
from memory is reported too. Errors are sticky until ``clear``.

``cancel`` is a soft reset that keeps to the AXI protocol. The transfer in progress ends at the
clock edge where ``cancel`` is high. Transfers on ``data`` in that cycle happen as usual, and
the writer also takes, and writes, a word on offer whose W beat memory has not accepted yet (a W
beat on offer must not change); no command is taken while ``cancel`` is high. After that edge
the engine makes no new address request (one whose valid is already up stays up until accepted
and is drained like the others), moves nothing on ``data`` (the reader withdraws a word on
offer), and drains the bursts requested: the reader accepts and discards their R beats; the
writer sends their remaining W beats with no byte strobe set (memory unchanged) and accepts
their B responses. ``busy`` stays high and ``cmd.ready`` low until nothing is outstanding; the
engine is then idle as after a completed transfer. ``error`` is not changed by ``cancel`` (a bad
response while draining is still reported). A cancel while idle does nothing; holding ``cancel``
high for several cycles acts as one pulse.
"""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4Signature, Burst

__all__ = ["DmaCommand", "DmaError", "DmaRead", "DmaWrite"]


class DmaError(enum.Enum, shape=3):
    NONE = 0
    WINDOW = 1      # the transfer leaves the address window
    ALIGN = 2       # the address is not word-aligned, or the length is zero
    RESPONSE = 3    # memory answered SLVERR or DECERR


def DmaCommand(addr_width, len_width):
    """Return the layout of a transfer: byte address and length in bus words."""
    return data.StructLayout({"addr": addr_width, "words": len_width})


class _Engine(wiring.Component):
    """What the read and write engines share: checks, burst splitting, status.

    ``data`` flows out of a read engine and into a write engine (``_DATA_FLOW``).
    """

    _DATA_FLOW = None

    def __init__(self, *, addr_width=32, data_width=64, id_width=4, len_width=24, max_burst=16,
                 max_outstanding=4):
        if max_burst not in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            raise ValueError(f"max_burst must be a power of two from 1 to 256, not {max_burst!r}")
        if not isinstance(max_outstanding, int) or not 1 <= max_outstanding <= 64:
            raise ValueError(f"max_outstanding must be 1 to 64, not {max_outstanding!r}")
        if not isinstance(len_width, int) or not 1 <= len_width <= addr_width:
            raise ValueError(f"len_width must be 1 to addr_width, not {len_width!r}")
        self._addr_width, self._data_width = addr_width, data_width
        self._len_width, self._max_burst = len_width, max_burst
        self._max_outstanding = max_outstanding
        super().__init__({
            "bus": Out(AXI4Signature(addr_width=addr_width, data_width=data_width,
                                     id_width=id_width)),
            "cmd": In(stream.Signature(DmaCommand(addr_width, len_width))),
            "window_base": In(addr_width),
            "window_size": In(addr_width + 1),
            "busy": Out(1),
            "error": Out(DmaError),
            "clear": In(1),
            "cancel": In(1),            # not "abort": Verilator's lint flags that C++ name
            "data": self._DATA_FLOW(stream.Signature(data_width)),
        })

    @property
    def word_bytes(self):
        return self._data_width // 8

    def _check(self, m, cmd):
        """Return (ok, error code) for transfer ``cmd`` against the window."""
        shift = self.word_bytes.bit_length() - 1
        end = Signal(self._addr_width + self._len_width + 2)
        m.d.comb += end.eq(cmd.addr + (cmd.words << shift))
        misaligned = cmd.addr[:shift].any() if shift else Const(0)
        empty = ~cmd.words.any()
        outside = (cmd.addr < self.window_base) | (end > self.window_base + self.window_size)
        code = Mux(misaligned | empty, DmaError.ALIGN, DmaError.WINDOW)
        return ~(misaligned | empty | outside), code

    def _burst(self, m, addr, words):
        """Return the beats of the next burst: up to ``max_burst``, not past a 4 KiB page."""
        shift = self.word_bytes.bit_length() - 1
        to_page = Signal(range(4096 // self.word_bytes + 1))
        m.d.comb += to_page.eq((4096 - addr[:12]) >> shift)
        beats = Signal(range(self._max_burst + 1))
        limit = Mux(to_page < self._max_burst, to_page, self._max_burst)
        m.d.comb += beats.eq(Mux(words < limit, words, limit))
        return beats

    def _request(self, m, prefix, running, addr, words, outstanding, can_issue):
        """Drive address channel ``prefix`` (``aw`` or ``ar``) for the transfer in progress."""
        bus = self.bus
        beats = self._burst(m, addr, words)
        valid = getattr(bus, f"{prefix}valid")
        ready = getattr(bus, f"{prefix}ready")
        m.d.comb += [
            getattr(bus, f"{prefix}addr").eq(addr),
            getattr(bus, f"{prefix}len").eq(beats - 1),
            getattr(bus, f"{prefix}size").eq(self.word_bytes.bit_length() - 1),
            getattr(bus, f"{prefix}burst").eq(Burst.INCR),
            getattr(bus, f"{prefix}id").eq(0),
        ]
        # Once raised, valid stays up until the handshake (AXI rule), so the issue condition
        # is sampled only while valid is low.
        with m.If(~valid):
            m.d.sync += valid.eq(running & words.any() & can_issue)
        with m.If(valid & ready):
            m.d.sync += [
                addr.eq(addr + (beats << (self.word_bytes.bit_length() - 1))),
                words.eq(words - beats),
                valid.eq(0),
            ]
        return valid & ready

    def _errors(self, m, *causes):
        """Hold the first error of ``causes`` ((condition, code) pairs) until ``clear``."""
        with m.If(self.clear):
            m.d.sync += self.error.eq(DmaError.NONE)
        with m.Elif(self.error == DmaError.NONE):
            for when, code in reversed(causes):     # the first cause listed wins
                with m.If(when):
                    m.d.sync += self.error.eq(code)


class DmaRead(_Engine):
    """Read ``cmd.words`` bus words from ``cmd.addr`` onwards and stream them out on ``data``.

    Commands are pipelined: the next is taken (``cmd.ready``) once the one before has requested
    all its bursts, so the words of several may be on their way; they leave on ``data`` in the
    order the commands were taken, each command's in address order (a user that must know whose
    words come next counts them). Up to ``max_outstanding`` bursts are in flight. A refused
    command streams nothing. After ``cancel`` no more words leave; ``rready`` stays high until
    every issued burst is in.
    """

    _DATA_FLOW = Out

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        draining = Signal()                     # cancelled: discarding issued bursts
        addr = Signal(self._addr_width)
        to_request = Signal(self._len_width)    # of the command being requested
        to_receive = Signal(self._len_width + 3)    # of every command taken
        outstanding = Signal(range(self._max_outstanding + 1))

        ok, code = self._check(m, self.cmd.payload)
        accept = Signal()
        m.d.comb += [
            self.cmd.ready.eq(~to_request.any() & ~draining & ~self.cancel
                              & (to_receive < (1 << (self._len_width + 2)))),
            accept.eq(self.cmd.valid & self.cmd.ready & ok),
            self.busy.eq(to_receive.any() | draining),
        ]
        with m.If(accept):
            m.d.sync += [addr.eq(self.cmd.payload.addr), to_request.eq(self.cmd.payload.words)]

        issued = self._request(m, "ar", ~draining & ~self.cancel, addr, to_request, outstanding,
                               outstanding < self._max_outstanding)
        m.d.comb += [
            self.data.valid.eq(bus.rvalid & ~draining),
            self.data.payload.eq(bus.rdata),
            bus.rready.eq(self.data.ready | draining),
        ]
        beat = bus.rvalid & bus.rready
        burst_done = beat & bus.rlast
        m.d.sync += [outstanding.eq(outstanding + issued - burst_done),
                     to_receive.eq(to_receive + Mux(accept, self.cmd.payload.words, 0) - beat)]
        self._errors(m, (self.cmd.valid & self.cmd.ready & ~ok, code),
                     (beat & bus.rresp[1], DmaError.RESPONSE))
        with m.If(self.cancel & to_receive.any()):
            m.d.sync += draining.eq(1)
        with m.If(draining & ~bus.arvalid & ~outstanding.any()):
            m.d.sync += [draining.eq(0), to_request.eq(0), to_receive.eq(0)]
        return m


class DmaWrite(_Engine):
    """Write ``cmd.words`` bus words, taken from ``data``, from ``cmd.addr`` onwards.

    Whole words (all strobes set). Busy until memory has answered every burst. A refused
    command takes nothing from ``data``. W beats of a burst go out only once its AW request is
    up, so a cancel never leaves W beats without their address; after ``cancel`` the issued
    bursts are finished with empty-strobe beats and nothing more is taken from ``data``.
    """

    _DATA_FLOW = In

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        running = Signal()
        draining = Signal()                     # cancelled: finishing issued bursts
        held = Signal(self._data_width)         # a W beat on offer when cancelled
        holding = Signal()
        aw_addr = Signal(self._addr_width)
        aw_words = Signal(self._len_width)
        w_addr = Signal(self._addr_width)       # the W channel splits bursts the same way
        w_words = Signal(self._len_width)
        w_beat = Signal(range(self._max_burst + 1))
        outstanding = Signal(range(self._max_outstanding + 1))

        ok, code = self._check(m, self.cmd.payload)
        m.d.comb += [
            self.cmd.ready.eq(~running & ~draining & ~self.cancel),
            self.busy.eq(running | draining),
        ]
        with m.If(self.cmd.valid & self.cmd.ready & ok):
            m.d.sync += [
                running.eq(1),
                aw_addr.eq(self.cmd.payload.addr), aw_words.eq(self.cmd.payload.words),
                w_addr.eq(self.cmd.payload.addr), w_words.eq(self.cmd.payload.words),
                w_beat.eq(0),
            ]

        issued = self._request(m, "aw", running & ~self.cancel, aw_addr, aw_words, outstanding,
                               outstanding < self._max_outstanding)

        w_beats = self._burst(m, w_addr, w_words)
        last = w_beat == w_beats - 1
        # The W burst in progress has its AW request accepted, or up (W waits for AWVALID, never
        # for AWREADY: memory may wait for W before it accepts AW).
        requested = Mux(bus.awvalid, w_words >= aw_words, w_words > aw_words)
        m.d.comb += [
            bus.wvalid.eq(requested & (running & self.data.valid | draining)),
            # A cancel takes the word on offer, so that the W beat stays as offered (AXI rule).
            self.data.ready.eq(running & requested & (bus.wready | self.cancel)),
            bus.wdata.eq(Mux(draining, held, self.data.payload)),
            bus.wstrb.eq(Mux(draining & ~holding, 0, (1 << self.word_bytes) - 1)),
            bus.wlast.eq(last),
        ]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += w_beat.eq(w_beat + 1)
            with m.If(last):
                m.d.sync += [
                    w_beat.eq(0),
                    w_addr.eq(w_addr + (w_beats << (self.word_bytes.bit_length() - 1))),
                    w_words.eq(w_words - w_beats),
                ]

        answered = bus.bvalid & bus.bready
        m.d.comb += bus.bready.eq(1)
        m.d.sync += outstanding.eq(outstanding + issued - answered)
        self._errors(m, (self.cmd.valid & self.cmd.ready & ~ok, code),
                     (answered & bus.bresp[1], DmaError.RESPONSE))      # SLVERR or DECERR
        with m.If(running & ~aw_words.any() & ~w_words.any() & ~outstanding.any()):
            m.d.sync += running.eq(0)
        with m.If(bus.wready):
            m.d.sync += holding.eq(0)
        with m.If(self.cancel & running):
            m.d.sync += [
                running.eq(0), draining.eq(1),
                held.eq(self.data.payload), holding.eq(bus.wvalid & ~bus.wready),
            ]
        with m.If(draining & ~bus.awvalid & ~requested & ~outstanding.any()):
            m.d.sync += [draining.eq(0), aw_words.eq(0), w_words.eq(0)]
        return m


class Dma(wiring.Component):
    """The accelerator's memory port: a read and a write engine sharing one AXI4 manager.

    Read and write channels of AXI4 are independent, so the engines run concurrently. Both
    check against the same window; each keeps its own sticky error. ``cancel`` cancels both
    engines (see the module docstring); each busy flag falls when its engine is drained.
    """

    def __init__(self, *, addr_width=32, data_width=64, id_width=4, len_width=24, max_burst=16,
                 max_outstanding=4):
        kwargs = {"addr_width": addr_width, "data_width": data_width, "id_width": id_width,
                  "len_width": len_width, "max_burst": max_burst,
                  "max_outstanding": max_outstanding}
        self._reader = DmaRead(**kwargs)
        self._writer = DmaWrite(**kwargs)
        command = stream.Signature(DmaCommand(addr_width, len_width))
        super().__init__({
            "bus": Out(AXI4Signature(addr_width=addr_width, data_width=data_width,
                                     id_width=id_width)),
            "window_base": In(addr_width),
            "window_size": In(addr_width + 1),
            "clear": In(1),
            "cancel": In(1),
            "read_cmd": In(command),
            "read_data": Out(stream.Signature(data_width)),
            "read_busy": Out(1),
            "read_error": Out(DmaError),
            "write_cmd": In(command),
            "write_data": In(stream.Signature(data_width)),
            "write_busy": Out(1),
            "write_error": Out(DmaError),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = self._reader
        m.submodules.writer = writer = self._writer
        for engine, prefix in ((reader, "read"), (writer, "write")):
            m.d.comb += [
                engine.window_base.eq(self.window_base),
                engine.window_size.eq(self.window_size),
                engine.clear.eq(self.clear),
                engine.cancel.eq(self.cancel),
                getattr(self, f"{prefix}_busy").eq(engine.busy),
                getattr(self, f"{prefix}_error").eq(engine.error),
            ]
        wiring.connect(m, wiring.flipped(self.read_cmd), reader.cmd)
        wiring.connect(m, reader.data, wiring.flipped(self.read_data))
        wiring.connect(m, wiring.flipped(self.write_cmd), writer.cmd)
        wiring.connect(m, wiring.flipped(self.write_data), writer.data)
        for name in self.bus.signature.members:
            channel = name[:2] if name[:2] in ("aw", "ar") else name[0]
            engine = reader if channel in ("ar", "r") else writer
            port, inner = getattr(self.bus, name), getattr(engine.bus, name)
            if self.bus.signature.members[name].flow == Out:
                m.d.comb += port.eq(inner)
            else:
                m.d.comb += inner.eq(port)
        return m
