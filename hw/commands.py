"""The accelerator's programming model: layer descriptors and engine commands in host memory.

This is the contract between the controller (:mod:`rsaccel.hw.top`) and the host's compiler
(:mod:`rsaccel.sw.program`); both take every bit position from the layouts here.

Engines
-------
The controller runs seven *engines* concurrently, each from its own list of commands:

``LOAD``    host memory -> GLB: ``count`` bus words from byte address ``addr`` to GLB words
            from ``glb_addr`` on.
``STORE``   GLB -> output stage -> host memory: ``count`` FP32 values packed in GLB words from
            ``glb_addr`` on, optional ReLU, written as FP16 (``fp16``) or FP32 from ``addr`` on
            (``ceil(count / values per word)`` whole words; the last one zero-padded).
``FILTER``, ``IFMAP``, ``PSUM``
            GLB -> GIN: a row of ``count`` values packed from GLB word ``glb_addr`` on, sent
            with tags ``(row_tag, col_tag)`` (:class:`rsaccel.hw.movers.GinSender`). FILTER and
            IFMAP values are FP16, PSUM values FP32 (initial accumulators: bias or psums of an
            earlier pass). Each sender interleaves its rows packet by packet, up to its number
            of lanes (FILTER: one per PE column; IFMAP and PSUM: one per PE).
``RECV``    GON -> GLB: the next ``count`` psums of PE ``(src_row, src_col)`` go, in arrival
            order, to GLB words from ``glb_addr`` on (:class:`rsaccel.hw.movers.GonReceiver`;
            each source may have one segment open and one pending).
``CONFIG``  ``NOC``: one NoC configuration write (:func:`rsaccel.hw.noc.NocCfgWrite`).
            ``PE_CFG``: give every PE of rows ``row0..row1`` and columns ``col0..col1``
            (inclusive) ``count`` primitives of the given shape (:class:`PeCommand`); a PE
            loads new filters (``load_filter``) on the first of them only. The command waits
            until each of those PEs has taken every primitive it was given before.

Every list may also hold ``NOP`` commands, which only wait.

Rows
----
A ``SEND`` or ``RECV`` command with ``repeat = n`` is ``n + 1`` commands in one: row ``k``
(0 to ``n``) has the command's ``count``, GLB address ``glb_addr + k * glb_stride`` (modulo
2**16) and tags (``SEND``) or source (``RECV``) ``(row + k * row_step, col + k * col_step)``
(each modulo 256); row 0 has the command's wait and fence, the others none. Engines count rows:
in the completion counts below, in ``TAKEN_*`` and in ``ERROR_INDEX``, each row is a command
of its own, so a list's counts are those of the list written out row by row.

Synchronisation
---------------
Every engine counts its *completed* commands from 0 at the start of each layer. A command
with ``wait_engine`` other than ``NONE`` does not start until engine ``wait_engine`` has
completed at least ``wait_count`` commands; a command with ``fence`` does not start until
every earlier command of its own engine has completed (for ``CONFIG``: also until the three
senders are idle and every PE has finished all its primitives, so the NoC can be
reprogrammed). A command completes when:

* ``LOAD``: its last word is written into the GLB; ``STORE``: memory acknowledged its last
  write; ``FILTER``/``IFMAP``/``PSUM``: its last packet entered the NoC *and* every earlier
  command of the list has completed (interleaved rows retire in order); ``RECV``: its last
  psum is written into the GLB *and* every earlier ``RECV`` command has completed (segments
  retire in order); ``CONFIG``: it was applied; ``NOP``: its wait (and fence) was met.

A sender's row waits (holding back the rows behind it) while an earlier row with the same
tags is still being sent, so the rows reaching one set of PEs arrive one after the other.
Engines run in order within their list; a program whose waits describe any valid sequential
order of all its commands runs without deadlock (see :mod:`rsaccel.sw.program` for the rules
the compiler follows).

Layers
------
A layer is a :class:`Descriptor` (64 bytes, 16-byte aligned) in host memory: for each engine
the address (16-byte aligned) and length of its command list, and the address of the next
layer's descriptor (0: none). Writing ``CTRL.START`` runs the chain from ``DESC_ADDR``; the
engines' counters restart at every layer, and a layer starts once the previous one has
completed every command and the array is idle.

Commands are 128 bits (16 bytes), :data:`COMMAND` below, little end first in memory.
"""

from amaranth.lib import data, enum

__all__ = [
    "COMMAND",
    "COMMAND_BYTES",
    "DESCRIPTOR",
    "DESCRIPTOR_BYTES",
    "DESCRIPTOR_MAGIC",
    "ENGINE_OPS",
    "Engine",
    "ErrorCode",
    "NocCommand",
    "Op",
    "PeCommand",
    "command",
    "decode_command",
    "decode_descriptor",
    "descriptor",
    "encode_command",
]

COMMAND_BYTES = 16
DESCRIPTOR_BYTES = 64
#: ``Descriptor.magic``: "RSL1".
DESCRIPTOR_MAGIC = 0x314C5352


