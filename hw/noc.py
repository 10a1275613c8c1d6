"""The network on chip: global input networks, the global output network and local psum links.

Rows are numbered from the bottom: psums flow up, from PE ``(r, c)`` to PE ``(r + 1, c)``.

Global Input Network (GIN, :class:`GlobalInputNetwork`), one per data type (filter and ifmap
binary16, psum binary32): a packet carries a ``(row_tag, col_tag)`` and up to ``V`` values. A
Y-bus multicast controller (MC) per PE row compares ``row_tag`` with the row's ID; an X-bus MC
per PE compares ``col_tag`` with the PE's ID. The packet goes, in one transfer, to every PE
whose row and column IDs both match, when all of them can take it; each PE receives its
values one at a time. IDs are data, written at configuration time.

Global Output Network (GON, :class:`GlobalOutputNetwork`): every PE whose psums leave the
array packs them into packets tagged with its position; two levels of round-robin arbitration
(PEs of a row, then rows) give one packet per cycle.

:class:`NoC` joins the three GINs, the GON and the local psum links, with per-PE routes;
:class:`PEArray` adds a PE at every position; :class:`NocTop` is the NoC as a Verilog top with
the PE-facing ports packed into vectors.

Per-PE logic is written on *lanes*: one wide signal holds a field for every PE, PE ``(r, c)``
at lane ``k = r * cols + c`` (:func:`Lanes`). It is the same hardware as one signal per PE,
but a netlist a few times smaller, which keeps Verilator builds (where cocotb makes every
signal public) and the Amaranth simulator fast on 168 PEs.
"""

from functools import reduce
from operator import or_

from amaranth import Cat, Const, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import ArrayConfig
from .fp import FP16, FP32
from .pe import PE, PsumOut
from .plumbing import RoundRobin, SkidBuffer

__all__ = [
    "ROUTE_FROM_GIN",
    "ROUTE_TO_GON",
    "ArrayTop",
    "GinEvents",
    "GinPacket",
    "GlobalInputNetwork",
    "GlobalOutputNetwork",
    "GonEvents",
    "GonPacket",
    "IdWrite",
    "Lanes",
    "NoC",
    "NocCfgOp",
    "NocCfgWrite",
    "NocEvents",
    "NocNet",
    "NocTop",
    "PEArray",
    "PeLinks",
    "UnmatchedFlags",
]

#: Route bits of one PE (``NocCfgOp.ROUTE`` value). Set: psums come in from the psum GIN
#: (clear: from the PE below); set: psums go out to the GON (clear: to the PE above).
ROUTE_FROM_GIN = 0b01
ROUTE_TO_GON = 0b10


# -- Formats ----------------------------------------------------------------------------------

def _bits(n):
    """Width of an index below ``n`` (at least one bit, so that no port is empty)."""
    return unsigned(max(1, (n - 1).bit_length()))


def _width(shape):
    """Return the width in bits of shape-like ``shape`` (layouts included)."""
    if isinstance(shape, data.Layout) or (isinstance(shape, type)
                                          and issubclass(shape, data.Struct)):
        return data.Layout.cast(shape).size
    return Shape.cast(shape).width


def GinPacket(elem, values, id_bits):
    """Return the layout of a GIN packet: tags, ``count`` (1 to ``values``) and the values.

    ``data[k]`` for ``k < count`` are delivered, in order; the rest are ignored.
    """
    return data.StructLayout({
        "row_tag": id_bits,
        "col_tag": id_bits,
        "count": range(values + 1),
        "data": data.ArrayLayout(elem, values),
    })


def GonPacket(rows, cols, values):
    """Return the layout of a GON packet: the source PE, ``count`` (1 to ``values``) psums in
    order, and ``last``, set when the packet ends with a psum marked ``last``."""
    return data.StructLayout({
        "src_row": _bits(rows),
        "src_col": _bits(cols),
        "count": range(values + 1),
        "last": 1,
        "data": data.ArrayLayout(FP32, values),
    })


def IdWrite(rows, cols, id_bits):
    """Return the layout of one ID write to a GIN: ``pe`` 0 writes row ``row``'s ID (Y-bus MC),
    1 writes the ID of PE ``(row, col)`` (X-bus MC)."""
    return data.StructLayout({"pe": 1, "row": _bits(rows), "col": _bits(cols), "value": id_bits})


def GinEvents(values):
    """Return the layout of a GIN's per-cycle strobes.

    ``packets``: a packet was delivered (to one PE or more); ``values``: its value count (values
    entering the network, not multiplied by the fan-out); ``stalled``: a packet waited because a
    matching PE could not take it; ``unmatched``: a packet matched no PE and was consumed.
    """
    return data.StructLayout({"packets": 1, "values": range(values + 1), "stalled": 1,
                              "unmatched": 1})


def GonEvents(values):
    """Return the layout of the GON's per-cycle strobes: a packet left (``packets``, with
    ``values`` psums) or waited on ``o.ready`` (``stalled``)."""
    return data.StructLayout({"packets": 1, "values": range(values + 1), "stalled": 1})


