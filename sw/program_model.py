"""Functional model of the accelerator running command lists (:mod:`rsaccel.hw.commands`) on a
memory image: engines, GLB, NoC multicast, PE primitives, local psum links, GON segments.

:func:`run` interprets the layer chain that starts at a descriptor in a memory image and returns
the memory after it (:class:`Result`) with the commands each engine completed and access
counts; :func:`run_program` does it for one :class:`~rsaccel.sw.program.Program`. Commands run
in one order that their waits, fences and the hardware's hand-shakes allow, packet by packet:

* ``LOAD`` and ``STORE`` move their words at once (the output stage: ReLU, FP32 -> FP16 round
  to nearest even, as :mod:`rsaccel.sw.numerics`). Memory accesses outside the image, not
  word aligned or empty, and GLB accesses beyond the GLB are errors.
* A GIN sender holds up to its lanes' rows (``FILTER`` one per PE column, ``IFMAP`` and
  ``PSUM`` one per PE), reads a row from the GLB when it starts it, and sends one packet (one
  GLB word) per lane in turn. A row waits (holding back the rows behind it) while a row with
  its tags is in a lane. A packet goes to the PEs whose NoC IDs match its tag (IDs and routes
  written by ``NOC`` commands; reset: every ID unused) only when *every* one of them runs a
  primitive that still takes values of its kind (psums from the GIN only where the route
  says so); otherwise its lane waits and the next one in turn sends. A packet that matches no
  PE is an error, and so is one that carries more values than a target's primitive takes.
  Rows complete in list order.
* A PE runs the primitives its ``PE_CFG`` commands gave it, one at a time and in order (a
  ``PE_CFG`` waits while one of its PEs has a primitive not yet started), taking inputs for the
  running one only. Once they are all in it computes the primitive bit for bit
  (:func:`rsaccel.sw.pe_model.run_primitive`) and sends its psums up the column (all of them
  to the PE above, whose primitive must take psums from below) or into its GON queue, which
  holds one primitive's psums (the PE's packer and the network's registers); the primitive ends
  when its psums have left the PE.
* The GON passes queued packets to the receiver one at a time, in an arbitrary order: a packet
  whose source has no open ``RECV`` segment stalls the whole GON until one opens. Segments of a
  source open in order, one open and one pending at most (the ``RECV`` engine waits
  otherwise); psums are packed ``glb_word_bits // 32`` per word in arrival order, a segment's
  last word zero-padded; a packet that does not fit its segment is an error; segments retire
  in list order.

A deadlock (no engine, PE or network can move while commands or primitives are left) raises
:class:`ModelError` with ``WATCHDOG`` and what each engine, sender and PE waits for. Given a
``seed``, engines and PEs are interleaved pseudo-randomly and some of them (and some PEs' GON
packets) are *slow*: they move only when nothing else can, one of them only when no other can.
A wait that a program leaves out then shows as wrong data or a deadlock in some schedules; run
several seeds.

The model is stricter than the hardware in places (a packet waits unless every target's
running primitive takes it, rows are read when they start), so a program that runs here has no
race the hardware's buffering would hide; it cannot show the hardware's timing.
"""

import random
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from ..config import ArrayConfig
from ..hw.commands import (
    COMMAND_BYTES,
    DESCRIPTOR_BYTES,
    DESCRIPTOR_MAGIC,
    ENGINE_OPS,
    Engine,
    ErrorCode,
    Op,
    decode_command,
    decode_descriptor,
)
from ..hw.noc import ROUTE_FROM_GIN, ROUTE_TO_GON, NocCfgOp, NocNet
from .numerics import relu32, to_fp16
from .pe_model import check_primitive, run_primitive
from .program import ENGINES

__all__ = ["ModelError", "Result", "run", "run_program"]

_NETS = {Engine.FILTER: 0, Engine.IFMAP: 1, Engine.PSUM: 2}
_NET_NAMES = ("filter", "ifmap", "psum")