class Engine(enum.Enum, shape=3):
    """The engines, in the order of their lists in a :data:`DESCRIPTOR`."""
    LOAD = 0
    STORE = 1
    FILTER = 2
    IFMAP = 3
    PSUM = 4
    RECV = 5
    CONFIG = 6
    NONE = 7        # ``wait_engine``: no wait


class Op(enum.Enum, shape=4):
    NOP = 0
    LOAD = 1
    STORE = 2
    SEND = 3        # FILTER, IFMAP and PSUM lists
    RECV = 4
    NOC = 5         # CONFIG list
    PE_CFG = 6      # CONFIG list


#: The operations each engine's list may hold (besides NOP).
ENGINE_OPS = {
    Engine.LOAD: (Op.LOAD,), Engine.STORE: (Op.STORE,), Engine.FILTER: (Op.SEND,),
    Engine.IFMAP: (Op.SEND,), Engine.PSUM: (Op.SEND,), Engine.RECV: (Op.RECV,),
    Engine.CONFIG: (Op.NOC, Op.PE_CFG),
}


class ErrorCode(enum.Enum, shape=4):
    """``STATUS.CODE``: why the accelerator stopped."""
    NONE = 0
    DESCRIPTOR = 1      # bad magic, or a list or descriptor address not 16-byte aligned
    COMMAND = 2         # an operation the engine does not run, or a bad wait_engine
    GLB_RANGE = 3       # a command's GLB words leave the global buffer
    PE_CONFIG = 4       # a primitive the PEs cannot run, or PEs outside the array
    NOC_CONFIG = 5      # a NoC write to a position outside the array or an unknown network
    DMA_WINDOW = 6      # a memory access outside the window
    DMA_ALIGN = 7       # a memory address not word-aligned, or an empty transfer
    DMA_RESPONSE = 8    # memory answered SLVERR or DECERR
    NOC_UNMATCHED = 9   # a GIN packet matched no PE
    GON_OVERFLOW = 10   # a PE sent more psums than its segment holds, or from outside the array
    WATCHDOG = 11       # no engine made progress for WATCHDOG cycles


class PeCommand(data.Struct):
    """``PE_CFG`` operands (bits 32 up of a command): the PE rectangle, the number of
    primitives and their shape (:func:`rsaccel.hw.pe.PEConfig`, with wider fields)."""
    row0: 8
    row1: 8
    col0: 8
    col1: 8
    count: 24
    S: 6
    U: 4
    p: 7
    q: 6
    F: 12
    load_filter: 1
    use_psum_in: 1
    _pad: 3


class NocCommand(data.Struct):
    """``NOC`` operands (bits 32 up of a command), as :func:`rsaccel.hw.noc.NocCfgWrite`."""
    op: 2           # NocCfgOp
    net: 2          # NocNet
    row: 8
    col: 8
    value: 16
    _pad: 60


#: One command. ``args`` is read as the operation needs (see the module docstring):
#: ``LOAD`` / ``STORE``: ``move``: ``addr`` (byte address), ``count``, ``glb_addr``, and for
#: STORE ``flags`` bit 0 ``fp16``, bit 1 ``relu``; ``SEND``: ``rows``: ``count``, ``glb_addr``,
#: ``row_tag`` (``flags`` bits 0-7) and ``col_tag`` (bits 8-15); ``RECV``: ``rows``: ``count``,
#: ``glb_addr``, ``src_row`` (``flags`` bits 0-7) and ``src_col`` (bits 8-15); ``PE_CFG``:
#: :class:`PeCommand`; ``NOC``: :class:`NocCommand`. A ``SEND`` or ``RECV`` with ``repeat``
#: ``n`` stands for ``n + 1`` rows (see "Rows" in the module docstring).
COMMAND = data.StructLayout({
    "op": Op,
    "wait_engine": Engine,
    "fence": 1,
    "wait_count": 24,
    "args": data.UnionLayout({
        "move": data.StructLayout({"addr": 32, "count": 24, "glb_addr": 16, "flags": 24}),
        "rows": data.StructLayout({"repeat": 8, "glb_stride": 16, "row_step": 4, "col_step": 4,
                                   "count": 24, "glb_addr": 16, "flags": 24}),
        "pe": PeCommand,
        "noc": NocCommand,
    }),
})

#: A layer descriptor: ``magic`` (:data:`DESCRIPTOR_MAGIC`), the next descriptor's address
#: (0: last layer), then per engine (:class:`Engine` order) its list's address and length.
DESCRIPTOR = data.StructLayout({
    "magic": 32,
    "next": 32,
    "lists": data.ArrayLayout(data.StructLayout({"addr": 32, "count": 32}), 7),
})

DESCRIPTOR_BYTES = DESCRIPTOR.size // 8
assert COMMAND.size == 8 * COMMAND_BYTES, COMMAND.size


# -- Encoding and decoding (the host's side: plain integers, no Amaranth values) --------------

