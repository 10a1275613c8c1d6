"""Multicast IDs and psum routes for Row-Stationary mappings on the NoC (:mod:`rsaccel.hw.noc`).

A logical PE set (:class:`RSSet`) is ``R x e`` PEs: PE ``(i, j)`` gets filter row ``i`` and
ifmap row ``j * U + i`` and adds its psum to the one from PE ``(i - 1, j)``, so the psums of
column ``j`` add up from filter row 0 to ``R - 1``. Sets are placed on the array in segments
(:class:`Segment`): a run of a set's columns with filter row 0 on a physical row (rows count
from the bottom, as psums flow up). :func:`noc_map` checks a placement and gives the IDs of the
three GINs, the per-PE routes and the tags that reach each piece of data (:class:`NocMap`);
:func:`rs_placement` places sets the way Eyeriss does.

IDs: each piece of data is a *key* (filter row ``i`` of a filter, ifmap row ``h`` of an ifmap,
the psums of one set column), needed by a set of PEs. Physical rows that need a common key must
share a row ID, so rows are grouped (a class per group, its index the row ID) and the keys of a
group are numbered (their column IDs). A packet tagged ``(row ID, column ID)`` then reaches
exactly the PEs that need the key, in one transfer: a filter row goes along its physical row (and
to the same row of every set that shares the filter), an ifmap row along a diagonal of every
set that shares the ifmap. A set that is not ``diagonal`` gives each filter row's PEs their own
copy of an ifmap row (the key includes the filter row): the rows of a diagonal, which run
staggered along the psum chain, then never wait for each other in the sender.

Sets share data by their identities: the filter of a set is ``(out, chan)``, its ifmap
``(image, chan)`` and its outputs ``(image, out)``. A segment can take its psums from the
segment right below it (``chain``) when both cover the same columns of sets with the same
outputs: this is how the ``r`` sets of different channels add up (Eyeriss CONV4, CONV5).
"""

import dataclasses
from dataclasses import dataclass

from ..config import ArrayConfig
from ..hw.noc import ROUTE_FROM_GIN, ROUTE_TO_GON, NocCfgOp, NocCfgWrite, NocNet

__all__ = [
    "NETWORKS",
    "NocMap",
    "RSSet",
    "Segment",
    "destinations",
    "noc_map",
    "rs_placement",
    "solve_ids",
]

#: The input networks, by name, as :class:`NocMap` and :func:`destinations` name them.
NETWORKS = ("filter", "ifmap", "psum")


