"""Row-Stationary mapping of a layer onto the array: legal mappings, their passes and accumulation
order, an analytic cost model (:func:`predict`) and the search (:func:`map_layer`).

Folding (DESIGN.md, "Row-Stationary mapping")
---------------------------------------------
Each group of a grouped layer is an independent sub-layer (``Cg = C / groups`` channels,
``Mg = M / groups`` filters); groups are mapped identically and run one after the other.
Within a group:

* **Units.** A *unit* is one output row of one image: ``N * E`` units, numbered image-major
  (unit ``k`` is image ``k // E``, row ``k % E``). Batch and output rows together fill the
  array's columns: a pass covers up to ``u`` consecutive units, and the units of one image in a
  pass form one logical set (its width is Eyeriss's ``e``). ``pack="image"`` cuts each image's
  part of a tile into balanced strips of at most ``u`` rows, or packs whole images together;
  ``pack="flat"`` cuts the units into balanced runs that may straddle images.
* **Filter rows.** The ``R`` filter rows are cut into *row chunks* (:class:`RowChunk`) of at
  most ``rows`` rows; chunk heights need not be equal (``R = 5`` on 12 rows: a 4-row chunk
  stacked three high and a 1-row chunk stacked twelve high both fill every PE row). Each chunk
  has its own ``r``: ``r`` sets of different channels stacked and chained, so a block of
  ``r * h`` PE rows adds ``r * q`` channels on the way up.
* **Filter columns.** When ``q * S`` exceeds the ifmap scratchpad (or ``p * q * S`` the filter
  scratchpad) the ``S`` columns are cut into column chunks; a pass runs the PE primitive with the
  chunk's width on the matching window of the ifmap rows.
* **Channels and filters.** ``Cg`` is cut into channel blocks of ``q * r`` (balanced; a block
  of ``nc`` channels uses ``ceil(nc / q)`` sets of at most ``q``), ``Mg`` into filter blocks of
  ``p * t`` (balanced; ``t`` side-by-side filter sub-blocks of at most ``p``, all on the same
  units, so they share every ifmap multicast).
* **Placement.** A pass's blocks (``r * h`` PE rows by one unit) are laid out slot by slot:
  filter sub-block ``ot`` takes slots from ``ot * u`` on (``u`` the most units a pass of this
  shape takes), slot ``k`` is column ``k % cols`` of band ``k // cols`` (bands ``r * h`` rows
  high, from the bottom). A set that crosses a band edge becomes two
  :class:`~rsaccel.sw.noc_ids.Segment` s. A pass with fewer units leaves the last columns of
  its sets idle and keeps the NoC configuration.
* **Output strips.** Rows wider than the PE takes (``F > 4095``) or than the GLB's psum banks
  hold are cut into ``out_strips`` balanced strips of output columns; a pass then runs the
  primitive on the strip's window of the ifmap rows.
* **Tiles.** The units are cut into tiles (``tile_units`` at most; with ``pack="image"``, whole
  images or, within an image, ``tile_units`` rows at a time and the rest last): a tile's
  incomplete psums (FP32) stay in the GLB's psum banks until every reduction step has been
  added. Psums never go to DRAM. The search sizes tiles within an image in whole passes when
  that takes fewer passes than balanced tiles.

Pass order (outer to inner): group, filter block, output strip, tile, *reduction step*, units
of the tile (passes of at most ``u`` units). A reduction step (:class:`Step`) is one (row chunk,
column chunk, channel block), in that nesting order. The passes of one (filter block, strip,
tile, step) form a *run*: the PEs keep their filters stationary through it. Filter blocks go
outermost so that, with ``resident_filters``, a block's filters are loaded into the GLB once and
serve every strip and tile (and a strip's bias rows every tile).

Accumulation order (the bit-exactness contract)
-----------------------------------------------
Every output ``y[n][m][e][f]`` starts from its bias (FP32; ``+0.0`` without bias) and adds its
``Cg * R * S`` products one ``mac`` at a time in this order: reduction steps in order (row chunk,
then column chunk, then channel block); within a step the chain's channel sets bottom to top;
within a set the chunk's filter rows ``i`` ascending (bottom to top); within a PE the filter
column ``s`` outer and the set's channels ``c`` inner (:mod:`rsaccel.sw.pe_model`). Padding
positions are real MACs with an ifmap value of +0. The order is the same for every output of
the layer (:meth:`Mapping.term_order`); which pass, strip or tile computes an output does not
change it.

Cost model (:func:`predict`)
----------------------------
An analytic model of what the RTL does (calibrated on reduced AlexNet layers on the small
preset, within about 5% of the RTL's cycles). Per run:

* PE timing from :class:`rsaccel.hw.pe.PE`: an output column takes ``per_x = p*q*S`` cycles
  when ``p >= mac_stages`` (else ``p + (q*S - 1) * mac_stages``), and at least ``U * q`` (ifmap
  intake); a primitive ``F * per_x + mac_stages + 3``; a filter load ``p*q*S`` cycles, not
  overlapped with the PE's computing (one filter scratchpad).
* ``CostModel.fill="reconfig"`` (default): every PE runs its own sequence of primitives as its
  data arrive, the PE rows of a chain staggered by ``lag = (q*S - 1) * G + mac_stages + 3``
  (a stage starts a column's filter group when the one below has finished it; ``G`` is the
  PE's :func:`rsaccel.hw.pe.filter_group`, the whole ``p`` below ``2 * mac_stages``). The chain fills,
  ``(r*h - 1) * lag``, only when the array drains, which is when the NoC is reprogrammed; the
  rows load their filters one after the other, so the filter GIN is a stream like the others.
  ``"run"``/``"pass"``: lockstep, the array drains after every run/pass and waits for all the
  filters of a run. A run lasts at least ``r*h * lag + glb_latency``: the next step of the same
  outputs needs this one's psums back from the GLB.
* Psum bursts: the chains of a pass run in lockstep (they share ifmap rows), so at each output
  column every chain-bottom PE takes its ``p`` initial psums at once and every chain top emits
  its ``p`` final ones at once. The PE buffers a column of psums on both sides (psum FIFOs of
  ``psum_depth``), so the psum GIN brings the next column's while this one computes and the
  GON takes the last column's: with ``n`` chains (units x filter sub-blocks) a column takes
  ``max(per_x, n*p/Vp, n*p/Vg)`` cycles (the GIN term when the pass takes psums in: not the
  first step without bias). A column whose psums cannot come ahead waits for the burst, the
  last of the ``n`` PEs ``n * (p/Vp - 1) - (p - Vp)`` cycles (the GIN brings them ``Vp`` at a
  time to one PE after the other, each PE's first packet sent ahead): the first column after
  the array drains (a NoC reprogramming), and that of a run whose first pass needs the psums
  the run before has just computed (the same units: a run of one pass, or one configuration
  group of one pass). There the chain also drains: the bottom PEs wait, beyond their filter
  load and the pass gap, until the top of the chain has finished, ``(r*h - 1) * lag``, and
  the psums have come back through the GLB (``CostModel.psum_turnaround``).
* Pass gap: a pass's ifmap rows are sent once the previous pass's are all sent, each to its
  diagonal of PEs, ``U`` rows apart and ``span`` rows between the lowest and the highest; the
  top one, ``span * lag`` behind the bottom, takes its last values early by half the columns
  its ifmap ring holds beyond the window (``(depth // q - S) / U``, calibrated on the RTL),
  and at the start of the next pass the lower ones wait for the upper ones less all those
  columns; what remains is idle time between passes. A mapping that sends ifmap rows
  per filter row (``Mapping.diagonal`` False) has no pass gap: each PE row's rows wait only
  for its own, at up to ``h`` times the ifmap GIN traffic and GLB reads and more commands.
* The filter, ifmap and psum GINs and the GON stream concurrently with computing; a run lasts
  ``filter load + max(compute, filter values / Vf, ifmap values / Vi, psum-in values / Vp,
  psum-out values / Vg)``. A run's filters are prefetched into the GLB filter store when they
  fit (or are resident: ``Mapping.resident_filters``); otherwise they stream from DRAM at DRAM
  speed. Bias values enter as the first step's psums (the psum GIN).
* The NoC is reprogrammed whenever a pass's image runs differ from the configured ones (a pass
  with fewer units too: its idle PEs must match no tag); the compiler groups a run's passes by
  configuration, every other run in reverse, so a run changes it once per extra configuration.
  A change costs its configuration words (all of them at the start, those that differ later)
  times the cycles to fetch a command (``128 / axi_data_bits`` beats, or 16 bytes at the DRAM's
  bandwidth if that takes longer, plus ``CostModel.fetch_overhead / 8``), and the chain drains
  and refills around it.
* DRAM at ``CostModel.dram_bytes_per_cycle`` (default ``axi_data_bits / 8``), buffered behind
  the array (two runs' filters, two to eight passes' ifmaps, outputs stored while the next job
  computes): the layer takes the 6-norm of the array and DRAM cycles (as measured on the
  eyeriss RTL: 1.08-1.12x the larger when they are within 5%) plus the unhidden DRAM time of
  the first run's inputs and the last tile's outputs (``CostModel.dram_overlap=False``: the
  sum instead). With one psum region the next job waits for the stores of the job before:
  all of them after a single-pass run, else what a pass's store takes beyond the rest of the
  run (with its loads, less one pass's loaded ahead when DRAM has time to spare). DRAM bytes are what the compiler's program moves: ifmap rows as wide as
  their window with the padding columns, each channel set's from a word boundary; filters per
  tile, or once per filter block when resident, and bias rows (``F * p`` values per filter
  sub-block) once per strip and filter block, each row from a word boundary; and the
  command lists (16 bytes a command; estimated from the rows, chains and passes, within a few
  percent on the AlexNet layers).

Access counts are in values (an FP16 or FP32 value is one access, as Eyeriss counts 16-bit
words); energy uses Eyeriss's normalized costs (DRAM 200, GLB 6, NoC 2, scratchpad 1, MAC 1).
"""

import functools
import itertools
import math
from collections import Counter, deque, namedtuple
from dataclasses import dataclass

import numpy as np

from ..config import ArrayConfig
from ..hw.commands import COMMAND_BYTES
from ..hw.pe import filter_group
from .layers import Conv2d
from .noc_ids import RSSet, Segment, noc_map
from .pe_model import check_primitive

__all__ = [
    "EYERISS_ALEXNET",
    "IFMAP_BUFFERS",
    "MAX_STRIDE",
    "MAX_WIDTH",
    "OBJECTIVES",
    "PACKINGS",
    "SHARE_BUFFERS",
    "CostModel",
    "Mapping",
    "Pass",
    "RowChunk",
    "Step",
    "format_mapping",
    "glb_buffers",
    "make_mapping",
    "map_layer",
    "noc_config_words",
    "predict",
]

