"""Compile a mapped convolution layer into the command lists of :mod:`rsaccel.hw.commands`.

:func:`compile_layer` turns a :class:`~rsaccel.sw.mapper.Mapping` into a :class:`Program`: the
seven command lists, the layout of everything in host memory relative to a base address, and
the plan of the global buffer (GLB). :meth:`Program.image` lays out a layer's data with its
descriptor and lists; :meth:`Program.output` reads the results back; :func:`chain` places
several programs so that their descriptors form one chain. :mod:`rsaccel.sw.program_model` runs
a program on a memory image.

Structure
---------
The mapping's passes (:meth:`~rsaccel.sw.mapper.Mapping.passes`) come in *jobs* (group, filter
block, output strip, tile), each a sequence of *runs* (one per reduction step, in order). The
passes of a run may go in any order (an output's accumulation order depends on the steps
only): they are grouped by NoC configuration, every other run taking the groups in reverse, so
that the NoC is reprogrammed once per change of configuration. A run is cut into *blocks*:
consecutive passes with one NoC configuration and one role per PE (a pass with fewer units,
whose idle PEs must match no tag, has its own). A block has one ``PE_CFG`` per rectangle of PEs
with the same primitive (``count`` = the block's passes; filters loaded in a run's first block,
and again only where a PE's role changes) and one ``RECV`` segment per psum source (the top PE
of each chain): the source's psum rows of all the block's passes, in pass order. When a job
has several steps (its psums are read back), every pass is a block of its own, so that a pass
waits for the psums of its own units only and the next run starts while this one finishes.

Psums of a job live in one GLB region, one FP32 row of ``F * p`` values per (output row,
filter sub-block), every row read back starting at a word boundary. The job's first run lays
them out (its segments one after the other); every later run writes each row (a segment of its
own) where the first run put it, reading and writing in place (a PE emits a psum only after
taking the one it replaces).

Host memory (offsets from the base, :attr:`Program.layout`): the descriptor, the data areas,
then the seven lists; every area 64-byte aligned, every row word aligned:

* ``zero``: one row of zeros (padding rows are sent from a copy of it in the GLB).
* ``ifmap``: per (group, image, channel set, column window) the ``H`` image rows, each
  ``W_win * q`` FP16 values column by column, channel inner (:mod:`rsaccel.hw.pe`), padding
  columns included as zeros, zero-padded to whole words.
* ``filter``: per (group, filter block, step) the run's rows, filter row ``i`` of sub-block
  ``ot`` and channel set ``cr`` as ``p * q * S_chunk`` FP16 values in the PE's address order
  ``(s * q + c) * p + f``.
* ``bias``: per (group, strip, filter block) a row per sub-block of ``F * p`` FP32 values in
  ``(x, f)`` order (the bias of filter ``f`` for every ``x``).
* ``output``: per ``STORE`` (a block of a job's last run, or the whole job when that run's
  segments are not contiguous) its GLB words as the output stage writes them (ReLU, FP16 or
  FP32, padding values included); :meth:`Program.output` reorders them into ``(N, M, E, F)``.

GLB (:attr:`Program.glb`): one or two psum regions (a job takes the one its predecessor did not
end in), the bias rows of one or two (strip, filter block)s (loaded by its first job, kept for
its tiles), the ifmap rows of one to eight passes, a row of zeros, and the filters: two runs' or
one run's at the top (the filter store), or, when one run's do not fit, a ring that rows stream
through (each loaded on its own); with ``resident_filters``, one or two filter blocks' (every
step's, loaded by the block's first runs and kept for its strips and tiles). Double buffers are used when
they fit, so that loads overlap computing. Ifmaps are fetched per pass (the mapper's bank split
is not used).

Synchronisation (why no order of events deadlocks: see :mod:`rsaccel.hw.commands`)
-------------------------------------------------------------------------------------
1. A pass's ``IFMAP`` rows, and its ``PSUM`` rows (one per chain-bottom PE), are back to back in
   their lists, without fences: a row of the next pass waits in the sender only for the row
   with its tags (the same PEs), so the chain bottoms start the next pass while the tops
   finish this one. (An ifmap row multicast along a diagonal reaches PEs of several chain
   heights: the next pass's row waits for the highest. A mapping that is not ``diagonal``
   sends rows per filter row, the bottom ones first.) ``FILTER`` rows go bottom to top of the chains, the rows of one height
   (all filter sub-blocks, interleaved by the sender) after a fence (every row, when
   streamed). Senders complete rows in order, so every count waited for is exact.
2. Readers wait on the writers of their data: ``IFMAP``/``FILTER`` rows and bias ``PSUM`` rows
   on the ``LOAD`` that brought them (a pass's first row on the last of them); read-back
   ``PSUM`` rows on ``RECV`` (every segment holding the pass's rows retired); a ``STORE`` on
   ``RECV`` (its segments retired).
3. Writers wait on the readers of what they overwrite: a ``LOAD`` into an ifmap, filter or bias
   buffer on ``IFMAP``, ``FILTER`` or ``PSUM`` at the end of the pass, run (or ring row) or job
   that used it last. A job's first run writes a region that may hold an older job's psums:
   each of its blocks starts in ``CONFIG`` with a ``NOP`` waiting on the ``STORE`` of the words
   it writes (when ``CONFIG`` has not waited that far yet), and its ``RECV`` segments wait on
   ``CONFIG`` past it (so the ``PE_CFG`` of a block is never issued before its segments can
   be). The words a block writes are those of the older job's block in the same place, stored
   one run earlier, so the outputs of a job are stored while the next one computes. Every
   ``PSUM`` read of a word precedes the ``RECV`` that rewrites it (a PE emits a psum only after
   taking the one it replaces), and so the ``STORE`` of the word. Later runs write in place,
   after the reads that the data flow puts first.
4. At most two blocks' segments are live per source: the first ``CONFIG`` command of block
   ``b`` (a ``NOC`` write or ``PE_CFG``) waits until ``RECV`` has retired every segment of block
   ``b - 2``. Every block's segments are in the ``RECV`` list before its passes' commands.
5. A change of NoC configuration is written by ``NOC`` commands (the IDs and routes that change;
   all of them after a ``CLEAR`` for the layer's first block), the first fenced (the array
   drains). The first command of each sender after the change waits on ``CONFIG`` past the
   writes (a fenced ``NOP`` when it has another wait).
6. The lists are emitted in one sequential order that meets every wait; :func:`compile_layer`
   checks that such an order exists (:meth:`Program.sequential_order`).
"""

import itertools
from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from ..config import ArrayConfig
from ..hw.commands import (
    COMMAND_BYTES,
    DESCRIPTOR_BYTES,
    Engine,
    Op,
    descriptor,
    encode_command,
)
from ..hw.noc import NocCfgOp, NocNet
from .layer_model import _check_array
from .mapper import SHARE_BUFFERS, Mapping, glb_buffers
from .noc_ids import NETWORKS, noc_map

__all__ = ["ENGINES", "Program", "chain", "compile_layer", "row_groups"]

#: The engines with a command list, in descriptor order.
ENGINES = tuple(e for e in Engine if e is not Engine.NONE)

_ALIGN = 64
_SEND_ENGINES = (Engine.FILTER, Engine.IFMAP, Engine.PSUM)