@dataclass(frozen=True)
class RSSet:
    """A logical Row-Stationary PE set: ``height`` (R) filter rows by ``width`` (e) ofmap rows
    with stride ``stride`` (U); ``out``, ``chan`` and ``image`` say which data it shares with
    other sets (filters ``(out, chan)``, ifmaps ``(image, chan)``, outputs ``(image, out)``);
    ``diagonal``: an ifmap row goes to its whole diagonal in one transfer (else to one filter
    row's PEs at a time)."""
    height: int
    width: int
    stride: int = 1
    out: int = 0
    chan: int = 0
    image: int = 0
    diagonal: bool = True

    def __post_init__(self):
        for name in ("height", "width", "stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"set {name} must be a positive integer, not {value!r}")
        if not isinstance(self.diagonal, bool):
            raise TypeError(f"set diagonal must be a bool, not {self.diagonal!r}")

    def ifmap_row(self, i, j):
        """Return the ifmap row of PE ``(i, j)``."""
        return j * self.stride + i

    @property
    def ifmap_rows(self):
        """The ifmap rows some PE of the set uses, ascending."""
        return sorted({self.ifmap_row(i, j) for i in range(self.height)
                       for j in range(self.width)})


@dataclass(frozen=True)
class Segment:
    """Columns ``j0`` to ``j0 + width - 1`` of set ``set`` (an index into the set list), with PE
    ``(i, j)`` at physical row ``row + i``, column ``col + j - j0``. ``width`` None: to the end
    of the set. ``chain``: psums come from the segment right below, not from the psum GIN."""
    set: int
    row: int
    col: int
    j0: int = 0
    width: int | None = None
    chain: bool = False


@dataclass(frozen=True)
class _Placed:
    index: int
    set_index: int
    s: RSSet
    row: int
    col: int
    j0: int
    width: int
    chain: bool

    def pes(self):
        """Yield ``(r, c, i, j)`` of every PE of the segment."""
        for i in range(self.s.height):
            for j in range(self.j0, self.j0 + self.width):
                yield self.row + i, self.col + j - self.j0, i, j

    @property
    def top(self):
        return self.row + self.s.height - 1


def _none(config):
    return (1 << config.noc_id_bits) - 1


def solve_ids(config, keys, network="network"):
    """Return ``(row_ids, col_ids, tags)`` so that a packet reaches exactly the PEs that need
    its key.

    ``keys[r][c]`` is the key (any sortable, hashable value) that PE ``(r, c)`` needs, or None.
    ``tags`` maps each key to its ``(row_tag, col_tag)``. Unused rows and PEs get the unused
    ID. Raises ValueError when the IDs do not fit ``config.noc_id_bits``.
    """
    rows, cols = config.rows, config.cols
    none = _none(config)
    parent = list(range(rows))

    def find(r):
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    first_row = {}
    for r in range(rows):
        for c in range(cols):
            key = keys[r][c]
            if key is None:
                continue
            if key in first_row:
                a, b = find(first_row[key]), find(r)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first_row[key] = r
    used_rows = sorted({r for r in range(rows) for c in range(cols) if keys[r][c] is not None})
    classes = sorted({find(r) for r in used_rows})
    if len(classes) > none:
        raise ValueError(f"the {network} network needs {len(classes)} row IDs, more than the "
                         f"{none} that noc_id_bits={config.noc_id_bits} gives")
    row_ids = [none] * rows
    for r in used_rows:
        row_ids[r] = classes.index(find(r))
    tags = {}
    for class_index, root in enumerate(classes):
        members = [r for r in used_rows if find(r) == root]
        class_keys = sorted({keys[r][c] for r in members for c in range(cols)} - {None})
        if len(class_keys) > none:
            raise ValueError(
                f"the {network} network needs {len(class_keys)} column IDs among rows "
                f"{', '.join(map(str, members))}, more than the {none} that "
                f"noc_id_bits={config.noc_id_bits} gives; raise noc_id_bits")
        for k, key in enumerate(class_keys):
            tags[key] = (class_index, k)
    col_ids = [[none if keys[r][c] is None else tags[keys[r][c]][1] for c in range(cols)]
               for r in range(rows)]
    return row_ids, col_ids, tags


def destinations(row_ids, col_ids, tag, id_bits):
    """Return the PEs ``(r, c)`` a packet tagged ``tag`` reaches (the GIN's matching rule)."""
    none = (1 << id_bits) - 1
    row_tag, col_tag = tag
    return {(r, c) for r, row_id in enumerate(row_ids) if row_id != none and row_id == row_tag
            for c, col_id in enumerate(col_ids[r]) if col_id != none and col_id == col_tag}


@dataclass(frozen=True)
class NocMap:
    """The NoC configuration of a placement: IDs, routes and the tags of every key.

    ``row_ids[net][r]`` and ``col_ids[net][r][c]`` for ``net`` in :data:`NETWORKS`;
    ``routes[r][c]`` are ``ROUTE_FROM_GIN | ROUTE_TO_GON`` bits. ``segments`` are the
    placement's, with every ``width`` given.
    """
    config: ArrayConfig
    sets: tuple
    segments: tuple
    row_ids: dict
    col_ids: dict
    routes: tuple
    _tags: dict
    _where: dict                    # (set, j) -> placed segment
    _placed: tuple

    def _segment(self, set_index, j):
        s = self._set(set_index)
        if not isinstance(j, int) or not 0 <= j < s.width:
            raise ValueError(f"set {set_index} has columns 0 to {s.width - 1}, not {j!r}")
        return self._where[set_index, j]

    def _set(self, set_index):
        if not isinstance(set_index, int) or not 0 <= set_index < len(self.sets):
            raise ValueError(f"set index must be 0 to {len(self.sets) - 1}, not {set_index!r}")
        return self.sets[set_index]

    def filter_tag(self, set_index, i):
        """Return the tag of filter row ``i`` of set ``set_index``: it reaches row ``i`` of the
        set and of every set that shares its filter."""
        s = self._set(set_index)
        if not isinstance(i, int) or not 0 <= i < s.height:
            raise ValueError(f"set {set_index} has filter rows 0 to {s.height - 1}, not {i!r}")
        return self._tags["filter"][_filter_key(s, i)]

    def ifmap_tag(self, set_index, h, i=None):
        """Return the tag of ifmap row ``h`` of set ``set_index``: it reaches the diagonal of
        PEs ``(i, j)`` with ``j * U + i == h`` of the set and of every set sharing its ifmap
        (of a set that is not ``diagonal``: the PE of filter row ``i`` on it, which ``i``
        names). Raises ValueError for a row that no PE uses (stride above the filter height)."""
        s = self._set(set_index)
        if h not in s.ifmap_rows:
            raise ValueError(f"ifmap row {h!r} is used by no PE of set {set_index} (rows "
                             f"{s.ifmap_rows[0]} to {s.ifmap_rows[-1]}, stride {s.stride})")
        uses = isinstance(i, int) and 0 <= i < s.height and 0 <= h - i < s.width * s.stride \
            and (h - i) % s.stride == 0
        if not s.diagonal and not uses:
            raise ValueError(f"set {set_index} sends ifmap rows per filter row: ifmap row {h} "
                             f"needs a filter row i of a PE that uses it, not {i!r}")
        return self._tags["ifmap"][_ifmap_key(s, h, i)]

    def psum_tag(self, set_index, j):
        """Return the tag that injects psums into column ``j`` of set ``set_index`` (its filter
        row 0, from the psum GIN). Raises ValueError when that column takes its psums from the
        segment below."""
        seg = self._segment(set_index, j)
        if seg.chain:
            raise ValueError(f"column {j} of set {set_index} takes its psums from the PE below, "
                             f"not from the psum GIN")
        return self._tags["psum"][_psum_key(set_index, j)]

    def pe(self, set_index, i, j):
        """Return the physical ``(row, col)`` of PE ``(i, j)`` of set ``set_index``."""
        seg = self._segment(set_index, j)
        if not isinstance(i, int) or not 0 <= i < seg.s.height:
            raise ValueError(f"set {set_index} has filter rows 0 to {seg.s.height - 1}, "
                             f"not {i!r}")
        return seg.row + i, seg.col + j - seg.j0

    def chain(self, set_index, j):
        """Return the PEs ``(row, col)`` that column ``j`` of set ``set_index`` passes its psums
        through, bottom to top, including the segments chained above it, to the one whose
        psums leave through the GON (the last)."""
        seg = self._segment(set_index, j)
        col = seg.col + j - seg.j0
        path = [(r, col) for r in range(seg.row, seg.top + 1)]
        above = self._above(seg)
        while above is not None:
            path += [(r, col) for r in range(above.row, above.top + 1)]
            above = self._above(above)
        return path

    def gon_source(self, set_index, j):
        """Return the PE ``(row, col)`` whose GON packets carry the psums of column ``j`` of set
        ``set_index`` (after the segments chained above it)."""
        return self.chain(set_index, j)[-1]

    def _above(self, seg):
        for other in self._placed:
            if other.chain and other.row == seg.top + 1 and other.col == seg.col:
                return other
        return None

    def writes(self):
        """Return the ``cfg`` words (ints, :func:`~rsaccel.hw.noc.NocCfgWrite`) that program this
        map: a flag clear, every ID of the three networks and every route."""
        layout = NocCfgWrite(self.config)
        rows, cols = self.config.rows, self.config.cols

        def word(op, net, row, col, value):
            return layout.const({"op": op, "net": net, "row": row, "col": col,
                                 "value": value}).as_bits()

        words = [word(NocCfgOp.CLEAR, NocNet.FILTER, 0, 0, 0)]
        for name, net in zip(NETWORKS, (NocNet.FILTER, NocNet.IFMAP, NocNet.PSUM)):
            for r in range(rows):
                words.append(word(NocCfgOp.ROW_ID, net, r, 0, self.row_ids[name][r]))
                for c in range(cols):
                    words.append(word(NocCfgOp.COL_ID, net, r, c, self.col_ids[name][r][c]))
        for r in range(rows):
            for c in range(cols):
                words.append(word(NocCfgOp.ROUTE, NocNet.FILTER, r, c, self.routes[r][c]))
        return words


def _filter_key(s, i):
    return (s.out, s.chan, i)


def _ifmap_key(s, h, i):
    return (s.image, s.chan, h) if s.diagonal else (s.image, s.chan, h, i)


def _psum_key(set_index, j):
    return (set_index, j)


def _check_int(what, value, lo=0):
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{what} must be an integer of at least {lo}, not {value!r}")


def noc_map(config, sets, segments):
    """Check the placement of ``sets`` (:class:`RSSet`) by ``segments`` (:class:`Segment`) on
    ``config``'s array and return its :class:`NocMap`.

    Raises ValueError naming the problem when a segment leaves the array, two overlap, a set
    column is placed twice or not at all, a chained segment has no matching segment below, or
    the IDs need more than ``config.noc_id_bits``.
    """
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {config!r}")
    sets = tuple(sets)
    for k, s in enumerate(sets):
        if not isinstance(s, RSSet):
            raise TypeError(f"set {k} must be an RSSet, not {s!r}")
    rows, cols = config.rows, config.cols
    placed = []
    for index, seg in enumerate(segments):
        if not isinstance(seg, Segment):
            raise TypeError(f"segment {index} must be a Segment, not {seg!r}")
        if not isinstance(seg.set, int) or not 0 <= seg.set < len(sets):
            raise ValueError(f"segment {index} names set {seg.set!r}; sets are 0 to "
                             f"{len(sets) - 1}")
        s = sets[seg.set]
        _check_int(f"segment {index} row", seg.row)
        _check_int(f"segment {index} col", seg.col)
        _check_int(f"segment {index} j0", seg.j0)
        width = s.width - seg.j0 if seg.width is None else seg.width
        _check_int(f"segment {index} width", width, 1)
        if seg.j0 + width > s.width:
            raise ValueError(f"segment {index} covers columns {seg.j0} to {seg.j0 + width - 1} "
                             f"of set {seg.set}, which has {s.width}")
        if seg.row + s.height > rows or seg.col + width > cols:
            raise ValueError(
                f"segment {index} ({s.height} x {width} PEs of set {seg.set}) at rows "
                f"{seg.row} to {seg.row + s.height - 1}, columns {seg.col} to "
                f"{seg.col + width - 1} does not fit the {rows} x {cols} array")
        placed.append(_Placed(index, seg.set, s, seg.row, seg.col, seg.j0, width,
                              bool(seg.chain)))

    owner = {}
    where = {}
    for p in placed:
        for r, c, _, _ in p.pes():
            if (r, c) in owner:
                raise ValueError(f"PE ({r}, {c}) is in segments {owner[r, c]} and {p.index}")
            owner[r, c] = p.index
        for j in range(p.j0, p.j0 + p.width):
            if (p.set_index, j) in where:
                raise ValueError(f"column {j} of set {p.set_index} is placed twice (segments "
                                 f"{where[p.set_index, j].index} and {p.index})")
            where[p.set_index, j] = p
    for k, s in enumerate(sets):
        missing = [j for j in range(s.width) if (k, j) not in where]
        if missing:
            raise ValueError(f"columns {missing} of set {k} are not placed")

    for p in placed:
        if not p.chain:
            continue
        below = [q for q in placed if q.top == p.row - 1 and q.col == p.col]
        if not below or below[0].width != p.width or below[0].j0 != p.j0 or \
                (below[0].s.image, below[0].s.out) != (p.s.image, p.s.out):
            raise ValueError(f"segment {p.index} takes psums from below, but no segment ends "
                             f"right below it with the same columns and outputs")

    keys = {name: [[None] * cols for _ in range(rows)] for name in NETWORKS}
    routes = [[ROUTE_FROM_GIN | ROUTE_TO_GON] * cols for _ in range(rows)]
    chained_from = {(q.top, q.col) for p in placed if p.chain
                    for q in placed if q.top == p.row - 1 and q.col == p.col}
    for p in placed:
        for r, c, i, j in p.pes():
            keys["filter"][r][c] = _filter_key(p.s, i)
            keys["ifmap"][r][c] = _ifmap_key(p.s, p.s.ifmap_row(i, j), i)
            from_gin = i == 0 and not p.chain
            if from_gin:
                keys["psum"][r][c] = _psum_key(p.set_index, j)
            to_gon = i == p.s.height - 1 and (r, p.col) not in chained_from
            routes[r][c] = (ROUTE_FROM_GIN if from_gin else 0) | (ROUTE_TO_GON if to_gon else 0)

    row_ids, col_ids, tags = {}, {}, {}
    for name in NETWORKS:
        row_ids[name], col_ids[name], tags[name] = solve_ids(config, keys[name], name)
    public = tuple(dataclasses.replace(seg, width=p.width) for seg, p in zip(segments, placed))
    return NocMap(config, sets, public, row_ids, col_ids, tuple(tuple(r) for r in routes), tags,
                  where, tuple(placed))


def rs_placement(config, *, R, e, U=1, r=1, t=1):
    """Return ``(sets, segments)`` placing ``r * t`` sets of ``R x e`` PEs as Eyeriss does.

    Set ``out * r + chan`` has output group ``out < t`` and channel group ``chan < r``. The
    ``r`` sets of one output group are stacked and chained, so their psums add up on the way
    (channel group 0 at the bottom). A set wider than the array is cut into segments of
    ``cols`` columns and a remainder. The resulting blocks (``r * R`` rows each) are placed
    left to right, then in further bands above, like Eyeriss's CONV1 (two 11 x 7 sets side by
    side), CONV2 (5 x 27 as 5 x 14 below 5 x 13), CONV3 (four 3 x 13 sets stacked) and CONV4
    (two 6 x 13 chained pairs stacked). Raises ValueError when they do not fit.
    """
    for name, value in (("R", R), ("e", e), ("U", U), ("r", r), ("t", t)):
        _check_int(name, value, 1)
    rows, cols = config.rows, config.cols
    sets = [RSSet(R, e, U, out=out, chan=chan) for out in range(t) for chan in range(r)]
    pieces = [(j0, min(cols, e - j0)) for j0 in range(0, e, cols)]
    segments = []
    band_row, x = 0, 0
    height = r * R
    for out in range(t):
        for j0, width in pieces:
            if x + width > cols:
                band_row, x = band_row + height, 0
            if band_row + height > rows:
                raise ValueError(
                    f"{r * t} sets of {R} x {e} PEs (r={r}, t={t}) do not fit the {rows} x "
                    f"{cols} array: blocks of {height} x {width} need more than {rows} rows")
            for chan in range(r):
                segments.append(Segment(out * r + chan, band_row + chan * R, x, j0, width,
                                        chain=chan > 0))
            x += width
    return sets, segments