#: Largest stride the PE's configuration takes (a 4-bit field).
MAX_STRIDE = 15
#: Largest output row width the PE takes (its default ``max_width``).
MAX_WIDTH = 4095
#: Most ifmap buffers a program lays out (where the GLB has room).
IFMAP_BUFFERS = 8
#: Fewest ifmap buffers with which consecutive passes of a run share ifmap rows: a pass that
#: reads rows from the buffer of the pass before keeps that buffer from being reloaded until it
#: ends, so with two buffers no pass's rows could be loaded ahead (alexnet.conv2 at batch 4,
#: 2.4 B/cycle on the eyeriss RTL: 6,745,232 cycles without sharing, 7,413,341 with).
SHARE_BUFFERS = 3

#: Eyeriss's AlexNet CONV figures at batch 4 (JSSC 2017 Table V), for comparison:
#: active PEs, MAC utilization at 200 MHz, DRAM bytes.
EYERISS_ALEXNET = {
    "alexnet.conv1": {"active_pes": 154, "utilization": 0.76, "dram_bytes": 5.0e6},
    "alexnet.conv2": {"active_pes": 135, "utilization": 0.68, "dram_bytes": 4.0e6},
    "alexnet.conv3": {"active_pes": 156, "utilization": 0.82, "dram_bytes": 3.0e6},
    "alexnet.conv4": {"active_pes": 156, "utilization": 0.84, "dram_bytes": 2.1e6},
    "alexnet.conv5": {"active_pes": 156, "utilization": 0.89, "dram_bytes": 1.3e6},
}


