"""The Row-Stationary processing element: three scratchpads, one MAC and the 1D-convolution loop.

The primitive
-------------
One PE runs one *primitive*: ``p`` filter rows by ``q`` channels, each of width ``S``, against
``q`` ifmap rows of width ``W = (F - 1) * U + S`` (stride ``U``), giving ``p`` psum rows of width
``F``. For each output column ``x`` and filter ``f`` it computes, in exactly this order (one
binary32 rounding per MAC, :func:`rsaccel.sw.numerics.mac`)::

    acc = psum_in[x][f] if use_psum_in else +0.0
    for s in range(S):                  # filter column, outer
        for c in range(q):              # channel, inner
            acc = mac(w[f][c][s], ifmap[c][x * U + s], acc)
    psum_out[x][f] = acc

:mod:`rsaccel.sw.pe_model` is the bit-exact software model of this order. The hardware walks
``(x, g, s, c, f)``: the ``p`` filters in groups of :func:`filter_group` (``G``) consecutive
ones, ``f`` innermost within its group ``g``. Consecutive MACs belong to different psums, so a
PE whose groups all hold at least ``mac_stages`` filters issues one MAC per cycle; with fewer
filters it waits for each psum to leave the MAC pipeline and stays exact.

Groups finish their psums early: those of the first ``G`` filters of a column are final after
about ``(q*S - 1) * G`` cycles rather than ``(q*S - 1) * p``, so the PE above in a chain,
which starts each psum from one of them, runs that much closer behind.
"""

import math

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .fp import FP16, FP32
from .mac import FMac

__all__ = ["PE", "PEConfig", "PEEvents", "PsumOut", "filter_group", "pe_limits"]


def _positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"PE {name} must be a positive integer, not {value!r}")
    return value


def pe_limits(*, filter_depth, ifmap_depth, psum_depth, max_width=4095):
    """Return the largest ``S``, ``p``, ``q`` and ``F`` a PE of these sizes can be given.

    ``S`` and ``q`` are bounded by both the ifmap (``q * S`` values) and the filter scratchpad
    (``p * q * S`` values), ``p`` by both the psum and the filter scratchpad.
    """
    for name, value in (("filter_depth", filter_depth), ("ifmap_depth", ifmap_depth),
                        ("psum_depth", psum_depth), ("max_width", max_width)):
        _positive(name, value)
    return {"S": min(filter_depth, ifmap_depth), "p": min(filter_depth, psum_depth),
            "q": min(filter_depth, ifmap_depth), "F": max_width}


def filter_group(p, mac_stages):
    """Return the size ``G`` of the filter groups a PE with ``p`` filters interleaves.

    The smallest ``G >= mac_stages`` whose last group (``p - (ceil(p / G) - 1) * G`` filters)
    also holds at least ``mac_stages``, so that every group runs one MAC per cycle; ``p`` (one
    group) when there is none.
    """
    for size in range(mac_stages, p):
        if p - (math.ceil(p / size) - 1) * size >= mac_stages:
            return size
    return p


def PEConfig(*, filter_depth, ifmap_depth, psum_depth, max_width=4095):
    """Return the layout of one primitive's configuration for a PE of these sizes.

    ``S``, ``p``, ``q`` and ``F`` are the plain counts (not minus one), each field just wide
    enough for the largest count the PE can be given (:func:`pe_limits`); ``U`` is the stride,
    1 to 15. ``load_filter`` loads ``p * q * S`` new weights first (0: keep the stationary
    filter of the previous primitive, which had the same ``p``, ``q``, ``S``); ``use_psum_in``
    starts each psum from ``psum_in`` rather than +0.
    """
    limits = pe_limits(filter_depth=filter_depth, ifmap_depth=ifmap_depth,
                       psum_depth=psum_depth, max_width=max_width)
    return data.StructLayout({
        "S": unsigned(limits["S"].bit_length()),
        "U": unsigned(4),
        "p": unsigned(limits["p"].bit_length()),
        "q": unsigned(limits["q"].bit_length()),
        "F": unsigned(limits["F"].bit_length()),
        "load_filter": 1,
        "use_psum_in": 1,
    })