def NocEvents(config):
    """Return the layout of the NoC's per-cycle strobes (registered: one cycle late): the
    fields of :func:`GinEvents` for each GIN and of :func:`GonEvents`, as ``<net>_<field>``
    (``filter_packets``, ..., ``gon_stalled``). It is flat, for ``hw.counters.EventCounters``.
    """
    fields = {}
    for net, layout in (("filter", GinEvents(config.filter_values_per_packet)),
                        ("ifmap", GinEvents(config.ifmap_values_per_packet)),
                        ("psum", GinEvents(config.psum_values_per_packet)),
                        ("gon", GonEvents(config.gon_values_per_packet))):
        for name, field in layout:
            fields[f"{net}_{name}"] = field.shape
    return data.StructLayout(fields)


def GinState(config):
    """Return the layout of one GIN's state for its sender: the PEs its probe tag reaches
    (``match``), the PEs whose packet register can take a packet (``free``) and those that
    take one this cycle (``loaded``)."""
    n = config.num_pes
    return data.StructLayout({"match": n, "free": n, "loaded": n})


class UnmatchedFlags(data.Struct):
    """Sticky flags: a packet of this GIN matched no PE since the last ``CLEAR``."""
    filter: 1
    ifmap: 1
    psum: 1


class NocNet(enum.Enum, shape=2):
    """The global input network a configuration write addresses."""
    FILTER = 0
    IFMAP = 1
    PSUM = 2


class NocCfgOp(enum.Enum, shape=2):
    """What a configuration write does.

    ``ROW_ID``: set the ID of row ``row`` of network ``net`` to ``value``. ``COL_ID``: set the ID
    of PE ``(row, col)`` of network ``net``. ``ROUTE``: set the route bits of PE ``(row, col)``
    (``ROUTE_FROM_GIN | ROUTE_TO_GON``). ``CLEAR``: clear the sticky unmatched flags of all
    networks. Writes to positions outside the array are ignored.
    """
    ROW_ID = 0
    COL_ID = 1
    ROUTE = 2
    CLEAR = 3


def NocCfgWrite(config):
    """Return the layout of one NoC configuration write (see :class:`NocCfgOp`)."""
    return data.StructLayout({
        "op": NocCfgOp,
        "net": NocNet,
        "row": _bits(config.rows),
        "col": _bits(config.cols),
        "value": max(2, config.noc_id_bits),
    })


def PeLinks():
    """Return the signature of one PE's links, as the NoC sees them (names as the PE's ports)."""
    return wiring.Signature({
        "filter_in": Out(stream.Signature(FP16)),
        "ifmap_in": Out(stream.Signature(FP16)),
        "psum_in": Out(stream.Signature(FP32)),
        "psum_out": In(stream.Signature(PsumOut)),
    })


def Lanes(n, width):
    """Return the signature of ``n`` streams side by side: stream ``k`` has ``valid[k]``,
    ``ready[k]`` and ``payload[k * width:(k + 1) * width]``, with the transfer rules of
    ``amaranth.lib.stream`` each."""
    return wiring.Signature({"valid": Out(n), "ready": In(n), "payload": Out(n * width)})


# -- Lane helpers -----------------------------------------------------------------------------

def _is(value, k):
    """Return ``value == k`` (an int or enum member); written ``~value.any()`` for zero, as
    Verilator flags the ``!x`` that Yosys makes of ``x == 0``."""
    value = Value.cast(value)
    k = k.value if isinstance(k, enum.Enum) else k
    return ~value.any() if k == 0 else value == k


def _lane(vector, k, width):
    return vector[k * width:(k + 1) * width]


def _spread(mask, width):
    """Widen every bit of ``mask`` to ``width`` bits (a per-lane mask for ``width``-bit lanes)."""
    return Cat(*(mask[k].replicate(width) for k in range(len(mask))))


def _fill(bit, n):
    """Return ``n`` copies of ``bit``. (A multiplexer: Yosys writes a replication out in full,
    and Verilator limits the length of a line.)"""
    return Mux(bit, _ones(n), 0)


def _plane(vector, n, width, b):
    """Return bit ``b`` of each of the ``n`` lanes of ``vector`` (``n`` bits)."""
    return Cat(*(vector[k * width + b] for k in range(n)))


def _select(mask, when_set, when_clear):
    """Lane-wise (bit-wise) choice by ``mask``."""
    return (when_set & mask) | (when_clear & ~mask)


def _ones(n):
    return Const((1 << n) - 1, n)


def _lane_mask(m, rows, cols, row, col, name):
    """Return an ``rows * cols``-bit signal with the bit of PE ``(row, col)`` set (none when
    outside the array)."""
    mask = Signal(rows * cols, name=name)
    row_hot = [_is(row, r) for r in range(rows)]
    col_hot = Cat(*(_is(col, c) for c in range(cols)))
    m.d.comb += mask.eq(Cat(*(col_hot & _fill(row_hot[r], cols) for r in range(rows))))
    return mask


# -- Blocks ------------------------------------------------------------------------------------