def _ceil(a, b):
    return -(-a // b)


def _balanced(total, parts):
    """Sizes of ``parts`` nearly equal parts of ``total``, larger first."""
    base, extra = divmod(total, parts)
    return tuple(base + 1 if k < extra else base for k in range(parts))


def _split(total, size):
    """Balanced sizes of the fewest parts of at most ``size``."""
    return _balanced(total, _ceil(total, size))


def _ranges(sizes, start=0):
    out = []
    for size in sizes:
        out.append(range(start, start + size))
        start += size
    return tuple(out)


def _runs(units, E):
    """Return the image runs ``(image, first row, rows)`` of a range of units."""
    out = []
    k = units.start
    while k < units.stop:
        n, y = divmod(k, E)
        length = min(E - y, units.stop - k)
        out.append((n, y, length))
        k += length
    return tuple(out)


def _overlap(lo, hi, vlo, vhi):
    return max(0, min(hi, vhi) - max(lo, vlo))


@functools.lru_cache(maxsize=1 << 16)
def _run_rows(y0, length, U, i0, h, pad, H):
    """Return ``(sent, valid)``: the padded ifmap rows that output rows ``y0..y0+length-1`` use
    with filter rows ``i0..i0+h-1``, and how many of them are inside the image."""
    if U <= h:
        lo, hi = y0 * U + i0, (y0 + length - 1) * U + i0 + h
        return hi - lo, _overlap(lo, hi, pad, pad + H)
    valid = sum(_overlap(y * U + i0, y * U + i0 + h, pad, pad + H)
                for y in range(y0, y0 + length))
    return length * h, valid


PACKINGS = ("image", "flat")


@functools.lru_cache(maxsize=4096)
def _tiles(NE, E, B, pack):
    """Return the unit ranges of a group's tiles of at most ``B`` units.

    ``"flat"``: ``B`` units each (the last fewer), across images. ``"image"``: whole images
    (``B // E`` of them) when ``B >= E``, else each image cut into strips of ``B`` units (the
    last fewer).
    """
    if pack == "flat":
        return _ranges((B,) * (NE // B) + ((NE % B,) if NE % B else ()))
    N = NE // E
    if B >= E:
        k = B // E
        return _ranges((k * E,) * (N // k) + (((N % k) * E,) if N % k else ()))
    return _ranges(((B,) * (E // B) + ((E % B,) if E % B else ())) * N)


@functools.lru_cache(maxsize=4096)
def _tile_passes(NE, E, B, pack, u_cap):
    """Return, per tile, the unit ranges of its passes (at most ``u_cap`` units each).

    ``"flat"``: balanced runs of the tile's units. ``"image"``: each image's part of the tile
    cut into balanced strips, whole parts packed together while they fit.
    """
    out = []
    for tile in _tiles(NE, E, B, pack):
        if pack == "flat":
            out.append(_ranges(_split(len(tile), u_cap), tile.start))
            continue
        sizes, whole = [], False
        for _, _, length in _runs(tile, E):
            pieces = _split(length, u_cap)
            if len(pieces) == 1 and whole and sizes[-1] + length <= u_cap:
                sizes[-1] += length
            else:
                sizes += pieces
            whole = len(pieces) == 1
        out.append(_ranges(sizes, tile.start))
    return tuple(out)


_Stats = namedtuple("_Stats", "passes sent_rows valid_rows read_rows max_units sum_max_units "
                              "max_run max_runs max_valid_rows changes patterns orders units "
                              "repeats row_groups loaded_rows")


def _pass_rows(units, E, U, i0, h, pad, H):
    """The ifmap rows inside the image that a pass's units use: ``{(image, padded row)}``."""
    return {(n, y * U + i) for n, y0, length in _runs(units, E) for y in range(y0, y0 + length)
            for i in range(i0, i0 + h) if pad <= y * U + i < pad + H}


def _loaded_rows(tile, seq, E, U, i0, h, pad, H):
    """Ifmap rows a run loads: each pass's, less those the pass before it in the run loaded
    itself (sw.program: rows shared by consecutive passes are loaded once). The compiler takes
    the passes grouped by NoC configuration (run-length pattern), every other run in reverse:
    the mean of both orders."""
    order = sorted(range(len(tile)), key=lambda k: list(dict.fromkeys(seq)).index(seq[k]))
    rows = [_pass_rows(tile[k], E, U, i0, h, pad, H) for k in order]
    total = 0
    for seqn in (rows, rows[::-1]):
        own = set()
        for r in seqn:
            own = r - own
            total += len(own)
    return total / 2


def _row_groups(y0, length, U, i0, h, pad, H, per_row=False):
    """IFMAP commands of ``length`` units' rows with filter rows ``i0..i0+h-1`` (rows stepping
    evenly go in one, sw.program.row_groups): padding rows above, rows inside, padding rows
    below; along diagonals, a row block per output row when the stride exceeds the filter rows
    (``per_row``: one filter row's rows, ``h`` = 1, step evenly by U rows)."""
    if U > h and not per_row:
        return length
    lo = y0 * U + i0
    hi = (y0 + length - 1) * U + i0 + h
    return int(lo < pad) + int(_overlap(lo, hi, pad, pad + H) > 0) + int(hi > pad + H)


@functools.lru_cache(maxsize=1 << 14)
def _pass_stats(E, U, pad, H, NE, B, pack, u_cap, i0, h, diagonal=True):
    """Totals over all the passes of one run per tile (a group's units, passes of ``u_cap``).
    ``sent_rows``: ifmap rows sent (per filter row when not ``diagonal``); ``valid_rows``: the
    distinct ones inside the image (loaded); ``read_rows``: the sent ones inside the image."""
    passes = sent = valid = read = max_units = sum_max_units = max_run = max_runs = max_valid = 0
    groups = 0
    changes = 0
    patterns = set()
    orders, units_per_pass, repeats = [], [], []
    loaded = 0
    for tile in _tile_passes(NE, E, B, pack, u_cap):
        seq = []
        units_per_pass += [len(units) for units in tile]
        for units in tile:
            runs = _runs(units, E)
            seq.append(tuple(length for _, _, length in runs))
            pass_valid = 0
            for _, y0, length in runs:
                s, v = _run_rows(y0, length, U, i0, h, pad, H)
                pass_valid += v
                if diagonal:
                    sent += s
                    read += v
                    groups += _row_groups(y0, length, U, i0, h, pad, H)
                    continue
                # Per filter row: each row's PEs their own rows, evenly U apart.
                sent += length * h
                for i in range(i0, i0 + h):
                    read += _run_rows(y0, length, U, i, 1, pad, H)[1]
                    groups += _row_groups(y0, length, U, i, 1, pad, H, per_row=True)
            valid += pass_valid
            max_valid = max(max_valid, pass_valid)
            max_run = max(max_run, max(seq[-1]))
            max_runs = max(max_runs, len(runs))
            max_units = max(max_units, len(units))
        passes += len(tile)
        sum_max_units += max(len(units) for units in tile)
        # Every image-run pattern has its NoC configuration (the idle PEs of a pass with fewer
        # units must match no tag). The compiler groups a run's passes by configuration and
        # takes the groups in reverse every other run: one change between consecutive groups.
        order = tuple(dict.fromkeys(seq))
        loaded += _loaded_rows(tile, seq, E, U, i0, h, pad, H)
        patterns.update(order)
        orders.append(order)
        changes += len(order) - 1
        # A run that starts with the units the run before ended with (a configuration group of
        # one pass: the first group, or the last one, every other run): the units of that pass.
        repeats.append(tuple(len(tile[seq.index(pat)]) if seq.count(pat) == 1 else 0
                             for pat in (order[0], order[-1])))
    return _Stats(passes, sent, valid, read, max_units, sum_max_units, max_run, max_runs, max_valid,
                  changes, frozenset(patterns), tuple(orders), tuple(units_per_pass),
                  tuple(repeats), groups, loaded)


@functools.lru_cache(maxsize=1 << 14)
def _max_pass_rows(E, U, pad, H, NE, u, i0, h):
    """Most valid ifmap rows any ``u`` consecutive units (wherever they start) need."""
    best = 0
    for y in range(min(E, NE)):
        units = range(y, min(NE, y + u))
        best = max(best, sum(_run_rows(y0, length, U, i0, h, pad, H)[1]
                             for _, y0, length in _runs(units, E)))
    return best


@dataclass(frozen=True)
class RowChunk:
    """Filter rows ``start`` to ``start + height - 1``, run in sets ``height`` PEs high, with
    ``r`` sets of different channels chained in each block of ``r * height`` PE rows."""
    start: int
    height: int
    r: int = 1

    @property
    def rows(self):
        return range(self.start, self.start + self.height)


@dataclass(frozen=True)
class Step:
    """One reduction step: what a pass adds to each output it covers. ``channel_sets`` are the
    chain's sets bottom to top (channels of the group), ``rows`` and ``cols`` the filter rows and
    columns; ``chunk`` the index of the row chunk."""
    index: int
    chunk: int
    rows: range
    cols: range
    channel_sets: tuple

    @property
    def channels(self):
        return range(self.channel_sets[0].start, self.channel_sets[-1].stop)

    def terms(self):
        """Yield ``(c, i, s)`` in accumulation order: sets bottom to top, rows ``i`` ascending,
        ``s`` outer, ``c`` inner."""
        for cset in self.channel_sets:
            for i in self.rows:
                for s in self.cols:
                    for c in cset:
                        yield c, i, s


@dataclass(frozen=True)
class Pass:
    """One processing pass: ``units`` (unit ``k`` = image ``k // E``, output row ``k % E``;
    ``runs`` the same as ``(image, first row, rows)``) of group ``group``, output columns
    ``out_cols``, filters ``filter_sets`` (one range per side-by-side sub-block, of the group's
    filters), reduction step ``step``. ``load_filters``: first pass of its run (the PEs load
    new filters)."""
    index: int
    group: int
    out_cols: range
    tile: int
    units: range
    runs: tuple
    filter_sets: tuple
    step: Step
    load_filters: bool

    @property
    def filters(self):
        """The group's filters the pass computes."""
        return range(self.filter_sets[0].start, self.filter_sets[-1].stop)

    @property
    def images(self):
        """The images the pass covers."""
        return tuple(n for n, _, _ in self.runs)

    @property
    def channels(self):
        """The group's channels the pass adds (its step's)."""
        return self.step.channels

    @property
    def filter_rows(self):
        return self.step.rows

    @property
    def filter_cols(self):
        return self.step.cols

    @property
    def first(self):
        """The outputs' accumulators start here (from the bias or +0), not from the GLB."""
        return self.step.index == 0


@dataclass(frozen=True)
class CostModel:
    """Parameters of :func:`predict`'s analytic model (see the module docstring)."""
    #: DRAM bytes per array cycle; None: ``axi_data_bits / 8``.
    dram_bytes_per_cycle: float | None = None
    #: DRAM transfers overlap computing (double-buffered GLB); else they add up.
    dram_overlap: bool = True
    #: Bytes of one output value written to DRAM (2: FP16 out, 4: FP32 out).
    output_bytes: int = 2
    #: Cycles to reprogram the NoC; None: the configuration words written (all of them at the
    #: start, those that change later) times the cycles to fetch a command.
    reconfig_cycles: int | None = None
    #: Cycles a command fetch (8 commands) takes besides its data beats.
    fetch_overhead: int = 4
    #: When the psum chains drain and refill: "reconfig" (only when the NoC is reprogrammed),
    #: "run" (also when filters change) or "pass" (after every pass).
    fill: str = "reconfig"
    #: Cycles from a psum leaving the GON to the same psum available to the psum GIN.
    glb_latency: int = 8
    #: Cycles from the last psum of a run leaving its chain top to the first psums of the next
    #: step reaching the chain bottoms (GON, GLB write, RECV, the psum sender's GLB reads).
    psum_turnaround: int = 8
    #: Normalized energy per access (Eyeriss, ISCA 2016 Table IV) and per MAC.
    e_dram: float = 200.0
    e_glb: float = 6.0
    e_noc: float = 2.0
    e_spad: float = 1.0
    e_mac: float = 1.0


def noc_config_words(config):
    """Return the number of NoC configuration words of a full reprogramming (a flag clear, the
    IDs of three networks, the routes)."""
    return 1 + 3 * config.rows * (1 + config.cols) + config.rows * config.cols


def _command_cycles(config, model):
    """Cycles to fetch one command from memory (128 bits over the bus, 8 per fetch): its beats,
    or its 16 bytes at the DRAM's bandwidth when that is less than a beat a cycle."""
    bw = model.dram_bytes_per_cycle or config.axi_data_bits / 8
    return max(128 / config.axi_data_bits, COMMAND_BYTES / bw) + model.fetch_overhead / 8


@functools.lru_cache(maxsize=1 << 10)
def _words_changed(config, h, U, r, t, u_cap, a, b, diagonal=True):
    """NoC configuration words that differ between the placements of image-run patterns
    ``a`` and ``b`` (what the compiler writes to go from one to the other)."""
    maps = [noc_map(config, *_place(config, h, U, r, t,
                                   tuple((n, 0, length) for n, length in enumerate(pattern)),
                                   u_cap, diagonal))
            for pattern in (a, b)]
    return sum(x != y for x, y in zip(maps[0].writes()[1:], maps[1].writes()[1:]))


@functools.lru_cache(maxsize=1 << 12)
def _place(config, h, U, r, t, runs, stride, diagonal=True):
    sets, segments = [], []
    D, cols = r * h, config.cols
    u = stride
    for ot in range(t):
        offset = 0
        for n, _, length in runs:
            base = len(sets)
            sets += [RSSet(h, length, U, out=ot, chan=cr, image=n, diagonal=diagonal)
                     for cr in range(r)]
            j = 0
            while j < length:
                band, col = divmod(ot * u + offset + j, cols)
                width = min(length - j, cols - col)
                segments += [Segment(base + cr, band * D + cr * h, col, j, width, chain=cr > 0)
                             for cr in range(r)]
                j += width
            offset += length
    return tuple(sets), tuple(segments)


@dataclass(frozen=True)
class Mapping:
    """A Row-Stationary mapping of ``layer`` on ``config``'s array (module docstring).

    ``p`` filters and ``q`` channels per PE, ``t`` filter sub-blocks side by side; ``row_chunks``
    the filter-row chunks (each with its ``r``), ``col_chunks`` the filter-column chunks as
    ``(start, width)``; ``tile_units`` the most units in a tile and ``pack`` how units are
    grouped into tiles and passes (``"image"``: passes never mix part of an image with another
    image; ``"flat"``: runs of consecutive units across images); ``out_strips`` the number of
    output-column strips (balanced) each row is cut into; ``glb_ifmap_banks`` (the ifmaps of
    the current and the next pass, fetched per pass) and ``glb_psum_banks`` the GLB split;
    ``psum_buffers``: 2 when the psum banks hold two tiles' psums, so that a job computes while
    the one before is stored (1: the next job waits for the store); ``diagonal``: an ifmap
    row goes to its diagonal of PEs in one transfer, as in Eyeriss (False: to each filter
    row's PEs on their own, at up to ``h`` times the ifmap traffic, so that the bottom of a
    chain starts its next pass while the top finishes this one); ``resident_filters``: the GLB
    keeps a filter block's filters (every reduction step's) while the tiles go through them,
    so that they come from DRAM once per filter block, not once per tile (the GLB reserves
    their banks; False: a run's filters are loaded for it). Construction checks every
    limit and raises ValueError naming the one exceeded; use :func:`make_mapping` to fill in
    the chunks, tiles and GLB split.
    """
    layer: Conv2d
    config: ArrayConfig
    p: int
    q: int
    t: int
    row_chunks: tuple
    col_chunks: tuple
    tile_units: int
    pack: str
    out_strips: int
    glb_ifmap_banks: int
    glb_psum_banks: int
    psum_buffers: int = 1
    diagonal: bool = True
    resident_filters: bool = False

    def __post_init__(self):
        _check_mapping(self)

    # Mapping numbers (Eyeriss's names)
    @property
    def r(self):
        """Channel sets chained in the first row chunk."""
        return self.row_chunks[0].r

    @functools.cached_property
    def _main_stats(self):
        ch = self.row_chunks[0]
        u_cap = next(_geometry(self))[-1]
        return self._stats(u_cap, ch.start, ch.height)

    def _stats(self, u_cap, i0, h):
        lay = self.layer
        return _pass_stats(lay.E, lay.U, lay.padding, lay.H, lay.N * lay.E, self.tile_units,
                           self.pack, u_cap, i0, h, self.diagonal)

    @property
    def strips(self):
        """The output-column strips, as ranges of output columns."""
        return _ranges(_balanced(self.layer.F, self.out_strips))

    @property
    def tiles(self):
        """The tiles of a group, as ranges of units."""
        return _tiles(self.layer.N * self.layer.E, self.layer.E, self.tile_units, self.pack)

    @property
    def e(self):
        """Output rows in the widest set (a set: one image's units in a pass)."""
        return self._main_stats.max_run

    @property
    def n(self):
        """Most images one pass covers."""
        return self._main_stats.max_runs

    @property
    def u(self):
        """Most units (output rows, over images) one pass of the first row chunk covers."""
        return self._main_stats.max_units

    def numbers(self):
        """Return Eyeriss's mapping numbers ``n, p, q, e, r, t`` and the units per pass."""
        return {"n": self.n, "p": self.p, "q": self.q, "e": self.e, "r": self.r, "t": self.t,
                "u": self.u}

    # Structure
    def units_per_pass(self, h, r, t):
        """Most units a pass of sets ``h`` high, ``r`` chained, ``t`` sub-blocks can cover."""
        return (self.config.rows // (r * h)) * self.config.cols // t

    def filter_blocks(self):
        """Return ``(filters, sub-blocks)`` per filter block, ranges of the group's filters."""
        out = []
        for fb in _ranges(_split(self.layer.Mg, self.p * self.t)):
            subs = _ranges(_balanced(len(fb), _ceil(len(fb), self.p)), fb.start)
            out.append((fb, subs))
        return tuple(out)

    @functools.cached_property
    def steps(self):
        """The reduction steps (:class:`Step`) in order: row chunk, column chunk, channel block."""
        steps = []
        for k, ch in enumerate(self.row_chunks):
            for s0, sw in self.col_chunks:
                for cb in _ranges(_split(self.layer.Cg, self.q * ch.r)):
                    sets = _ranges(_balanced(len(cb), _ceil(len(cb), self.q)), cb.start)
                    steps.append(Step(len(steps), k, ch.rows, range(s0, s0 + sw), sets))
        return tuple(steps)

    def term_order(self):
        """Return the accumulation order of every output: an int array ``[Cg*R*S][3]`` of
        ``(c, i, s)`` (channel within the group, filter row, filter column), after the bias."""
        return np.array([term for step in self.steps for term in step.terms()],
                        dtype=np.int64).reshape(-1, 3)

    def passes(self):
        """Yield every :class:`Pass` of the layer in order."""
        lay = self.layer
        NE = lay.N * lay.E
        index = 0
        # Filter blocks outside strips and tiles, so that a filter block's filters (and a
        # strip's bias rows) stay in the GLB while the tiles go through them.
        for g, (_, subs), cols in itertools.product(range(lay.groups), self.filter_blocks(),
                                                   self.strips):
            for ti, step in itertools.product(range(len(self.tiles)), self.steps):
                ch = self.row_chunks[step.chunk]
                u_cap = self.units_per_pass(ch.height, len(step.channel_sets), len(subs))
                tiles = _tile_passes(NE, lay.E, self.tile_units, self.pack, u_cap)
                for k, units in enumerate(tiles[ti]):
                    yield Pass(index, g, cols, ti, units, _runs(units, lay.E), subs, step,
                               k == 0)
                    index += 1

    def placement_of(self, pass_):
        """Return ``(sets, segments)`` (:mod:`rsaccel.sw.noc_ids`) of a pass. Set order: filter
        sub-block, then image run, then channel set (bottom to top)."""
        h, r, t = len(pass_.step.rows), len(pass_.step.channel_sets), len(pass_.filter_sets)
        return _place(self.config, h, self.layer.U, r, t, pass_.runs,
                      self.units_per_pass(h, r, t), self.diagonal)

    @property
    def placement(self):
        """``(sets, segments)`` of the first pass."""
        return self.placement_of(next(self.passes()))

    def placements(self):
        """Return every distinct placement shape of the layer's passes, as ``(sets, segments)``
        (images numbered from 0)."""
        lay = self.layer
        shapes = set()
        for _, t, _, k, _, _, r, _, _, u_cap in _geometry(self):
            ch = self.row_chunks[k]
            st = self._stats(u_cap, ch.start, ch.height)
            for pattern in st.patterns:
                shapes.add((ch.height, r, t, pattern, u_cap))
        out = []
        for h, r, t, pattern, u_cap in sorted(shapes):
            runs = tuple((n, 0, length) for n, length in enumerate(pattern))
            out.append(_place(self.config, h, lay.U, r, t, runs, u_cap, self.diagonal))
        return out

    def check_noc(self):
        """Check every placement with :func:`~rsaccel.sw.noc_ids.noc_map` (raises ValueError,
        for example when the multicast IDs need more than ``noc_id_bits``)."""
        for sets, segments in self.placements():
            noc_map(self.config, sets, segments)


def _positive_int(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")


def _check_limits(layer, config):
    """Raise ValueError when nothing about the layer fits, whatever the mapping."""
    if layer.U > MAX_STRIDE:
        raise ValueError(f"{layer.name}: stride {layer.U} exceeds the PE's largest stride "
                         f"{MAX_STRIDE} (a 4-bit field)")


def _bank_bytes(config):
    return config.glb_bank_depth * config.glb_word_bits // 8


def _step_runs(m):
    """The reduction steps in order, run-length coded without building them: a tuple of
    ``(chunk, s0, sw, channel-set sizes, first, count)``; ``first`` marks the first step."""
    out = []
    Cg, q = m.layer.Cg, m.q
    for k, ch in enumerate(m.row_chunks):
        for ci, (s0, sw) in enumerate(m.col_chunks):
            cbs = _split(Cg, q * ch.r)
            for size in sorted(set(cbs), reverse=True):
                count = cbs.count(size)
                sizes = _balanced(size, _ceil(size, q))
                if k == 0 and ci == 0 and size == cbs[0]:
                    out.append((k, s0, sw, sizes, True, 1))
                    count -= 1
                if count:
                    out.append((k, s0, sw, sizes, False, count))
    return tuple(out)


def _fb_classes(m):
    """Return ``{filters in the block: blocks}`` of a group."""
    return Counter(_split(m.layer.Mg, m.p * m.t))


def _geometry(m):
    """Yield ``(nf, t_eff, p_eff, k, s0, sw, r_eff, q_eff, nc, u_cap)`` per class of filter
    block and reduction step."""
    for nf in _fb_classes(m):
        t_eff = _ceil(nf, m.p)
        for k, s0, sw, sizes, _, _ in _step_runs(m):
            h = m.row_chunks[k].height
            yield (nf, t_eff, _ceil(nf, t_eff), k, s0, sw, len(sizes), max(sizes), sum(sizes),
                   m.units_per_pass(h, len(sizes), t_eff))


def _ifmap_need(m_like, B):
    """Bytes of the GLB's ifmap region a mapping needs with tiles of at most ``B`` units."""
    lay = m_like.layer
    NE = lay.N * lay.E
    strips = _ranges(_balanced(lay.F, m_like.out_strips))
    # As the compiler lays them out (:mod:`rsaccel.sw.program`): a pass's rows inside the image,
    # each as wide as its window with the padding columns, per channel set from a word boundary.
    word = m_like.config.glb_word_bits // 8
    need = 0
    for _, _, _, k, s0, sw, n_sets, _, nc, u_cap in _geometry(m_like):
        ch = m_like.row_chunks[k]
        rows = _max_pass_rows(lay.E, lay.U, lay.padding, lay.H, NE, min(u_cap, B), ch.start,
                              ch.height)
        width = max((len(cols) - 1) * lay.U + sw for cols in strips)
        need = max(need, rows * (nc * width * 2 + n_sets * (word - 2)))
    return 2 * need     # the current pass and the next


def _window(lay, cols, s0=0, sw=None):
    """Input columns inside the image that output columns ``cols`` use with filter columns
    ``s0`` to ``s0 + sw - 1`` (all of them by default)."""
    sw = lay.S if sw is None else sw
    lo = cols.start * lay.U + s0
    return _overlap(lo, lo + (len(cols) - 1) * lay.U + sw, lay.padding, lay.padding + lay.W)


def _bias_bytes(m_like):
    """Bytes of a job's bias rows in the GLB, beside its psums (:mod:`rsaccel.sw.program`): per
    filter sub-block a row of ``F * p`` FP32 values from a word boundary."""
    lay = m_like.layer
    if not lay.bias:
        return 0
    word = m_like.config.glb_word_bits // 8
    nf = min(m_like.p * m_like.t, lay.Mg)
    return nf * _ceil(lay.F, m_like.out_strips) * 4 + m_like.t * word


def _run_filter_bytes(m_like):
    """``[(bytes, count)]``: the GLB bytes of a run's filters (the largest filter block's) per
    class of reduction step, as the compiler lays them out: each filter row of a sub-block and
    channel set from a word boundary."""
    lay, word = m_like.layer, m_like.config.glb_word_bits // 8
    nf = min(m_like.p * m_like.t, lay.Mg)
    subs = _balanced(nf, _ceil(nf, m_like.p))
    return [(sum(_ceil(f * c * sw * 2, word) * word for f in subs for c in sizes)
             * m_like.row_chunks[k].height, count)
            for k, _, sw, sizes, _, count in _step_runs(m_like)]


def _resident_bytes(m_like):
    """Bytes of the GLB a filter block's filters take, every reduction step's."""
    return sum(size * count for size, count in _run_filter_bytes(m_like))


def glb_buffers(sizes, fixed, capacity, *, resident=False, psum_buffers=1):
    """How many buffers of each GLB region a program lays out (:mod:`rsaccel.sw.program`):
    one of each (filters: with ``resident``, a filter block's; else a ring of two filter rows
    of ``sizes["row"]``), then second buffers where they fit, in the order ifmaps, filters (a
    run's, two of them beside the ring's replacement), psums (first when the mapping plans
    ``psum_buffers=2``), then third and fourth ifmap buffers, so that loads run further ahead
    of the passes and of the bursts of stores, a second bias buffer (bias rows change with the
    strip or filter block only, and are read by a job's first run: the next ones have the
    job's other runs to load in) and more ifmap buffers, up to ``IFMAP_BUFFERS``. ``sizes``: a buffer of each of ``psum``,
    ``ifmap``, ``filter``, ``bias`` (0 for none) and a filter ``row``, in any unit ``fixed``
    (always in use) and ``capacity`` share. Returns ``(counts, used)``; ``used`` exceeds
    ``capacity`` only when one buffer of each does not fit."""
    counts = {"psum": 1, "ifmap": 1, "filter": int(resident), "bias": int(sizes["bias"] > 0)}

    def used():
        ring = 2 * sizes["row"] if counts["filter"] == 0 else 0
        return sum(sizes[k] * counts[k] for k in counts) + fixed + ring

    order = ("ifmap", "filter") + ("filter",) * (not resident) + ("psum", "ifmap", "ifmap",
                                                                   "bias") \
        + ("ifmap",) * IFMAP_BUFFERS
    if psum_buffers == 2:
        order = ("psum",) + order
    if used() <= capacity:
        for k in order:
            if counts[k] >= (IFMAP_BUFFERS if k == "ifmap" else 2) or not sizes[k]:
                continue
            counts[k] += 1
            if used() > capacity:
                counts[k] -= 1
    return counts, used()


def _ifmap_buffer_bytes(m):
    """Bytes of the largest pass's ifmap buffer as the compiler lays it out: the pass's rows
    inside the image, each channel set's as wide as the widest window, from a word boundary."""
    lay, word = m.layer, m.config.glb_word_bits // 8
    need = 0
    for _, _, _, k, _, sw, n_sets, _, nc, u_cap in _geometry(m):
        ch = m.row_chunks[k]
        width = max((len(cols) - 1) * lay.U + sw for cols in m.strips)
        row = sum(_ceil(c * width * 2, word) * word for c in _balanced(nc, n_sets))
        need = max(need, m._stats(u_cap, ch.start, ch.height).max_valid_rows * row)
    return need


def _glb_counts(m):
    """The buffers of each GLB region the compiler will lay out for mapping ``m``
    (:func:`glb_buffers` on the sizes the mapper plans with, in bytes)."""
    lay, cfg = m.layer, m.config
    word = cfg.glb_word_bits // 8
    nf = min(m.p * m.t, lay.Mg)
    runs = [size for size, _ in _run_filter_bytes(m)]
    width = max((len(cols) - 1) * lay.U + sw for cols in m.strips for _, sw in m.col_chunks)
    row = max(_ceil(min(nf, m.p) * min(lay.Cg, m.q) * sw * 2, word) * word
              for _, sw in m.col_chunks)
    sizes = {"psum": _max_tile(m, m.tile_units) * nf * len(m.strips[0]) * 4,
             "ifmap": _ifmap_buffer_bytes(m),
             "filter": _resident_bytes(m) if m.resident_filters else max(runs),
             "bias": _bias_bytes(m), "row": row}
    zero = _ceil(width * min(lay.Cg, m.q) * 2, word) * word if lay.padding else 0
    capacity = cfg.glb_banks * _bank_bytes(cfg) + cfg.glb_filter_depth * word
    counts, _ = glb_buffers(sizes, zero, capacity, resident=m.resident_filters,
                            psum_buffers=m.psum_buffers)
    return counts


def _timeline(jobs, steps, P, A, L, Fr, O, bw, n_ifmap, n_filter, n_psum, J=4):
    """Cycles of ``jobs`` jobs (``steps`` runs of ``P`` passes each, every pass alike), the
    array and DRAM on one timeline: a pass computes for ``A`` cycles once its ``L`` bytes are
    in (into one of ``n_ifmap`` buffers, free once the pass ``n_ifmap`` before has ended) and
    its run's ``Fr`` filter bytes (into one of ``n_filter`` buffers, free once the run
    ``n_filter`` before has started); the loads go in order. With several steps each pass of a
    job's last run stores its ``O / P`` output bytes when it ends, and the next job's first run
    writes its psums over those of the job ``n_psum`` before, pass by pass, once they are
    stored; with one step a job stores ``O`` at its end, and the job ``n_psum`` after it waits
    for all of it. DRAM serves loads and stores in the order they can start (``bw`` bytes a
    cycle). ``J`` jobs are laid out; the others take as long as the middle ones."""
    J = min(J, jobs)
    N, blocks = J * steps * P, P if steps > 1 else 1
    loads = [(kind, k, size) for i in range(N)
             for kind, k, size in ((("f", i // P, Fr),) if i % P == 0 and Fr else ())
             + (("i", i, L),)]
    start, end, done, stored = {}, {}, {}, {}
    stores = deque()
    t = 0.0
    li = nxt = 0
    job_end = []
    while True:
        while nxt < N:          # the passes whose loads and psum regions are ready
            k, p = divmod(nxt, P)
            j, s = divmod(k, steps)
            key = (j - n_psum, p % blocks)
            if ("i", nxt) not in done or (Fr and ("f", k) not in done) \
                    or (s == 0 and j >= n_psum and key not in stored):
                break
            start[nxt] = max(done["i", nxt], done.get(("f", k), 0), end.get(nxt - 1, 0),
                             stored.get(key, 0) if s == 0 else 0)
            end[nxt] = start[nxt] + A
            if s == steps - 1 and (blocks > 1 or p == P - 1):
                stores.append((end[nxt], O / blocks, (j, p % blocks)))
            if s == steps - 1 and p == P - 1:
                job_end.append(end[nxt])
            nxt += 1
        ready = None
        if li < len(loads):
            kind, k, size = loads[li]
            dep = k - (n_ifmap if kind == "i" else n_filter)
            ready = 0 if dep < 0 else end.get(dep) if kind == "i" else start.get(dep * P)
        if stores and (ready is None or stores[0][0] < ready):
            at, size, key = stores.popleft()
            t = stored[key] = max(t, at) + size / bw
        elif ready is not None:
            t = done[kind, k] = max(t, ready) + size / bw
            li += 1
        else:
            break
    assert nxt == N
    if jobs > J:
        t += (jobs - J) * (job_end[-1] - job_end[0]) / (J - 1)
    return t


def _filter_banks(m_like):
    """Banks the resident filters take beyond the filter store (0 when not resident)."""
    if not m_like.resident_filters:
        return 0
    cfg = m_like.config
    store = cfg.glb_filter_depth * cfg.glb_word_bits // 8
    return _ceil(max(0, _resident_bytes(m_like) - store), _bank_bytes(cfg))


def _max_tile(m_like, B):
    lay = m_like.layer
    return max(len(t) for t in _tiles(lay.N * lay.E, lay.E, B, m_like.pack))


def _check_mapping(m):
    lay, cfg = m.layer, m.config
    if not isinstance(lay, Conv2d):
        raise TypeError(f"layer must be a Conv2d, not {lay!r}")
    if not isinstance(cfg, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {cfg!r}")
    _check_limits(lay, cfg)
    for name in ("p", "q", "t", "tile_units", "out_strips", "glb_ifmap_banks",
                 "glb_psum_banks"):
        _positive_int(name, getattr(m, name))
    if m.psum_buffers not in (1, 2):
        raise ValueError(f"psum_buffers must be 1 or 2, not {m.psum_buffers!r}")
    if not isinstance(m.diagonal, bool):
        raise TypeError(f"diagonal must be a bool, not {m.diagonal!r}")
    if not isinstance(m.resident_filters, bool):
        raise TypeError(f"resident_filters must be a bool, not {m.resident_filters!r}")
    if m.p > lay.Mg:
        raise ValueError(f"p = {m.p} exceeds the {lay.Mg} filters of a group")
    if m.q > lay.Cg:
        raise ValueError(f"q = {m.q} exceeds the {lay.Cg} channels of a group")
    if m.t > _ceil(lay.Mg, m.p):
        raise ValueError(f"t = {m.t} sub-blocks of p = {m.p} filters exceed the {lay.Mg} "
                         f"filters of a group")
    NE = lay.N * lay.E
    if m.tile_units > NE:
        raise ValueError(f"tile_units = {m.tile_units} exceeds the {NE} units (N * E)")
    if m.pack not in PACKINGS:
        raise ValueError(f"pack must be one of {', '.join(PACKINGS)}, not {m.pack!r}")
    if m.out_strips > lay.F:
        raise ValueError(f"out_strips = {m.out_strips} exceeds the F = {lay.F} output columns")
    # Chunks cover the filter exactly, in order.
    chunks = tuple(m.row_chunks)
    if not chunks or not all(isinstance(c, RowChunk) for c in chunks):
        raise ValueError(f"row_chunks must be a non-empty sequence of RowChunk, not {chunks!r}")
    start = 0
    for c in chunks:
        _positive_int("row chunk height", c.height)
        _positive_int("row chunk r", c.r)
        if c.start != start:
            raise ValueError(f"row chunks must cover filter rows 0 to {lay.R - 1} in order; "
                             f"chunk {c} starts at {c.start}, not {start}")
        if c.r * c.height > cfg.rows:
            raise ValueError(f"row chunk of {c.height} filter rows with r = {c.r} needs "
                             f"{c.r * c.height} PE rows, more than the array's {cfg.rows}")
        start += c.height
    if start != lay.R:
        raise ValueError(f"row chunks cover {start} filter rows, not R = {lay.R}")
    start = 0
    for item in m.col_chunks:
        if not (isinstance(item, tuple) and len(item) == 2 and item[0] == start):
            raise ValueError(f"col_chunks must be (start, width) pairs covering filter columns "
                             f"0 to {lay.S - 1} in order, not {m.col_chunks!r}")
        _positive_int("column chunk width", item[1])
        start += item[1]
    if start != lay.S:
        raise ValueError(f"column chunks cover {start} filter columns, not S = {lay.S}")
    sw = max(w for _, w in m.col_chunks)
    check_primitive(m.p, m.q, sw, lay.U, _ceil(lay.F, m.out_strips), filter_depth=cfg.filter_spad_depth,
                    ifmap_depth=cfg.ifmap_spad_depth, psum_depth=cfg.psum_spad_depth,
                    max_width=MAX_WIDTH)
    for c in chunks:
        slots = (cfg.rows // (c.r * c.height)) * cfg.cols
        if m.t > slots:
            raise ValueError(f"t = {m.t} filter sub-blocks do not fit the {slots} columns of "
                             f"{c.r * c.height}-row blocks on the {cfg.rows} x {cfg.cols} array")
    # GLB: the ifmap and psum banks (a run's filters stream through the filter store) and the
    # resident filters' banks.
    fbanks = _filter_banks(m)
    if m.glb_ifmap_banks + m.glb_psum_banks + fbanks > cfg.glb_banks:
        raise ValueError(f"{m.glb_ifmap_banks} ifmap + {m.glb_psum_banks} psum "
                         + (f"+ {fbanks} resident filter " if fbanks else "")
                         + f"banks exceed the GLB's {cfg.glb_banks}")
    bank = _bank_bytes(cfg)
    biggest = _max_tile(m, m.tile_units)
    fs = _ceil(lay.F, m.out_strips)
    psum = biggest * min(m.p * m.t, lay.Mg) * fs * 4
    bias = _bias_bytes(m)
    if m.psum_buffers * (psum + bias) > m.glb_psum_banks * bank:
        raise ValueError(f"{'twice ' if m.psum_buffers == 2 else ''}the psums of a tile "
                         f"({biggest} output rows x "
                         f"{min(m.p * m.t, lay.Mg)} filters x {fs} columns, FP32: {psum} bytes)"
                         + (f" and the bias rows ({bias} bytes)" if bias else "")
                         + f" exceed the {m.glb_psum_banks} psum banks "
                         f"({m.glb_psum_banks * bank} bytes)")
    need = _ifmap_need(m, m.tile_units)
    if need > m.glb_ifmap_banks * bank:
        raise ValueError(f"the ifmaps of two passes ({need} bytes) exceed the "
                         f"{m.glb_ifmap_banks} ifmap banks ({m.glb_ifmap_banks * bank} bytes)")


class _Shape:
    """The parts of a mapping the GLB plan needs, before tiles and banks are known."""

    def __init__(self, layer, config, p, q, t, row_chunks, col_chunks, pack, out_strips,
                 resident_filters):
        self.layer, self.config = layer, config
        self.p, self.q, self.t = p, q, t
        self.row_chunks, self.col_chunks = row_chunks, col_chunks
        self.pack, self.out_strips = pack, out_strips
        self.resident_filters = resident_filters

    units_per_pass = Mapping.units_per_pass
    filter_blocks = Mapping.filter_blocks

    @functools.cached_property
    def steps(self):
        return Mapping.steps.func(self)


def _plan_glb(shape, tile_units, psum_buffers=1):
    """Return ``(tile_units, ifmap banks, psum banks)``: the largest tiles (or ``tile_units``)
    whose psums (``psum_buffers`` tiles' worth) and ifmaps fit the GLB beside the resident
    filters' banks (if any), every bank not needed for ifmaps or filters given to psums."""
    lay, cfg = shape.layer, shape.config
    NE, E = lay.N * lay.E, lay.E
    bank = _bank_bytes(cfg)
    nf = min(shape.p * shape.t, lay.Mg)
    fs = _ceil(lay.F, shape.out_strips)
    unit_psum = nf * fs * 4
    bias = _bias_bytes(shape)
    banks = cfg.glb_banks - _filter_banks(shape)

    def fits(B):
        ifmap_banks = max(1, _ceil(_ifmap_need(shape, B), bank))
        psum_banks = _ceil(psum_buffers * (_max_tile(shape, B) * unit_psum + bias), bank)
        return ifmap_banks + psum_banks <= banks, ifmap_banks

    if tile_units is not None:
        _positive_int("tile_units", tile_units)
        ifmap_banks = fits(min(tile_units, NE))[1]
        return tile_units, ifmap_banks, max(1, banks - ifmap_banks)
    ok, ifmap_banks = fits(1)
    if not ok:
        raise ValueError(f"the GLB's {banks} banks of {bank} bytes"
                         + (" left beside the resident filters" if banks < cfg.glb_banks else "")
                         + f" cannot hold the psums of one output row ({unit_psum} bytes: {nf} "
                         f"filters x {fs} columns, FP32) and the ifmaps of two passes "
                         f"({_ifmap_need(shape, 1)} bytes)")
    lo, hi = 1, NE
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid)[0]:
            lo = mid
        else:
            hi = mid - 1
    B = lo
    # Whole images, or whole passes of the first geometry, per tile: within an image, whole
    # passes when that takes fewer passes than balanced tiles (as many, fewer units each).
    u_cap = next(_geometry(shape))[-1]
    if shape.pack == "image" and B < E:
        pieces = _split(E, B)
        if B >= u_cap and _ceil(E, u_cap) < sum(_ceil(k, u_cap) for k in pieces):
            B = B // u_cap * u_cap
        else:
            B = max(pieces)
    elif shape.pack == "image":
        B = B // E * E
    elif B >= u_cap and B < NE:
        B = B // u_cap * u_cap
    ifmap_banks = fits(B)[1]
    return B, ifmap_banks, banks - ifmap_banks


def _row_chunks(R, rows, heights, r):
    if heights is None:
        heights = _split(R, rows)
    elif isinstance(heights, int):
        heights = _split(R, heights)
    heights = tuple(heights)
    rs = (r,) * len(heights) if isinstance(r, int) else tuple(r)
    if len(rs) != len(heights):
        raise ValueError(f"r must be an int or one value per row chunk ({len(heights)}), "
                         f"not {r!r}")
    out, start = [], 0
    for h, rr in zip(heights, rs):
        _positive_int("row chunk height", h)
        out.append(RowChunk(start, h, rr))
        start += h
    return tuple(out)


def make_mapping(layer, config, *, p, q, t=1, rows=None, r=1, col_width=None, tile_units=None,
                 pack="image", out_strips=None, psum_buffers=1, diagonal=True,
                 resident_filters=False):
    """Return the :class:`Mapping` with these numbers, filling in the rest.

    ``rows``: the row-chunk heights (a sequence summing to ``R``), or the largest height (an
    int: balanced chunks), or None (balanced chunks of at most the array's rows). ``r``: one
    value, or one per row chunk. ``col_width``: the largest column-chunk width (None: as wide as
    the scratchpads allow). ``tile_units``: None for the largest tiles that fit the GLB.
    ``pack``: ``"image"`` or ``"flat"`` (:class:`Mapping`); ``psum_buffers`` (1 or 2),
    ``diagonal`` and ``resident_filters`` as there. ``out_strips``: None for the fewest
    (the smallest power-of-two multiple of ``ceil(F / 4095)``) with which the GLB holds a tile.
    Raises ValueError naming the limit a mapping exceeds.
    """
    if not isinstance(layer, Conv2d):
        raise TypeError(f"layer must be a Conv2d, not {layer!r}")
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {config!r}")
    _check_limits(layer, config)
    for name, value in (("p", p), ("q", q), ("t", t)):
        _positive_int(name, value)
    row_chunks = _row_chunks(layer.R, config.rows, rows, r)
    if col_width is None:
        col_width = min(layer.S, config.ifmap_spad_depth // q,
                        config.filter_spad_depth // (p * q))
        if col_width < 1:
            raise ValueError(f"q = {q} channels (p = {p} filters) leave no room for one filter "
                             f"column in the scratchpads (ifmap {config.ifmap_spad_depth}, filter "
                             f"{config.filter_spad_depth})")
    _positive_int("col_width", col_width)
    col_chunks = tuple((c.start, len(c)) for c in _ranges(_split(layer.S, col_width)))
    if pack not in PACKINGS:
        raise ValueError(f"pack must be one of {', '.join(PACKINGS)}, not {pack!r}")
    least = _ceil(layer.F, MAX_WIDTH)
    if out_strips is not None:
        _positive_int("out_strips", out_strips)
    if p > layer.Mg or q > layer.Cg or any(c.r * c.height > config.rows for c in row_chunks):
        # Let the Mapping's own checks say what is wrong.
        return Mapping(layer, config, p, q, t, row_chunks, col_chunks, tile_units or 1, pack,
                       out_strips or least, 1, max(1, config.glb_banks - 1), psum_buffers,
                       diagonal, resident_filters)
    options = [out_strips] if out_strips is not None else \
        [least << k for k in range(layer.F.bit_length()) if least << k < layer.F] + [layer.F]
    for strips in options:
        shape = _Shape(layer, config, p, q, t, row_chunks, col_chunks, pack, strips,
                       resident_filters)
        try:
            tile_units, ifmap_banks, psum_banks = _plan_glb(shape, tile_units, psum_buffers)
        except ValueError:
            if strips == options[-1]:
                raise
            continue
        return Mapping(layer, config, p, q, t, row_chunks, col_chunks, tile_units, pack, strips,
                       ifmap_banks, psum_banks, psum_buffers, diagonal, resident_filters)


# The cost model

def predict(mapping, config=None, *, model=None):
    """Return the analytic estimate (module docstring) of running ``mapping``.

    A dict: ``cycles`` (``array_cycles`` on chip, ``dram_cycles``; ``bound`` the stream that
    limits most; ``breakdown`` of the cycles: compute, pass overhead, filter load, pass gap
    (the chains draining between passes), psum wait (psum GIN and GON, psums of the run
    before), stall (a stream slower than the PEs), reconfigure, fill, store wait, DRAM),
    ``macs``, ``utilization`` (MACs / (PEs * cycles)),
    ``active_pes`` (in the fullest pass), ``passes``, ``runs``; access counts ``dram`` (bytes,
    by data type; ``dram_bytes`` the total), ``glb`` (reads and writes), ``noc`` (values
    delivered to or moved between PEs), ``spad`` (scratchpad reads and writes), all in values;
    ``energy`` (normalized, by level) and ``energy_per_mac``. ``config``, when given, must be
    the mapping's.
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"mapping must be a Mapping, not {mapping!r}")
    if config is not None and config != mapping.config:
        raise ValueError(f"config {config.name!r} is not the one the mapping was made for "
                         f"({mapping.config.name!r})")
    model = CostModel() if model is None else model
    return _evaluate(mapping, model)


def _evaluate(m, model):
    lay, cfg = m.layer, m.config
    G, Mg, F, U = lay.groups, lay.Mg, lay.F, lay.U
    NE = lay.N * lay.E
    ms = cfg.mac_stages
    Vf, Vi = cfg.filter_values_per_packet, cfg.ifmap_values_per_packet
    Vp, Vg = cfg.psum_values_per_packet, cfg.gon_values_per_packet
    bw = model.dram_bytes_per_cycle or cfg.axi_data_bits / 8
    cmd = _command_cycles(cfg, model)
    reconf = noc_config_words(cfg) * cmd if model.reconfig_cycles is None \
        else model.reconfig_cycles
    tiles = len(m.tiles)

    fb_sizes = _fb_classes(m)
    step_runs = _step_runs(m)
    geo = [(m.row_chunks[k].height, len(sizes)) for k, _, _, sizes, _, _ in step_runs]
    geo_changes = sum(a != b for a, b in zip(geo, geo[-1:] + geo[:-1])) if len(set(geo)) > 1 \
        else 0

    if model.fill not in ("reconfig", "run", "pass"):
        raise ValueError(f"CostModel.fill must be 'reconfig', 'run' or 'pass', not {model.fill!r}")
    store = cfg.glb_filter_depth * cfg.glb_word_bits // 8
    buffers = _glb_counts(m)
    shares = buffers["ifmap"] >= SHARE_BUFFERS
    array = 0.0
    bound = Counter()
    dram = Counter()
    glb_r, glb_w, noc = Counter(), Counter(), Counter()
    spad_r = spad_w = 0
    active = passes = runs = 0
    first_in = start_fill = 0
    parts = Counter()
    for cols, (nf, n_fb) in itertools.product(m.strips, fb_sizes.items()):
        fs = len(cols)
        t_eff = _ceil(nf, m.p)
        p_eff = _ceil(nf, t_eff)
        geo_fill = 0
        # Filters come from DRAM per tile, or once per filter block when resident (for the
        # first strip); bias rows (a row of F * p FP32 values per filter sub-block, from a
        # word boundary) once per strip and filter block, kept while the tiles go through.
        loads = tiles if not m.resident_filters else int(cols == m.strips[0])
        word = cfg.glb_word_bits // 8
        if lay.bias:
            dram["bias"] += n_fb * sum(_ceil(f * fs * 4, word) * word
                                       for f in _balanced(nf, t_eff))
            glb_w["bias"] += n_fb * nf * fs
        for k, s0, sw, csets, first, n_step in step_runs:
            ch = m.row_chunks[k]
            h, i0 = ch.height, ch.start
            r_eff, q_eff, nc = len(csets), max(csets), sum(csets)
            D = r_eff * h
            u_cap = m.units_per_pass(h, r_eff, t_eff)
            st = m._stats(u_cap, i0, h)
            qs = q_eff * sw
            per_x = p_eff * qs if p_eff >= ms else p_eff + (qs - 1) * ms
            per_x = max(per_x, U * q_eff)
            # Back to back, a PE's next primitive starts a cycle after this one's last MAC.
            t_prim = fs * per_x + 1
            # A PE's psums are final group by group (filter_group): the PE above starts a
            # column once the one below has finished its largest group, fg of p filters.
            fg = filter_group(p_eff, ms)
            lag = max(per_x * fg / p_eff - fg, 0) + ms + 3
            fill = (D - 1) * lag
            geo_fill = max(geo_fill, fill)
            fvals = nf * nc * h * sw
            # Filter values per cycle: the filter GIN's, or DRAM's when a run's filters do not
            # fit the filter store (no prefetch). Staggered PE rows load one after the other,
            # so only lockstep modes wait for the whole array's filters.
            f_rate = Vf if fvals * 2 <= store or m.resident_filters else min(Vf, bw / 2)
            t_fload = p_eff * qs
            if model.fill != "reconfig":
                t_fload = max(t_fload, fvals / f_rate)
            wp = (fs - 1) * U + sw
            vcols = _window(lay, cols, s0, sw)
            ifmap_sent = st.sent_rows * nc * wp
            ifmap_read = st.read_rows * nc * vcols
            outs = NE * nf * fs
            psin = outs if (not first or lay.bias) else 0
            # A pass's ifmap row goes out once the one before with its tags is sent, to the PEs
            # sharing it: with several output rows (units) in a pass, the PEs of a diagonal,
            # U rows (U lags) apart, span rows between the lowest and the highest. Each takes
            # the next pass's first columns into the ring entries its last window leaves free,
            # so at the end of a pass the top one holds back the others by the span's stagger
            # less (as calibrated on the RTL) half those spare columns; at the start of the next
            # the lower ones wait in the same way for the upper ones to take their first shared
            # rows, which their whole spare columns absorb (all of it at U = 1 so far, nothing
            # at U = 4 with one spare value: conv1/32 on eyeriss at 16 B/cycle, 1.000 of the
            # RTL). Rows sent per filter row (not diagonal) do not hold each other back.
            spare = (cfg.ifmap_spad_depth // q_eff - sw) / U
            span = min(U * ((h - 1) // U), U * (u_cap - 1))
            gap = (max(0.0, span * lag - spare / 2 * per_x)
                   + max(0.0, span * lag - spare * per_x)) if m.diagonal else 0

            # The chains of a pass run in lockstep (they share ifmap rows): at each output
            # column every chain-bottom PE takes p initial psums and every chain top emits p
            # final ones. Buffered a column ahead in the PEs, they cost nothing while the
            # psum GIN (Vp values a cycle) and the GON (Vg) keep up on average; a column whose
            # psums could not come ahead waits for the last of n chains to get its p psums,
            # which the GIN brings Vp at a time to one PE after the other (each PE's first
            # packet sent ahead): burst[n] cycles.
            n_max = t_eff * u_cap
            in_rate = p_eff / Vp if psin else 0
            burst = [max(0, n * (p_eff / Vp - 1) - (p_eff - Vp)) if psin else 0
                     for n in range(n_max + 1)]
            stall = fs * sum(max(0, t_eff * u * max(in_rate, p_eff / Vg) - per_x)
                             for u in st.units)
            run_wait = 0
            if psin and not first:
                # The run's first pass needs the psums the run before has just computed (the
                # same units; every other run, its first or last configuration group): the
                # chain drains, and the psums come back through the GLB.
                wait = [max(0, (D - 1) * lag + model.psum_turnaround + burst[n] - t_fload - gap)
                        if n else 0 for n in range(n_max + 1)]
                run_wait = sum(wait[t_eff * a] + wait[t_eff * b] for a, b in st.repeats) / 2
            compute = max(st.passes * (t_prim + gap) + stall + run_wait,
                          tiles * (D * lag + model.glb_latency))
            streams = {"compute": compute, "ifmap GIN": ifmap_sent / Vi, "psum GIN": psin / Vp,
                       "GON": outs / Vg, "filter GIN": tiles * fvals / f_rate}
            which = max(streams, key=streams.get)
            fills = {"reconfig": st.changes, "run": tiles, "pass": st.passes}[model.fill]
            changed = sum(_words_changed(cfg, h, U, r_eff, t_eff, u_cap, a, b, m.diagonal)
                          for order in st.orders for a, b in itertools.pairwise(order))
            run_reconf = cmd * changed if model.reconfig_cycles is None else st.changes * reconf
            # After a drain the first column's psums cannot come ahead either.
            refill = fill + burst[t_eff * min(st.max_units, u_cap)]
            cycles = tiles * t_fload + streams[which] + run_reconf + fills * refill
            count = n_fb * n_step
            array += cycles * count
            bound[which] += streams[which] * count
            parts["compute"] += st.passes * fs * per_x * count
            parts["pass overhead"] += st.passes * count
            parts["filter load"] += tiles * t_fload * count
            parts["pass gap"] += st.passes * gap * count
            parts["psum wait"] += (stall + run_wait) * count
            parts["stall"] += (streams[which] - st.passes * (t_prim + gap) - stall
                               - run_wait) * count
            parts["reconfigure"] += run_reconf * count
            parts["fill"] += fills * refill * count
            macs_done = NE * nf * nc * h * sw * fs
            noc_f = st.sum_max_units * nf * nc * h * sw
            noc_i = NE * t_eff * nc * h * wp
            # Each filter row of a sub-block and channel set from a word boundary.
            fbytes = h * sum(_ceil(f * c * sw * 2, word) * word
                             for f in _balanced(nf, t_eff) for c in csets)
            dram["filter"] += loads * fbytes * count
            # The command lists are read from DRAM too (16 bytes a command), evenly stepping
            # SEND and RECV rows one command each (sw.program.row_groups): the IFMAP row
            # groups of each channel set, a PSUM and a RECV command per band of PE rows (at
            # least two) each pass, a FILTER command per filter row of a run (and a LOAD each,
            # every pass, when they stream through the GLB), about a LOAD and a PE_CFG per
            # pass, and the NoC configuration words that change.
            per_pass = max(2, cfg.rows // D)
            frows = t_eff * r_eff * h
            commands = (st.row_groups * r_eff
                        + (per_pass if psin else 0) * st.passes + per_pass * st.passes
                        + 2 * st.passes + changed
                        + (tiles * frows if fvals * 2 <= store else 2 * st.passes * frows))
            dram["commands"] += commands * COMMAND_BYTES * count
            glb_w["filter"] += loads * fvals * count
            glb_r["filter"] += tiles * fvals * count
            # Ifmaps are loaded per pass as the compiler lays them out: each row of a channel
            # set as wide as its window with the padding columns, from a word boundary.
            rows = st.loaded_rows if shares else st.valid_rows
            loaded = rows * sum(_ceil(wp * c * 2, word) * word for c in csets)
            dram["ifmap"] += loaded * count
            glb_w["ifmap"] += loaded // 2 * count
            glb_r["ifmap"] += ifmap_read * count
            glb_r["psum"] += psin * count
            glb_w["psum"] += outs * count
            noc["filter"] += noc_f * count
            noc["ifmap"] += noc_i * count
            noc["psum GIN"] += psin * count
            noc["psum local"] += outs * (D - 1) * count
            noc["GON"] += outs * count
            spad_r += (3 * macs_done + outs * D) * count
            spad_w += (macs_done + noc_f + noc_i + psin + outs * (D - 1)) * count
            active = max(active, min(st.max_units, u_cap) * t_eff * D)
            passes += st.passes * count
            runs += tiles * count
            if first:
                first_in = max(first_in, min(fvals * 2, store)
                               + st.max_valid_rows * nc * vcols * 2)
                start_fill = max(start_fill, fill + reconf)
        # Changes of chunk geometry between consecutive steps: reprogram, drain and refill.
        geo = n_fb * tiles * geo_changes
        array += geo * (reconf + (geo_fill if model.fill == "reconfig" else 0))
        parts["reconfigure"] += geo * reconf
        parts["fill"] += geo * geo_fill if model.fill == "reconfig" else 0
    array += start_fill
    parts["fill"] += start_fill
    dram["commands"] += noc_config_words(cfg) * COMMAND_BYTES / G     # the first NoC set-up
    outputs = NE * Mg * F
    dram["output"] += outputs * model.output_bytes
    glb_r["output"] += outputs

    def scale(counter):
        return {key: value * G for key, value in counter.items()}

    dram, glb_r, glb_w, noc = scale(dram), scale(glb_r), scale(glb_w), scale(noc)
    spad_r, spad_w, passes, runs = spad_r * G, spad_w * G, passes * G, runs * G
    array *= G
    dram_bytes = sum(dram.values())
    dram_cycles = dram_bytes / bw
    last_out = (_max_tile(m, m.tile_units) * min(m.p * m.t, Mg) * len(m.strips[0])
                * model.output_bytes)
    exposed = (first_in + last_out) / bw
    # A job (group, filter block, strip, tile) writes its first psums over the outputs of the
    # job before in the region, block by block, each after the store of the block it replaces.
    # With several steps a block is a pass, stored a run before: its store has the P - 1 other
    # passes of a run to take (P passes a run), beside those passes' loads (L bytes each, one
    # pass's loaded ahead when DRAM has time to spare); what it takes beyond them the next job
    # waits for, at each of its P blocks (alexnet.conv1 at batch 1, 32 filters, 2.4 B/cycle on
    # the eyeriss RTL: tiles of two passes lost 5.4k cycles a job to it, single-pass tiles in
    # two regions none). With one step a block holds
    # all passes with one NoC configuration (one, usually): with one psum region, each job but
    # the last waits for its outputs to be stored before the next one starts. The store shares
    # the memory with the loads of the next job's second pass (its first pass's are in).
    store_wait = 0
    several = sum(run[-1] for run in step_runs) > 1 and m._main_stats.passes > tiles
    jobs = len(m.strips) * tiles * sum(fb_sizes.values()) * G
    if m.psum_buffers == 1 and not several:
        pass_reads = (dram_bytes - dram["output"]) / passes
        store_wait = (dram["output"] - last_out
                      + (jobs - 1) * min(pass_reads, dram["output"] / jobs)) / bw
    elif m.psum_buffers == 1 and jobs > 1:
        P = m._main_stats.passes / tiles
        block = dram["output"] / (jobs * P)
        L = (dram_bytes - dram["output"]) / passes
        ahead = min(L, max(0.0, array - dram_cycles) * bw / jobs)
        store_wait = (jobs - 1) * P * max(0.0, (block + (P - 1) * L - ahead) / bw
                                          - (P - 1) * array / passes)
    if model.dram_overlap:
        # Loads and computing overlap, but not perfectly when both need about the same time:
        # on the RTL (eyeriss, batch 4) array and DRAM within 5% of each other took 1.12-1.13x
        # the larger with two ifmap buffers (alexnet.conv5), 1.08x with seven (conv4). Passes
        # and transfers on one timeline (_timeline) see how far the loads can run ahead of
        # bursts of stores (alexnet.conv1 at batch 4, 2.4 B/cycle, where a pass that read rows
        # from the buffer of the pass before held it one pass longer: 1.073x the norm on the
        # RTL, 1.018x the timeline with a buffer less).
        steps = sum(run[-1] for run in step_runs)
        P = max(1, round(m._main_stats.passes / tiles))
        n = jobs * steps * P
        line = _timeline(jobs, steps, P, array / n,
                         (dram_bytes - dram["output"] - dram["filter"]) / n,
                         dram["filter"] / (jobs * steps), dram["output"] / jobs, bw,
                         buffers["ifmap"],
                         max(1, buffers["filter"]), buffers["psum"])
        array += store_wait
        cycles = max((array ** 6 + dram_cycles ** 6) ** (1 / 6) + exposed, line)
    else:
        array += store_wait
        cycles = array + dram_cycles
    parts = {key: value * G for key, value in parts.items()}
    parts["store wait"] = store_wait
    parts["DRAM"] = cycles - array
    which = max(bound, key=bound.get)
    if dram_cycles > array:
        which = "DRAM"
    macs = lay.macs
    dram_values = (dram.get("ifmap", 0) / 2 + dram.get("filter", 0) / 2
                   + dram.get("commands", 0) / 2 + dram.get("bias", 0) / 4 + outputs * G)
    glb_total = sum(glb_r.values()) + sum(glb_w.values())
    noc_total = sum(noc.values())
    energy = {"dram": model.e_dram * dram_values, "glb": model.e_glb * glb_total,
              "noc": model.e_noc * noc_total, "spad": model.e_spad * (spad_r + spad_w),
              "mac": model.e_mac * macs}
    energy["total"] = sum(energy.values())
    return {
        "layer": lay.name,
        "config": cfg.name,
        "cycles": math.ceil(cycles),
        "array_cycles": math.ceil(array),
        "dram_cycles": math.ceil(dram_cycles),
        "bound": which,
        "breakdown": parts,
        "macs": macs,
        "pes": cfg.num_pes,
        "active_pes": active,
        "utilization": macs / (cfg.num_pes * cycles),
        "passes": passes,
        "runs": runs,
        "dram": {**dram, "total": dram_bytes},
        "dram_bytes": dram_bytes,
        "glb": {"reads": glb_r, "writes": glb_w, "total": glb_total},
        "noc": {**noc, "total": noc_total},
        "spad": {"reads": spad_r, "writes": spad_w, "total": spad_r + spad_w},
        "energy": energy,
        "energy_per_mac": energy["total"] / macs,
    }


# The search

def _row_plans(R, rows):
    """Candidate row-chunk height lists: balanced splits and full chunks plus a remainder."""
    plans = set()
    least = _ceil(R, rows)
    for chunks in range(least, min(R, least + 3) + 1):
        plans.add(_balanced(R, chunks))
    for h in range(1, min(R, rows) + 1):
        if _ceil(R, h) <= least + 3:
            plans.add((h,) * (R // h) + ((R % h,) if R % h else ()))
    return sorted(plans, key=lambda hs: (len(hs), hs))


def _r_options(h, rows, rmax):
    """r values whose blocks fill the most PE rows (and the deepest chain among the next)."""
    opts = {}
    for r in range(1, min(rows // h, rmax) + 1):
        opts[r] = (rows // (r * h)) * r * h
    best = max(opts.values())
    return sorted(r for r, fill in opts.items() if fill >= best - (h if h > 1 else 0))


def _lower_bound(lay, cfg, plan, rs, q, sw):
    """An optimistic estimate of the array cycles of (row chunks, r per chunk, q)."""
    Vs = min(cfg.gon_values_per_packet, cfg.psum_values_per_packet)
    ns = _ceil(lay.S, sw)
    total = 0.0
    for h, r in zip(plan, rs):
        slots = (cfg.rows // (r * h)) * cfg.cols
        for nc in _split(lay.Cg, q * r):
            q_eff = _ceil(nc, _ceil(nc, q))
            stream = max(1.0, slots / (Vs * q_eff * _ceil(lay.S, ns)))
            total += lay.N * lay.E * lay.Mg * lay.F / slots * q_eff * lay.S * stream
    return total


def _tp_options(lay, cfg, slots, p_max):
    """(t, p) pairs that fill the columns and the filters well: per t, its best balanced p."""
    NE = lay.N * lay.E
    ms = cfg.mac_stages
    scored = []
    for t in range(1, min(slots, lay.Mg) + 1):
        u = min(slots // t, NE)
        col_fill = t * NE / (_ceil(NE, u) * slots)
        nb0 = _ceil(lay.Mg, t * p_max)
        options = []
        for nb in (nb0, nb0 + 1):
            p = _ceil(lay.Mg, t * nb)
            if p > p_max or _ceil(lay.Mg, p) < t:
                continue
            fill = lay.Mg / (_ceil(lay.Mg, p * t) * p * t)
            options.append((col_fill * fill / max(1.0, ms / p), p * t, t, p))
        if options:
            scored.append(max(options))
    if not scored:
        return []
    best = max(s[0] for s in scored)
    keep = sorted((s for s in scored if s[0] >= 0.9 * best), reverse=True)
    return [(t, p) for _, _, t, p in keep[:10]]


def _candidates(lay, cfg):
    sw_max = min(lay.S, cfg.ifmap_spad_depth, cfg.filter_spad_depth)
    sw = _ceil(lay.S, _ceil(lay.S, sw_max))
    combos = []
    for plan in _row_plans(lay.R, cfg.rows):
        heights = sorted(set(plan))
        for q in range(1, min(lay.Cg, cfg.ifmap_spad_depth // sw,
                              cfg.filter_spad_depth // sw) + 1):
            rmax = _ceil(lay.Cg, q)
            options = [_r_options(h, cfg.rows, rmax) for h in heights]
            for rsel in itertools.product(*options):
                rmap = dict(zip(heights, rsel))
                rs = tuple(rmap[h] for h in plan)
                combos.append((_lower_bound(lay, cfg, plan, rs, q, sw), plan, rs, q))
    best = min(c[0] for c in combos)
    combos = sorted(c for c in combos if c[0] <= 1.25 * best)[:40]
    # The fewest output strips that fit, and more (smaller psum tiles, so more rows per tile)
    # for wide rows.
    least = _ceil(lay.F, MAX_WIDTH)
    strip_options = [None] + [least * k for k in (2, 4) if least * k * 12 <= lay.F]
    glb_bytes = cfg.glb_banks * _bank_bytes(cfg) + cfg.glb_filter_depth * cfg.glb_word_bits // 8
    for _, plan, rs, q in combos:
        p_max = min(cfg.psum_spad_depth, cfg.filter_spad_depth // (q * sw), lay.Mg)
        slots = min((cfg.rows // (r * h)) * cfg.cols for h, r in zip(plan, rs))
        for t, p in _tp_options(lay, cfg, slots, p_max):
            # Resident filters when a filter block's take at most half the GLB.
            resident = (False, True) if (min(p * t, lay.Mg) * lay.Cg * lay.R * lay.S * 4
                                         <= glb_bytes) else (False,)
            for pack, strips, buffers, diagonal, res in itertools.product(
                    PACKINGS, strip_options, (1, 2), (True, False) if max(plan) > 1 else (True,),
                    resident):
                yield {"p": p, "q": q, "t": t, "rows": plan, "r": rs, "col_width": sw,
                       "pack": pack, "out_strips": strips, "psum_buffers": buffers,
                       "diagonal": diagonal, "resident_filters": res}


OBJECTIVES = ("cycles", "energy", "dram")


@functools.lru_cache(maxsize=256)
def _map_layer(lay, cfg, objective, model, tolerance):
    _check_limits(lay, cfg)
    scored = []
    errors = Counter()
    for kw in _candidates(lay, cfg):
        try:
            m = make_mapping(lay, cfg, **kw)
        except ValueError as err:
            errors[str(err)] += 1
            continue
        scored.append((_evaluate(m, model), m))
    if not scored:
        # The smallest mapping says which limit stops the layer.
        make_mapping(lay, cfg, p=1, q=1, t=1, rows=1, r=1, col_width=1)
        raise ValueError(f"{lay.name}: no legal mapping on {cfg.name}: "
                         f"{errors.most_common(1)[0][0] if errors else 'no candidates'}")
    if objective == "cycles":
        fastest = min(pred["cycles"] for pred, _ in scored)
        pool = [s for s in scored if s[0]["cycles"] <= fastest * (1 + tolerance)]

        def key(s):
            return (s[0]["dram_bytes"], s[0]["energy"]["total"], s[0]["cycles"])
    elif objective == "energy":
        pool = scored

        def key(s):
            return (s[0]["energy"]["total"], s[0]["cycles"])
    else:
        pool = scored

        def key(s):
            return (s[0]["dram_bytes"], s[0]["cycles"])
    last = None
    for _, m in sorted(pool, key=key) + sorted(scored, key=key):
        try:
            m.check_noc()
        except ValueError as err:
            last = err
            continue
        return m
    raise ValueError(f"{lay.name}: no mapping's NoC configuration fits {cfg.name}: {last}")


def map_layer(layer, config, *, objective="cycles", model=None, tolerance=0.005):
    """Return the best legal :class:`Mapping` of ``layer`` on ``config``.

    ``objective``: ``"cycles"`` (the fewest predicted cycles; mappings within ``tolerance`` of
    the fastest count as tied and the least DRAM traffic, then energy, wins), ``"energy"`` or
    ``"dram"``. Every returned mapping's placements pass :func:`~rsaccel.sw.noc_ids.noc_map`.
    Raises ValueError saying which limit stops a layer that cannot run.
    """
    if not isinstance(layer, Conv2d):
        raise TypeError(f"layer must be a Conv2d, not {layer!r}")
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {config!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    return _map_layer(layer, config, objective, CostModel() if model is None else model,
                      tolerance)


# Text

def _picture(mapping, sets, segments):
    cfg = mapping.config
    grid = [["."] * cfg.cols for _ in range(cfg.rows)]
    symbols = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for seg in segments:
        s = sets[seg.set]
        width = s.width - seg.j0 if seg.width is None else seg.width
        for i in range(s.height):
            for j in range(width):
                grid[seg.row + i][seg.col + j] = symbols[seg.set % len(symbols)]
    return ["    " + "".join(row) for row in reversed(grid)]


def format_mapping(mapping, prediction=None):
    """Return a human-readable description of a mapping and its prediction (:func:`predict`,
    computed when not given): numbers, chunks, GLB split, the first pass's placement, cycles,
    utilization, DRAM traffic and energy."""
    m, lay, cfg = mapping, mapping.layer, mapping.config
    pred = predict(m) if prediction is None else prediction
    steps = sum(run[-1] for run in _step_runs(m))
    out = [
        (f"{lay.name}: N={lay.N} C={lay.C} M={lay.M} H x W={lay.H}x{lay.W} "
         f"R x S={lay.R}x{lay.S} U={lay.U} pad={lay.padding} groups={lay.groups} "
         f"-> E x F={lay.E}x{lay.F}, {lay.macs / 1e9:.3f} GMAC"),
        f"array: {cfg.name}, {cfg.rows} x {cfg.cols} PEs",
        "mapping: " + " ".join(f"{k}={v}" for k, v in m.numbers().items()),
        "  filter rows: " + ", ".join(f"{c.start}..{c.start + c.height - 1} (r={c.r})"
                                      for c in m.row_chunks),
        "  filter cols: " + ", ".join(f"{s0}..{s0 + w - 1}" for s0, w in m.col_chunks),
        (f"  tiles per group: {len(m.tiles)} (at most {m.tile_units} output rows, "
         f"{m.pack}-packed); GLB banks: {m.glb_ifmap_banks} ifmap, {m.glb_psum_banks} psum"
         + (" (two tiles' psums)" if m.psum_buffers == 2 else "")
         + ("" if m.diagonal else "; ifmap rows sent per filter row")),
        (f"  passes: {pred['passes']} in {pred['runs']} runs; reduction steps per output: "
         f"{steps}"),
        "  first pass (rows top to bottom, one symbol per set):",
    ]
    if m.resident_filters:
        out.insert(-2, f"  filters: a filter block's kept in the GLB for its strips and tiles "
                       f"({_filter_banks(m)} banks beside the filter store)")
    out += _picture(m, *m.placement)
    ideal = lay.macs / cfg.num_pes
    out.append(f"prediction: {pred['cycles']:,} cycles (array {pred['array_cycles']:,}, DRAM "
               f"{pred['dram_cycles']:,}; bound by {pred['bound']})")
    out.append("  cycles / (MACs / PEs): " + ", ".join(
        f"{k} {v / ideal:.3f}" for k, v in pred["breakdown"].items() if v))
    out.append(f"  utilization {pred['utilization']:.1%}, active PEs {pred['active_pes']}/"
               f"{pred['pes']} ({pred['active_pes'] / pred['pes']:.0%})")
    out.append("  DRAM " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in pred["dram"].items()))
    out.append(f"  energy/MAC {pred['energy_per_mac']:.2f} (" + ", ".join(
        f"{k} {v / pred['macs']:.2f}" for k, v in pred["energy"].items() if k != "total") + ")")
    ref = EYERISS_ALEXNET.get(lay.name)
    if ref and lay.N == 4:
        out.append(f"  Eyeriss (12 x 14, batch 4): utilization {ref['utilization']:.0%}, active "
                   f"PEs {ref['active_pes']}, DRAM {ref['dram_bytes'] / 1e6:.1f} MB")
    return "\n".join(out)