class PsumOut(data.Struct):
    """A psum leaving a PE: ``last`` marks the final psum of its primitive."""
    data: FP32
    last: 1


class PEEvents(data.Struct):
    """Per-cycle strobes of one PE, for counters outside it (see :mod:`rsaccel.hw.counters`).

    At most one of ``mac_busy``, ``stall_psum_in``, ``stall_dependency``, ``stall_output`` is
    set in a cycle. ``stall_ifmap`` marks a cycle in which the issue stage could have taken the
    next operation but its ifmap value had not arrived: the MAC idles one cycle later for it.
    """
    mac_busy: 1          # a MAC issued
    stall_ifmap: 1       # the next operation waits for its ifmap value
    stall_psum_in: 1     # a first term waits for psum_in
    stall_dependency: 1  # a term waits for its psum, still in the MAC pipeline
    stall_output: 1      # the MAC pipeline holds: a final psum waits for psum_out
    filter_load: 1       # a cycle spent in filter load (a weight arrives or not)
    filter_read: 1       # scratchpad accesses
    filter_write: 1
    ifmap_read: 1
    ifmap_write: 1
    psum_read: 1         # psum scratchpad read (not counted when bypassed from the MAC)
    psum_write: 1


def _index(count):
    """Return a signal counting 0 to ``count - 1`` (at least one bit wide, for ``count == 1``)."""
    return Signal(max(1, (count - 1).bit_length()), src_loc_at=1)


def _onehot(index, width):
    """Return a ``width``-bit mask with bit ``index`` set."""
    return (Const(1, width) << index)[:width]


def _bit(vector, index):
    """Return bit ``index`` of ``vector`` (an AND-OR mux; Verilator flags the shift form)."""
    return (vector & _onehot(index, len(vector))).any()