def _rows(cmd):
    """The rows a command stands for (:mod:`rsaccel.hw.commands`, "Rows"): a ``SEND`` or
    ``RECV`` with ``repeat = n`` is ``n + 1`` commands, the first with its wait and fence."""
    if cmd["op"] not in (Op.SEND, Op.RECV):
        return [cmd]
    a = cmd["args"]
    out = []
    for k in range(a["repeat"] + 1):
        row = (a["flags"] + k * a["row_step"]) & 0xFF
        col = (a["flags"] >> 8) + k * a["col_step"] & 0xFF
        out.append({**cmd, "wait_engine": cmd["wait_engine"] if k == 0 else Engine.NONE,
                    "wait_count": cmd["wait_count"] if k == 0 else 0,
                    "fence": cmd["fence"] and k == 0,
                    "args": {**a, "repeat": 0, "glb_stride": 0, "row_step": 0, "col_step": 0,
                             "glb_addr": (a["glb_addr"] + k * a["glb_stride"]) & 0xFFFF,
                             "flags": a["flags"] & ~0xFFFF | col << 8 | row}})
    return out

class ModelError(RuntimeError):
    """The program cannot run: ``code`` is the :class:`ErrorCode` the hardware would report."""

    def __init__(self, code, message):
        super().__init__(f"{code.name}: {message}")
        self.code = code


@dataclass
class Result:
    """What :func:`run` returns: ``memory`` (bytes, from the same origin as given), per layer the
    commands each engine completed (``completed``, a list of ``{Engine: count}``) and access
    counts (``counts``): ``dram_read_bytes``, ``dram_write_bytes``, ``command_bytes``,
    ``glb_reads`` and ``glb_writes`` (words, by data type), ``noc_packets`` (packets into each
    network, and ``gon``), ``noc_values`` (values delivered to PEs, multicast counted per PE;
    ``local``: psums passed up a column), ``macs``, ``primitives``."""
    memory: bytes
    completed: list
    counts: dict = field(default_factory=dict)


class _Prim:
    __slots__ = ("F", "S", "U", "W", "load", "p", "q", "use_psum")

    def __init__(self, S, U, p, q, F, load, use_psum):
        self.S, self.U, self.p, self.q, self.F = S, U, p, q, F
        self.load, self.use_psum = load, use_psum
        self.W = (F - 1) * U + S


class _PE:
    __slots__ = ("bufs", "done", "gon", "have", "out", "pos", "queue", "weights", "wshape")

    def __init__(self, pos):
        self.pos = pos
        self.queue = []             # primitives given, in order
        self.done = 0               # primitives finished
        self.bufs = ([], [], [])    # filter, ifmap, psum values received for the current one
        self.have = [0, 0, 0]
        self.weights = None         # stationary filter, [p][q][S]
        self.wshape = None
        self.out = None             # psums of the finished primitive, not sent on yet
        self.gon = deque()          # GON packets on their way

    def current(self):
        return self.queue[self.done] if self.done < len(self.queue) else None

    def need(self, net, from_gin):
        """Values of network ``net`` the running primitive still takes (None: none now)."""
        prim = self.current()
        if prim is None or self.out is not None:
            return 0
        if net == 0:
            total = prim.p * prim.q * prim.S if prim.load else 0
        elif net == 1:
            total = prim.W * prim.q
        else:
            total = prim.F * prim.p if prim.use_psum and from_gin else 0
        return total - self.have[net]


class _Layer:
    """The state of one layer's command lists."""

    def __init__(self, lists):
        self.lists = lists
        self.head = {e: 0 for e in ENGINES}
        self.completed = {e: 0 for e in ENGINES}
        self.recv_done = []         # RECV: done flags in list order