def _ceil(a, b):
    return -(-a // b)


def _align(n, a=_ALIGN):
    return _ceil(n, a) * a


# -- Program ---------------------------------------------------------------------------------------

@dataclass
class _Cmd:
    engine: Engine
    op: Op
    args: dict
    wait: tuple | None = None       # (Engine, int or marker key)
    fence: bool = False
    note: str = ""
    dram: bool = False              # args["addr"] is relative to the base

    def word(self, base, resolve, rows=None):
        """The command's 128 bits; ``rows``: the ``(repeat, glb_stride, row_step, col_step)``
        of a SEND or RECV that stands for the rows after it too."""
        args = dict(self.args)
        if rows is not None:
            args.update(zip(("repeat", "glb_stride", "row_step", "col_step"), rows))
        if self.dram:
            args["addr"] = base + args["addr"]
        wait_engine, wait_count = Engine.NONE, 0
        if self.wait is not None:
            wait_engine, wait_count = self.wait[0], resolve(self.wait)
        return encode_command(self.op, wait_engine=wait_engine, wait_count=wait_count,
                              fence=self.fence, **args)


class Program:
    """A compiled layer: command lists, host memory layout and GLB plan.

    Addresses in the lists are absolute: every method that produces words takes the ``base``
    byte address (64-byte aligned) the program's image is placed at.

    Attributes
    ----------
    config, mapping, layer : the design point, the mapping and its layer.
    relu, out_fp16, has_bias : the output stage and whether bias rows are used.
    layout : dict
        ``{area: (offset, bytes)}`` relative to the base: ``descriptor``, ``zero``, ``ifmap``,
        ``filter``, ``bias``, ``output``, and ``list.<ENGINE>`` for each command list.
    size : int
        Bytes of the image.
    glb : dict
        ``{region: (first word, words)}`` of the GLB plan, plus ``used`` and ``capacity`` (words).
    stats : dict
        Counts: ``jobs``, ``runs``, ``blocks``, ``passes``, ``noc_reprograms``,
        commands per engine (``commands``), and the buffers of each kind (``buffers``).
    """

    def __init__(self, *, config, mapping, relu, out_fp16, has_bias, cmds, markers, layout,
                 size, glb, stats, data_fill, outputs):
        self.config, self.mapping, self.layer = config, mapping, mapping.layer
        self.relu, self.out_fp16, self.has_bias = relu, out_fp16, has_bias
        self._cmds, self._markers = cmds, markers
        self.layout, self.size, self.glb, self.stats = layout, size, glb, stats
        self._fill, self._outputs = data_fill, outputs

    def _resolve(self, wait):
        ref = wait[1]
        return ref if isinstance(ref, int) else self._markers[ref]

    def commands(self, base=0):
        """Return ``{Engine: [command ints]}`` for an image at ``base``: the lists as they go to
        memory, each run of rows one command can carry in one (:func:`row_groups`)."""
        _check_base(base)
        return {e: [self._cmds[e][k].word(base, self._resolve, rows)
                    for k, rows in row_groups(self._cmds[e])] for e in ENGINES}

    def listing(self, base=0):
        """Return the command lists as text, one command a line with what it is for."""
        lines = []
        for e in ENGINES:
            lines.append(f"{e.name} ({len(self._cmds[e])} commands in "
                         f"{len(row_groups(self._cmds[e]))} words)")
            for k, c in enumerate(self._cmds[e]):
                args = dict(c.args)
                if c.dram:
                    args["addr"] = base + args["addr"]
                text = " ".join(f"{n}={hex(v) if n in ('addr', 'glb_addr') else v}"
                                for n, v in args.items())
                wait = "" if c.wait is None else f" wait {c.wait[0].name}>={self._resolve(c.wait)}"
                fence = " fence" if c.fence else ""
                lines.append(f"  {k:5d} {c.op.name} {text}{wait}{fence}  # {c.note}")
        return "\n".join(lines)

    def sequential_order(self):
        """Return one sequential order of all commands, ``[(Engine, index)]``, in which every
        command comes after the commands its wait counts (and after its list's earlier ones).
        Raises ValueError naming the stuck commands when there is none."""
        heads = {e: 0 for e in ENGINES}
        lengths = {e: len(self._cmds[e]) for e in ENGINES}
        order = []
        progress = True
        while progress:
            progress = False
            for e in ENGINES:
                while heads[e] < lengths[e]:
                    c = self._cmds[e][heads[e]]
                    if c.wait is not None and heads[c.wait[0]] < self._resolve(c.wait):
                        break
                    order.append((e, heads[e]))
                    heads[e] += 1
                    progress = True
        stuck = [f"{e.name}[{heads[e]}] waits {self._cmds[e][heads[e]].wait[0].name} >= "
                 f"{self._resolve(self._cmds[e][heads[e]].wait)}"
                 for e in ENGINES if heads[e] < lengths[e]]
        if stuck:
            raise ValueError("no sequential order satisfies the waits: " + "; ".join(stuck))
        return order

    def check_rules(self):
        """Check what the hardware needs beyond a sequential order: every wait is for a count
        its engine reaches. Raises ValueError naming the command."""
        for e in ENGINES:
            for k, c in enumerate(self._cmds[e]):
                if c.wait is None:
                    continue
                target, count = c.wait[0], self._resolve(c.wait)
                cmds = self._cmds[target]
                if not 0 < count <= len(cmds):
                    raise ValueError(f"{e.name}[{k}] waits for {target.name} >= {count} of "
                                     f"{len(cmds)} commands")

    def descriptor(self, base=0, next=0):
        """Return the 64-byte layer descriptor for an image at ``base`` (``next``: the next
        layer's descriptor address, 0 for none)."""
        _check_base(base)
        if next % 16:
            raise ValueError(f"next descriptor address must be 16-byte aligned, not {next:#x}")
        return descriptor({e: (base + self.layout[f"list.{e.name}"][0],
                               self.layout[f"list.{e.name}"][1] // COMMAND_BYTES)
                           for e in ENGINES}, next)

    def image(self, x, w, bias=None, *, base=0, next=0):
        """Return the ``size`` bytes to place at ``base``: descriptor, lists and data.

        ``x``: float16 ``(N, C, H, W)``; ``w``: float16 ``(M, C / groups, R, S)``; ``bias``:
        float32 ``(M,)``, exactly when the program was compiled with ``has_bias``. ``next``: the
        next layer's descriptor address (see :func:`chain`).
        """
        lay = self.layer
        _check_array("x", x, np.float16, lay.input_shape)
        _check_array("w", w, np.float16, lay.weight_shape)
        if self.has_bias:
            if bias is None:
                raise ValueError("the program was compiled with has_bias: bias must be given")
            _check_array("bias", bias, np.float32, (lay.M,))
        elif bias is not None:
            raise ValueError("the program was compiled without bias (has_bias=False), but a "
                             "bias was given")
        mem = bytearray(self.size)
        mem[0:DESCRIPTOR_BYTES] = self.descriptor(base, next)
        for e, words in self.commands(base).items():
            offset, _ = self.layout[f"list.{e.name}"]
            blob = b"".join(wd.to_bytes(COMMAND_BYTES, "little") for wd in words)
            mem[offset:offset + len(blob)] = blob
        self._fill(mem, x, w, bias)
        return bytes(mem)

    def output(self, memory, base=0, *, origin=0):
        """Return the layer's outputs ``(N, M, E, F)`` (float16 if ``out_fp16`` else float32)
        from ``memory`` (bytes-like): host memory from byte address ``origin`` on, holding the
        image placed at ``base`` after the layer ran."""
        view = memoryview(memory).cast("B")
        start = base - origin
        if start < 0 or len(view) < start + self.size:
            raise ValueError(f"memory of {len(view)} bytes from {origin:#x} does not hold the "
                             f"program's image ({self.size} bytes at {base:#x})")
        return self._outputs(view[start:start + self.size])


def _check_base(base):
    if not isinstance(base, int) or base < 0 or base % _ALIGN:
        raise ValueError(f"base must be a non-negative multiple of {_ALIGN}, not {base!r}")


def chain(programs, base=0):
    """Return the base addresses at which to place ``programs`` one after the other from
    ``base``, so that ``programs[k].image(..., base=bases[k], next=bases[k + 1])`` (``next=0``
    for the last) run as one chain from the first descriptor."""
    _check_base(base)
    bases = []
    for prog in programs:
        bases.append(base)
        base = _align(base + prog.size)
    return bases


# -- Compilation -----------------------------------------------------------------------------------

_Role = namedtuple("_Role", "k ot cr run i j bottom")
_Segment = namedtuple("_Segment", "src rows count word")      # rows: ((unit, ot), ...)


@dataclass(eq=False)
class _PassInfo:
    """One pass as placed: NoC map, PE roles and the rows it sends and receives."""
    ps: object
    gidx: int               # index in emission order
    nm: object
    tables: tuple           # the NoC configuration (IDs and routes), hashable
    roles: dict             # pe -> _Role
    shapes: dict            # pe -> (S, U, p, q, F, use_psum_in)
    sources: dict           # GON source pe -> (unit, ot)
    ifmap: list             # [((n, cr, padded row), tag)] in send order
    rows: list              # [(n, cr, padded row)] the rows sent, ascending
    psum: list              # [(chain-bottom pe, tag, (unit, ot))]
    filter_tags: dict       # (ot, cr, i) -> tag
    filter_pes: dict        # (ot, cr, i) -> [pe]
    sig: int = -1           # passes with the same NoC configuration and roles share it
    row_words: dict = None  # (n, cr, y) -> words of the row
    buffer_words: int = 0   # ifmap buffer words the pass needs
    row_addr: dict = None   # (n, cr, y) -> GLB word
    load_need: int = 0      # LOAD count its ifmap rows wait for
    own: dict = None        # (n, cr, y) -> GLB word of the rows it loads itself
    borrowed: bool = False  # it reads rows the pass before it loaded
    lent: list = None       # [(GLB word, words)] of its rows the pass after it reads


@dataclass(eq=False)
class _Block:
    """Consecutive passes of a run with one NoC configuration: one PE_CFG per rectangle and
    one RECV segment per psum source."""
    gidx: int
    run: object
    passes: list
    sig: int = -1
    segments: list = None   # [_Segment], word relative to the psum region
    words: int = 0
    word0: int = 0


@dataclass(eq=False)
class _Run:
    """The passes of one reduction step of a job (the PEs keep their filters)."""
    gidx: int
    job: object
    step: object
    passes: list
    blocks: list = None
    words: int = 0
    region: int = 0
    filter_keys: tuple = ()
    filter_rows: dict = None  # (ot, cr, i) -> (word offset in the run's filter rows, values)
    filter_words: int = 0
    filter_base: int = 0      # GLB word of the resident filters
    loader: object = None     # the run that loads the filters this one sends (itself or one
    filter_after: int = None  # before it); the run whose sends free the words it loads into


@dataclass(eq=False)
class _Job:
    """Group, output strip, tile and filter block: its psums stay in one GLB region."""
    gidx: int
    g: int
    strip: int
    cols: range
    tile: int
    fb: int
    filter_sets: tuple
    runs: list
    layout: dict = None       # (unit, ot) -> first value of the psum row in the region
    words: int = 0
    stores: list = None
    bias_rows: dict = None    # ot -> word offset in the job's bias rows
    bias_words: int = 0
    bias_base: int = 0
    bias_loader: object = None  # the job that loads the bias rows this one uses (itself or
    bias_after: int = None      # one before it); the job whose psum sends free the words


def compile_layer(config, mapping, *, relu=False, out_fp16=True, has_bias=False):
    """Compile ``mapping`` (of its layer on ``config``) into a :class:`Program`.

    ``relu``: ReLU in the output stage; ``out_fp16``: outputs as FP16 (else FP32); ``has_bias``:
    the accumulators start from a per-filter FP32 bias (given to :meth:`Program.image`), else
    from +0. Raises ValueError naming the limit when the program does not fit: the GLB (its
    words are listed by region), a command field, or the GIN senders' lanes.
    """
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {config!r}")
    if not isinstance(mapping, Mapping):
        raise TypeError(f"mapping must be a Mapping, not {mapping!r}")
    if mapping.config != config:
        raise ValueError(f"the mapping is for config {mapping.config.name!r}, not {config.name!r}")
    for name, value in (("relu", relu), ("out_fp16", out_fp16), ("has_bias", has_bias)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, not {value!r}")
    if config.glb_word_bits != config.axi_data_bits:
        raise ValueError(f"the compiler needs GLB words as wide as bus words, not "
                         f"glb_word_bits={config.glb_word_bits}, "
                         f"axi_data_bits={config.axi_data_bits}")
    if config.noc_id_bits > 8:
        raise ValueError(f"SEND commands carry 8-bit tags: noc_id_bits must be at most 8, not "
                         f"{config.noc_id_bits}")
    for name in ("filter_bus_bits", "ifmap_bus_bits", "psum_bus_bits"):
        if getattr(config, name) != config.glb_word_bits:
            raise ValueError(f"the GIN senders send one GLB word per packet: {name} must equal "
                             f"glb_word_bits ({config.glb_word_bits}), not {getattr(config, name)}")
    return _Compiler(config, mapping, relu, out_fp16, has_bias).build()


class _Compiler:
    def __init__(self, config, mapping, relu, out_fp16, has_bias):
        self.cfg, self.m, self.lay = config, mapping, mapping.layer
        self.relu, self.out_fp16, self.has_bias = relu, out_fp16, has_bias
        self.V16 = config.glb_word_bits // 16
        self.V32 = config.glb_word_bits // 32
        self.word_bytes = config.axi_data_bits // 8
        self._noc_cache = {}
        self._templates = {}
        self._sigs = {}

    # Structure ---------------------------------------------------------------------------------

    def _noc(self, sets, segments):
        key = (sets, segments)
        if key not in self._noc_cache:
            nm = noc_map(self.cfg, sets, segments)
            tables = (tuple(tuple(nm.row_ids[n]) for n in NETWORKS),
                      tuple(tuple(tuple(row) for row in nm.col_ids[n]) for n in NETWORKS),
                      nm.routes)
            self._noc_cache[key] = (nm, tables)
        return self._noc_cache[key]

    def _template(self, ps):
        """The NoC map of a pass's placement and, per PE, what the placement alone decides:
        ``(pe, set, ot, cr, run, i, j, bottom, h, ifmap tag, filter tag, psum tag, source)``
        (psum tag for chain-bottom PEs, source: the GON source of a chain's bottom PE)."""
        sets, segments = self.m.placement_of(ps)
        key = (sets, segments)
        if key in self._templates:
            return self._templates[key]
        nm, tables = self._noc(sets, segments)
        r, nruns = len(ps.step.channel_sets), len(ps.runs)
        pes = []
        for seg in nm.segments:
            s = sets[seg.set]
            ot, rest = divmod(seg.set, nruns * r)
            run, cr = divmod(rest, r)
            assert (s.out, s.chan, s.image) == (ot, cr, ps.runs[run][0])
            for i in range(s.height):
                for j in range(seg.j0, seg.j0 + seg.width):
                    bottom = i == 0 and not seg.chain
                    h = s.ifmap_row(i, j)
                    pes.append((nm.pe(seg.set, i, j), seg.set, ot, cr, run, i, j, bottom, h,
                                nm.ifmap_tag(seg.set, h, i), nm.filter_tag(seg.set, i),
                                nm.psum_tag(seg.set, j) if bottom else None,
                                nm.gon_source(seg.set, j) if cr == 0 and i == 0 else None))
        roles = {pe[0]: _Role(*pe[1:8]) for pe in pes}
        # Passes with the same NoC configuration and PE roles share a signature (a small int).
        sig = self._sigs.setdefault((tables, frozenset(roles.items())), len(self._sigs))
        self._templates[key] = (nm, tables, pes, roles, sig)
        return self._templates[key]

    def _analyse(self, ps, gidx):
        lay, step = self.lay, ps.step
        nm, tables, template, roles, sig = self._template(ps)
        first_psum = step.index > 0 or self.has_bias
        S, F = len(step.cols), len(ps.out_cols)
        shapes, sources = {}, {}
        ifmap, filter_tags, filter_pes, psum = {}, {}, {}, []
        s_diag = nm.sets[0].diagonal
        for pe, _, ot, cr, run, i, j, bottom, h, itag, ftag, ptag, src in template:
            n, y0, _ = ps.runs[run]
            shapes[pe] = (S, lay.U, len(ps.filter_sets[ot]), len(step.channel_sets[cr]), F,
                          bool(not bottom or first_psum))
            # Rows per filter row (sets that are not diagonal), the bottom ones first, so that
            # the next pass's rows for the bottom of the chains are not held back behind those
            # for the top, which finish later.
            ifmap.setdefault((n, cr, 0 if s_diag else i, y0 * lay.U + step.rows.start + h), itag)
            filter_tags.setdefault((ot, cr, i), ftag)
            filter_pes.setdefault((ot, cr, i), []).append(pe)
            unit = n * lay.E + y0 + j
            if bottom and first_psum:
                psum.append((pe, ptag, (unit, ot)))
            if src is not None:
                sources[src] = (unit, ot)
        sends = [((n, cr, y), tag) for (n, cr, _, y), tag in sorted(ifmap.items())]
        return _PassInfo(ps, gidx, nm, tables, roles, shapes, sources, sends,
                         sorted({row for row, _ in sends}), sorted(psum), filter_tags, filter_pes,
                         sig=sig)

    def _structure(self):
        jobs, runs, passes = [], [], []
        job = run = None
        for ps in self.m.passes():
            jkey = (ps.group, ps.out_cols, ps.tile, ps.filter_sets)
            if job is None or jkey != (job.g, job.cols, job.tile, job.filter_sets):
                strip = self.m.strips.index(ps.out_cols)
                fb = [subs for _, subs in self.m.filter_blocks()].index(ps.filter_sets)
                job = _Job(len(jobs), ps.group, strip, ps.out_cols, ps.tile, fb, ps.filter_sets,
                           [])
                jobs.append(job)
                run = None
            if run is None or ps.step.index != run.step.index:
                assert ps.load_filters
                run = _Run(len(runs), job, ps.step, [])
                job.runs.append(run)
                runs.append(run)
            run.passes.append(self._analyse(ps, -1))
        # A run's passes may go in any order (the accumulation order depends on the steps
        # only): group those with the same NoC configuration, so that the NoC is reprogrammed
        # (and the array drained) once per change, not around every shorter pass; every other
        # run of a job takes the groups in reverse order, so that a run starts with the
        # configuration the one before ended with.
        for job in jobs:
            for k, run in enumerate(job.runs):
                order = {}
                for info in run.passes:
                    order.setdefault(info.sig, len(order))
                sign = -1 if k % 2 else 1
                run.passes.sort(key=lambda info, order=order, sign=sign: sign * order[info.sig])
                for info in run.passes:
                    info.gidx = len(passes)
                    passes.append(info)
        self.jobs, self.runs, self.passes = jobs, runs, passes

    def _blocks(self, run, single):
        """Cut a run's passes into blocks (single passes if ``single``); return its layout:
        ``{(unit, ot): first value within the region}`` with segments packed one after the
        other."""
        F = len(run.job.cols)
        run.blocks = []
        for info in run.passes:
            if single or not run.blocks or info.sig != run.blocks[-1].sig:
                block = _Block(-1, run, [], info.sig)
                run.blocks.append(block)
            run.blocks[-1].passes.append(info)
        word = 0
        layout = {}
        for block in run.blocks:
            block.word0 = word
            block.segments = []
            # Segments in the order of their rows, so that runs with the same passes but other
            # chain heights (other source PEs) lay their psums out the same way: filter
            # sub-block, then unit, so that a sub-block's segments step evenly through the GLB
            # and the PEs (one RECV command carries them, see row_groups).
            rows0 = block.passes[0].sources
            for src in sorted(rows0, key=lambda s: rows0[s][::-1]):
                rows = tuple(info.sources[src] for info in block.passes)
                count = 0
                for unit_ot in rows:
                    layout[unit_ot] = word * self.V32 + count
                    count += F * len(run.job.filter_sets[unit_ot[1]])
                block.segments.append(_Segment(src, rows, count, word))
                word += _ceil(count, self.V32)
            block.words = word - block.word0
        run.words = word
        return layout

    def _layouts(self):
        """Blocks and psum segments of every run. A job's first run lays its psums out (its
        segments one after the other); every later run writes each row where that one put it.
        When a job reads its psums back (several steps), every pass is a block of its own: its
        segments are single rows, so they go anywhere, and a pass waits for the psums of its
        own units only, not for those of other passes of their block (the next run can start
        while this one finishes)."""
        for job in self.jobs:
            single = len(job.runs) > 1
            job.layout = self._blocks(job.runs[0], single)
            job.words = job.runs[0].words
            for run in job.runs[1:]:
                self._blocks(run, single)
                self._place(run, job)
        self.blocks = [block for run in self.runs for block in run.blocks]
        for k, block in enumerate(self.blocks):
            block.gidx = k

    def _place(self, run, job):
        """Put every segment of ``run`` (single rows) where the job's layout has its row."""
        for block in run.blocks:
            block.segments = [seg._replace(word=job.layout[seg.rows[0]] // self.V32)
                              for seg in block.segments]

    def _rows(self):
        """Ifmap rows per pass, filter rows per run, bias rows per job: sizes in words."""
        lay, V16 = self.lay, self.V16
        self.zero_words = 0
        for info in self.passes:
            ps = info.ps
            W = (len(ps.out_cols) - 1) * lay.U + len(ps.step.cols)
            words = 0
            info.row_words = {}
            for n, cr, y in info.rows:
                rw = _ceil(W * len(ps.step.channel_sets[cr]), V16)
                info.row_words[n, cr, y] = rw
                if lay.padding <= y < lay.padding + lay.H:
                    words += rw
                else:
                    self.zero_words = max(self.zero_words, rw)
            info.buffer_words = words
            lanes = self.cfg.rows * self.cfg.cols
            if len(info.ifmap) > lanes or len(info.psum) > lanes:
                raise ValueError(f"pass {ps.index} sends {len(info.ifmap)} ifmap and "
                                 f"{len(info.psum)} psum rows, more than the senders' {lanes} "
                                 f"lanes")
        for run in self.runs:
            keys = set()
            for block in run.blocks:
                for info in block.passes:
                    keys.update(info.filter_tags)
            run.filter_keys = tuple(sorted(keys))
            run.filter_rows = {}
            sw = len(run.step.cols)
            for key in run.filter_keys:
                ot, cr, _ = key
                values = len(run.job.filter_sets[ot]) * len(run.step.channel_sets[cr]) * sw
                run.filter_rows[key] = (run.filter_words, values)
                run.filter_words += _ceil(values, V16)
        for job in self.jobs:
            job.bias_rows = {}
            job.bias_words = 0
            F = len(job.cols)
            for ot, fs in enumerate(job.filter_sets):
                job.bias_rows[ot] = job.bias_words
                job.bias_words += _ceil(F * len(fs), self.V32)

    def _plan_glb(self):
        cfg = self.cfg
        capacity = cfg.glb_banks * cfg.glb_bank_depth + cfg.glb_filter_depth
        if capacity > 1 << 16:
            raise ValueError(f"the GLB's {capacity} words exceed the commands' 16-bit GLB "
                             f"addresses")
        psum = max(job.words for job in self.jobs)
        ifmap = max(info.buffer_words for info in self.passes)
        filt = max(run.filter_words for run in self.runs)
        row = max(_ceil(values, self.V16) for run in self.runs
                  for _, values in run.filter_rows.values())
        bias = max(job.bias_words for job in self.jobs) if self.has_bias else 0
        # Filters: a ring of at least two rows streamed through (0), one run's (1) or two runs'
        # (2) filters resident; or, when the mapping keeps a filter block's filters, one (or
        # two) filter blocks' (every step's filters, each where the largest block has them).
        resident = self.m.resident_filters
        if resident:
            self.step_words = {}
            for run in self.runs:
                k = run.step.index
                self.step_words[k] = max(self.step_words.get(k, 0), run.filter_words)
            self.step_offset = dict(zip(sorted(self.step_words), itertools.accumulate(
                [0] + [self.step_words[k] for k in sorted(self.step_words)])))
            filt = sum(self.step_words.values())
        sizes = {"psum": psum, "ifmap": ifmap, "filter": filt, "bias": bias, "row": row}
        counts, used = glb_buffers(sizes, self.zero_words, capacity, resident=resident,
                                   psum_buffers=self.m.psum_buffers)
        if used > capacity:
            parts = ", ".join(f"{counts[k]} x {sizes[k]} {k}" for k in counts if counts[k])
            raise ValueError(f"{self.lay.name}: the program needs {used} GLB words ({parts}, "
                             f"{self.zero_words} zero, {2 * row} for two filter rows), more "
                             f"than the GLB's {capacity} ({cfg.glb_banks} banks of "
                             f"{cfg.glb_bank_depth} + {cfg.glb_filter_depth} filter words)")
        if self.m.psum_buffers == 2 and counts["psum"] < 2 and len(self.jobs) > 1:
            raise ValueError(f"{self.lay.name}: the mapping plans two psum regions of {psum} "
                             f"GLB words, but with {used} words in use they do not fit the "
                             f"GLB's {capacity}")
        self.n_psum, self.n_ifmap, self.n_filter, self.n_bias = (
            counts["psum"], counts["ifmap"], counts["filter"], max(1, counts["bias"]))
        glb = {}
        word = 0
        for k in ("psum", "ifmap", "bias"):
            for b in range(counts[k]):
                glb[f"{k}{b}"] = (word, sizes[k])
                word += sizes[k]
        glb["zero"] = (word, self.zero_words)
        word += self.zero_words
        top = capacity
        if counts["filter"]:
            for b in range(counts["filter"]):
                top -= filt
                glb[f"filter{b}"] = (top, filt)
        else:
            glb["filter_ring"] = (word, top - word)
            top = word
        assert word <= top
        glb["used"] = word + capacity - top
        glb["capacity"] = capacity
        self.glb = glb

    def _plan_reuse(self):
        """Which runs load filters and which jobs load bias rows, into which buffer, after
        which earlier run's (job's) sends. Filters: a buffer per run in turn, or with resident
        filters a buffer per filter block in turn, the first run of each step loading its
        part. Bias rows: a buffer per strip and filter block in turn (they stay while the tiles
        go through)."""
        resident = self.m.resident_filters
        last, loaders, key, fset = {}, {}, None, -1
        for run in self.runs:
            k = (run.job.g, run.job.fb) if resident else run.gidx
            if k != key:
                key, fset = k, fset + 1
            slot = (fset % max(1, self.n_filter), run.step.index if resident else 0)
            if (fset, slot) not in loaders:
                loaders[fset, slot] = run
                run.filter_after = last.get(slot)
            run.loader = loaders[fset, slot]
            last[slot] = run.gidx
            if self.n_filter:
                run.filter_base = self.glb[f"filter{slot[0]}"][0] \
                    + (self.step_offset[run.step.index] if resident else 0)
        last, loaders, key, bset = {}, {}, None, -1
        for job in self.jobs:
            if (job.g, job.strip, job.fb) != key:
                key, bset = (job.g, job.strip, job.fb), bset + 1
            slot = bset % self.n_bias
            if bset not in loaders:
                loaders[bset] = job
                job.bias_after = last.get(slot)
            job.bias_loader = loaders[bset]
            last[slot] = job.gidx
            if self.has_bias:
                job.bias_base = self.glb[f"bias{slot}"][0]

    def _plan_dram(self):
        lay, V16, wb = self.lay, self.V16, self.word_bytes
        offset = _align(DESCRIPTOR_BYTES)
        layout = {"descriptor": (0, DESCRIPTOR_BYTES)}

        def area(name, nbytes):
            nonlocal offset
            layout[name] = (offset, nbytes)
            offset = _align(offset + nbytes)
            return layout[name][0]

        area("zero", self.zero_words * wb)
        # Ifmap blocks: (g, n, c0, q, x0, W) -> offset; rows of the image only.
        blocks = {}
        size = 0
        for info in self.passes:
            ps = info.ps
            W = (len(ps.out_cols) - 1) * lay.U + len(ps.step.cols)
            x0 = ps.out_cols.start * lay.U + ps.step.cols.start
            for n, cr, _ in info.rows:
                cset = ps.step.channel_sets[cr]
                key = (ps.group, n, cset.start, len(cset), x0, W)
                if key not in blocks:
                    blocks[key] = size
                    size += lay.H * _ceil(W * len(cset), V16) * wb
        base = area("ifmap", size)
        self.ifmap_blocks = {k: base + v for k, v in blocks.items()}
        # Filter blocks: (g, fb, step) -> offset.
        fblocks = {}
        size = 0
        for run in self.runs:
            key = (run.job.g, run.job.fb, run.step.index)
            if key not in fblocks:
                fblocks[key] = (size, run)
                size += run.filter_words * wb
        base = area("filter", size)
        self.filter_blocks = {k: (base + v, run) for k, (v, run) in fblocks.items()}
        bblocks = {}
        size = 0
        if self.has_bias:
            for job in self.jobs:
                key = (job.g, job.strip, job.fb)
                if key not in bblocks:
                    bblocks[key] = (size, job)
                    size += job.bias_words * wb
        base = area("bias", size)
        self.bias_blocks = {k: (base + v, job) for k, (v, job) in bblocks.items()}
        # Outputs: a STORE per block of a job's last run (one per job when a block's rows are
        # not contiguous), each the block's GLB words.
        per_word = self.cfg.axi_data_bits // (16 if self.out_fp16 else 32)
        size = 0
        self.stores = {}
        for job in self.jobs:
            final = job.runs[-1]
            job.stores = []
            parts = []
            for block in final.blocks:
                lo = min(seg.word for seg in block.segments)
                words = sum(_ceil(seg.count, self.V32) for seg in block.segments)
                hi = max(seg.word + _ceil(seg.count, self.V32) for seg in block.segments)
                parts.append((block, lo, words))
                if hi - lo != words:        # not contiguous: one STORE after the last block
                    parts = [(final.blocks[-1], 0, job.words)]
                    break
            for block, word0, words in parts:
                store = {"job": job, "word0": word0, "count": words * self.V32, "out": size}
                job.stores.append(store)
                self.stores.setdefault(block.gidx, []).append(store)
                size += _ceil(store["count"], per_word) * wb
        self.out_base = area("output", size)
        self.layout, self.data_end = layout, offset

    # Emission ----------------------------------------------------------------------------------

    def _add(self, engine, op, args=None, *, wait=None, fence=False, note="", dram=False):
        cmd = _Cmd(engine, op, dict(args or {}), wait, fence, note, dram)
        self.cmds[engine].append(cmd)
        return len(self.cmds[engine]) - 1

    def _count(self, engine):
        return len(self.cmds[engine])

    def _prefetch(self, upto):
        """Emit the loads of every pass up to global pass ``upto`` not loaded yet."""
        upto = min(upto, len(self.passes) - 1)
        while self.loaded < upto:
            self.loaded += 1
            self._emit_loads(self.passes[self.loaded])

    def _emit_loads(self, info):
        ps, lay = info.ps, self.lay
        block = self.block_of[info.gidx]
        run, job = block.run, block.run.job
        if self.n_filter and info is run.blocks[0].passes[0] and run.loader is run:
            wait = None
            if run.filter_after is not None:
                wait = (Engine.FILTER, ("filter_end", run.filter_after))
            addr, _ = self.filter_blocks[job.g, job.fb, run.step.index]
            self.filter_load[run.gidx] = self._add(
                Engine.LOAD, Op.LOAD, {"addr": addr, "count": run.filter_words,
                                       "glb_addr": run.filter_base},
                wait=wait, dram=True, note=f"filters of run {run.gidx}")
        if self.has_bias and info is job.runs[0].blocks[0].passes[0] and job.bias_loader is job:
            wait = None
            if job.bias_after is not None:
                wait = (Engine.PSUM, ("bias_end", job.bias_after))
            addr, _ = self.bias_blocks[job.g, job.strip, job.fb]
            self.bias_load[job.gidx] = self._add(
                Engine.LOAD, Op.LOAD, {"addr": addr, "count": job.bias_words,
                                       "glb_addr": job.bias_base},
                wait=wait, dram=True, note=f"bias rows of job {job.gidx}")
        # Ifmap rows: image rows into the pass's buffer, runs of consecutive rows in one load;
        # with SHARE_BUFFERS buffers or more, rows that the pass before in the same run loaded
        # itself are read from its buffer. The buffer's last pass (``n_ifmap`` before) lent
        # rows to the pass after it: the rows go around those where the buffer has room, so
        # that the loads wait for the last pass only, not for the one after it as well.
        buf, size = self.glb[f"ifmap{info.gidx % self.n_ifmap}"]
        W = (len(ps.out_cols) - 1) * lay.U + len(ps.step.cols)
        x0 = ps.out_cols.start * lay.U + ps.step.cols.start
        info.row_addr, info.own, info.lent = {}, {}, []
        prev = self.passes[info.gidx - 1] if info.gidx else None
        if (prev is None or self.n_ifmap < SHARE_BUFFERS
                or self.block_of[prev.gidx].run is not run):
            prev = None
        need = self.zero_load + 1 if self.zero_load is not None else 0
        own = []
        for n, cr, y in info.rows:
            rw = info.row_words[n, cr, y]
            if not lay.padding <= y < lay.padding + lay.H:
                info.row_addr[n, cr, y] = self.glb["zero"][0]
            elif prev is not None and (n, cr, y) in prev.own:
                info.row_addr[n, cr, y] = prev.own[n, cr, y]
                prev.lent.append((prev.own[n, cr, y], rw))
                info.borrowed = True
            else:
                own.append((n, cr, y))
        last = info.gidx - self.n_ifmap
        lent = sorted(self.passes[last].lent) if last >= 0 else []

        def place(avoid):
            """GLB words of the own rows from the buffer's start, around ``avoid``."""
            word, words = buf, []
            for key in own:
                for a, w in avoid:
                    if word < a + w and a < word + info.row_words[key]:
                        word = a + w
                words.append(word)
                word += info.row_words[key]
            return words if word <= buf + size else None

        words = place(lent) if lent else None
        held = lent and words is None       # the pass after the last one still reads from it
        pending = None          # [dram addr, glb addr, words, next (n, cr, y)]
        loads = []
        for (n, cr, y), word in zip(own, words or place([])):
            rw = info.row_words[n, cr, y]
            cset = ps.step.channel_sets[cr]
            dram = self.ifmap_blocks[ps.group, n, cset.start, len(cset), x0, W] \
                + (y - lay.padding) * rw * self.word_bytes
            info.row_addr[n, cr, y] = info.own[n, cr, y] = word
            if pending and pending[3] == (n, cr, y) and pending[1] + pending[2] == word:
                pending[2] += rw
                pending[3] = (n, cr, y + 1)
            else:
                if pending:
                    loads.append(pending)
                pending = [dram, word, rw, (n, cr, y + 1)]
        if pending:
            loads.append(pending)
        if info.borrowed:
            need = max(need, prev.load_need)
        for k, (dram, glb_addr, count, _) in enumerate(loads):
            wait = None
            if k == 0 and last >= 0:
                wait = (Engine.IFMAP, ("ifmap_end", last + bool(held)))
            idx = self._add(Engine.LOAD, Op.LOAD, {"addr": dram, "count": count,
                                                   "glb_addr": glb_addr},
                            wait=wait, dram=True, note=f"ifmap rows of pass {info.gidx}")
            need = max(need, idx + 1)
        info.load_need = need

    def _sender_head(self, engine, wait, note):
        """Emit the fenced head of a pass/block in a sender list: a CONFIG wait after a NoC
        reprogramming (as a NOP) and ``wait``; return the wait left for the first row."""
        if self.noc_epoch > self.epoch_seen[engine]:
            self.epoch_seen[engine] = self.noc_epoch
            if wait is None:
                return (Engine.CONFIG, self.noc_epoch), True
            self._add(engine, Op.NOP, wait=(Engine.CONFIG, self.noc_epoch), fence=True,
                      note=f"{note}: after the NoC writes")
            return wait, False
        return wait, True

    def _emit_block(self, block):
        run = block.run
        first_info = block.passes[0]
        self._prefetch(first_info.gidx)
        # A job's first run writes over an older job's psums: each block waits for the STOREs of
        # the words it writes (those of the block in the same place one run earlier, long done).
        # The PSUM reads of those words come first (their values went into what was stored).
        recv_wait = None
        if run is run.job.runs[0]:
            stored = self.region_store[run.region]
            need = max(int(stored[seg.word:seg.word + _ceil(seg.count, self.V32)].max())
                       for seg in block.segments)
            if need > self.config_waited:
                self.config_waited = need
                self._add(Engine.CONFIG, Op.NOP, wait=(Engine.STORE, need),
                          note=f"block {block.gidx}: psums stored from region {run.region}")
                recv_wait = (Engine.CONFIG, self._count(Engine.CONFIG))
        pending_wait = None
        if block.gidx >= 2:
            pending_wait = (Engine.RECV, self.seg_after[block.gidx - 2])
        # NoC configuration.
        writes = self._noc_writes(first_info.nm, first_info.tables)
        for k, (op, net, row, col, value) in enumerate(writes):
            self._add(Engine.CONFIG, Op.NOC, {"op": op, "net": net, "row": row, "col": col,
                                              "value": value},
                      wait=pending_wait if k == 0 else None, fence=k == 0,
                      note=f"block {block.gidx}: NoC" if k == 0 else "")
            if k == 0:
                pending_wait = None
        if writes:
            self.noc_epoch = self._count(Engine.CONFIG)
            self.stats["noc_reprograms"] += 1
        # PE configurations and filter loads.
        need_load = set()
        for pe, role in first_info.roles.items():
            want = (run.gidx, role.ot, role.cr, role.i, first_info.shapes[pe])
            if self.loaded_role.get(pe) != want:
                need_load.add((role.ot, role.cr, role.i))
        cfgs = {}
        for pe, role in first_info.roles.items():
            load = (role.ot, role.cr, role.i) in need_load
            if load:
                self.loaded_role[pe] = (run.gidx, role.ot, role.cr, role.i,
                                        first_info.shapes[pe])
            cfgs[pe] = first_info.shapes[pe] + (load,)
        for k, (r0, r1, c0, c1, shape) in enumerate(_rectangles(cfgs)):
            S, U, p, q, F, use_psum, load = shape
            self._add(Engine.CONFIG, Op.PE_CFG,
                      {"row0": r0, "row1": r1, "col0": c0, "col1": c1,
                       "count": len(block.passes), "S": S, "U": U, "p": p, "q": q, "F": F,
                       "load_filter": int(load), "use_psum_in": int(use_psum)},
                      wait=pending_wait if k == 0 else None,
                      note=f"block {block.gidx} (run {run.gidx}, passes "
                           f"{block.passes[0].ps.index}..{block.passes[-1].ps.index})")
            pending_wait = None
        # Psum segments.
        base = self.glb[f"psum{run.region}"][0]
        for k, seg in enumerate(block.segments):
            self._add(Engine.RECV, Op.RECV, {"count": seg.count, "glb_addr": base + seg.word,
                                             "flags": seg.src[0] | seg.src[1] << 8},
                      wait=recv_wait if k == 0 else None,
                      note=f"block {block.gidx}: psums of PE {seg.src}")
        self.seg_after[block.gidx] = self._count(Engine.RECV)
        # Filter rows, bottom to top.
        # Bottom to top of the chains: filter row i of channel set cr is at height cr*h + i.
        keys = sorted(need_load, key=lambda key: (key[1], key[2],
                                                  min(first_info.filter_pes[key])))
        if keys and self.n_filter:
            wait, fence = self._sender_head(Engine.FILTER,
                                            (Engine.LOAD, self.filter_load[run.loader.gidx] + 1),
                                            f"block {block.gidx} filters")
            for k, key in enumerate(keys):
                off, values = run.filter_rows[key]
                row, col = first_info.filter_tags[key]
                # The rows for one height of the chains (all filter sub-blocks) go out
                # interleaved, as their PEs become free together; each height's after the one
                # below (a fence).
                self._add(Engine.FILTER, Op.SEND, {"count": values,
                                                   "glb_addr": run.filter_base + off,
                                                   "flags": row | col << 8},
                          wait=wait if k == 0 else None,
                          fence=fence if k == 0 else key[1:] != keys[k - 1][1:],
                          note=f"block {block.gidx}: filter row {key}")
            self.markers["filter_end", run.gidx] = self._count(Engine.FILTER)
        elif keys:
            self._stream_filters(block, keys)

    def _stream_filters(self, block, keys):
        """Send filter rows through the ring: each row loaded on its own, once the row that
        last used its words has been sent; every row fenced (exact FILTER counts)."""
        run, info = block.run, block.passes[0]
        ring, size = self.glb["filter_ring"]
        addr, _ = self.filter_blocks[run.job.g, run.job.fb, run.step.index]
        for key in keys:
            off, values = run.filter_rows[key]
            words = _ceil(values, self.V16)
            if self.ring_pos + words > size:
                self.ring_pos = 0
            lo, hi = self.ring_pos, self.ring_pos + words
            self.ring_pos = hi
            last = int(self.ring_last[lo:hi].max())     # the last row sent from these words
            load = self._add(Engine.LOAD, Op.LOAD,
                             {"addr": addr + off * self.word_bytes, "count": words,
                              "glb_addr": ring + lo},
                             wait=None if last < 0 else (Engine.FILTER, last + 1), dram=True,
                             note=f"block {block.gidx}: filter row {key}")
            wait, _ = self._sender_head(Engine.FILTER, (Engine.LOAD, load + 1),
                                        f"block {block.gidx} filters")
            row, col = info.filter_tags[key]
            sent = self._add(Engine.FILTER, Op.SEND, {"count": values, "glb_addr": ring + lo,
                                                      "flags": row | col << 8},
                             wait=wait, fence=True, note=f"block {block.gidx}: filter row {key}")
            self.ring_last[lo:hi] = sent

    def _emit_pass(self, info, block):
        run, job = block.run, block.run.job
        self._prefetch(info.gidx + self.n_ifmap - 1)
        # Ifmap rows.
        wait, _ = self._sender_head(Engine.IFMAP, (Engine.LOAD, info.load_need) if
                                        info.load_need else None, f"pass {info.gidx} ifmaps")
        ps = info.ps
        W = (len(ps.out_cols) - 1) * self.lay.U + len(ps.step.cols)
        for k, ((n, cr, y), (row, col)) in enumerate(info.ifmap):
            q = len(ps.step.channel_sets[cr])
            self._add(Engine.IFMAP, Op.SEND, {"count": W * q,
                                              "glb_addr": info.row_addr[n, cr, y],
                                              "flags": row | col << 8},
                      wait=wait if k == 0 else None,
                      note=f"pass {info.gidx} (mapper pass {ps.index}): ifmap n={n} set {cr} "
                           f"row {y}" if k == 0 else f"ifmap n={n} set {cr} row {y}")
        self.markers["ifmap_end", info.gidx] = self._count(Engine.IFMAP)
        # Psum rows: bias or the previous step's psums.
        F = len(job.cols)
        if info.psum:
            step = run.step.index
            if step == 0:
                need = (Engine.LOAD, self.bias_load[job.bias_loader.gidx] + 1)
                src = None
            else:
                prev = job.runs[step - 1]
                src = run.region
                base = self.glb[f"psum{src}"][0]
                need = (Engine.RECV, max(self.seg_after[self.seg_block[prev.gidx, uo]]
                                         for _, _, uo in info.psum))
            wait, _ = self._sender_head(Engine.PSUM, need, f"pass {info.gidx} psums")
            for k, (pe, (row, col), (unit, ot)) in enumerate(info.psum):
                p = len(job.filter_sets[ot])
                if src is None:
                    addr = job.bias_base + job.bias_rows[ot]
                else:
                    addr = base + job.layout[unit, ot] // self.V32
                self._add(Engine.PSUM, Op.SEND, {"count": F * p, "glb_addr": addr,
                                                 "flags": row | col << 8},
                          wait=wait if k == 0 else None,
                          note=f"pass {info.gidx}: psums of unit {unit} sub-block {ot} to PE "
                               f"{pe}")
        self.markers["psum_end", info.gidx] = self._count(Engine.PSUM)
        if run.step.index == 0:
            self.markers["bias_end", job.gidx] = self._count(Engine.PSUM)

    def _emit_store(self, block, store):
        run = block.run
        base = self.glb[f"psum{run.region}"][0]
        self._add(Engine.STORE, Op.STORE,
                  {"addr": self.out_base + store["out"], "count": store["count"],
                   "glb_addr": base + store["word0"],
                   "flags": int(self.out_fp16) | int(self.relu) << 1},
                  wait=(Engine.RECV, self.seg_after[block.gidx]), dram=True,
                  note=f"block {block.gidx}: outputs of job {run.job.gidx}")
        lo = store["word0"]
        self.region_store[run.region][lo:lo + _ceil(store["count"], self.V32)] = \
            self._count(Engine.STORE)

    def _noc_writes(self, nm, tables):
        """Return the NoC writes ``(op, net, row, col, value)`` that change the current tables
        into ``tables`` (all of them, after a CLEAR, the first time)."""
        if tables == self.noc_tables:
            return []
        self.noc_tables = tables
        cfg = self.cfg
        entries = {}
        for name, net in zip(NETWORKS, (NocNet.FILTER, NocNet.IFMAP, NocNet.PSUM)):
            for r in range(cfg.rows):
                entries[NocCfgOp.ROW_ID.value, net.value, r, 0] = nm.row_ids[name][r]
                for c in range(cfg.cols):
                    entries[NocCfgOp.COL_ID.value, net.value, r, c] = nm.col_ids[name][r][c]
        for r in range(cfg.rows):
            for c in range(cfg.cols):
                entries[NocCfgOp.ROUTE.value, NocNet.FILTER.value, r, c] = nm.routes[r][c]
        if self.noc_state is None:
            out = [(NocCfgOp.CLEAR.value, NocNet.FILTER.value, 0, 0, 0)]
            out += [key + (value,) for key, value in entries.items()]
        else:
            out = [key + (value,) for key, value in entries.items()
                   if self.noc_state[key] != value]
        self.noc_state = entries
        return out

    def _emit(self):
        self.cmds = {e: [] for e in ENGINES}
        self.markers = {}
        self.stats = {"noc_reprograms": 0}
        self.block_of = {info.gidx: block for block in self.blocks for info in block.passes}
        self.seg_block = {}
        for run in self.runs:
            for block in run.blocks:
                for seg in block.segments:
                    for uo in seg.rows:
                        self.seg_block[run.gidx, uo] = block.gidx
        self.seg_after = {}
        self.filter_load, self.bias_load = {}, {}
        self.loaded = -1
        self.loaded_role = {}
        self.noc_state = None
        self.noc_tables = None
        self.noc_epoch = 0
        self.epoch_seen = {e: 0 for e in _SEND_ENGINES}
        self.region_store = [np.zeros(self.glb["psum0"][1], np.int64)
                             for _ in range(self.n_psum)]
        self.config_waited = 0      # the STORE count CONFIG has waited for
        self.zero_load = None
        self.ring_pos = 0
        self.ring_last = np.full(self.glb.get("filter_ring", (0, 0))[1], -1, np.int64)
        if self.zero_words:
            self.zero_load = self._add(Engine.LOAD, Op.LOAD,
                                       {"addr": self.layout["zero"][0],
                                        "count": self.zero_words,
                                        "glb_addr": self.glb["zero"][0]},
                                       dram=True, note="a row of zeros (padding rows)")
        # Psum regions: a job starts in the region its predecessor did not finish in.
        last = 0 if self.n_psum == 1 else 1
        for job in self.jobs:
            region = (last + 1) % self.n_psum
            for run in job.runs:
                run.region = region
            last = region
        for block in self.blocks:
            self._emit_block(block)
            for info in block.passes:
                self._emit_pass(info, block)
            for store in self.stores.get(block.gidx, ()):
                self._emit_store(block, store)

    # Data --------------------------------------------------------------------------------------

    def _fill(self, mem, x, w, bias):
        lay, V16, V32, wb = self.lay, self.V16, self.V32, self.word_bytes
        pad = lay.padding
        Wp = lay.W + 2 * pad
        xp = np.zeros((lay.N, lay.C, lay.H, Wp), np.uint16)
        xp[:, :, :, pad:pad + lay.W] = x.view(np.uint16)
        for (g, n, c0, q, x0, W), off in self.ifmap_blocks.items():
            c = g * lay.Cg + c0
            rows = xp[n, c:c + q, :, x0:x0 + W].transpose(1, 2, 0).reshape(lay.H, W * q)
            rw = _ceil(W * q, V16) * V16
            block = np.zeros((lay.H, rw), "<u2")
            block[:, :W * q] = rows
            blob = block.tobytes()
            mem[off:off + len(blob)] = blob
        wbits = w.view(np.uint16)
        for (g, fb, _), (off, run) in self.filter_blocks.items():
            step = run.step
            for key, (woff, values) in run.filter_rows.items():
                ot, cr, i = key
                fs = run.job.filter_sets[ot]
                cs = step.channel_sets[cr]
                m0 = g * self.lay.Mg
                sel = wbits[m0 + fs.start:m0 + fs.stop, cs.start:cs.stop,
                            step.rows.start + i, step.cols.start:step.cols.stop]  # [f][c][s]
                row = np.zeros(_ceil(values, V16) * V16, "<u2")
                row[:values] = sel.transpose(2, 1, 0).ravel()
                blob = row.tobytes()
                start = off + woff * wb
                mem[start:start + len(blob)] = blob
        if bias is not None:
            bbits = bias.view(np.uint32)
            for (g, _, _), (off, job) in self.bias_blocks.items():
                F = len(job.cols)
                for ot, fs in enumerate(job.filter_sets):
                    vals = bbits[g * lay.Mg + fs.start:g * lay.Mg + fs.stop]
                    row = np.zeros(_ceil(F * len(fs), V32) * V32, "<u4")
                    row[:F * len(fs)] = np.tile(vals, F)
                    blob = row.tobytes()
                    start = off + job.bias_rows[ot] * wb
                    mem[start:start + len(blob)] = blob

    def _outputs(self, view):
        lay = self.lay
        dtype = "<u2" if self.out_fp16 else "<u4"
        out = np.zeros(lay.output_shape, np.uint16 if self.out_fp16 else np.uint32)
        for job in self.jobs:
            F, m0 = len(job.cols), job.g * lay.Mg
            for store in job.stores:
                start = self.out_base + store["out"]
                vals = np.frombuffer(view[start:start + store["count"] * (2 if self.out_fp16
                                                                          else 4)], dtype)
                lo = store["word0"] * self.V32
                for (unit, ot), v in job.layout.items():
                    if not lo <= v < lo + store["count"]:
                        continue
                    fs = job.filter_sets[ot]
                    n, y = divmod(unit, lay.E)
                    out[n, m0 + fs.start:m0 + fs.stop, y, job.cols.start:job.cols.stop] = \
                        vals[v - lo:v - lo + F * len(fs)].reshape(F, len(fs)).T
        return out.view(np.float16 if self.out_fp16 else np.float32)

    # Build -------------------------------------------------------------------------------------

    def build(self):
        self._structure()
        self._layouts()
        self._rows()
        self._plan_glb()
        self._plan_reuse()
        self._plan_dram()
        self._emit()
        layout = dict(self.layout)
        offset = self.data_end
        words = {e: len(row_groups(self.cmds[e])) for e in ENGINES}
        for e in ENGINES:
            nbytes = words[e] * COMMAND_BYTES
            layout[f"list.{e.name}"] = (offset, nbytes)
            offset = _align(offset + nbytes)
        stats = dict(self.stats)
        stats.update(jobs=len(self.jobs), runs=len(self.runs), blocks=len(self.blocks),
                     passes=len(self.passes),
                     commands={e.name: words[e] for e in ENGINES},
                     rows={e.name: len(self.cmds[e]) for e in ENGINES},
                     buffers={"psum": self.n_psum, "ifmap": self.n_ifmap,
                              "filter": self.n_filter, "bias": self.n_bias if self.has_bias
                              else 0})
        prog = Program(config=self.cfg, mapping=self.m, relu=self.relu, out_fp16=self.out_fp16,
                       has_bias=self.has_bias, cmds=self.cmds, markers=self.markers,
                       layout=layout, size=offset, glb=self.glb, stats=stats,
                       data_fill=self._fill, outputs=self._outputs)
        prog.check_rules()
        prog.sequential_order()
        return prog


def row_groups(cmds):
    """Return how the commands ``cmds`` (one engine's list, row by row) go to memory:
    ``[(index, rows)]``, a command per entry, ``rows`` None for a command of its own or the
    ``(repeat, glb_stride, row_step, col_step)`` of a SEND or RECV that also stands for the
    ``repeat`` commands after it (:mod:`rsaccel.hw.commands`, "Rows"): those have no wait and
    no fence, the same operation and ``count``, and their GLB address and tags step evenly
    (tags by at most 15)."""
    out = []
    k = 0
    while k < len(cmds):
        c = cmds[k]
        n, step = 0, None
        if c.op in (Op.SEND, Op.RECV):
            a0 = c.args
            while k + n + 1 < len(cmds) and n < 255:
                prev, nxt = cmds[k + n].args, cmds[k + n + 1]
                a = nxt.args
                if nxt.op is not c.op or nxt.wait is not None or nxt.fence \
                        or a["count"] != a0["count"] or a["flags"] >> 16 != a0["flags"] >> 16:
                    break
                d = ((a["glb_addr"] - prev["glb_addr"]) & 0xFFFF,
                     (a["flags"] - prev["flags"]) & 0xFF,
                     ((a["flags"] >> 8) - (prev["flags"] >> 8)) & 0xFF)
                if d[1] > 15 or d[2] > 15 or (step is not None and d != step):
                    break
                step = d
                n += 1
        out.append((k, (n, *step) if n else None))
        k += n + 1
    return out


def _rectangles(cfgs):
    """Cover the PEs of ``cfgs`` (``{(row, col): config}``) with rectangles of one config each:
    ``[(row0, row1, col0, col1, config)]``."""
    spans = []
    for r in sorted({r for r, _ in cfgs}):
        cols = sorted(c for rr, c in cfgs if rr == r)
        start = 0
        while start < len(cols):
            end = start
            conf = cfgs[r, cols[start]]
            while (end + 1 < len(cols) and cols[end + 1] == cols[end] + 1
                   and cfgs[r, cols[end + 1]] == conf):
                end += 1
            spans.append([r, r, cols[start], cols[end], conf])
            start = end + 1
    out = []
    for span in spans:
        for rect in out:
            if rect[1] == span[0] - 1 and rect[2:] == span[2:]:
                rect[1] = span[0]
                break
        else:
            out.append(span)
    return [tuple(rect) for rect in out]