class PE(wiring.Component):
    """Row-Stationary processing element running one primitive per configuration.

    Ports (``amaranth.lib.stream``; valid never waits on ready):

    ``cfg`` : ``In(stream.Signature(PEConfig(...)))``
        Taken into an empty PE (no primitive issuing and no ifmap value held; the psums of
        earlier primitives may still be on their way out), or as the *next* primitive while
        one issues, once that one's ifmaps are all in, if its ``q`` gives the ring as many
        entries (``ifmap_depth // q`` whole columns): its ifmaps then load into the entries the
        running primitive frees (the ring goes on where that one's ended), and it starts the
        cycle after the running one's last MAC issues. At most three primitives are taken
        whose last psum has not left.
    ``filter_in`` : ``In(stream.Signature(FP16))``
        With ``load_filter``: exactly ``p * q * S`` weights ``w[f][c][s]`` in address order
        ``(s * q + c) * p + f``, before any MAC of the primitive.
    ``ifmap_in`` : ``In(stream.Signature(FP16))``
        Exactly ``W * q`` values, column by column (``c`` inner). Each enters once and is held
        in the ifmap scratchpad until its last use; loading overlaps computing and runs up to
        ``ifmap_depth // q`` columns (the scratchpad's whole columns) ahead of the window. When ``U > S``
        the columns that no output uses are taken and dropped.
    ``psum_in`` : ``In(stream.Signature(FP32))``
        With ``use_psum_in``: exactly ``F * p`` values in ``(x, f)`` order, the initial
        accumulators. They go through a FIFO of ``psum_depth`` values, taken whenever it has
        room (also before the primitive's ``cfg``, or while it runs ahead of the MAC), so that
        the next output column's psums arrive while this one computes.
    ``psum_out`` : ``Out(stream.Signature(PsumOut))``
        Exactly ``F * p`` results in ``(x, f)`` order, the last one marked ``last``. They leave
        through a FIFO of ``psum_depth`` values: a column's psums wait there while the MAC goes
        on with the next column. A group's ``G`` psums (:func:`filter_group`) leave together,
        ``G * q * S`` cycles after the previous group's.
    ``events`` : ``Out(PEEvents)``
        Per-cycle strobes for performance counters.
    ``idle`` : ``Out(1)``
        Every primitive taken has finished and its last psum has left. (``psum_in`` values
        of later primitives may already be buffered.)

    Timing, fed and drained without stalls, from the ``cfg`` transfer to ``idle``:
    ``(p*q*S if load_filter else 1) + F * per_x + mac_stages + 3`` cycles, where a filter load
    takes ``p*q*S`` cycles (the ifmap loads meanwhile; without it, one cycle passes until the
    first ifmap value is in) and each output column ``per_x = p*q*S`` cycles, one MAC per
    cycle, when ``p >= mac_stages``; with fewer filters ``per_x = p + (q*S - 1) * mac_stages``,
    as each ``(s, c)`` step waits for its psums to leave the MAC. The first psum of a column
    whose first term issues at cycle ``t`` is on ``psum_out`` at ``t + (q*S - 1) * G +
    mac_stages + 1``, ``G = filter_group(p, mac_stages)``. Both hold when
    ``U <= p * S``; otherwise ``ifmap_in`` (one value per cycle, ``U * q`` per column) limits.
    Back to back (the next ``cfg`` offered in time, its ifmaps keeping up), a primitive's
    first MAC issues two cycles after the last MAC of the one before (with ``p >=
    mac_stages``; one or two with fewer), after its filter load if it has one: the MAC
    pipeline drains only when the PE runs out of primitives.

    A ``psum_in`` value is usable the cycle after its transfer; a final psum is on
    ``psum_out`` the cycle after it leaves the MAC.

    Combinational paths: none from ``psum_out.ready`` to an input's ``ready`` (both psum
    FIFOs' ``ready`` and ``valid`` are registers), so PEs chained by local links add no path
    up a column. ``ifmap_in`` may refill an entry in the cycle its last use reads it. Every
    ``valid`` output depends on registers only.

    Parameters
    ----------
    filter_depth, ifmap_depth : int
        Scratchpad sizes in binary16 values.
    psum_depth : int
        Psum scratchpad size in binary32 values: the largest ``p``.
    mac_stages : int
        Pipeline depth of the MAC.
    max_width : int
        Largest output row width ``F``.
    """

    def __init__(self, *, filter_depth, ifmap_depth, psum_depth, mac_stages, max_width=4095):
        self._limits = pe_limits(filter_depth=filter_depth, ifmap_depth=ifmap_depth,
                                 psum_depth=psum_depth, max_width=max_width)
        self._filter_depth = filter_depth
        self._ifmap_depth = ifmap_depth
        self._psum_depth = psum_depth
        self._mac_stages = _positive("mac_stages", mac_stages)
        self._max_width = max_width
        self._config_layout = PEConfig(filter_depth=filter_depth, ifmap_depth=ifmap_depth,
                                       psum_depth=psum_depth, max_width=max_width)
        super().__init__({
            "cfg": In(stream.Signature(self._config_layout)),
            "filter_in": In(stream.Signature(FP16)),
            "ifmap_in": In(stream.Signature(FP16)),
            "psum_in": In(stream.Signature(FP32)),
            "psum_out": Out(stream.Signature(PsumOut)),
            "events": Out(PEEvents),
            "idle": Out(1),
        })

    @property
    def filter_depth(self):
        return self._filter_depth

    @property
    def ifmap_depth(self):
        return self._ifmap_depth

    @property
    def psum_depth(self):
        return self._psum_depth

    @property
    def mac_stages(self):
        return self._mac_stages

    @property
    def max_width(self):
        return self._max_width

    @property
    def config_layout(self):
        """The ``cfg`` payload layout, :func:`PEConfig` of this PE's sizes."""
        return self._config_layout

    @property
    def limits(self):
        """The largest ``S``, ``p``, ``q``, ``F`` (dict), as :func:`pe_limits`."""
        return dict(self._limits)

    def elaborate(self, platform):
        m = Module()
        lim = self._limits
        f_bits = max(1, (self.psum_depth - 1).bit_length())
        tag_bits = f_bits + 2                               # f, final, last

        m.submodules.mac = mac = FMac(stages=self.mac_stages, tag_bits=tag_bits)
        # Psum FIFOs of a whole column (p <= psum_depth values) on both sides. The chains of a
        # pass run in lockstep, so every chain-bottom PE wants a column's initial psums at the
        # same time, and every chain top emits its final ones at the same time: buffered, the
        # psum GIN and the GON spread them over the column. Their ready and valid are
        # registers, so no input's ready depends on psum_out.ready: a column of PEs chained
        # by local links has no combinational path from top to bottom. (Two entries at
        # least: Verilog has no zero-width address.)
        fifo_depth = max(2, self.psum_depth)
        m.submodules.in_fifo = in_fifo = SyncFIFO(width=32, depth=fifo_depth)
        m.submodules.out_fifo = out_fifo = SyncFIFO(width=len(Value.cast(self.psum_out.payload)),
                                                    depth=fifo_depth)
        out_word = Signal(PsumOut)
        m.d.comb += [
            in_fifo.w_en.eq(self.psum_in.valid),
            in_fifo.w_data.eq(self.psum_in.payload),
            self.psum_in.ready.eq(in_fifo.w_rdy),
            self.psum_out.valid.eq(out_fifo.r_rdy),
            self.psum_out.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.psum_out.ready),
            out_fifo.w_data.eq(out_word),
        ]
        # A one-entry scratchpad is stored as two: Verilog has no zero-width address.
        m.submodules.filter_spad = filter_spad = Memory(shape=16, depth=max(2, self.filter_depth),
                                                        init=[])
        m.submodules.ifmap_spad = ifmap_spad = Memory(shape=16, depth=max(2, self.ifmap_depth),
                                                      init=[])
        m.submodules.psum_spad = psum_spad = Memory(shape=32, depth=max(2, self.psum_depth),
                                                    init=[])
        f_wr = filter_spad.write_port()
        f_rd = filter_spad.read_port()                      # synchronous: data in stage B
        i_wr = ifmap_spad.write_port()
        i_rd = ifmap_spad.read_port(domain="comb")
        p_wr = psum_spad.write_port()
        p_rd = psum_spad.read_port(domain="comb")

        # Configuration of the running primitive, counts stored minus one.
        S = Signal(range(lim["S"] + 1))
        U = Signal(4)
        S_m1 = _index(lim["S"])
        p_m1 = _index(lim["p"])
        q_m1 = _index(lim["q"])
        F_m1 = _index(lim["F"])
        # The ifmap scratchpad is a ring of whole columns, as many as fit (at least S): the
        # loader runs up to ``depth // q - S`` columns ahead of the window in use, so that
        # PEs sharing an ifmap row a few columns apart (a diagonal of a chain) do not hold
        # each other up.
        ring_m1 = _index(self.ifmap_depth)                  # entries in the ring - 1
        wide = Signal()                                     # U >= S: windows do not overlap
        use_psum = Signal()

        # Stage A: loop counters, also the filter load's address counters.
        x = _index(lim["F"])
        s = _index(lim["S"])
        c = _index(lim["q"])
        f = _index(lim["p"])
        g0 = _index(lim["p"])                               # first filter of the group
        g_end = _index(lim["p"])                            # last filter of the group
        g_m1 = _index(lim["p"])                             # group size - 1 (filter_group)
        f_addr = _index(self.filter_depth)                  # (s * q + c) * p + f
        row_g0 = _index(self.filter_depth)                  # (s * q + c) * p + g0
        rd_addr = _index(self.ifmap_depth)                  # ((base(x) + s) mod S) * q + c
        x_base = _index(self.ifmap_depth)                   # base(x) * q
        next_base = _index(self.ifmap_depth)                # base(x + 1) * q
        a_run = Signal()                                    # operations left to issue
        ivalid = Signal(self.ifmap_depth)                   # ifmap entry holds a needed value

        # Stage B: one operation waiting to issue to the MAC; its weight is f_rd.data.
        b_valid = Signal()
        b_x = Signal(16)
        b_f = Signal(f_bits)
        b_first = Signal()
        b_final = Signal()
        b_last = Signal()
        b_use_psum = Signal()                               # the op's primitive's use_psum_in
        scoreboard = Signal(self.psum_depth)                # psum f is in the MAC pipeline

        f_last = f == p_m1                                  # the last filter of the last group
        f_end = f == g_end
        in_last_group = g_end == p_m1
        c_last = c == q_m1
        s_last = s == S_m1
        x_last = x == F_m1
        group_last = f_last & c_last & s_last

        # MAC output: final psums leave, the others are written back.
        o_tag = mac.o.payload.tag
        o_f, o_final, o_last = o_tag[:f_bits], o_tag[f_bits], o_tag[f_bits + 1]
        writeback = mac.o.valid & ~o_final
        m.d.comb += [
            mac.o.ready.eq(~o_final | out_fifo.w_rdy),
            out_fifo.w_en.eq(mac.o.valid & o_final),
            out_word.data.eq(mac.o.payload.sum),
            out_word.last.eq(o_last),
            p_wr.en.eq(writeback),
            p_wr.addr.eq(o_f),
            p_wr.data.eq(mac.o.payload.sum),
        ]

        # Stage B -> MAC. A non-first term needs its psum: from the scratchpad, or bypassed
        # from the MAC output when it is being written back in this very cycle.
        bypass = writeback & (o_f == b_f)
        dep_ok = b_first | ~_bit(scoreboard, b_f) | bypass
        psum_ok = ~(b_first & b_use_psum) | in_fifo.r_rdy
        init = Mux(b_use_psum, in_fifo.r_data, 0)
        m.d.comb += [
            p_rd.addr.eq(b_f),
            mac.i.valid.eq(b_valid & dep_ok & psum_ok),
            mac.i.payload.a.eq(f_rd.data),
            mac.i.payload.b.eq(b_x),
            mac.i.payload.c.eq(Mux(b_first, init,
                                   Mux(bypass, mac.o.payload.sum.as_value(), p_rd.data))),
            mac.i.payload.tag.eq(Cat(b_f, b_final, b_last)),
            in_fifo.r_en.eq(b_valid & b_first & b_use_psum & mac.i.ready),
        ]
        issue = mac.i.valid & mac.i.ready

        # Stage A -> B.
        entry_valid = _bit(ivalid, rd_addr)
        a_ready = ~b_valid | issue
        a_fire = a_run & entry_valid & a_ready
        last_use = (s < U) | x_last             # column x*U + s is not used by x + 1
        free = a_fire & f_last & last_use
        m.d.comb += [
            i_rd.addr.eq(rd_addr),
            f_rd.addr.eq(f_addr),
            f_rd.en.eq(a_fire),
        ]
        with m.If(a_fire):
            m.d.sync += [
                b_x.eq(i_rd.data),
                b_f.eq(f),
                b_first.eq(~s.any() & ~c.any()),
                b_final.eq(s_last & c_last),
                b_last.eq(s_last & c_last & x_last & f_last),
                b_use_psum.eq(use_psum),
            ]
        with m.If(a_ready):
            m.d.sync += b_valid.eq(a_fire)

        sb_set = Mux(issue & ~b_final, _onehot(b_f, self.psum_depth), 0)
        sb_clr = Mux(writeback, _onehot(o_f, self.psum_depth), 0)
        m.d.sync += scoreboard.eq((scoreboard & ~sb_clr) | sb_set)

        # Ifmap loader: group 0 is the first S columns, groups 1..F-1 the U columns each
        # output column adds; of those, columns no output uses (U > S) are dropped. It has its
        # own copy of the sizes: it loads the next primitive while stage A finishes this one.
        lS = Signal(range(lim["S"] + 1))
        lU = Signal(4)
        lS_m1 = _index(lim["S"])
        lq_m1 = _index(lim["q"])
        lF_m1 = _index(lim["F"])
        w_active = Signal()
        w_group = _index(lim["F"])
        w_col = Signal(range(max(lim["S"], 15)))
        w_c = _index(lim["q"])
        w_addr = _index(self.ifmap_depth)
        first_group = ~w_group.any()
        keep = first_group | (w_col + lS >= lU)
        w_entry_free = ~_bit(ivalid, w_addr) | (free & (rd_addr == w_addr))
        m.d.comb += self.ifmap_in.ready.eq(w_active & (~keep | w_entry_free))
        w_take = self.ifmap_in.valid & self.ifmap_in.ready
        w_write = w_take & keep
        m.d.comb += [
            i_wr.en.eq(w_write),
            i_wr.addr.eq(w_addr),
            i_wr.data.eq(self.ifmap_in.payload),
        ]
        iv_set = Mux(w_write, _onehot(w_addr, self.ifmap_depth), 0)
        iv_clr = Mux(free, _onehot(rd_addr, self.ifmap_depth), 0)
        with m.If(w_write):
            m.d.sync += w_addr.eq(Mux(w_addr == ring_m1, 0, w_addr + 1))
        with m.If(w_take):
            m.d.sync += w_c.eq(w_c + 1)
            with m.If(w_c == lq_m1):
                m.d.sync += [w_c.eq(0), w_col.eq(w_col + 1)]
                with m.If(w_col == Mux(first_group, lS_m1, lU - 1)):
                    m.d.sync += [w_col.eq(0), w_group.eq(w_group + 1)]
                    with m.If(w_group == lF_m1):
                        m.d.sync += w_active.eq(0)

        # Loop counters, advanced by a filter load transfer or by stage A.
        load_take = Signal()
        advance = load_take | a_fire
        # A filter load is one group of all p (its addresses run straight through); a
        # primitive's group after the last one is the first group of the next column.
        next_g0 = Mux(in_last_group, 0, g_end + 1)
        next_g_end = Signal(len(g_end) + 1)
        m.d.comb += next_g_end.eq(Mux(in_last_group, g_m1, g_end + g_m1 + 1))
        with m.If(advance):
            m.d.sync += [f.eq(f + 1), f_addr.eq(f_addr + 1)]
            with m.If(f_end):
                m.d.sync += [f.eq(g0), c.eq(c + 1), row_g0.eq(row_g0 + p_m1 + 1),
                             f_addr.eq(row_g0 + p_m1 + 1)]
                with m.If(c_last):
                    m.d.sync += [c.eq(0), s.eq(s + 1)]
                    with m.If(s_last):
                        m.d.sync += [s.eq(0), f.eq(next_g0), g0.eq(next_g0),
                                     f_addr.eq(next_g0), row_g0.eq(next_g0),
                                     g_end.eq(Mux(next_g_end > p_m1, p_m1, next_g_end))]

        # Ifmap read address: next entry per (s, c); each group but the last goes back to the
        # column's window, base(x). base(x + 1) = base(x) + U (U < S) is the address seen at
        # s == U, c == 0; with U >= S the loader keeps S columns per output, so the next
        # output starts just after this one's last entry.
        capture = a_fire & (s == U) & ~c.any()
        rd_next = Mux(rd_addr == ring_m1, 0, rd_addr + 1)
        new_base = Mux(wide, rd_next, Mux(capture, rd_addr, next_base))
        with m.If(capture):
            m.d.sync += next_base.eq(rd_addr)
        with m.If(a_fire & f_end):
            m.d.sync += rd_addr.eq(rd_next)
            with m.If(c_last & s_last):
                with m.If(in_last_group):
                    m.d.sync += [rd_addr.eq(new_base), x_base.eq(new_base)]
                with m.Else():
                    m.d.sync += rd_addr.eq(x_base)
        with m.If(a_fire & group_last):
            m.d.sync += x.eq(x + 1)
            with m.If(x_last):
                m.d.sync += a_run.eq(0)

        cfg = self.cfg.payload
        # Ring entries - 1 per q: whole columns of q values, as many as the scratchpad holds.
        depth = self.ifmap_depth
        ring_table = Array(Const(depth // q * q - 1 if 0 < q <= depth else depth - 1,
                                 len(ring_m1))
                           for q in range(1 << len(cfg.q)))
        group_table = Array(Const(filter_group(min(max(p, 1), lim["p"]), self.mac_stages) - 1,
                                  len(g_m1))
                            for p in range(1 << len(cfg.p)))
        m.d.sync += ivalid.eq((ivalid & ~iv_clr) | iv_set)

        # Primitives: stage A's (loading its filters, then issuing) and the next one, whose
        # ifmaps load into the ring entries stage A frees. ``outstanding`` counts the
        # primitives taken whose last psum has not left.
        loading = Signal()
        busy = Signal()                                     # stage A has a primitive
        nxt_valid = Signal()
        nxt = Signal(self.config_layout)
        nxt_start = _index(self.ifmap_depth)                # its first ring entry
        outstanding = Signal(2)
        m.d.comb += [busy.eq(loading | a_run), self.idle.eq(outstanding == 0)]
        # A primitive is taken into an empty PE (an empty ring), or as the next one once stage
        # A's ifmaps are all in, if it has as many ring entries (the ring goes on).
        start = ~busy & ~nxt_valid & ~w_active
        queue = busy & ~nxt_valid & ~w_active & (ring_table[cfg.q] == ring_m1)
        m.d.comb += self.cfg.ready.eq((start | queue) & (outstanding != 3))
        take = self.cfg.valid & self.cfg.ready
        last_out = self.psum_out.valid & self.psum_out.ready & self.psum_out.payload.last
        m.d.sync += outstanding.eq(outstanding + take - last_out)
        with m.If(take):
            m.d.sync += [
                lS.eq(cfg.S), lU.eq(cfg.U), lS_m1.eq(cfg.S - 1), lq_m1.eq(cfg.q - 1),
                lF_m1.eq(cfg.F - 1),
                w_active.eq(1), w_group.eq(0), w_col.eq(0), w_c.eq(0),
            ]

        def begin(new, ring_start):
            """Stage A takes primitive ``new``, whose ifmaps start at ring entry ``ring_start``."""
            return [
                S.eq(new.S), U.eq(new.U), S_m1.eq(new.S - 1), p_m1.eq(new.p - 1),
                q_m1.eq(new.q - 1), F_m1.eq(new.F - 1), wide.eq(new.U >= new.S),
                use_psum.eq(new.use_psum_in),
                x.eq(0), s.eq(0), c.eq(0), f.eq(0), f_addr.eq(0), row_g0.eq(0), g0.eq(0),
                g_m1.eq(group_table[new.p]),
                g_end.eq(Mux(new.load_filter, new.p - 1, group_table[new.p])),
                rd_addr.eq(ring_start), x_base.eq(ring_start), next_base.eq(ring_start),
                loading.eq(new.load_filter),
                a_run.eq(~new.load_filter),
            ]

        with m.If(take & start):
            m.d.sync += begin(cfg, 0) + [ring_m1.eq(ring_table[cfg.q]), w_addr.eq(0)]
        with m.If(take & queue):
            m.d.sync += [nxt_valid.eq(1), nxt.eq(cfg), nxt_start.eq(w_addr)]
        with m.If(~busy & nxt_valid):
            m.d.sync += begin(nxt, nxt_start) + [nxt_valid.eq(0)]
        m.d.comb += [
            self.filter_in.ready.eq(loading),
            load_take.eq(loading & self.filter_in.valid),
            f_wr.en.eq(load_take),
            f_wr.addr.eq(f_addr),
            f_wr.data.eq(self.filter_in.payload),
        ]
        with m.If(load_take & group_last):
            m.d.sync += [loading.eq(0), a_run.eq(1)]

        ev = self.events
        m.d.comb += [
            ev.mac_busy.eq(issue),
            ev.stall_ifmap.eq(a_run & ~entry_valid & a_ready),
            ev.stall_psum_in.eq(b_valid & b_first & b_use_psum & ~in_fifo.r_rdy & mac.i.ready),
            ev.stall_dependency.eq(b_valid & ~dep_ok & mac.i.ready),
            ev.stall_output.eq(mac.o.valid & ~mac.o.ready),
            ev.filter_load.eq(self.filter_in.ready),
            ev.filter_write.eq(f_wr.en),
            ev.filter_read.eq(a_fire),
            ev.ifmap_read.eq(a_fire),
            ev.ifmap_write.eq(w_write),
            ev.psum_read.eq(issue & ~b_first & ~bypass),
            ev.psum_write.eq(writeback),
        ]
        return m