def _positive(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")


class GlobalInputNetwork(wiring.Component):
    """Multicast packets of up to ``values`` values to the PEs whose IDs match their tags.

    ``i`` takes :func:`GinPacket` packets. A packet goes to every PE ``(r, c)`` with
    ``row_id[r] == row_tag`` and ``col_id[r][c] == col_tag``, in a single transfer, once every
    such PE can take it; lane ``k = r * cols + c`` of ``o`` (:func:`Lanes`) then gives its
    ``count`` values one by one, in order (a ``count`` of 0 or above ``values`` gives all
    ``values``). Every PE has a one-packet register that takes the next packet while its last
    value leaves, so a PE taking one value per cycle never waits between packets, and the
    network delivers one packet per cycle when the PEs are ready. A packet that matches no PE
    is consumed, counted (``events.unmatched``) and sets the sticky ``unmatched`` flag, which
    ``clear`` resets (a packet arriving on the same cycle wins).

    For senders that never block the network on a busy PE: ``probe_match`` (per PE,
    combinational) says which PEs a packet tagged ``(probe_row, probe_col)`` would reach;
    ``free`` (per PE) that the PE's packet register can take a packet now (it is empty, or its
    last value leaves this cycle); ``loaded`` (per PE) that it takes one this cycle.

    IDs are written through ``write`` (:func:`IdWrite`; ``ready`` is always set; positions
    outside the array are ignored). The ID ``2**id_bits - 1`` is the unused value: a MC holding
    it matches nothing. Reset: every ID unused.

    Timing: ``i.ready`` is a register (a skid buffer), and packets reach the PE registers one
    cycle after their ``i`` transfer at the earliest; a PE's first value is on ``o`` the cycle
    after that. ``o.valid`` depends on registers only; the network's acceptance depends
    combinationally on the ``o.ready`` of every matching PE.

    Parameters
    ----------
    rows, cols : int
        PE array size.
    elem : shape-like
        Shape of one value (``FP16``, ``FP32``).
    values : int
        Values per packet.
    id_bits : int
        Width of the tags and IDs.
    """

    def __init__(self, *, rows, cols, elem, values, id_bits):
        for what, value in (("GIN rows", rows), ("GIN cols", cols),
                            ("GIN values per packet", values), ("GIN id_bits", id_bits)):
            _positive(what, value)
        if (1 << id_bits) - 1 < max(rows, cols):
            raise ValueError(f"GIN id_bits of {id_bits} cannot name {max(rows, cols)} rows or "
                             f"columns besides the unused ID")
        self._rows, self._cols = rows, cols
        self._elem, self._values, self._id_bits = elem, values, id_bits
        self._width = _width(elem)
        self._packet = GinPacket(elem, values, id_bits)
        super().__init__({
            "i": In(stream.Signature(self._packet)),
            "o": Out(Lanes(rows * cols, self._width)),
            "write": In(stream.Signature(IdWrite(rows, cols, id_bits))),
            "clear": In(1),
            "unmatched": Out(1),
            "events": Out(GinEvents(values)),
            "free": Out(rows * cols),
            "loaded": Out(rows * cols),
            "probe_row": In(id_bits),
            "probe_col": In(id_bits),
            "probe_match": Out(rows * cols),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def values(self):
        return self._values

    @property
    def width(self):
        """Bits per value (per lane of ``o``)."""
        return self._width

    @property
    def id_bits(self):
        return self._id_bits

    @property
    def packet_layout(self):
        return self._packet

    @property
    def id_none(self):
        """The unused ID: a multicast controller holding it matches no tag."""
        return (1 << self._id_bits) - 1

    def elaborate(self, platform):
        m = Module()
        rows, cols, nval, w = self._rows, self._cols, self._values, self._width
        idb = self._id_bits
        n = rows * cols
        m.d.comb += self.write.ready.eq(1)
        m.submodules.skid = skid = SkidBuffer(self._packet)
        wiring.connect(m, wiring.flipped(self.i), skid.i)
        head = skid.o
        pkt = head.payload

        # Index of the packet's last value.
        if nval > 1:
            last_index = Signal(range(nval), name="last_index")
            m.d.comb += last_index.eq(Mux(_is(pkt.count, 0) | (pkt.count > nval), nval - 1,
                                          pkt.count - 1))
            count = last_index + 1
        else:
            count = Const(1)

        # Configuration: IDs, and a bit per MC that says it holds a used one.
        wr = self.write.payload
        wr_used = ~wr.value.all()
        row_id = [Signal(idb, init=self.id_none, name=f"row_id{r}") for r in range(rows)]
        row_on = Signal(rows)
        col_id = [Signal(n, init=(1 << n) - 1, name=f"col_id{b}")    # bit planes
                  for b in range(idb)]
        col_on = Signal(n)
        with m.If(self.write.valid & ~wr.pe):
            for r in range(rows):
                with m.If(_is(wr.row, r)):
                    m.d.sync += [row_id[r].eq(wr.value), row_on[r].eq(wr_used)]
        lane_mask = _lane_mask(m, rows, cols, wr.row, wr.col, "write_lane")
        with m.If(self.write.valid & wr.pe):
            m.d.sync += col_on.eq(_select(lane_mask, _fill(wr_used, n), col_on))
            for b, plane in enumerate(col_id):
                m.d.sync += plane.eq(_select(lane_mask, _fill(wr.value[b], n), plane))

        # Y-bus: one multicast controller per row; X-buses: one per PE.
        def matching(row_tag, col_tag):
            rows_hit = Cat(*(row_on[r] & (row_id[r] == row_tag) for r in range(rows)))
            return _spread(rows_hit, cols) & col_on & \
                ~reduce(or_, (plane ^ _fill(col_tag[b], n) for b, plane in enumerate(col_id)))

        match = Signal(n)
        m.d.comb += [match.eq(matching(pkt.row_tag, pkt.col_tag)),
                     self.probe_match.eq(matching(self.probe_row, self.probe_col))]

        # One packet register per PE: its values shift out, the first at the bottom of the
        # lane; ``left`` (bit planes) counts those behind the one on ``o``.
        o = self.o
        left_bits = max(0, (nval - 1).bit_length())
        left = [Signal(n, name=f"left{b}") for b in range(left_bits)]
        at_end = Signal(n)
        m.d.comb += at_end.eq(~reduce(or_, left) if left else _ones(n))
        take = o.valid & o.ready
        accept = Signal()
        deliver = Signal()
        load = Signal(n)                       # PEs that take the packet now
        step = Signal(n)                       # PEs that shift out a value and keep the rest
        m.d.comb += [
            accept.eq((~match | ~o.valid | (o.ready & at_end)).all()),
            head.ready.eq(accept),
            deliver.eq(head.valid & accept),
            load.eq(match & _fill(deliver, n)),
            step.eq(take & ~load),
            self.free.eq(~o.valid | (o.ready & at_end)),
            self.loaded.eq(load),
        ]
        m.d.sync += o.valid.eq((o.valid & ~(take & at_end)) | load)
        borrow = _ones(n)
        for b, plane in enumerate(left):
            decremented = plane ^ borrow
            borrow = borrow & ~plane
            m.d.sync += plane.eq(_select(load, _fill(last_index[b], n),
                                         _select(step, decremented, plane)))

        pkt_data = Value.cast(pkt.data)
        bufs = []
        for k in range(n):
            buf = Signal(nval * w, name=f"buf{k}")
            m.d.sync += buf.eq(Mux(load[k], pkt_data, Mux(step[k], buf[w:], buf)))
            bufs.append(buf[:w])
        m.d.comb += o.payload.eq(Cat(*bufs))

        any_match = match.any()
        unmatched_now = deliver & ~any_match
        with m.If(self.clear):
            m.d.sync += self.unmatched.eq(0)
        with m.If(unmatched_now):
            m.d.sync += self.unmatched.eq(1)
        ev = self.events
        m.d.sync += [
            ev.packets.eq(deliver & any_match),
            ev.values.eq(Mux(deliver & any_match, count, 0)),
            ev.stalled.eq(head.valid & ~accept),
            ev.unmatched.eq(unmatched_now),
        ]
        return m


class GlobalOutputNetwork(wiring.Component):
    """Collect psums from every PE into packets of up to ``values`` psums, one packet per cycle.

    Lane ``k = r * cols + c`` of ``i`` (:func:`Lanes`, 33 bits: a :class:`PsumOut`) fills a
    packet register of PE ``(r, c)``; the packet is complete at ``values`` psums or at a psum
    marked ``last``, and then waits for its grant while its lane is stalled (``ready`` low
    until the grant, when the next psum is taken already). Complete packets go to a register
    per row, round robin among the row's PEs, and from there to ``o`` (:func:`GonPacket`),
    round robin among the rows: a PE that keeps a packet waiting is served within ``cols``
    packets of its row and a row within ``rows`` packets of ``o``, so no PE starves. Psums of
    one PE leave in order; when every PE contends, each gets one packet in ``rows * cols``.

    Timing: a complete packet reaches ``o`` two cycles after its last psum's transfer at the
    earliest. ``o.valid`` is a register; ``i.ready`` depends combinationally on ``o.ready``.
    """

    def __init__(self, *, rows, cols, values):
        for what, value in (("GON rows", rows), ("GON cols", cols),
                            ("GON values per packet", values)):
            _positive(what, value)
        self._rows, self._cols, self._values = rows, cols, values
        self._packet = GonPacket(rows, cols, values)
        super().__init__({
            "i": In(Lanes(rows * cols, 33)),
            "o": Out(stream.Signature(self._packet)),
            "events": Out(GonEvents(values)),
        })

    @property
    def packet_layout(self):
        return self._packet

    def elaborate(self, platform):
        m = Module()
        rows, cols, nval = self._rows, self._cols, self._values
        n = rows * cols
        count_bits = nval.bit_length()
        i = self.i
        last = _plane(i.payload, n, 33, 32)

        # Packers, one per PE: values, count (bit planes), last.
        pack = [[Signal(32, name=f"pack{k}_{e}") for e in range(nval)] for k in range(n)]
        count = [Signal(n, name=f"count{b}") for b in range(count_bits)]
        pack_last = Signal(n)
        done = Signal(n)                       # complete, waiting for its grant
        grant = Signal(n)
        take = Signal(n)
        m.d.comb += [i.ready.eq(~done | grant), take.eq(i.valid & i.ready)]
        pos = [plane & ~done for plane in count]       # a granted packet restarts at 0

        def pos_is(e):
            return reduce(lambda a, b: a & b,
                          (pos[b] if e >> b & 1 else ~pos[b] for b in range(count_bits)))

        for e in range(nval):
            write = Signal(n, name=f"write{e}")
            m.d.comb += write.eq(take & pos_is(e))
            for k in range(n):
                m.d.sync += pack[k][e].eq(Mux(write[k], _lane(i.payload, k, 33)[:32],
                                              pack[k][e]))
        carry = _ones(n)
        for b in range(count_bits):
            m.d.sync += count[b].eq(_select(take, pos[b] ^ carry, count[b] & ~grant))
            carry = carry & pos[b]
        m.d.sync += [
            pack_last.eq(_select(take, last, pack_last)),
            done.eq((done & ~grant) | (take & (last | pos_is(nval - 1)))),
        ]

        # Rows: a register each, filled round robin from the row's packers.
        out_take = Signal()
        m.d.comb += out_take.eq(~self.o.valid | self.o.ready)
        m.submodules.arb_rows = arb_y = RoundRobin(rows)
        row_valid = Signal(rows)
        row_data = [Signal(nval * 32, name=f"row_data{r}") for r in range(rows)]
        row_count = [Signal(range(nval + 1), name=f"row_count{r}") for r in range(rows)]
        row_last = Signal(rows)
        row_col = [Signal(_bits(cols), name=f"row_col{r}") for r in range(rows)]
        m.d.comb += [arb_y.requests.eq(row_valid), arb_y.advance.eq(out_take)]
        choice = Signal(n)                     # each row's round-robin choice
        grants = []
        for r in range(rows):
            arb = RoundRobin(cols)
            m.submodules[f"arb_row{r}"] = arb
            row_take = ~row_valid[r] | (arb_y.grant[r] & out_take)
            requests = done[r * cols:(r + 1) * cols]
            m.d.comb += [arb.requests.eq(requests), arb.advance.eq(row_take)]
            grants.append(arb.grant & _fill(row_take, cols))
            chosen = choice[r * cols:(r + 1) * cols]

            def pick(e, r=r, chosen=chosen):
                return reduce(or_, (Mux(chosen[c], pack[r * cols + c][e], 0)
                                    for c in range(cols)))

            with m.If(row_take):
                m.d.sync += [
                    row_valid[r].eq(requests.any()),
                    row_data[r].eq(Cat(*(pick(e) for e in range(nval)))),
                    row_count[r].eq(Cat(*((count[b] & choice)[r * cols:(r + 1) * cols].any()
                                          for b in range(count_bits)))),
                    row_last[r].eq((pack_last & choice)[r * cols:(r + 1) * cols].any()),
                    row_col[r].eq(Cat(*(
                        (chosen & Const(sum(1 << c for c in range(cols) if c >> b & 1), cols))
                        .any() for b in range(len(row_col[r]))))),
                ]
            m.d.comb += chosen.eq(arb.grant)
        m.d.comb += grant.eq(Cat(*grants))

        # Output: a register filled round robin from the rows.
        g = arb_y.grant

        def pick_row(values):
            return reduce(or_, (Mux(g[r], v, 0) for r, v in enumerate(values)))

        o = self.o.payload
        with m.If(out_take):
            m.d.sync += [
                self.o.valid.eq(row_valid.any()),
                o.src_row.eq(Cat(*((g & Const(sum(1 << r for r in range(rows) if r >> b & 1),
                                                  rows)).any()
                                   for b in range(len(o.src_row))))),
                o.src_col.eq(pick_row(row_col)),
                o.count.eq(pick_row(row_count)),
                o.last.eq((row_last & g).any()),
                o.data.eq(pick_row(row_data)),
            ]
        sent = self.o.valid & self.o.ready
        m.d.sync += [
            self.events.packets.eq(sent),
            self.events.values.eq(Mux(sent, o.count, 0)),
            self.events.stalled.eq(self.o.valid & ~self.o.ready),
        ]
        return m


# -- The network ------------------------------------------------------------------------------

def _external_members(config):
    """Ports of the NoC other than the PE links (shared by NoC, PEArray and NocTop)."""
    idb = config.noc_id_bits
    return {
        "filter": In(stream.Signature(GinPacket(FP16, config.filter_values_per_packet, idb))),
        "ifmap": In(stream.Signature(GinPacket(FP16, config.ifmap_values_per_packet, idb))),
        "psum": In(stream.Signature(GinPacket(FP32, config.psum_values_per_packet, idb))),
        "gon": Out(stream.Signature(GonPacket(config.rows, config.cols,
                                              config.gon_values_per_packet))),
        "cfg": In(stream.Signature(NocCfgWrite(config))),
        "unmatched": Out(UnmatchedFlags),
        "events": Out(NocEvents(config)),
        # Per input network (``filter``, ``ifmap``, ``psum``): the GIN's probe and per-PE
        # register state (:class:`GlobalInputNetwork`), for senders that never block it.
        "gin_state": Out(data.ArrayLayout(GinState(config), 3)),
        "probe": In(data.ArrayLayout(data.StructLayout({"row": config.noc_id_bits,
                                                       "col": config.noc_id_bits}), 3)),
    }


#: PE links as lanes: name, bits per lane, direction seen from the NoC.
_LINKS = (("filter_in", 16, Out), ("ifmap_in", 16, Out), ("psum_in", 32, Out),
          ("psum_out", 33, In))


def _check_config(config):
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {config!r}")


def _build_noc(m, config, ports, lanes):
    """Build the NoC into ``m``: ``ports`` has the external ports, ``lanes`` maps each name of
    ``_LINKS`` to an object with ``valid``, ``ready`` and ``payload`` (all PEs as lanes)."""
    rows, cols = config.rows, config.cols
    n = rows * cols
    w = ports.cfg.payload
    m.d.comb += ports.cfg.ready.eq(1)
    gins = {}
    for net, elem, nval in ((NocNet.FILTER, FP16, config.filter_values_per_packet),
                            (NocNet.IFMAP, FP16, config.ifmap_values_per_packet),
                            (NocNet.PSUM, FP32, config.psum_values_per_packet)):
        name = net.name.lower()
        gin = GlobalInputNetwork(rows=rows, cols=cols, elem=elem, values=nval,
                                 id_bits=config.noc_id_bits)
        m.submodules[f"gin_{name}"] = gins[name] = gin
        wiring.connect(m, wiring.flipped(getattr(ports, name)), gin.i)
        is_id = _is(w.op, NocCfgOp.ROW_ID) | _is(w.op, NocCfgOp.COL_ID)
        m.d.comb += [
            gin.write.valid.eq(ports.cfg.valid & is_id & _is(w.net, net)),
            gin.write.payload.pe.eq(_is(w.op, NocCfgOp.COL_ID)),
            gin.write.payload.row.eq(w.row),
            gin.write.payload.col.eq(w.col),
            gin.write.payload.value.eq(w.value[:config.noc_id_bits]),
            gin.clear.eq(ports.cfg.valid & _is(w.op, NocCfgOp.CLEAR)),
            getattr(ports.unmatched, name).eq(gin.unmatched),
        ]
        state = ports.gin_state[net.value]
        m.d.comb += [
            gin.probe_row.eq(ports.probe[net.value].row),
            gin.probe_col.eq(ports.probe[net.value].col),
            state.match.eq(gin.probe_match),
            state.free.eq(gin.free),
            state.loaded.eq(gin.loaded),
        ]
        m.d.comb += [getattr(ports.events, f"{name}_{field}").eq(getattr(gin.events, field))
                     for field, _ in gin.events.shape()]
    m.submodules.gon = gon = GlobalOutputNetwork(rows=rows, cols=cols,
                                                 values=config.gon_values_per_packet)
    wiring.connect(m, gon.o, wiring.flipped(ports.gon))
    m.d.comb += [getattr(ports.events, f"gon_{field}").eq(getattr(gon.events, field))
                 for field, _ in gon.events.shape()]

    for name, net in (("filter_in", "filter"), ("ifmap_in", "ifmap")):
        out = gins[net].o
        m.d.comb += [lanes[name].valid.eq(out.valid), lanes[name].payload.eq(out.payload),
                     out.ready.eq(lanes[name].ready)]

    # Routes. The bottom row always takes from the GIN, the top row always sends to the GON.
    from_gin_reg = Signal(n, init=(1 << n) - 1)
    to_gon_reg = Signal(n, init=(1 << n) - 1)
    bottom = Const((1 << cols) - 1, n)
    top = Const(((1 << cols) - 1) << (n - cols), n)
    from_gin = Signal(n)
    to_gon = Signal(n)
    m.d.comb += [from_gin.eq(from_gin_reg | bottom), to_gon.eq(to_gon_reg | top)]
    route_lane = _lane_mask(m, rows, cols, w.row, w.col, "route_lane")
    with m.If(ports.cfg.valid & _is(w.op, NocCfgOp.ROUTE)):
        m.d.sync += [
            from_gin_reg.eq(_select(route_lane, _fill(w.value[0], n), from_gin_reg)),
            to_gon_reg.eq(_select(route_lane, _fill(w.value[1], n), to_gon_reg)),
        ]

    # Local links: lane k + cols is the PE above lane k.
    pin, pout, pgin = lanes["psum_in"], lanes["psum_out"], gins["psum"].o
    out_data = Cat(*(_lane(pout.payload, k, 33)[:32] for k in range(n)))
    up_valid = Cat(Const(0, cols), (pout.valid & ~to_gon)[:n - cols])
    up_data = Cat(Const(0, 32 * cols), out_data[:32 * (n - cols)])
    above_takes = Cat((~from_gin & pin.ready)[cols:], Const(0, cols))
    m.d.comb += [
        pin.valid.eq(_select(from_gin, pgin.valid, up_valid)),
        pin.payload.eq(Cat(*(Mux(from_gin[k], _lane(pgin.payload, k, 32), _lane(up_data, k, 32))
                             for k in range(n)))),
        pgin.ready.eq(from_gin & pin.ready),
        gon.i.valid.eq(pout.valid & to_gon),
        gon.i.payload.eq(pout.payload),
        pout.ready.eq(_select(to_gon, gon.i.ready, above_takes)),
    ]


class NoC(wiring.Component):
    """The array's network: three GINs, the GON and the local psum links, with per-PE routes.

    Ports:

    ``filter``, ``ifmap``, ``psum`` : ``In(stream.Signature(GinPacket(...)))``
        GIN inputs (:class:`GlobalInputNetwork`), sized from ``config``.
    ``gon`` : ``Out(stream.Signature(GonPacket(...)))``
        Psum packets leaving the array (:class:`GlobalOutputNetwork`).
    ``cfg`` : ``In(stream.Signature(NocCfgWrite(config)))``
        Configuration writes (:class:`NocCfgOp`); ``ready`` is always set, so one write per
        cycle, in effect the next cycle.
    ``unmatched`` : ``Out(UnmatchedFlags)``
        Sticky: a GIN consumed a packet that matched no PE.
    ``events`` : ``Out(NocEvents(config))``
        Per-cycle strobes, registered.
    ``pe[r][c]`` : ``Out(PeLinks())``
        PE ``(r, c)``'s ``filter_in``, ``ifmap_in`` and ``psum_in`` value streams and its
        ``psum_out`` stream of :class:`PsumOut`.

    Routes: PE ``(r, c)`` takes psums from the psum GIN (``ROUTE_FROM_GIN``) or from
    ``psum_out`` of PE ``(r - 1, c)``, and sends them to the GON (``ROUTE_TO_GON``) or to
    ``psum_in`` of PE ``(r + 1, c)``. The bottom row always takes from the GIN and the top row
    always sends to the GON, whatever their route bits. A psum sent up to a PE that takes
    from the GIN waits (it is never dropped); the ``last`` bit does not travel on local links.
    Local links are combinational (no register): ``psum_out.ready`` of a PE follows
    ``psum_in.ready`` of the PE above.

    Reset: every ID unused (nothing matches), every route ``ROUTE_FROM_GIN | ROUTE_TO_GON``,
    flags clear.
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        members = _external_members(config)
        members["pe"] = Out(PeLinks()).array(config.rows, config.cols)
        super().__init__(members)

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        n = cfg.num_pes
        lanes = {name: Lanes(n, width).create(path=(name,))
                 for name, width, _ in _LINKS}
        _build_noc(m, cfg, self, lanes)
        links = [self.pe[r][c] for r in range(cfg.rows) for c in range(cfg.cols)]
        for name, width, flow in _LINKS:
            side = lanes[name]
            streams = [getattr(link, name) for link in links]
            if flow is Out:
                m.d.comb += side.ready.eq(Cat(*(s.ready for s in streams)))
                for k, s in enumerate(streams):
                    m.d.comb += [s.valid.eq(side.valid[k]),
                                 Value.cast(s.payload).eq(_lane(side.payload, k, width))]
            else:
                m.d.comb += [side.valid.eq(Cat(*(s.valid for s in streams))),
                             side.payload.eq(Cat(*(Value.cast(s.payload) for s in streams)))]
                for k, s in enumerate(streams):
                    m.d.comb += s.ready.eq(side.ready[k])
        return m


def _join(m, source, sink, what):
    """Connect stream ``source`` to stream ``sink``, payloads of equal width bit for bit."""
    src_bits = Value.cast(source.payload).as_unsigned()
    sink_value = Value.cast(sink.payload)
    if len(src_bits) != len(sink_value):
        raise TypeError(f"{what}: payload of {len(sink_value)} bits cannot take "
                        f"{len(src_bits)} bits")
    m.d.comb += [sink.valid.eq(source.valid), sink_value.eq(src_bits)]
    if not isinstance(source.ready, Const):
        m.d.comb += source.ready.eq(sink.ready)


def _forward_external(m, outer, inner):
    """Connect the NoC ports of ``outer`` (:func:`_external_members`) to those of ``inner``."""
    for name in ("filter", "ifmap", "psum", "cfg"):
        wiring.connect(m, wiring.flipped(getattr(outer, name)), getattr(inner, name))
    wiring.connect(m, inner.gon, wiring.flipped(outer.gon))
    m.d.comb += [outer.unmatched.eq(inner.unmatched), outer.events.eq(inner.events),
                 outer.gin_state.eq(inner.gin_state), inner.probe.eq(outer.probe)]


class PEArray(wiring.Component):
    """The NoC with a PE at every position: ``make_pe(row, col)`` builds PE ``(row, col)``.

    A PE must have the streams ``filter_in`` (binary16), ``ifmap_in`` (binary16), ``psum_in``
    (binary32) and ``psum_out`` (:class:`rsaccel.hw.pe.PsumOut`). Every other port of a
    PE (its ``cfg`` for one) is left to the owner: ``pes[r][c]`` are the PE objects. Ports as
    :class:`NoC`, without ``pe``.
    """

    def __init__(self, config, make_pe):
        _check_config(config)
        if not callable(make_pe):
            raise TypeError(f"make_pe must be callable, not {make_pe!r}")
        self._config = config
        self._noc = NoC(config)
        self._pes = [[make_pe(r, c) for c in range(config.cols)] for r in range(config.rows)]
        for r, row in enumerate(self._pes):
            for c, pe in enumerate(row):
                for name in ("filter_in", "ifmap_in", "psum_in", "psum_out"):
                    if not hasattr(pe, name):
                        raise TypeError(f"PE ({r}, {c}) made by make_pe has no {name!r} stream")
        super().__init__(_external_members(config))

    @property
    def config(self):
        return self._config

    @property
    def noc(self):
        return self._noc

    @property
    def pes(self):
        """``pes[r][c]``: the PE at row ``r`` (from the bottom), column ``c``."""
        return self._pes

    def elaborate(self, platform):
        m = Module()
        m.submodules.noc = noc = self._noc
        _forward_external(m, self, noc)
        for r, row in enumerate(self._pes):
            for c, pe in enumerate(row):
                m.submodules[f"pe{r}_{c}"] = pe
                link = noc.pe[r][c]
                for name in ("filter_in", "ifmap_in", "psum_in"):
                    _join(m, getattr(link, name), getattr(pe, name), f"PE ({r}, {c}) {name}")
                _join(m, pe.psum_out, link.psum_out, f"PE ({r}, {c}) psum_out")
        return m


class NocTop(wiring.Component):
    """The NoC as a Verilog top: ports as :class:`NoC`, with the PE links as lanes.

    For PE ``(r, c)`` at lane ``k = r * cols + c``: bit ``k`` of ``pe_<link>_valid`` and
    ``pe_<link>_ready``, and bits ``k * w`` up of ``pe_<link>_data`` (``w`` = 16 for
    ``filter_in`` and ``ifmap_in``, 32 for ``psum_in``, 33 for ``psum_out``: data then
    ``last``). Test benches drive and watch every PE with a few wide signals this way.
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        n = config.num_pes
        members = _external_members(config)
        for name, width, flow in _LINKS:
            back = In if flow is Out else Out
            members[f"pe_{name}_valid"] = flow(n)
            members[f"pe_{name}_ready"] = back(n)
            members[f"pe_{name}_data"] = flow(width * n)
        super().__init__(members)

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()

        class _Lane:
            def __init__(lane, name):
                lane.valid = getattr(self, f"pe_{name}_valid")
                lane.ready = getattr(self, f"pe_{name}_ready")
                lane.payload = getattr(self, f"pe_{name}_data")

        _build_noc(m, self._config, self, {name: _Lane(name) for name, _, _ in _LINKS})
        return m


class ArrayTop(wiring.Component):
    """The PE array (:class:`PEArray` of :class:`rsaccel.hw.pe.PE` sized from ``config``) as a
    Verilog top: ports as :class:`NoC` (GIN inputs, GON output, NoC configuration), and each
    PE's ``cfg`` stream and ``idle`` flag as lanes: bit ``k = r * cols + c`` of
    ``pe_cfg_valid``, ``pe_cfg_ready`` and ``pe_idle``, bits ``k * w`` up of ``pe_cfg_data``
    (``w``: the PE configuration layout's width).
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        self._array = PEArray(config, lambda r, c: PE(
            filter_depth=config.filter_spad_depth, ifmap_depth=config.ifmap_spad_depth,
            psum_depth=config.psum_spad_depth, mac_stages=config.mac_stages))
        self._cfg_bits = Shape.cast(self._array.pes[0][0].config_layout).width
        n = config.num_pes
        members = _external_members(config)
        members.update({"pe_cfg_valid": In(n), "pe_cfg_ready": Out(n),
                        "pe_cfg_data": In(self._cfg_bits * n), "pe_idle": Out(n)})
        super().__init__(members)

    @property
    def config(self):
        return self._config

    @property
    def cfg_bits(self):
        """Width of one PE's configuration word in ``pe_cfg_data``."""
        return self._cfg_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self._array
        _forward_external(m, self, array)
        w = self._cfg_bits
        for r, row in enumerate(array.pes):
            for c, pe in enumerate(row):
                k = r * self._config.cols + c
                m.d.comb += [
                    pe.cfg.valid.eq(self.pe_cfg_valid[k]),
                    pe.cfg.payload.eq(self.pe_cfg_data[k * w:(k + 1) * w]),
                    self.pe_cfg_ready[k].eq(pe.cfg.ready),
                    self.pe_idle[k].eq(pe.idle),
                ]
        return m