def _flatten(layout, offset=0, prefix=(), out=None):
    """Return ``{path: (offset, width)}`` of every leaf field of ``layout``."""
    out = {} if out is None else out
    for name, fld in data.Layout.cast(layout):
        shape = fld.shape
        nested = isinstance(shape, data.Layout) or (
            isinstance(shape, type) and issubclass(shape, (data.Struct, data.Union)))
        if nested:
            _flatten(shape, offset + fld.offset, prefix + (name,), out)
        else:
            out[prefix + (name,)] = (offset + fld.offset, fld.width)
    return out


_CMD_FIELDS = _flatten(COMMAND)
_DESC_FIELDS = _flatten(DESCRIPTOR)
_ARGS = {Op.LOAD: "move", Op.STORE: "move", Op.SEND: "rows", Op.RECV: "rows", Op.NOP: "move",
         Op.PE_CFG: "pe", Op.NOC: "noc"}


def _pack(fields, values):
    word = 0
    for path, value in values.items():
        offset, width = fields[path]
        value = int(value)
        if not 0 <= value < 1 << width:
            raise ValueError(f"command field {'.'.join(map(str, path))} = {value} does not fit "
                             f"its {width} bits")
        word |= value << offset
    return word


def _field(fields, word, path):
    offset, width = fields[path]
    return word >> offset & ((1 << width) - 1)


def encode_command(operation, /, *, wait_engine=Engine.NONE, wait_count=0, fence=False,
                   **args):
    """Return the 128-bit command (an int) of ``operation`` (:class:`Op`) with its operands
    ``args`` (the fields of ``move``, ``pe`` or ``noc`` in :data:`~rsaccel.hw.commands.COMMAND`,
    by name; a ``NOC`` command's ``op`` is the :class:`~rsaccel.hw.noc.NocCfgOp`)."""
    op = Op(operation)
    values = {("op",): op.value, ("wait_engine",): Engine(wait_engine).value,
              ("fence",): int(bool(fence)), ("wait_count",): wait_count}
    part = _ARGS[op]
    for name, value in args.items():
        if ("args", part, name) not in _CMD_FIELDS:
            raise ValueError(f"{op.name} has no operand {name!r}")
        values[("args", part, name)] = value.value if hasattr(value, "value") else value
    return _pack(_CMD_FIELDS, values)


def decode_command(word):
    """Return a command (an int) as a dict: ``op`` (:class:`Op`), ``wait_engine``
    (:class:`Engine`), ``wait_count``, ``fence`` and ``args``, the operands of its operation
    by name. Raises ValueError for an unknown operation or engine."""
    op = Op(_field(_CMD_FIELDS, word, ("op",)))
    out = {"op": op, "wait_engine": Engine(_field(_CMD_FIELDS, word, ("wait_engine",))),
           "wait_count": _field(_CMD_FIELDS, word, ("wait_count",)),
           "fence": bool(_field(_CMD_FIELDS, word, ("fence",)))}
    part = _ARGS[op]
    out["args"] = {path[2]: _field(_CMD_FIELDS, word, path) for path in _CMD_FIELDS
                   if path[:2] == ("args", part) and not path[2].startswith("_")}
    return out


def command(op, /, *, wait=None, fence=False, **args):
    """Return the 16 bytes of one command.

    ``wait``: ``(engine, count)`` or None. ``args``: for LOAD/STORE the ``move`` fields
    (``addr``, ``count``, ``glb_addr``, ``flags``), for SEND/RECV the ``rows`` fields (``count``,
    ``glb_addr``, ``flags``, and ``repeat``, ``glb_stride``, ``row_step``, ``col_step``); for
    PE_CFG the :class:`PeCommand`
    fields; for NOC the :class:`NocCommand` fields.
    """
    engine, count = wait if wait is not None else (Engine.NONE, 0)
    return encode_command(op, wait_engine=engine, wait_count=count, fence=fence,
                          **args).to_bytes(COMMAND_BYTES, "little")


def descriptor(lists, next=0):
    """Return the 64 bytes of a layer descriptor: ``lists`` maps :class:`Engine` to the
    ``(address, command count)`` of its list (absent engines: empty)."""
    values = {("magic",): DESCRIPTOR_MAGIC, ("next",): next}
    for engine, (addr, count) in lists.items():
        values[("lists", Engine(engine).value, "addr")] = addr
        values[("lists", Engine(engine).value, "count")] = count
    return _pack(_DESC_FIELDS, values).to_bytes(DESCRIPTOR_BYTES, "little")


def decode_descriptor(raw):
    """Return the 64 bytes of a descriptor as a dict: ``magic``, ``next`` and ``lists``, the
    ``(address, command count)`` of each engine's list in :class:`Engine` order."""
    word = int.from_bytes(raw, "little")
    return {"magic": _field(_DESC_FIELDS, word, ("magic",)),
            "next": _field(_DESC_FIELDS, word, ("next",)),
            "lists": [(_field(_DESC_FIELDS, word, ("lists", k, "addr")),
                       _field(_DESC_FIELDS, word, ("lists", k, "count"))) for k in range(7)]}
