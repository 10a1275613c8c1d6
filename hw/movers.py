"""Data movers between the global buffer (GLB), the NoC and memory.

:class:`GinSender` reads rows of values from a GLB read port and sends them as GIN packets,
interleaving the rows that PEs consume together packet by packet. :class:`GonReceiver` writes
the psums of GON packets into per-source segments of the GLB. :class:`OutputStage` turns rows
of FP32 psums read from the GLB into output words (ReLU, FP32 -> FP16) for a ``DmaWrite``.

Values are packed in words little end first: value ``k`` of a word is at bits
``k * elem_bits``. GLB ports are shaped like :class:`~rsaccel.hw.glb.GlobalBuffer`'s
(word addresses; read answers in order).
"""

from functools import reduce
from operator import or_

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .fp import FP16, FP32, relu32
from .glb import WriteRequest
from .mac import fp32_to_fp16
from .noc import GinPacket, GonPacket
from .plumbing import Retirement, RoundRobin

__all__ = [
    "GinDescriptor",
    "GinSender",
    "GonReceiver",
    "GonSegment",
    "OutputDescriptor",
    "OutputStage",
]


def _positive(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")


def _pick(onehot, values):
    """Return the entry of ``values`` whose bit of ``onehot`` is set (zero when none is)."""
    return reduce(or_, (Mux(onehot[k], v, 0) for k, v in enumerate(values)))


def GinDescriptor(glb_addr_width, values_bits, id_bits):
    """Return the layout of a :class:`GinSender` descriptor: a row of ``values`` values from
    GLB word ``glb_addr`` on, sent with tags ``(row_tag, col_tag)``; if ``fence``, only once
    every earlier row has been sent."""
    return data.StructLayout({"glb_addr": glb_addr_width, "values": values_bits,
                              "row_tag": id_bits, "col_tag": id_bits, "fence": 1})


def GonSegment(rows, cols, glb_addr_width, values_bits):
    """Return the layout of a :class:`GonReceiver` segment: the next ``values`` psums of PE
    ``(src_row, src_col)`` go to GLB words from ``glb_addr`` on."""
    gon = GonPacket(rows, cols, 1)
    return data.StructLayout({"src_row": gon["src_row"].shape, "src_col": gon["src_col"].shape,
                              "glb_addr": glb_addr_width, "values": values_bits})


def OutputDescriptor(values_bits):
    """Return the layout of an :class:`OutputStage` row: ``values`` FP32 values in, ReLU if
    ``relu``, out as FP16 if ``fp16`` (else FP32)."""
    return data.StructLayout({"values": values_bits, "fp16": 1, "relu": 1})


class GinSender(wiring.Component):
    """Send rows held in the GLB as GIN packets, up to ``lanes`` rows interleaved.

    A descriptor on ``desc`` (:func:`GinDescriptor`) names a row: ``values`` values packed from
    GLB word ``glb_addr`` on (a row starts at a word boundary), to be sent tagged
    ``(row_tag, col_tag)``. Its packets carry ``values_per_packet`` (V) values each, one GLB
    word per packet, in order; the last packet of the row may be partial (``count`` < V; the
    values past ``count`` are whatever the word holds). A descriptor of 0 values is consumed
    and sends nothing.

    Interleaving: the sender has ``lanes`` slots and visits them in cyclic order (0, 1, ...,
    lanes - 1, 0, ...), sending one packet per visit. A visit to an active slot sends its next
    packet; a visit to an empty slot takes the descriptor waiting on ``desc`` into the slot
    and sends its first packet; an empty slot is skipped when no descriptor is waiting. A slot
    empties when its last packet is sent. So when descriptors are offered without gaps, the
    order of packets depends only on the descriptors: rows ``0 .. lanes - 1`` go out packet
    by packet in turn, and each finished row's slot takes the next descriptor in its turn.
    (Rows a PE set consumes together must be interleaved like this: a diagonal of PEs only
    advances as fast as the psums from the diagonal below it, so a whole row sent first can
    deadlock the array.)

    Fences: a descriptor with ``fence`` set waits on ``desc`` (holding back the ones behind
    it) until every earlier descriptor has been completely sent, i.e. until the sender is idle
    (no slot active, no packet on its way to ``gin``); then it is taken as above, into the
    slot after the last one visited. This holds for a fenced descriptor of 0 values too. A
    descriptor without ``fence`` is taken as soon as a slot is free for it, unless an active
    slot holds a row with its tags (``row_tag`` and ``col_tag``): then it waits on ``desc``
    until that row's last packet has been issued, so rows reaching the same PEs go out one
    after the other (the next pass's rows follow this one's into the PEs that finish first).

    Completions: a descriptor *closes* in the cycle its last packet is transferred on ``gin``
    (``valid & ready``), or, for one of 0 values, the cycle it is transferred on ``desc``.
    Interleaved rows of different lengths close out of order; ``done`` (a strobe) retires them
    in order, at most one a cycle, each from the cycle after it and every earlier descriptor
    closed, so summed it counts the leading descriptors that have all been sent. At most
    ``window`` descriptors (the smallest power of two at least ``max(2 * lanes, 32)``) are
    taken and not retired; one beyond those waits on ``desc``.

    GLB side: word addresses leave on ``glb_addr`` (a register) and the words must come back
    on ``glb_data`` in the same order, as from a :class:`~rsaccel.hw.glb.GlobalBuffer` read
    port. Up to 4 reads are outstanding. ``gin`` (:func:`~rsaccel.hw.noc.GinPacket`) is the
    word from ``glb_data`` with the tags and count of its packet: ``gin.valid`` follows
    ``glb_data.valid`` and ``glb_data.ready`` follows ``gin.ready`` combinationally.

    Throughput: one packet per cycle when the GLB answers one word per cycle and ``gin`` is
    ready. ``busy`` (``idle`` is its complement) is set while a row is in a slot or a packet is
    on its way.

    Parameters
    ----------
    elem_bits : int
        16 (FP16 values: filter, ifmap GINs) or 32 (FP32: psum GIN).
    values_per_packet : int
        V; ``V * elem_bits`` must equal ``word_bits``.
    word_bits : int
        GLB word width.
    glb_addr_width : int
        GLB word address width.
    id_bits : int
        Width of the NoC tags.
    lanes : int
        Rows interleaved at most.
    pes : int
        0, or the number of PEs of the GIN the sender feeds: then it sends a packet only when
        every PE it reaches can take it at once, so PEs that are held up never block the rows
        of the others (interleaving alone deadlocks the array when its columns drift apart).
        It shows the tags of the lane it visits on ``probe`` and reads from ``gin_state``
        (:func:`~rsaccel.hw.noc.GinState`) which PEs they reach (``match``) and which PE
        registers can take a packet (``free``); a visited lane whose packet would wait is
        skipped (the visit costs a cycle), and PEs stay reserved from a packet's issue until
        they take it (``loaded``).
    """

    _OUTSTANDING = 4        # covers the GLB read latency (address register + 2 cycles)

    def __init__(self, *, elem_bits, values_per_packet, word_bits, glb_addr_width, id_bits,
                 lanes, pes=0):
        if elem_bits not in (16, 32):
            raise ValueError(f"GIN sender elem_bits must be 16 or 32, not {elem_bits!r}")
        for what, value in (("GIN sender values_per_packet", values_per_packet),
                            ("GIN sender word_bits", word_bits),
                            ("GIN sender glb_addr_width", glb_addr_width),
                            ("GIN sender id_bits", id_bits), ("GIN sender lanes", lanes)):
            _positive(what, value)
        if values_per_packet * elem_bits != word_bits:
            raise ValueError(f"GIN sender packets must hold one GLB word: values_per_packet * "
                             f"elem_bits must equal word_bits ({word_bits}), not "
                             f"{values_per_packet} * {elem_bits}")
        self._elem = FP16 if elem_bits == 16 else FP32
        self._values, self._word_bits = values_per_packet, word_bits
        self._addr_width, self._id_bits, self._lanes = glb_addr_width, id_bits, lanes
        # Enough for a row filling the whole address space.
        self._values_bits = ((1 << glb_addr_width) * values_per_packet).bit_length()
        if not isinstance(pes, int) or pes < 0:
            raise ValueError(f"GIN sender pes must be a non-negative integer, not {pes!r}")
        self._pes = pes
        members = {}
        if pes:
            members = {
                "probe": Out(data.StructLayout({"row": id_bits, "col": id_bits})),
                "gin_state": In(data.StructLayout({"match": pes, "free": pes,
                                                   "loaded": pes})),
            }
        super().__init__({
            **members,
            "desc": In(stream.Signature(GinDescriptor(glb_addr_width, self._values_bits,
                                                      id_bits))),
            "glb_addr": Out(stream.Signature(glb_addr_width)),
            "glb_data": In(stream.Signature(word_bits)),
            "gin": Out(stream.Signature(GinPacket(self._elem, values_per_packet, id_bits))),
            "busy": Out(1),
            "idle": Out(1),
            "done": Out(1),
        })

    @property
    def values_per_packet(self):
        return self._values

    @property
    def lanes(self):
        return self._lanes

    @property
    def values_bits(self):
        """Width of a descriptor's ``values``."""
        return self._values_bits

    def elaborate(self, platform):
        m = Module()
        n, V = self._lanes, self._values
        desc = self.desc.payload
        active = Signal(n)
        addr = [Signal(self._addr_width, name=f"lane{k}_addr") for k in range(n)]
        left = [Signal(self._values_bits, name=f"lane{k}_left") for k in range(n)]
        row_tag = [Signal(self._id_bits, name=f"lane{k}_row_tag") for k in range(n)]
        col_tag = [Signal(self._id_bits, name=f"lane{k}_col_tag") for k in range(n)]
        m.submodules.order = order = Retirement(max(2 * n, 32), ports=2)
        seq = [Signal(len(order.seq), name=f"lane{k}_seq") for k in range(n)]

        meta_layout = data.StructLayout({"row_tag": self._id_bits, "col_tag": self._id_bits,
                                         "count": range(V + 1), "last": 1,
                                         "seq": len(order.seq)})
        m.submodules.meta = meta = fifo.SyncFIFO(width=meta_layout.size,
                                                 depth=self._OUTSTANDING)
        m.submodules.arbiter = arb = RoundRobin(n)

        # Candidates: active slots, and empty ones when a descriptor is waiting (a fenced one
        # only once the sender is idle, one with the tags of an active row once that row's
        # last packet has left its slot).
        waiting = Signal()
        zero = Signal()                    # the descriptor on ``desc`` has 0 values
        admit = Signal()                   # ... and is not held back by its fence
        same_tags = Signal()               # an active row has the descriptor's tags
        m.d.comb += [
            zero.eq(~desc.values.any()),
            admit.eq((~desc.fence | self.idle) & ~order.full),
            same_tags.eq(Cat(active[k] & (row_tag[k] == desc.row_tag)
                             & (col_tag[k] == desc.col_tag) for k in range(n)).any()),
            waiting.eq(self.desc.valid & ~zero & admit & ~same_tags),
            arb.requests.eq(active | (~active & waiting.replicate(n))),
        ]
        can_issue = Signal()
        issue = Signal()
        deliverable = Signal(init=1)       # the visited lane's packet can be taken at once
        m.d.comb += [
            can_issue.eq((~self.glb_addr.valid | self.glb_addr.ready) & meta.w_rdy),
            issue.eq(can_issue & arb.grant.any() & deliverable),
            arb.advance.eq(can_issue),
        ]

        g = arb.grant
        fresh = Signal()                   # the visited slot is empty: start the descriptor
        cur_addr = Signal(self._addr_width)
        cur_left = Signal(self._values_bits)
        cur_row = Signal(self._id_bits)
        cur_col = Signal(self._id_bits)
        cur_seq = Signal(len(order.seq))
        count = Signal(range(V + 1))
        m.d.comb += [
            fresh.eq(~(active & g).any()),
            cur_addr.eq(Mux(fresh, desc.glb_addr, _pick(g, addr))),
            cur_left.eq(Mux(fresh, desc.values, _pick(g, left))),
            cur_row.eq(Mux(fresh, desc.row_tag, _pick(g, row_tag))),
            cur_col.eq(Mux(fresh, desc.col_tag, _pick(g, col_tag))),
            cur_seq.eq(Mux(fresh, order.seq, _pick(g, seq))),
            count.eq(Mux(cur_left > V, V, cur_left)),
            self.desc.ready.eq((zero & admit) | (issue & fresh)),
            order.take.eq(self.desc.valid & self.desc.ready),
        ]
        with m.If(issue):
            for k in range(n):
                with m.If(g[k]):
                    m.d.sync += [
                        active[k].eq(cur_left > V),
                        addr[k].eq(cur_addr + 1),
                        left[k].eq(cur_left - count),
                        row_tag[k].eq(cur_row),
                        col_tag[k].eq(cur_col),
                        seq[k].eq(cur_seq),
                    ]

        if self._pes:
            st = self.gin_state
            reserved = Signal(self._pes)
            m.d.comb += [
                self.probe.row.eq(cur_row),
                self.probe.col.eq(cur_col),
                deliverable.eq(~(st.match & (~st.free | reserved)).any()),
            ]
            m.d.sync += reserved.eq((reserved & ~st.loaded) | Mux(issue, st.match, 0))

        with m.If(self.glb_addr.ready):
            m.d.sync += self.glb_addr.valid.eq(0)
        with m.If(issue):
            m.d.sync += [self.glb_addr.valid.eq(1), self.glb_addr.payload.eq(cur_addr)]

        meta_in = Signal(meta_layout)
        meta_out = data.View(meta_layout, meta.r_data)
        m.d.comb += [
            meta_in.row_tag.eq(cur_row),
            meta_in.col_tag.eq(cur_col),
            meta_in.count.eq(count),
            meta_in.last.eq(cur_left <= V),
            meta_in.seq.eq(cur_seq),
            meta.w_en.eq(issue),
            meta.w_data.eq(meta_in),
        ]

        gin = self.gin
        m.d.comb += [
            gin.valid.eq(self.glb_data.valid & meta.r_rdy),
            gin.payload.row_tag.eq(meta_out.row_tag),
            gin.payload.col_tag.eq(meta_out.col_tag),
            gin.payload.count.eq(meta_out.count),
            gin.payload.data.eq(self.glb_data.payload),
            self.glb_data.ready.eq(gin.ready & meta.r_rdy),
            meta.r_en.eq(gin.valid & gin.ready),
            self.busy.eq(active.any() | self.glb_addr.valid | meta.r_rdy),
            self.idle.eq(~self.busy),
            order.close[0].valid.eq(gin.valid & gin.ready & meta_out.last),
            order.close[0].seq.eq(meta_out.seq),
            order.close[1].valid.eq(self.desc.valid & self.desc.ready & zero),
            order.close[1].seq.eq(order.seq),
            self.done.eq(order.retire),
        ]
        return m


class GonReceiver(wiring.Component):
    """Write the psums of GON packets into per-source segments of the GLB.

    A segment (``segment``, :func:`GonSegment`) says where the next ``values`` psums of PE
    ``(src_row, src_col)`` go: packed ``word_bits // 32`` per word (P), in arrival order,
    into GLB words from ``glb_addr`` on. It closes once its ``values`` psums are written; the
    last word of a count that is not a multiple of P is zero-padded. Every word is written
    once, on ``write`` (:func:`~rsaccel.hw.glb.WriteRequest`), when it is complete.

    Each source has two slots: its *open* segment, which its psums fill, and a *pending* one
    behind it. A segment taken from ``segment`` opens if its source has none open, else
    becomes the source's pending segment; when the open segment closes, the pending one (if
    any) opens in its place, so the source's next psum goes there. Only a segment for a source
    whose two slots are both full waits (taken into the receiver's segment register, with
    ``segment.ready`` low, holding back the ones behind it), until the source's open segment
    closes. A controller may therefore queue each source's next segment while the current
    ones are still filling.

    Packets (``gon``, :func:`~rsaccel.hw.noc.GonPacket`; ``count`` psums, 1 to V) from a source
    with no open segment wait, stalling the GON, until one is opened. A packet may end
    anywhere in a word; the psums of a source are packed across its packets. Psums beyond
    the open segment's remaining count are dropped, the segment closes and the sticky
    ``error`` flag is set (cleared by ``clear``); a pending segment does not take them (it
    opens, empty, as on any close). A segment naming a PE outside the array is dropped and
    sets ``error`` too. A segment of 0 values is consumed without effect on the GLB.

    Retirement: every segment taken from ``segment`` gets a sequence number, in order.
    A segment is *closed* once the ``write`` of its last word has been transferred (one of 0
    values or naming a PE outside the array, once taken). ``retired`` (24 bits, wrapping, a
    register) counts the segments retired in order: it is the number of leading segments,
    in the order taken, that have closed. It advances by at most one per cycle, starting the
    cycle after the oldest unretired segment closes, so a segment that closes before an
    earlier one is counted only after that one. At most ``window`` segments (the smallest
    power of two at least ``2 * rows * cols``) are taken and not yet retired; a segment
    beyond those waits on ``segment`` until the oldest retires. ``clear`` leaves ``retired``
    alone; ``restart`` (one cycle, at the start of a layer or after the owner reset the
    receiver in mid-layer) zeroes ``retired``, the sequence numbers and the closed flags, so
    numbering starts again at 0, and then clears every source's state (open and pending
    segments) in ``rows * cols`` cycles, during which ``busy`` is set and no segment or
    packet is taken. No segment is taken in the ``restart`` cycle.

    Implementation: the state of every source (open segment: next word address, psums left,
    the psums of a partial word, sequence number; pending segment: address, psums, sequence
    number) is a ``rows * cols`` entry memory, read a cycle ahead with write-through. Opening
    a segment or making it pending takes the memory's write port for one cycle, stalling
    packets; promoting a pending segment is part of the write of the packet that closes the
    open one and costs nothing. The closed flags are a ``window`` bit register.

    Throughput: one packet per cycle while ``write`` is ready, except a packet that both
    completes a word and closes a segment with psums left over (possible only after a
    partial packet in mid-segment), which takes two cycles. ``busy`` is set while a segment
    is open or pending, a taken segment is not yet retired, or a packet, segment or word is
    held.

    Parameters
    ----------
    rows, cols : int
        PE array size (the sources).
    values_per_packet : int
        V, psums per GON packet; at most P.
    word_bits : int
        GLB word width, a multiple of 32.
    glb_addr_width : int
        GLB word address width.
    """

    RETIRED_BITS = 24

    def __init__(self, *, rows, cols, values_per_packet, word_bits, glb_addr_width):
        for what, value in (("GON receiver rows", rows), ("GON receiver cols", cols),
                            ("GON receiver values_per_packet", values_per_packet),
                            ("GON receiver word_bits", word_bits),
                            ("GON receiver glb_addr_width", glb_addr_width)):
            _positive(what, value)
        if word_bits % 32:
            raise ValueError(f"GON receiver word_bits must be a multiple of 32, not "
                             f"{word_bits!r}")
        if values_per_packet > word_bits // 32:
            raise ValueError(f"GON receiver packets must fit a GLB word: values_per_packet "
                             f"must be at most {word_bits // 32}, not {values_per_packet!r}")
        self._rows, self._cols, self._values = rows, cols, values_per_packet
        self._word_bits, self._addr_width = word_bits, glb_addr_width
        self._per_word = word_bits // 32
        self._values_bits = ((1 << glb_addr_width) * self._per_word).bit_length()
        self._seq_bits = (2 * rows * cols - 1).bit_length()
        super().__init__({
            "gon": In(stream.Signature(GonPacket(rows, cols, values_per_packet))),
            "segment": In(stream.Signature(GonSegment(rows, cols, glb_addr_width,
                                                      self._values_bits))),
            "write": Out(stream.Signature(WriteRequest(glb_addr_width, word_bits))),
            "busy": Out(1),
            "error": Out(1),
            "clear": In(1),
            "retired": Out(self.RETIRED_BITS),
            "restart": In(1),
        })

    @property
    def values_bits(self):
        """Width of a segment's ``values``."""
        return self._values_bits

    @property
    def psums_per_word(self):
        return self._per_word

    @property
    def window(self):
        """Segments taken and not yet retired, at most."""
        return 1 << self._seq_bits

    def elaborate(self, platform):
        m = Module()
        rows, cols, V, P = self._rows, self._cols, self._values, self._per_word
        S = self._seq_bits
        fill_bits = max(1, (P - 1).bit_length())
        state_layout = data.StructLayout({
            "open": 1,
            "addr": self._addr_width,
            "left": self._values_bits,
            "fill": fill_bits,                                  # psums held in ``part``
            "part": data.ArrayLayout(32, max(1, P - 1)),
            "seq": S,
            "pend": 1,
            "pend_addr": self._addr_width,
            "pend_left": self._values_bits,
            "pend_seq": S,
        })
        m.submodules.state = state = memory.Memory(shape=state_layout, depth=rows * cols,
                                                   init=[])
        wr = state.write_port()
        pkt_rd = state.read_port(transparent_for=(wr,))
        seg_rd = state.read_port(transparent_for=(wr,))

        def index(x):
            return x.src_row * cols + x.src_col

        # Sequence numbers, retired in order.
        m.submodules.order = order = Retirement(2 * rows * cols, ports=2)

        # Segments: a register, checked against its source's state (read a cycle ahead).
        seg = Signal(self.segment.payload.shape())
        seg_seq = Signal(S)
        seg_valid = Signal()
        seg_done = Signal()
        seg_write = Signal()
        seg_free = Signal()
        ss = seg_rd.data
        inside = (seg.src_row < rows) & (seg.src_col < cols)
        empty = ~seg.values.any()
        both = ss.open & ss.pend
        m.d.comb += [
            seg_write.eq(seg_valid & inside & ~empty & ~both),
            seg_done.eq(seg_valid & (~inside | empty | ~both)),
            seg_free.eq(~seg_valid | seg_done),
            self.segment.ready.eq(seg_free & ~order.full & ~self.restart),
            seg_rd.addr.eq(Mux(seg_free, index(self.segment.payload), index(seg))),
        ]
        taken_seg = self.segment.valid & self.segment.ready
        with m.If(seg_free):
            m.d.sync += [seg_valid.eq(taken_seg), seg.eq(self.segment.payload),
                         seg_seq.eq(order.seq)]
        m.d.comb += order.take.eq(taken_seg)
        placed = Signal(state_layout)            # the source's state with the segment added
        with m.If(ss.open):
            m.d.comb += [
                placed.eq(ss),
                placed.pend.eq(1),
                placed.pend_addr.eq(seg.glb_addr),
                placed.pend_left.eq(seg.values),
                placed.pend_seq.eq(seg_seq),
            ]
        with m.Else():
            m.d.comb += [
                placed.open.eq(1),
                placed.addr.eq(seg.glb_addr),
                placed.left.eq(seg.values),
                placed.seq.eq(seg_seq),
            ]

        # Packets: a register, processed with its source's state (read a cycle ahead).
        pkt = Signal(self.gon.payload.shape())
        pkt_valid = Signal()
        flush = Signal()                 # second cycle of a packet that writes two words
        pkt_done = Signal()
        m.d.comb += [
            self.gon.ready.eq(~pkt_valid | pkt_done),
            pkt_rd.addr.eq(Mux(self.gon.ready, index(self.gon.payload), index(pkt))),
        ]
        with m.If(self.gon.ready):
            m.d.sync += [pkt_valid.eq(self.gon.valid), pkt.eq(self.gon.payload)]

        st = pkt_rd.data
        c = Signal(range(V + 1))
        taken = Signal(range(V + 1))                         # psums that fit the segment
        total = Signal(range(2 * P))                         # held + taken
        m.d.comb += [
            c.eq(Mux(flush, 0, pkt.count)),
            taken.eq(Mux(c > st.left, st.left, c)),
            total.eq(st.fill + taken),
        ]
        over = c > st.left
        close = taken == st.left
        full = total >= P

        # Sequence of held psums then packet psums: the word (first P) and the leftover.
        def psum(f, i):
            if i < f:
                return st.part[i]
            if i - f < V:
                return pkt.data[i - f].as_value()
            return Const(0, 32)

        word = Signal(P * 32)
        spill = Signal(max(1, P - 1) * 32)
        with m.Switch(st.fill):
            for f in range(P):
                with m.Case(f):
                    m.d.comb += [
                        word.eq(Cat(*(psum(f, i) for i in range(P)))),
                        spill.eq(Cat(*(psum(f, P + j) for j in range(max(1, P - 1))))),
                    ]
        padded = Cat(*(Mux(i < total, word[32 * i:32 * (i + 1)], 0) for i in range(P)))

        out = self.write
        out_free = ~out.valid | out.ready
        act = Signal()
        two = Signal()                                       # a full word and a padded one
        ends = Signal()                                      # the open segment closes
        promote = Signal()                                   # ... and the pending one opens
        # A segment always closes with a word to write (it opens with psums left, and a close
        # with none left over is the second cycle of ``two``, which writes the held ones).
        write_now = full | (close & total.any())
        m.d.comb += [
            act.eq(pkt_valid & st.open & ~seg_write & out_free),
            two.eq(full & close & (total > P)),
            pkt_done.eq(act & ~two),
            ends.eq(close & ~two),
            promote.eq(ends & st.pend),
        ]
        new = Signal(state_layout)
        m.d.comb += [
            new.eq(st),
            new.open.eq(~ends | st.pend),
            new.pend.eq(st.pend & ~ends),
        ]
        with m.If(promote):
            m.d.comb += [
                new.addr.eq(st.pend_addr),
                new.left.eq(st.pend_left),
                new.fill.eq(0),
                new.seq.eq(st.pend_seq),
            ]
        with m.Else():
            m.d.comb += [
                new.addr.eq(st.addr + full),
                new.left.eq(st.left - taken),
                new.fill.eq(Mux(full, total - P, total)),
                new.part.eq(Mux(full, spill, word[:len(spill)])),
            ]
        m.d.comb += [
            wr.en.eq(seg_write | act),
            wr.addr.eq(Mux(seg_write, index(seg), index(pkt))),
            wr.data.eq(Mux(seg_write, placed.as_value(), new.as_value())),
        ]
        with m.If(act):
            m.d.sync += flush.eq(two)

        out_close = Signal()                 # the word held on ``write`` closes segment ...
        out_seq = Signal(S)                  # ... number ``out_seq``
        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(act & write_now):
            m.d.sync += [out.valid.eq(1), out.payload.addr.eq(st.addr),
                         out.payload.data.eq(padded), out_close.eq(ends),
                         out_seq.eq(st.seq)]

        m.d.comb += [
            order.close[0].valid.eq(out.valid & out.ready & out_close),
            order.close[0].seq.eq(out_seq),
            order.close[1].valid.eq(seg_valid & (~inside | empty)),
            order.close[1].seq.eq(seg_seq),
            order.restart.eq(self.restart),
        ]
        with m.If(order.retire):
            m.d.sync += self.retired.eq(self.retired + 1)
        with m.If(self.restart):
            m.d.sync += self.retired.eq(0)

        # After ``restart``, every source's state is cleared, one per cycle: an aborted layer
        # may have left segments open. Segments and packets wait meanwhile.
        sweeping = Signal()
        sweep = Signal(range(rows * cols))
        with m.If(self.restart):
            m.d.sync += [sweeping.eq(1), sweep.eq(0)]
        with m.Elif(sweeping):
            m.d.sync += sweep.eq(sweep + 1)
            with m.If(sweep == rows * cols - 1):
                m.d.sync += sweeping.eq(0)
        with m.If(sweeping):
            m.d.comb += [wr.en.eq(1), wr.addr.eq(sweep), wr.data.eq(0),
                         self.segment.ready.eq(0), self.gon.ready.eq(0)]

        m.d.comb += self.busy.eq(order.pending | pkt_valid | seg_valid | out.valid | sweeping)
        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.Elif((act & over) | (seg_valid & ~inside)):
            m.d.sync += self.error.eq(1)
        return m


class OutputStage(wiring.Component):
    """Turn rows of FP32 psums into output words: optional ReLU, then FP16 or FP32.

    Each row is described on ``desc`` (:func:`OutputDescriptor`) and read from ``i`` as
    ``ceil(values / P)`` words of P = ``word_bits // 32`` FP32 values (values past ``values``
    in the last word are ignored). Each value gets ReLU if ``relu`` (sign set and not NaN
    gives +0), then, if ``fp16``, binary32 -> binary16 round to nearest even
    (:func:`~rsaccel.hw.mac.fp32_to_fp16`: NaN gives ``0x7E00``); FP32 values pass unchanged
    otherwise. Results leave on ``data`` packed 2P FP16 or P FP32 values per word, little end
    first, the last word of a row zero-padded; a row of 0 values gives no word.

    Timing: ``data`` is a register. One input word per cycle while ``data`` is ready, rows
    back to back. ``busy`` is set while a row is under way or a word waits on ``data``.

    Parameters
    ----------
    word_bits : int
        Word width of ``i`` and ``data``, a multiple of 32.
    values_bits : int
        Width of a descriptor's ``values``.
    """

    def __init__(self, *, word_bits, values_bits=24):
        _positive("output stage word_bits", word_bits)
        _positive("output stage values_bits", values_bits)
        if word_bits % 32:
            raise ValueError(f"output stage word_bits must be a multiple of 32, not "
                             f"{word_bits!r}")
        self._word_bits, self._values_bits = word_bits, values_bits
        super().__init__({
            "desc": In(stream.Signature(OutputDescriptor(values_bits))),
            "i": In(stream.Signature(word_bits)),
            "data": Out(stream.Signature(word_bits)),
            "busy": Out(1),
        })

    @property
    def word_bits(self):
        return self._word_bits

    def elaborate(self, platform):
        m = Module()
        P = self._word_bits // 32
        half_bits = self._word_bits // 2

        running = Signal()
        left = Signal(self._values_bits)
        fp16 = Signal()
        relu = Signal()
        upper = Signal()                 # FP16: the lower half of the output word is held
        held = Signal(half_bits)

        out = self.data
        last = left <= P
        m.d.comb += self.i.ready.eq(running & (~out.valid | out.ready))
        take = self.i.valid & self.i.ready
        m.d.comb += self.desc.ready.eq(~running | (take & last))
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += [
                running.eq(self.desc.payload.values.any()),
                left.eq(self.desc.payload.values),
                fp16.eq(self.desc.payload.fp16),
                relu.eq(self.desc.payload.relu),
            ]
        with m.Elif(take):
            m.d.sync += [left.eq(left - P), running.eq(~last)]

        values = [self.i.payload[32 * k:32 * (k + 1)] for k in range(P)]
        keep = [left > k for k in range(P)]
        as16 = Signal(half_bits)
        as32 = Signal(self._word_bits)
        m.d.comb += [
            as16.eq(Cat(*(Mux(keep[k], fp32_to_fp16(m, v, relu), 0)
                          for k, v in enumerate(values)))),
            as32.eq(Cat(*(Mux(keep[k], Mux(relu, relu32(v), v), 0)
                          for k, v in enumerate(values)))),
        ]

        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(take):
            with m.If(~fp16):
                m.d.sync += [out.valid.eq(1), out.payload.eq(as32)]
            with m.Elif(upper):
                m.d.sync += [out.valid.eq(1), out.payload.eq(Cat(held, as16)), upper.eq(0)]
            with m.Elif(last):
                m.d.sync += [out.valid.eq(1), out.payload.eq(Cat(as16, Const(0, half_bits)))]
            with m.Else():
                m.d.sync += [held.eq(as16), upper.eq(1)]
        m.d.comb += self.busy.eq(running | out.valid)
        return m
