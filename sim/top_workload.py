"""Hand-built programs for the accelerator top: Row-Stationary sets run for several passes.

:func:`rs_program` places ``r * t`` sets of ``R x e`` PEs (:func:`rsaccel.sw.noc_ids.rs_placement`)
and runs ``passes`` passes on them; pass ``k`` has its own filters and ifmaps and adds to the
psums of pass ``k - 1``, which go to the GLB through the GON and come back through the psum GIN
(the first pass starts from a bias). The last pass's psums go out through the output stage.
Every engine, wait and fence of :mod:`rsaccel.hw.commands` is used; the expected output comes
from the PE model chained up each column, independently of the layer compiler.
"""

from dataclasses import dataclass

import numpy as np

from ..hw.commands import Engine, Op, command, descriptor
from ..hw.noc import NocCfgWrite
from ..sw import pe_model
from ..sw.noc_ids import noc_map, rs_placement
from ..sw.numerics import relu32, to_fp16
from .pe_bench import random_values16

__all__ = ["TopProgram", "custom_program", "noc_command", "rs_program"]

ALIGN = 16


def _align(n, a=ALIGN):
    return -(-n // a) * a


def noc_command(config, word, **kw):
    """Return the NOC command of NoC configuration word ``word`` (an int)."""
    layout = NocCfgWrite(config)
    fields = {name: (word >> field.offset) & ((1 << field.width) - 1) for name, field in layout}
    return command(Op.NOC, op=fields["op"], net=fields["net"], row=fields["row"],
                   col=fields["col"], value=fields["value"], **kw)


@dataclass
class TopProgram:
    """A program in host memory: ``image`` bytes at ``base`` (descriptor first), the output
    area (``out_addr``, ``out_bytes``) and the expected output bytes."""
    base: int
    image: bytes
    out_addr: int
    out_bytes: int
    expected: bytes
    commands: dict

    @property
    def desc_addr(self):
        return self.base


class _Image:
    def __init__(self, base):
        self.base = base
        self.data = bytearray()

    def put(self, blob, align=ALIGN):
        self.data += bytes(_align(len(self.data), align) - len(self.data))
        addr = self.base + len(self.data)
        self.data += blob
        return addr


def _words(values, word_bytes):
    """Pack a 1-D array of uint16/uint32 values into bytes, padded to whole words."""
    raw = np.ascontiguousarray(values).tobytes()
    return raw + bytes(_align(len(raw), word_bytes) - len(raw))


def rs_program(config, *, R, e, U=1, r=1, t=1, p=2, q=2, S=3, F=4, passes=2, bias=True,
               relu=False, fp16=True, base=0x1000, seed=0, next_desc=0, edit=None):
    """Return a :class:`TopProgram` (see the module docstring).

    ``next_desc``: the next layer's descriptor address. ``edit``: a function given the
    command lists (:class:`Engine` -> list of command bytes) before they are packed, to make
    faulty programs.
    """
    pe_model.check_primitive(p, q, S, U, F, filter_depth=config.filter_spad_depth,
                             ifmap_depth=config.ifmap_spad_depth,
                             psum_depth=config.psum_spad_depth)
    rng = np.random.default_rng(seed)
    wb = config.axi_data_bits // 8
    sets, segments = rs_placement(config, R=R, e=e, U=U, r=r, t=t)
    nm = noc_map(config, sets, segments)
    W = (F - 1) * U + S
    H = (e - 1) * U + R
    weights = [{(s.out, s.chan): random_values16(rng, (p, q, R, S)) for s in sets}
               for _ in range(passes)]
    ifmaps = [{s.chan: random_values16(rng, (q, H, W)) for s in sets} for _ in range(passes)]
    bias_values = {s.out: rng.uniform(-4, 4, p).astype(np.float32).view(np.uint32)
                   for s in sets}

    # Data: everything one LOAD brings to GLB word 0 on.
    blob = bytearray()

    def add(values):
        nonlocal blob
        word = len(blob) // wb
        blob += _words(values, wb)
        return word

    filter_rows = [[(k, i, add(weights[n][s.out, s.chan][:, :, i, :].transpose(2, 1, 0).ravel()))
                    for k, s in enumerate(sets) for i in range(R)] for n in range(passes)]
    ifmap_rows = []
    for n in range(passes):
        rows = {}
        for k, s in enumerate(sets):
            for h in s.ifmap_rows:
                tag = nm.ifmap_tag(k, h)
                if tag not in rows:
                    rows[tag] = add(ifmaps[n][s.chan][:, h, :].T.ravel())
        ifmap_rows.append(rows)
    # Chain bottoms (psum from the GIN) and GON sources, per output set column.
    columns = [(k, j) for k, s in enumerate(sets) if s.chan == 0 for j in range(e)]
    bias_rows = {s.out: add(np.tile(bias_values[s.out], F)) for s in sets if s.chan == 0}
    data_words = len(blob) // wb
    psum_words = -(-F * p * 4 // wb)
    psum_at = {col: data_words + n * psum_words for n, col in enumerate(columns)}
    assert data_words + len(columns) * psum_words <= 640, "program too big for the tiny GLB"

    lists = {e_: [] for e_ in Engine if e_ != Engine.NONE}
    lists[Engine.LOAD].append(command(Op.LOAD, addr=0, count=data_words, glb_addr=0))
    cfg_words = nm.writes()
    lists[Engine.CONFIG] += [noc_command(config, w) for w in cfg_words]
    # Nothing enters the NoC before it is configured.
    for engine in (Engine.FILTER, Engine.IFMAP, Engine.PSUM):
        lists[engine].append(command(Op.NOP, wait=(Engine.CONFIG, len(cfg_words))))
    seg_index = {}
    for seg in nm.segments:
        for i in range(sets[seg.set].height):
            for j in range(seg.j0, seg.j0 + seg.width):
                seg_index[nm.pe(seg.set, i, j)] = (seg, i)
    for n in range(passes):
        for (row, col), (seg, i) in sorted(seg_index.items()):
            from_gin = i == 0 and not seg.chain
            lists[Engine.CONFIG].append(command(
                Op.PE_CFG, row0=row, row1=row, col0=col, col1=col, count=1, S=S, U=U, p=p,
                q=q, F=F, load_filter=1, use_psum_in=int(not from_gin or bias or n > 0)))
        for m_, (k, i, word) in enumerate(filter_rows[n]):
            tag = nm.filter_tag(k, i)
            lists[Engine.FILTER].append(command(
                Op.SEND, wait=(Engine.LOAD, 1), fence=m_ == 0, count=p * q * S, glb_addr=word,
                flags=tag[0] | tag[1] << 8))
        for m_, (tag, word) in enumerate(ifmap_rows[n].items()):
            lists[Engine.IFMAP].append(command(
                Op.SEND, wait=(Engine.LOAD, 1), fence=m_ == 0, count=W * q, glb_addr=word,
                flags=tag[0] | tag[1] << 8))
        for m_, (k, j) in enumerate(columns):
            if n == 0 and not bias:
                break
            tag = nm.psum_tag(k, j)
            if n == 0:
                wait, word = (Engine.LOAD, 1), bias_rows[sets[k].out]
            else:
                wait, word = (Engine.RECV, n * len(columns)), psum_at[k, j]
            lists[Engine.PSUM].append(command(
                Op.SEND, wait=wait, fence=m_ == 0, count=F * p, glb_addr=word,
                flags=tag[0] | tag[1] << 8))
        for k, j in columns:
            src = nm.gon_source(k, j)
            lists[Engine.RECV].append(command(
                Op.RECV, count=F * p, glb_addr=psum_at[k, j], flags=src[0] | src[1] << 8))

    # Output: one STORE per column, FP16 or FP32, after the last pass.
    out_values = F * p
    out_bytes_each = _align(out_values * (2 if fp16 else 4), wb)
    img = _Image(base)
    img.put(bytes(64))                                  # the descriptor, written below
    data_addr = img.put(bytes(blob), wb)
    out_addr = img.put(bytes(out_bytes_each * len(columns)), wb)
    for n_, (k, j) in enumerate(columns):
        lists[Engine.STORE].append(command(
            Op.STORE, wait=(Engine.RECV, passes * len(columns)), addr=out_addr + n_ * out_bytes_each,
            count=out_values, glb_addr=psum_at[k, j], flags=int(fp16) | int(relu) << 1))
    # The LOAD's address is known now.
    lists[Engine.LOAD][0] = command(Op.LOAD, addr=data_addr, count=data_words, glb_addr=0)
    if edit is not None:
        edit(lists)
    where = {}
    for engine, cmds in lists.items():
        if cmds:
            where[engine] = (img.put(b"".join(cmds)), len(cmds))
    image = bytearray(img.data)
    image[:64] = descriptor(where, next_desc)

    # Expected: the PE model chained up each column, pass after pass.
    expected = bytearray()
    for k, j in columns:
        s = sets[k]
        acc = np.tile(bias_values[s.out], (F, 1)) if bias else None
        for n in range(passes):
            for chan in range(r):
                w, x = weights[n][s.out, chan], ifmaps[n][chan]
                for i in range(R):
                    acc = pe_model.run_primitive(w[:, :, i, :], x[:, j * U + i, :], acc, U)
        vals = acc.ravel()
        if relu:
            vals = relu32(vals)
        vals = to_fp16(vals) if fp16 else vals
        expected += _words(vals, wb)
    return TopProgram(base, bytes(image), out_addr, len(expected), bytes(expected),
                      {e_.name: len(c) for e_, c in lists.items()})


def custom_program(lists, *, base=0x1000, data=b"", next_desc=0):
    """Return the image of a descriptor at ``base`` for ``lists`` (Engine -> list of command
    bytes), then ``data`` at ``base + 64``, then the lists."""
    img = _Image(base)
    img.put(bytes(64))
    if data:
        img.put(data, 64)
    where = {engine: (img.put(b"".join(cmds)), len(cmds)) for engine, cmds in lists.items()
             if cmds}
    image = bytearray(img.data)
    image[:64] = descriptor(where, next_desc)
    return bytes(image)