class _Machine:
    def __init__(self, config, memory, origin, seed):
        self.cfg = config
        self.mem = bytearray(memory)
        self.origin = origin
        self.rng = random.Random(seed) if seed is not None else None
        self.slow = False
        self.gon_lazy = set()
        self.word_bytes = config.glb_word_bits // 8
        self.V16 = config.glb_word_bits // 16
        self.V32 = config.glb_word_bits // 32
        self.Vg = config.gon_values_per_packet
        self.bus_bytes = config.axi_data_bits // 8
        self.glb_words = config.glb_banks * config.glb_bank_depth + config.glb_filter_depth
        self.glb = np.zeros((self.glb_words, self.word_bytes), np.uint8)
        rows, cols = config.rows, config.cols
        self.none = (1 << config.noc_id_bits) - 1
        self.row_ids = [[self.none] * rows for _ in range(3)]
        self.col_ids = [[[self.none] * cols for _ in range(rows)] for _ in range(3)]
        self.routes = [[ROUTE_FROM_GIN | ROUTE_TO_GON] * cols for _ in range(rows)]
        self.match_cache = [None, None, None]
        self.pes = {(r, c): _PE((r, c)) for r in range(rows) for c in range(cols)}
        self.counts = {
            "dram_read_bytes": 0, "dram_write_bytes": 0, "command_bytes": 0,
            "glb_reads": Counter(), "glb_writes": Counter(), "noc_packets": Counter(),
            "noc_values": Counter(), "macs": 0, "primitives": 0,
        }

    # Memory ------------------------------------------------------------------------------------

    def _dram(self, addr, nbytes, what):
        if addr % self.bus_bytes or nbytes <= 0:
            raise ModelError(ErrorCode.DMA_ALIGN, f"{what}: address {addr:#x} not aligned to "
                                                  f"{self.bus_bytes} bytes or empty transfer")
        start = addr - self.origin
        if start < 0 or start + nbytes > len(self.mem):
            end = self.origin + len(self.mem)
            raise ModelError(ErrorCode.DMA_WINDOW, f"{what}: bytes {addr:#x}.."
                                                   f"{addr + nbytes - 1:#x} leave the memory "
                                                   f"image ({self.origin:#x}..{end - 1:#x})")
        return start

    def _glb(self, addr, words, what):
        if addr + words > self.glb_words:
            raise ModelError(ErrorCode.GLB_RANGE, f"{what}: GLB words {addr}..{addr + words - 1} "
                                                  f"leave the {self.glb_words}-word GLB")

    def read_bytes(self, addr, nbytes, what):
        start = self._dram(addr, nbytes, what)
        return bytes(self.mem[start:start + nbytes])

    # NoC ---------------------------------------------------------------------------------------

    def matches(self, net):
        if self.match_cache[net] is None:
            table = {}
            for r in range(self.cfg.rows):
                rid = self.row_ids[net][r]
                if rid == self.none:
                    continue
                for c in range(self.cfg.cols):
                    cid = self.col_ids[net][r][c]
                    if cid != self.none:
                        table.setdefault((rid, cid), []).append(self.pes[r, c])
            self.match_cache[net] = table
        return self.match_cache[net]

    def from_gin(self, pe):
        r, c = pe.pos
        return r == 0 or bool(self.routes[r][c] & ROUTE_FROM_GIN)

    def to_gon(self, pe):
        r, c = pe.pos
        return r == self.cfg.rows - 1 or bool(self.routes[r][c] & ROUTE_TO_GON)

    # Running a layer ---------------------------------------------------------------------------

    def run_chain(self, desc_addr, max_layers):
        completed = []
        while desc_addr:
            if len(completed) >= max_layers:
                raise ModelError(ErrorCode.DESCRIPTOR, f"more than {max_layers} layers in the "
                                                       f"chain (a loop?)")
            if desc_addr % 16:
                raise ModelError(ErrorCode.DESCRIPTOR, f"descriptor address {desc_addr:#x} is not "
                                                       f"16-byte aligned")
            desc = decode_descriptor(self.read_bytes(desc_addr, DESCRIPTOR_BYTES, "descriptor"))
            if desc["magic"] != DESCRIPTOR_MAGIC:
                raise ModelError(ErrorCode.DESCRIPTOR, f"no descriptor magic at {desc_addr:#x}")
            self.counts["command_bytes"] += DESCRIPTOR_BYTES
            lists = {}
            for e in ENGINES:
                addr, count = desc["lists"][e.value]
                if addr % 16:
                    raise ModelError(ErrorCode.DESCRIPTOR, f"{e.name} list address {addr:#x} is "
                                                           f"not 16-byte aligned")
                raw = self.read_bytes(addr, count * COMMAND_BYTES, f"{e.name} list") \
                    if count else b""
                self.counts["command_bytes"] += len(raw)
                cmds = []
                for i in range(count):
                    w = int.from_bytes(raw[i * COMMAND_BYTES:(i + 1) * COMMAND_BYTES], "little")
                    try:
                        cmd = decode_command(w)
                    except ValueError:
                        raise ModelError(ErrorCode.COMMAND, f"{e.name}[{i}]: unknown "
                                                            f"operation") from None
                    if cmd["op"] is not Op.NOP and cmd["op"] not in ENGINE_OPS[e]:
                        raise ModelError(ErrorCode.COMMAND, f"{e.name}[{i}]: {cmd['op'].name} is "
                                                            f"not an operation of this engine")
                    cmds.extend(_rows(cmd))
                lists[e] = cmds
            self.layer = _Layer(lists)
            self.senders = {e: {"lanes": [], "rr": 0, "closed": set()} for e in _NETS}
            self.live = {}                 # src -> deque of [index, addr, left, part]
            self.gon_head = None
            self._run_layer()
            completed.append(dict(self.layer.completed))
            desc_addr = desc["next"]
        return completed

    def _ready(self, e, cmd, index):
        lay = self.layer
        if cmd["wait_engine"] is not Engine.NONE and \
                lay.completed[cmd["wait_engine"]] < cmd["wait_count"]:
            return False
        return not (cmd["fence"] and lay.completed[e] < index)

    def _run_layer(self):
        """Run the layer's commands to the end. With a seed, some engines and PEs are *slow*:
        each takes one step only when nothing else can move, so that every wait the program
        leaves out has a chance to show (as wrong data or a deadlock)."""
        engines = [self._load, self._store, self._config, self._recv, self._gon,
                   lambda: self._send(Engine.FILTER), lambda: self._send(Engine.IFMAP),
                   lambda: self._send(Engine.PSUM)]
        pes = list(self.pes.values())
        if self.rng is None:
            fast, slow = engines + [lambda: self._pes(pes)], []
        else:
            rng = self.rng
            fast, slow = [], []
            for actor in engines:
                (slow if rng.random() < 0.25 else fast).append(actor)
            lazy = [pe for pe in pes if rng.random() < 0.25]
            self.gon_lazy = {pe for pe in pes if rng.random() < 0.25}
            busy = [pe for pe in pes if pe not in lazy]
            fast.append(lambda: self._pes(busy))
            if lazy:
                slow.append(lambda: self._pes(lazy))
            if self.gon_lazy:
                slow.append(self._gon)
            # One slow actor moves only when no other can, so that it lags as far as the
            # program lets it.
            stubborn = rng.choice(slow) if slow else None
        while True:
            if self.rng is not None:
                self.rng.shuffle(fast)
                self.rng.shuffle(slow)
                if stubborn is not None:
                    slow.remove(stubborn)
                    slow.append(stubborn)
            progress = False
            for actor in fast:
                progress |= bool(actor())
            if not progress:
                for actor in slow:
                    self.slow = True
                    progress = bool(actor())
                    self.slow = False
                    if progress:
                        break
            if self._finished():
                break
            if not progress:
                raise ModelError(ErrorCode.WATCHDOG, "deadlock: " + self._diagnose())
        for pe in self.pes.values():
            if any(pe.have):
                raise ModelError(ErrorCode.PE_CONFIG, f"PE {pe.pos} holds input values no "
                                                      f"primitive used")

    def _finished(self):
        lay = self.layer
        if any(lay.head[e] < len(lay.lists[e]) for e in ENGINES):
            return False
        if any(lay.completed[e] < len(lay.lists[e]) for e in ENGINES):
            return False
        if any(s["lanes"] for s in self.senders.values()):
            return False
        return all(pe.done == len(pe.queue) and not pe.gon for pe in self.pes.values())

    def _budget(self):
        if self.slow:
            return 1
        return 1 << 30 if self.rng is None else self.rng.randint(1, 64)

    # Engines -----------------------------------------------------------------------------------

    def _simple(self, e, execute):
        lay = self.layer
        progress = False
        budget = self._budget()
        while lay.head[e] < len(lay.lists[e]) and budget:
            i = lay.head[e]
            cmd = lay.lists[e][i]
            if not self._ready(e, cmd, i):
                break
            if (cmd["op"] is not Op.NOP or e is Engine.CONFIG) and not execute(cmd, i):
                break
            lay.head[e] += 1
            lay.completed[e] += 1
            progress = True
            budget -= 1
        return progress

    def _load(self):
        def execute(cmd, i):
            words = cmd["args"]["count"]
            nbytes = words * self.bus_bytes
            start = self._dram(cmd["args"]["addr"], nbytes, f"LOAD[{i}]")
            self._glb(cmd["args"]["glb_addr"], words, f"LOAD[{i}]")
            blob = np.frombuffer(self.mem, np.uint8, nbytes, start)
            glb_addr = cmd["args"]["glb_addr"]
            self.glb[glb_addr:glb_addr + words] = blob.reshape(words, -1)
            self.counts["dram_read_bytes"] += nbytes
            self.counts["glb_writes"]["load"] += words
            return True
        return self._simple(Engine.LOAD, execute)

    def _store(self):
        def execute(cmd, i):
            count = cmd["args"]["count"]
            fp16, relu = cmd["args"]["flags"] & 1, cmd["args"]["flags"] >> 1 & 1
            words = -(-count // self.V32)
            self._glb(cmd["args"]["glb_addr"], words, f"STORE[{i}]")
            glb_addr = cmd["args"]["glb_addr"]
            vals = self.glb[glb_addr:glb_addr + words].view("<u4").ravel()[:count]
            self.counts["glb_reads"]["output"] += words
            if relu:
                vals = relu32(vals)
            per = self.bus_bytes // (2 if fp16 else 4)
            out = np.zeros(-(-count // per) * per, "<u2" if fp16 else "<u4")
            out[:count] = to_fp16(vals) if fp16 else vals
            blob = out.tobytes()
            start = self._dram(cmd["args"]["addr"], len(blob), f"STORE[{i}]")
            self.mem[start:start + len(blob)] = blob
            self.counts["dram_write_bytes"] += len(blob)
            return True
        return self._simple(Engine.STORE, execute)

    def _config(self):
        cfg = self.cfg

        def execute(cmd, i):
            if cmd["fence"]:
                if any(s["lanes"] for s in self.senders.values()):
                    return False
                if any(pe.done < len(pe.queue) for pe in self.pes.values()):
                    return False
            if cmd["op"] is Op.NOP:
                return True
            if cmd["op"] is Op.NOC:
                op, net, row, col, value = (cmd["args"][k] for k in ("op", "net", "row", "col",
                                                                         "value"))
                if row >= cfg.rows or col >= cfg.cols or (op != NocCfgOp.CLEAR.value
                                                          and net > NocNet.PSUM.value):
                    raise ModelError(ErrorCode.NOC_CONFIG, f"CONFIG[{i}]: NoC write to PE "
                                                           f"({row}, {col}) of network {net}")
                if op == NocCfgOp.ROW_ID.value:
                    self.row_ids[net][row] = value & self.none
                elif op == NocCfgOp.COL_ID.value:
                    self.col_ids[net][row][col] = value & self.none
                elif op == NocCfgOp.ROUTE.value:
                    self.routes[row][col] = value & 3
                self.match_cache = [None, None, None]
                return True
            # PE_CFG
            a = cmd["args"]
            r0, r1, c0, c1 = a["row0"], a["row1"], a["col0"], a["col1"]
            if not (r0 <= r1 < cfg.rows and c0 <= c1 < cfg.cols) or a["count"] == 0:
                raise ModelError(ErrorCode.PE_CONFIG, f"CONFIG[{i}]: PEs rows {r0}..{r1}, "
                                                      f"columns {c0}..{c1}, count {a['count']}")
            try:
                check_primitive(a["p"], a["q"], a["S"], a["U"], a["F"],
                                filter_depth=cfg.filter_spad_depth,
                                ifmap_depth=cfg.ifmap_spad_depth, psum_depth=cfg.psum_spad_depth)
            except ValueError as err:
                raise ModelError(ErrorCode.PE_CONFIG, f"CONFIG[{i}]: {err}") from None
            pes = [self.pes[r, c] for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
            if any(len(pe.queue) - pe.done > 1 for pe in pes):
                return False
            for pe in pes:
                for k in range(a["count"]):
                    pe.queue.append(_Prim(a["S"], a["U"], a["p"], a["q"], a["F"],
                                          bool(a["load_filter"]) and k == 0,
                                          bool(a["use_psum_in"])))
            return True

        return self._simple(Engine.CONFIG, execute)

    def _recv(self):
        lay = self.layer
        e = Engine.RECV
        progress = False
        while lay.head[e] < len(lay.lists[e]):
            i = lay.head[e]
            cmd = lay.lists[e][i]
            if not self._ready(e, cmd, i):
                break
            if cmd["op"] is Op.NOP or cmd["args"]["count"] == 0:
                lay.recv_done.append(True)
            else:
                src = (cmd["args"]["flags"] & 0xFF, cmd["args"]["flags"] >> 8 & 0xFF)
                if src not in self.pes:
                    raise ModelError(ErrorCode.GON_OVERFLOW, f"RECV[{i}]: source PE {src} is "
                                                             f"outside the array")
                self._glb(cmd["args"]["glb_addr"], -(-cmd["args"]["count"] // self.V32),
                          f"RECV[{i}]")
                live = self.live.setdefault(src, deque())
                if len(live) >= 2:
                    break
                live.append([i, cmd["args"]["glb_addr"], cmd["args"]["count"], []])
                lay.recv_done.append(False)
            lay.head[e] += 1
            progress = True
        self._retire()
        return progress

    def _retire(self):
        lay = self.layer
        while lay.completed[Engine.RECV] < len(lay.recv_done) and \
                lay.recv_done[lay.completed[Engine.RECV]]:
            lay.completed[Engine.RECV] += 1

    def _close(self, e, index):
        """Row ``index`` of sender ``e`` has left; the sender's rows complete in order."""
        lay, closed = self.layer, self.senders[e]["closed"]
        closed.add(index)
        while lay.completed[e] in closed:
            closed.remove(lay.completed[e])
            lay.completed[e] += 1

    def _deliverable(self, e, lane, V):
        """Whether every PE the lane's next packet reaches takes it now (an error if none
        matches, or a target's primitive takes fewer values)."""
        net = _NETS[e]
        i, row, pos, tag = lane
        n = min(V, len(row) - pos)
        targets = self.matches(net).get(tag)
        if not targets:
            raise ModelError(ErrorCode.NOC_UNMATCHED, f"{e.name}[{i}]: a packet tagged {tag} "
                                                      f"matches no PE")
        for pe in targets:
            need = pe.need(net, self.from_gin(pe))
            if need <= 0:
                return False
            if need < n:
                raise ModelError(ErrorCode.PE_CONFIG,
                                 f"{e.name}[{i}]: a packet of {n} values reaches PE "
                                 f"{pe.pos}, whose primitive takes {need} more")
        return True

    def _send(self, e):
        lay = self.layer
        s = self.senders[e]
        net = _NETS[e]
        lanes_max = self.cfg.cols if e is Engine.FILTER else self.cfg.rows * self.cfg.cols
        V = self.V32 if e is Engine.PSUM else self.V16
        progress = False
        while lay.head[e] < len(lay.lists[e]) and len(s["lanes"]) < lanes_max:
            i = lay.head[e]
            cmd = lay.lists[e][i]
            if not self._ready(e, cmd, i):
                break
            if cmd["op"] is Op.NOP or cmd["args"]["count"] == 0:
                lay.head[e] += 1
                progress = True
                self._close(e, i)
                continue
            args = cmd["args"]
            tag = (args["flags"] & 0xFF, args["flags"] >> 8 & 0xFF)
            if any(lane[3] == tag for lane in s["lanes"]):
                break                        # after the row with its tags
            lay.head[e] += 1
            progress = True
            words = -(-args["count"] // V)
            self._glb(args["glb_addr"], words, f"{e.name}[{i}]")
            # The row is read when it starts (the hardware reads a few words ahead of sending;
            # reading it all at once is stricter).
            values = self.glb[args["glb_addr"]:args["glb_addr"] + words] \
                .view("<u4" if e is Engine.PSUM else "<u2").ravel()[:args["count"]].copy()
            self.counts["glb_reads"][_NET_NAMES[net]] += words
            s["lanes"].append([i, values, 0, tag])
        budget = self._budget()
        while s["lanes"] and budget:
            # The next lane in turn whose packet every target can take (the others wait).
            for step in range(len(s["lanes"])):
                k = (s["rr"] + step) % len(s["lanes"])
                if self._deliverable(e, s["lanes"][k], V):
                    break
            else:
                return progress
            lane = s["lanes"][k]
            i, row, pos, tag = lane
            n = min(V, len(row) - pos)
            targets = self.matches(net)[tag]
            values = row[pos:pos + n]
            for pe in targets:
                pe.bufs[net].append(values)
                pe.have[net] += n
            self.counts["noc_packets"][_NET_NAMES[net]] += 1
            self.counts["noc_values"][_NET_NAMES[net]] += n * len(targets)
            lane[2] = pos + n
            if lane[2] == len(row):
                del s["lanes"][k]
                s["rr"] = k
                self._close(e, i)
            else:
                s["rr"] = k + 1
            progress = True
            budget -= 1
        return progress

    # PEs and the GON ---------------------------------------------------------------------------

    def _pes(self, pes):
        """Compute the primitives of ``pes`` whose inputs are all in, and send psums on."""
        progress = False
        for pe in pes:
            prim = pe.current()
            if prim is None or pe.out is not None:
                continue
            if prim.load and pe.have[0] < prim.p * prim.q * prim.S:
                continue
            if pe.have[1] < prim.W * prim.q:
                continue
            if prim.use_psum and pe.have[2] < prim.F * prim.p:
                continue
            if prim.load:
                pe.weights = np.concatenate(pe.bufs[0]).reshape(prim.S, prim.q, prim.p) \
                    .transpose(2, 1, 0)
                pe.wshape = (prim.p, prim.q, prim.S)
            elif pe.wshape != (prim.p, prim.q, prim.S):
                raise ModelError(ErrorCode.PE_CONFIG, f"PE {pe.pos} starts a primitive without "
                                                      f"loading filters, but holds filters of "
                                                      f"(p, q, S) = {pe.wshape}, not "
                                                      f"{(prim.p, prim.q, prim.S)}")
            ifmap = np.concatenate(pe.bufs[1]).reshape(prim.W, prim.q).T
            psum_in = np.concatenate(pe.bufs[2]).reshape(prim.F, prim.p) if prim.use_psum \
                else None
            pe.out = run_primitive(pe.weights, ifmap, psum_in, prim.U).ravel()
            self.counts["macs"] += prim.F * prim.p * prim.q * prim.S
            self.counts["primitives"] += 1
            pe.bufs = ([], [], [])
            pe.have = [0, 0, 0]
            progress = True
            if self.slow:
                break
        return self._drain(pes) | progress

    def _drain(self, pes):
        """Send the finished psums of ``pes`` on: up the column, or into the PE's GON queue
        (which holds one primitive's psums: the PE's packer and the network's registers)."""
        progress = False
        for pe in pes:
            out = pe.out
            if out is None:
                continue
            if self.to_gon(pe):
                if pe.gon:
                    continue
                pe.gon.extend(out[k:k + self.Vg] for k in range(0, len(out), self.Vg))
                self._finish(pe)
                progress = True
                continue
            r, c = pe.pos
            above = self.pes[r + 1, c]
            prim = above.current()
            if self.from_gin(above) or prim is None or not prim.use_psum or above.out is not None:
                continue
            need = prim.F * prim.p - above.have[2]
            if need <= 0:
                continue
            if need != len(out):
                raise ModelError(ErrorCode.PE_CONFIG, f"PE {pe.pos} sends {len(out)} psums up "
                                                      f"to PE {above.pos}, which takes {need}")
            above.bufs[2].append(out)
            above.have[2] += len(out)
            self.counts["noc_values"]["local"] += len(out)
            self._finish(pe)
            progress = True
        return progress

    def _finish(self, pe):
        pe.out = None
        pe.done += 1

    def _gon(self):
        """Pass GON packets to the receiver, one at a time: the head packet (granted in an
        arbitrary order when seeded) waits, stalling all others, until its source has an open
        segment."""
        progress = False
        budget = self._budget()
        while budget:
            pe = self.gon_head
            if pe is None:
                waiting = [q for q in self.pes.values() if q.gon]
                if not waiting:
                    break
                # Packets of "lazy" PEs go only when nothing else can move.
                busy = [q for q in waiting if q not in self.gon_lazy]
                if not busy and not self.slow:
                    break
                waiting = busy or waiting
                if self.rng is not None:
                    # Any waiting packet may be granted next; half the time prefer one whose
                    # source has no segment yet (the order that stalls the GON).
                    stuck = [q for q in waiting if not self.live.get(q.pos)]
                    pe = self.rng.choice(stuck if stuck and self.rng.random() < 0.5 else waiting)
                else:
                    pe = next((q for q in waiting if self.live.get(q.pos)), waiting[0])
                self.gon_head = pe
            live = self.live.get(pe.pos)
            if not live:
                break
            seg = live[0]
            packet = pe.gon.popleft()
            n = len(packet)
            if n > seg[2]:
                raise ModelError(ErrorCode.GON_OVERFLOW,
                                 f"PE {pe.pos} sends a packet of {n} psums into RECV[{seg[0]}], "
                                 f"which has {seg[2]} left")
            seg[3].extend(packet.tolist())
            seg[2] -= n
            self.counts["noc_packets"]["gon"] += 1
            while len(seg[3]) >= self.V32:
                self._write_psums(seg, seg[3][:self.V32])
                del seg[3][:self.V32]
            if seg[2] == 0:
                if seg[3]:
                    self._write_psums(seg, seg[3] + [0] * (self.V32 - len(seg[3])))
                live.popleft()
                self.layer.recv_done[seg[0]] = True
                self._retire()
            self.gon_head = None
            progress = True
            budget -= 1
        return progress

    def _write_psums(self, seg, values):
        self.glb[seg[1]] = np.array(values, "<u4").view(np.uint8)
        seg[1] += 1
        self.counts["glb_writes"]["psum"] += 1

    # Diagnosis ---------------------------------------------------------------------------------

    def _diagnose(self):
        lay = self.layer
        parts = []
        for e in ENGINES:
            i = lay.head[e]
            if i < len(lay.lists[e]):
                cmd = lay.lists[e][i]
                why = []
                if cmd["wait_engine"] is not Engine.NONE and \
                        lay.completed[cmd["wait_engine"]] < cmd["wait_count"]:
                    why.append(f"waits {cmd['wait_engine'].name} >= {cmd['wait_count']} (has "
                               f"{lay.completed[cmd['wait_engine']]})")
                if cmd["fence"]:
                    why.append(f"fence ({lay.completed[e]} of {i} earlier done)")
                parts.append(f"{e.name}[{i}] {cmd['op'].name} " + (", ".join(why) or "blocked"))
        for e, s in self.senders.items():
            for lane in s["lanes"]:
                targets = self.matches(_NETS[e]).get(lane[3], [])
                busy = [pe.pos for pe in targets if pe.need(_NETS[e], self.from_gin(pe)) <= 0]
                parts.append(f"{e.name} packet of [{lane[0]}] tag {lane[3]} waits for PEs {busy}")
        for pe in self.pes.values():
            prim = pe.current()
            if prim is None:
                continue
            if pe.out is not None:
                parts.append(f"PE {pe.pos} holds psums it cannot send "
                             f"({'GON queue full' if self.to_gon(pe) else 'up'})")
            else:
                need = [f"{name} {pe.need(k, self.from_gin(pe))}" for k, name in
                        enumerate(_NET_NAMES) if pe.need(k, self.from_gin(pe)) > 0]
                if prim.use_psum and not self.from_gin(pe):
                    need.append(f"psum from below {prim.F * prim.p - pe.have[2]}")
                parts.append(f"PE {pe.pos} primitive {pe.done} waits for " + ", ".join(need))
        if self.gon_head is not None:
            parts.insert(0, f"GON: a packet of PE {self.gon_head.pos} finds no open segment")
        return "; ".join(parts[:40]) + ("; ..." if len(parts) > 40 else "")


def run(config, memory, desc_addr, *, origin=0, seed=None, max_layers=1 << 16):
    """Run the layer chain whose first descriptor is at byte address ``desc_addr`` of
    ``memory`` (bytes-like, host memory from byte address ``origin`` on); return a
    :class:`Result`. ``seed``: None runs the engines in a fixed order, each as far as it can;
    an int interleaves them pseudo-randomly (a different legal order per seed). Raises
    :class:`ModelError` when the program cannot run (the hardware's error, or a deadlock)."""
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {config!r}")
    machine = _Machine(config, memory, origin, seed)
    completed = machine.run_chain(desc_addr, max_layers)
    return Result(bytes(machine.mem), completed, machine.counts)


def run_program(program, x, w, bias=None, *, base=0, seed=None):
    """Build ``program``'s image for ``x``, ``w``, ``bias`` at ``base``, run it, and return
    ``(outputs, result)``: the outputs ``(N, M, E, F)`` and the :class:`Result`."""
    image = program.image(x, w, bias, base=base)
    result = run(program.config, image, base, origin=base, seed=seed)
    return program.output(result.memory, base, origin=base), result
