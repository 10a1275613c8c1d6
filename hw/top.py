"""The complete accelerator: PE array and NoC, global buffer, DMA, registers and the controller.

Ports (:class:`Accelerator`): ``clk``/``rst`` (the ``sync`` domain), ``m_axi`` (AXI4 manager
for all memory traffic), ``s_axil`` (AXI4-Lite subordinate: :func:`register_map`) and
``irq`` (level: a completion or error the host enabled in ``IRQ_ENABLE`` and has not cleared
with ``CTRL.IRQ_CLEAR``).

The host leaves layer descriptors and command lists in memory (:mod:`rsaccel.hw.commands`),
sets the address window, writes the first descriptor's address to ``DESC_ADDR`` and writes
``CTRL.START``. The controller runs the chain of layers and sets ``STATUS.DONE``; or it stops
at the first error, with ``STATUS.ERROR``, the code, the engine and the index of the command
in its list. Either way every memory transfer already issued is finished first (writes that
were stopped are completed with empty strobes), so the bus is left clean and no byte outside
the window is touched. ``CTRL.SOFT_RESET`` does the same from any state and leaves the
accelerator idle with ``STATUS`` cleared. Performance counters (64 bits, ``<NAME>_LO`` and
``_HI``) restart at ``START`` and stop counting when the accelerator is idle; read them then.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.hdl import ResetInserter
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import ArrayConfig
from .axi import AXI4Signature, AXILiteSignature
from .commands import COMMAND, COMMAND_BYTES, DESCRIPTOR, DESCRIPTOR_MAGIC, Engine, ErrorCode, Op
from .counters import EventCounters
from .dma import Dma, DmaCommand, DmaError
from .glb import GlobalBuffer
from .movers import GinSender, GonReceiver, OutputStage
from .noc import NocCfgOp, NocNet, PEArray
from .pe import PE, PEEvents, pe_limits
from .plumbing import RoundRobin
from .regs import Access, Field, Register, RegisterFile, RegisterMap

__all__ = ["COUNTERS", "Accelerator", "Core", "register_map"]

#: Performance counters: name -> description. Cycles count while the accelerator runs.
COUNTERS = {
    "CYCLES": "cycles from START until done or stopped",
    "MAC_BUSY": "PE-cycles in which a MAC issued",
    "STALL_MEMORY": "cycles with a memory transfer under way and no data beat on the bus",
    "STALL_NOC": "cycles in which a GIN sender offered a packet the array did not take",
    "STALL_GLB": "cycles in which a GLB request waited for its bank or the GON waited for "
                 "the GLB",
    "DRAM_READ_BYTES": "bytes read from memory (commands and descriptors included)",
    "DRAM_WRITE_BYTES": "bytes written to memory",
    "GLB_READ_FILTER": "GLB words read for the filter GIN",
    "GLB_READ_IFMAP": "GLB words read for the ifmap GIN",
    "GLB_READ_PSUM": "GLB words read for the psum GIN",
    "GLB_READ_OUTPUT": "GLB words read for output",
    "GLB_WRITE_LOAD": "GLB words written from memory",
    "GLB_WRITE_PSUM": "GLB words written from the GON",
    "NOC_FILTER_VALUES": "values delivered by the filter GIN",
    "NOC_IFMAP_VALUES": "values delivered by the ifmap GIN",
    "NOC_PSUM_VALUES": "values delivered by the psum GIN",
    "NOC_GON_VALUES": "psums carried by the GON",
    "SPAD_FILTER_READS": "filter scratchpad reads (all PEs)",
    "SPAD_FILTER_WRITES": "filter scratchpad writes",
    "SPAD_IFMAP_READS": "ifmap scratchpad reads",
    "SPAD_IFMAP_WRITES": "ifmap scratchpad writes",
    "SPAD_PSUM_READS": "psum scratchpad reads",
    "SPAD_PSUM_WRITES": "psum scratchpad writes",
}

ID_VALUE = 0x52534131       # "RSA1"
_FETCH_DEPTH = 16           # commands queued per engine
_FETCH_BURST = 8            # commands per list read
_LOAD_CHUNK = 16            # words per read request of a LOAD (fetches go between them)
_COUNT_BITS = 24            # completed-command counters
_SETTLE = 4                 # idle cycles that end a layer


def register_map(config):
    """Return the :class:`~rsaccel.hw.regs.RegisterMap` of the accelerator for ``config``."""
    R = Register
    regs = [
        R("ID", 0x000, Access.RO, f"identification: {ID_VALUE:#010x}", reset=ID_VALUE),
        R("ARRAY", 0x004, Access.RO, "array shape", (
            Field("rows", 0, 8, "PE rows"), Field("cols", 8, 8, "PE columns"),
            Field("mac_stages", 16, 4, "MAC pipeline depth"),
            Field("noc_id_bits", 20, 5, "NoC ID width"))),
        R("SPADS", 0x008, Access.RO, "scratchpad depths", (
            Field("filter", 0, 12, "filter scratchpad (FP16 values)"),
            Field("ifmap", 12, 10, "ifmap scratchpad (FP16 values)"),
            Field("psum", 22, 10, "psum scratchpad (FP32 values)"))),
        R("GLB_WORDS", 0x00C, Access.RO, "global buffer size in words", (
            Field("words", 0, 24, "words"), Field("word_bits", 24, 8, "bits per word / 8"))),
        R("CTRL", 0x010, Access.WO, "control (write 1 to act)", (
            Field("start", 0, 1, "run the descriptor chain from DESC_ADDR (ignored when busy)"),
            Field("soft_reset", 1, 1, "stop, finish memory transfers, return to idle"),
            Field("irq_clear", 2, 1, "clear the interrupt"))),
        R("STATUS", 0x014, Access.RO, "status", (
            Field("busy", 0, 1, "running, or stopping"),
            Field("done", 1, 1, "the last chain completed"),
            Field("error", 2, 1, "the last chain stopped on an error"),
            Field("irq", 3, 1, "interrupt pending"),
            Field("code", 4, 4, "error code (ErrorCode)"),
            Field("engine", 8, 3, "engine of the error (Engine; NONE: descriptor or fetch)"),
            Field("layers", 16, 16, "layers completed since START"))),
        R("IRQ_ENABLE", 0x018, Access.RW, "interrupt enables", (
            Field("done", 0, 1, "on completion"), Field("error", 1, 1, "on error"))),
        R("DESC_ADDR", 0x01C, Access.RW, "address of the first layer descriptor"),
        R("WINDOW_BASE", 0x020, Access.RW, "lowest byte address the accelerator may access"),
        R("WINDOW_SIZE", 0x024, Access.RW, "size in bytes of the accessible window"),
        R("WATCHDOG", 0x028, Access.RW, "cycles without progress that stop a run with "
          "WATCHDOG (0: never)", reset=1 << 20),
        R("ERROR_INDEX", 0x02C, Access.RO, "index, in its engine's list, of the command that "
          "stopped the run"),
    ]
    for e in Engine:
        if e != Engine.NONE:
            regs.append(R(f"TAKEN_{e.name}", 0x040 + 4 * e.value, Access.RO,
                          f"commands the {e.name} engine has started in the current layer "
                          f"(where a stuck program waits)"))
    for k, (name, desc) in enumerate(COUNTERS.items()):
        regs.append(R(f"{name}_LO", 0x100 + 8 * k, Access.RO, f"{desc} (bits 31:0)"))
        regs.append(R(f"{name}_HI", 0x104 + 8 * k, Access.RO, f"{desc} (bits 63:32)"))
    return RegisterMap(regs, addr_width=config.axil_addr_bits)


def _check_config(config):
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {config!r}")
    if config.glb_word_bits != config.axi_data_bits:
        raise ValueError(f"the accelerator needs glb_word_bits equal to axi_data_bits, not "
                         f"{config.glb_word_bits} and {config.axi_data_bits}")
    if config.axi_data_bits > 8 * COMMAND_BYTES:
        raise ValueError(f"the accelerator needs axi_data_bits of at most "
                         f"{8 * COMMAND_BYTES} (one command), not {config.axi_data_bits}")
    for name, elem in (("filter_bus_bits", 16), ("ifmap_bus_bits", 16), ("psum_bus_bits", 32)):
        if getattr(config, name) != config.glb_word_bits:
            raise ValueError(f"the accelerator needs {name} equal to glb_word_bits "
                             f"({config.glb_word_bits}): a GIN packet is one GLB word, not "
                             f"{getattr(config, name)}")
    if config.gon_bus_bits > config.glb_word_bits:
        raise ValueError(f"the accelerator needs gon_bus_bits of at most glb_word_bits "
                         f"({config.glb_word_bits}), not {config.gon_bus_bits}")


def glb_words(config):
    """Words of the accelerator's global buffer: the ifmap/psum banks and the filter store."""
    banks = config.glb_banks + -(-config.glb_filter_depth // config.glb_bank_depth)
    return banks * config.glb_bank_depth


def _events_layout(config):
    n = config.num_pes
    pe = range(n + 1)
    return data.StructLayout({
        "cycles": 1, "mac_busy": pe, "stall_memory": 1, "stall_noc": 1, "stall_glb": 1,
        "dram_read_bytes": range(config.axi_data_bits // 8 + 1),
        "dram_write_bytes": range(config.axi_data_bits // 8 + 1),
        "glb_read_filter": 1, "glb_read_ifmap": 1, "glb_read_psum": 1, "glb_read_output": 1,
        "glb_write_load": 1, "glb_write_psum": 1,
        "noc_filter_values": range(config.filter_values_per_packet + 1),
        "noc_ifmap_values": range(config.ifmap_values_per_packet + 1),
        "noc_psum_values": range(config.psum_values_per_packet + 1),
        "noc_gon_values": range(config.gon_values_per_packet + 1),
        "spad_filter_reads": pe, "spad_filter_writes": pe, "spad_ifmap_reads": pe,
        "spad_ifmap_writes": pe, "spad_psum_reads": pe, "spad_psum_writes": pe,
    })


def _above(value, limit):
    """``value > limit``, as a constant 0 when the field cannot exceed ``limit`` (so the
    Verilog has no comparison that is always false)."""
    return value > limit if limit < (1 << len(value)) - 1 else Const(0)


def _popcount(bits):
    return sum((bits[k] for k in range(len(bits))), Const(0, 1))


class Core(wiring.Component):
    """The controller, engines, global buffer and PE array: everything but the bus ports.

    ``start`` (a pulse) runs the descriptor chain from ``desc_addr``; ``busy`` stays up until
    the chain completes (``finished`` pulses) or an error is found (``error`` holds the code,
    ``error_engine`` and ``error_index`` where it was found, until the core is reset: it then
    stops issuing work, and the owner resets it). Memory goes through ``read_*``/``write_*``,
    the command and data ports of a :class:`~rsaccel.hw.dma.Dma` (whose errors come back on
    ``read_error``/``write_error``). ``events`` are the per-cycle counts for the counters.
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        aw, dw = config.axi_addr_bits, config.axi_data_bits
        command = stream.Signature(DmaCommand(aw, 24))
        super().__init__({
            "start": In(1),
            "desc_addr": In(aw),
            "watchdog": In(32),
            "busy": Out(1),
            "finished": Out(1),
            "layer_done": Out(1),
            "error": Out(ErrorCode),
            "error_engine": Out(Engine),
            "error_index": Out(_COUNT_BITS),
            "taken": Out(data.ArrayLayout(_COUNT_BITS, 7)),
            "read_cmd": Out(command),
            "read_data": In(stream.Signature(dw)),
            "read_error": In(DmaError),
            "read_busy": In(1),
            "write_cmd": Out(command),
            "write_data": Out(stream.Signature(dw)),
            "write_error": In(DmaError),
            "write_busy": In(1),
            "events": Out(_events_layout(config)),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        dw = cfg.axi_data_bits
        words_per_cmd = 8 * COMMAND_BYTES // dw
        nglb = glb_words(cfg)
        engines = [e for e in Engine if e != Engine.NONE]

        # --- Blocks -------------------------------------------------------------------------
        m.submodules.glb = glb = GlobalBuffer(
            banks=nglb // cfg.glb_bank_depth, depth=cfg.glb_bank_depth, word_bits=dw,
            read_ports=4, write_ports=2)
        ga = glb.addr_width
        RD_FILTER, RD_IFMAP, RD_PSUM, RD_STORE = range(4)
        WR_LOAD, WR_RECV = range(2)

        def make_pe(r, c):
            return PE(filter_depth=cfg.filter_spad_depth, ifmap_depth=cfg.ifmap_spad_depth,
                      psum_depth=cfg.psum_spad_depth, mac_stages=cfg.mac_stages)
        m.submodules.array = array = PEArray(cfg, make_pe)
        pes = [pe for row in array.pes for pe in row]

        # Filter rows go to PEs that take one value per cycle: the filter sender interleaves
        # up to a row of PEs' rows, so that the PEs of a row load their filters together.
        senders = {}
        for engine, elem, port, lanes, probe in (
                (Engine.FILTER, 16, RD_FILTER, cfg.cols, False),
                (Engine.IFMAP, 16, RD_IFMAP, cfg.num_pes, True),
                (Engine.PSUM, 32, RD_PSUM, cfg.num_pes, True)):
            s = GinSender(elem_bits=elem, values_per_packet=dw // elem, word_bits=dw,
                          glb_addr_width=ga, id_bits=cfg.noc_id_bits, lanes=lanes,
                          pes=cfg.num_pes if probe else 0)
            m.submodules[f"send_{engine.name.lower()}"] = senders[engine] = s
            wiring.connect(m, s.glb_addr, glb.read_addr[port])
            wiring.connect(m, glb.read_data[port], s.glb_data)
            wiring.connect(m, s.gin, getattr(array, engine.name.lower()))
        for e in (Engine.IFMAP, Engine.PSUM):
            net = NocNet[e.name].value
            m.d.comb += [array.probe[net].eq(senders[e].probe),
                         senders[e].gin_state.eq(array.gin_state[net])]
        m.submodules.recv = recv = GonReceiver(
            rows=cfg.rows, cols=cfg.cols, values_per_packet=cfg.gon_values_per_packet,
            word_bits=dw, glb_addr_width=ga)
        wiring.connect(m, array.gon, recv.gon)
        wiring.connect(m, recv.write, glb.write[WR_RECV])
        m.submodules.output = output = OutputStage(word_bits=dw)

        # --- Run state and errors -----------------------------------------------------------
        running = Signal()              # a layer's engines are going
        failed = Signal()
        error_now = Signal(ErrorCode)   # errors found this cycle (the first source wins)
        error_engine_now = Signal(Engine)
        error_index_now = Signal(_COUNT_BITS)
        errors = []                     # (condition, code, engine, index), first wins

        def fail(cond, code, engine=Engine.NONE, index=0):
            errors.append((cond, code, engine, index))

        # --- Memory reads: descriptor fetch, command fetch, LOAD ----------------------------
        REQ_DESC, REQ_FETCH, REQ_LOAD = range(3)
        req_valid = Signal(3)
        req_addr = [Signal(cfg.axi_addr_bits, name=f"req{k}_addr") for k in range(3)]
        req_words = [Signal(24, name=f"req{k}_words") for k in range(3)]
        req_grant = Signal(3)
        req_engine = Signal(range(len(engines)))     # a fetch's engine
        rc = self.read_cmd
        # The read DMA takes a request once the one before has asked for all its bursts, so
        # the words of several are on their way: ``owners`` queues who gets them (one-hot
        # requester, words, a fetch's engine), in the order they come back.
        most = max(DESCRIPTOR.size // dw, _FETCH_BURST * COMMAND.size // dw, _LOAD_CHUNK)
        owner_layout = data.StructLayout({"who": 3, "words": range(most + 1),
                                          "engine": range(len(engines))})
        m.submodules.owners = owners = fifo.SyncFIFO(width=owner_layout.size, depth=8)
        head_owner = data.View(owner_layout, owners.r_data)
        owner = Signal(3)               # one-hot: who gets the read data
        m.d.comb += owner.eq(Mux(owners.r_rdy, head_owner.who, 0))
        with m.If(req_valid[REQ_DESC]):
            m.d.comb += req_grant.eq(1 << REQ_DESC)
        with m.Elif(req_valid[REQ_FETCH]):
            m.d.comb += req_grant.eq(1 << REQ_FETCH)
        with m.Else():
            m.d.comb += req_grant.eq(req_valid & (1 << REQ_LOAD))
        m.d.comb += [
            rc.valid.eq(req_grant.any() & ~failed & owners.w_rdy),
            rc.payload.addr.eq(Mux(req_grant[REQ_DESC], req_addr[REQ_DESC],
                                   Mux(req_grant[REQ_FETCH], req_addr[REQ_FETCH],
                                       req_addr[REQ_LOAD]))),
            rc.payload.words.eq(Mux(req_grant[REQ_DESC], req_words[REQ_DESC],
                                    Mux(req_grant[REQ_FETCH], req_words[REQ_FETCH],
                                        req_words[REQ_LOAD]))),
        ]
        granted = Signal(3)
        m.d.comb += [
            granted.eq(Mux(rc.valid & rc.ready, req_grant, 0)),
            owners.w_en.eq(granted.any()),
            owners.w_data.eq(Cat(granted, rc.payload.words[:len(head_owner.words)], req_engine)),
        ]
        rd = self.read_data
        beat = Signal(3)
        m.d.comb += beat.eq(Mux(rd.valid & rd.ready, owner, 0))
        got = Signal(range(most + 1))        # words of the head request received
        with m.If(beat.any()):
            with m.If(got + 1 == head_owner.words):
                m.d.comb += owners.r_en.eq(1)
                m.d.sync += got.eq(0)
            with m.Else():
                m.d.sync += got.eq(got + 1)

        # --- Descriptor fetch and the layer sequence ----------------------------------------
        desc_words = DESCRIPTOR.size // dw
        desc_bits = Signal(DESCRIPTOR.size)
        desc = data.View(DESCRIPTOR, desc_bits)
        desc_left = Signal(range(desc_words + 1))
        next_addr = Signal(cfg.axi_addr_bits)
        list_addr = [Signal(cfg.axi_addr_bits, name=f"{e.name.lower()}_list_addr")
                     for e in engines]
        list_left = [Signal(_COUNT_BITS, name=f"{e.name.lower()}_list_left") for e in engines]
        layer_start = Signal()
        engines_idle = Signal()         # defined below: every engine has finished its list
        restart = Signal()

        in_desc, in_check, desc_bad = Signal(), Signal(), Signal()
        settle = Signal(range(_SETTLE + 1))
        fail(in_desc & next_addr[:4].any(), ErrorCode.DESCRIPTOR)
        fail(in_check & desc_bad, ErrorCode.DESCRIPTOR)
        with m.FSM(name="ctrl") as ctrl:
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += next_addr.eq(self.desc_addr)
                m.next = "DESC"
            with m.State("DESC"):
                m.d.comb += [in_desc.eq(1),
                             req_valid[REQ_DESC].eq(~next_addr[:4].any()),
                             req_addr[REQ_DESC].eq(next_addr),
                             req_words[REQ_DESC].eq(desc_words)]
                with m.If(granted[REQ_DESC]):
                    m.d.sync += desc_left.eq(desc_words)
                    m.next = "DESC_DATA"
            with m.State("DESC_DATA"):
                m.d.comb += rd.ready.eq(owner[REQ_DESC])
                with m.If(beat[REQ_DESC]):
                    m.d.sync += [desc_bits.eq(Cat(desc_bits[dw:], rd.payload)),
                                 desc_left.eq(desc_left - 1)]
                    with m.If(desc_left == 1):
                        m.next = "CHECK"
            with m.State("CHECK"):
                bad = desc.magic != DESCRIPTOR_MAGIC
                for k in range(len(engines)):
                    bad |= desc.lists[k].addr[:4].any() | desc.lists[k].count[_COUNT_BITS:].any()
                m.d.comb += [in_check.eq(1), desc_bad.eq(bad)]
                with m.If(~bad):
                    m.d.comb += [layer_start.eq(1), restart.eq(1)]
                    m.d.sync += next_addr.eq(desc.next)
                    for k in range(len(engines)):
                        m.d.sync += [list_addr[k].eq(desc.lists[k].addr),
                                     list_left[k].eq(desc.lists[k].count)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running.eq(1)
                # A packet just sent is still in the NoC for a few cycles (and may yet turn
                # out to match no PE): the layer ends once everything has been idle a while.
                with m.If(engines_idle):
                    m.d.sync += settle.eq(settle + 1)
                with m.Else():
                    m.d.sync += settle.eq(0)
                with m.If(engines_idle & (settle == _SETTLE) & ~failed
                          & (error_now == ErrorCode.NONE)):
                    m.d.sync += settle.eq(0)
                    m.d.comb += self.layer_done.eq(1)
                    with m.If(next_addr.any()):
                        m.next = "DESC"
                    with m.Else():
                        m.d.comb += self.finished.eq(1)
                        m.next = "IDLE"

        m.d.comb += self.busy.eq(~ctrl.ongoing("IDLE") | failed)

        # --- Command fetch ------------------------------------------------------------------
        queues = []
        for e in engines:
            q = fifo.SyncFIFOBuffered(width=COMMAND.size, depth=_FETCH_DEPTH)
            m.submodules[f"{e.name.lower()}_queue"] = q
            queues.append(q)
        # Commands requested and not yet queued, per engine (fetches are pipelined).
        in_flight = [Signal(range(_FETCH_DEPTH + 1), name=f"{e.name.lower()}_in_flight")
                     for e in engines]
        fetching = Signal()
        m.d.comb += fetching.eq(Cat(f.any() for f in in_flight).any())
        m.submodules.fetch_arbiter = farb = RoundRobin(len(engines))
        room = [q.level + in_flight[k] <= _FETCH_DEPTH - _FETCH_BURST
                for k, q in enumerate(queues)]
        m.d.comb += [farb.requests[k].eq(running & list_left[k].any() & room[k])
                     for k in range(len(engines))]
        chosen = Signal(range(len(engines)))
        for k in range(len(engines)):
            with m.If(farb.grant[k]):
                m.d.comb += chosen.eq(k)
        n_cmds = Signal(range(_FETCH_BURST + 1))
        chosen_left = Signal(_COUNT_BITS)
        m.d.comb += [
            chosen_left.eq(Array(list_left)[chosen]),
            n_cmds.eq(Mux(chosen_left < _FETCH_BURST, chosen_left, _FETCH_BURST)),
            req_valid[REQ_FETCH].eq(farb.grant.any()),
            req_engine.eq(chosen),
            req_addr[REQ_FETCH].eq(Array(list_addr)[chosen]),
            req_words[REQ_FETCH].eq(n_cmds * words_per_cmd),
            farb.advance.eq(granted[REQ_FETCH]),
        ]
        with m.If(granted[REQ_FETCH]):
            for k in range(len(engines)):
                with m.If(chosen == k):
                    m.d.sync += [list_addr[k].eq(list_addr[k] + n_cmds * COMMAND_BYTES),
                                 list_left[k].eq(list_left[k] - n_cmds)]
        assembly = Signal(COMMAND.size)
        part = Signal(range(max(2, words_per_cmd)))
        whole = Signal()
        m.d.comb += whole.eq(part == words_per_cmd - 1)
        with m.If(owner[REQ_FETCH]):
            m.d.comb += rd.ready.eq(1)
        with m.If(beat[REQ_FETCH]):
            if words_per_cmd == 1:
                m.d.sync += assembly.eq(rd.payload)
            else:
                m.d.sync += [assembly.eq(Cat(assembly[dw:], rd.payload)),
                             part.eq(Mux(whole, 0, part + 1))]
        queued = Signal()
        fetch_engine = Signal(range(len(engines)))   # whose command is being assembled
        m.d.sync += queued.eq(beat[REQ_FETCH] & whole)
        with m.If(beat[REQ_FETCH]):
            m.d.sync += fetch_engine.eq(head_owner.engine)
        for k, q in enumerate(queues):
            m.d.comb += [q.w_data.eq(assembly), q.w_en.eq(queued & (fetch_engine == k))]
            m.d.sync += in_flight[k].eq(
                in_flight[k] + Mux(granted[REQ_FETCH] & (chosen == k), n_cmds, 0)
                - (queued & (fetch_engine == k)))

        # --- Engines: heads, waits, completion counters -------------------------------------
        done = [Signal(_COUNT_BITS, name=f"{e.name.lower()}_done") for e in engines]
        taken = [Signal(_COUNT_BITS, name=f"{e.name.lower()}_taken") for e in engines]
        heads = [data.View(COMMAND, q.r_data) for q in queues]
        ready_to_run = []
        completions = {}                # engine -> per-cycle completion count (a Value)
        engine_idle = {}                # engine -> no command under way
        take = [Signal(name=f"{e.name.lower()}_take") for e in engines]    # a command or row
        pop = [Signal(name=f"{e.name.lower()}_pop") for e in engines]      # its last row
        for k, (e, q, head) in enumerate(zip(engines, queues, heads)):
            wait_ok = Signal(name=f"{e.name.lower()}_wait_ok")
            with m.Switch(head.wait_engine):
                for j in range(len(engines)):
                    with m.Case(j):
                        m.d.comb += wait_ok.eq(done[j] >= head.wait_count)
                with m.Case(Engine.NONE):
                    m.d.comb += wait_ok.eq(1)
            ok = Signal(name=f"{e.name.lower()}_ready_to_run")
            m.d.comb += [ok.eq(running & q.r_rdy & wait_ok & ~failed), q.r_en.eq(pop[k])]
            ready_to_run.append(ok)
            with m.If(take[k]):
                m.d.sync += taken[k].eq(taken[k] + 1)
            m.d.comb += self.taken[k].eq(taken[k])

        def glb_end(head, words):
            """The command's GLB words leave the buffer."""
            return head.args.move.glb_addr + words > nglb

        def ceil_shift(value, shift):
            return (value + (1 << shift) - 1) >> shift if shift else value

        def nop(k, fence_ok):
            """Return the strobe of engine ``k`` taking a NOP (its fence met)."""
            e, head = engines[k], heads[k]
            strobe = Signal(name=f"{e.name.lower()}_nop")
            m.d.comb += strobe.eq(ready_to_run[k] & (head.op == Op.NOP) & (~head.fence | fence_ok))
            return strobe

        def rows(k, fired):
            """Return the GLB address, flags, first-row and last-row flags of the row of engine
            ``k``'s head command (SEND or RECV, see "Rows" in :mod:`.commands`) to give now;
            ``fired``: the row is given this cycle (the command leaves after its last)."""
            e, rw = engines[k], heads[k].args.rows
            n = Signal(8, name=f"{e.name.lower()}_row")
            at = Signal(16, name=f"{e.name.lower()}_row_addr")
            tags = Signal(16, name=f"{e.name.lower()}_row_tags")
            first, last = n == 0, n == rw.repeat
            addr = Mux(first, rw.glb_addr, at)
            flags = Mux(first, rw.flags[:16], tags)
            with m.If(fired):
                m.d.sync += [n.eq(Mux(last, 0, n + 1)), at.eq(addr + rw.glb_stride),
                             tags.eq(Cat((flags[:8] + rw.row_step)[:8],
                                         (flags[8:] + rw.col_step)[:8]))]
            m.d.comb += pop[k].eq(take[k] & (last | (heads[k].op == Op.NOP)))
            return addr, flags, first, last

        def bad_op(k, *ops):
            """Flag a command engine ``k`` does not run."""
            e, head = engines[k], heads[k]
            legal = head.op == Op.NOP
            for op in ops:
                legal |= head.op == op
            fail(ready_to_run[k] & ~legal, ErrorCode.COMMAND, e, taken[k])

        # LOAD: memory -> GLB.
        k = Engine.LOAD.value
        head = heads[k]
        # A LOAD is read in requests of at most _LOAD_CHUNK words, so that command fetches
        # (first in the read arbitration) wait behind a few bursts, not behind a whole LOAD.
        load_busy = Signal()
        load_left = Signal(24)          # words to write to the GLB
        load_addr = Signal(ga)
        load_req_left = Signal(24)      # words to request from memory
        load_req_addr = Signal(cfg.axi_addr_bits)
        load_done = Signal()
        bad_op(k, Op.LOAD)
        load_nop = nop(k, ~load_busy)
        is_load = ready_to_run[k] & (head.op == Op.LOAD) & ~load_busy
        out_of_glb = glb_end(head, head.args.move.count)
        fail(is_load & out_of_glb, ErrorCode.GLB_RANGE, Engine.LOAD, taken[k])
        fail(is_load & ~head.args.move.count.any(), ErrorCode.DMA_ALIGN, Engine.LOAD, taken[k])
        load_start = Signal()
        m.d.comb += [
            load_start.eq(is_load & ~out_of_glb & head.args.move.count.any()),
            req_valid[REQ_LOAD].eq(load_req_left.any()),
            req_addr[REQ_LOAD].eq(load_req_addr),
            req_words[REQ_LOAD].eq(Mux(load_req_left < _LOAD_CHUNK, load_req_left, _LOAD_CHUNK)),
            take[k].eq(load_nop | load_start),
        ]
        with m.If(load_start):
            m.d.sync += [load_busy.eq(1), load_left.eq(head.args.move.count),
                         load_addr.eq(head.args.move.glb_addr),
                         load_req_left.eq(head.args.move.count),
                         load_req_addr.eq(head.args.move.addr)]
        with m.If(granted[REQ_LOAD]):
            m.d.sync += [load_req_left.eq(load_req_left - req_words[REQ_LOAD]),
                         load_req_addr.eq(load_req_addr + (req_words[REQ_LOAD] << (dw // 8).bit_length() - 1))]
        lw = glb.write[WR_LOAD]
        m.d.comb += [
            lw.valid.eq(rd.valid & owner[REQ_LOAD] & load_busy),
            lw.payload.addr.eq(load_addr),
            lw.payload.data.eq(rd.payload),
        ]
        with m.If(owner[REQ_LOAD] & load_busy):
            m.d.comb += rd.ready.eq(lw.ready)
        with m.If(lw.valid & lw.ready):
            m.d.sync += [load_addr.eq(load_addr + 1), load_left.eq(load_left - 1)]
            with m.If(load_left == 1):
                m.d.sync += load_busy.eq(0)
                m.d.comb += load_done.eq(1)
        m.d.comb += pop[k].eq(take[k])
        completions[Engine.LOAD] = load_nop + load_done
        engine_idle[Engine.LOAD] = ~load_busy

        # STORE: GLB -> output stage -> memory.
        k = Engine.STORE.value
        head = heads[k]
        P = dw // 32
        store_state = Signal(2)         # 0 idle, 1 reading the GLB, 2 waiting for memory
        store_reads = Signal(24)
        store_addr = Signal(ga)
        store_done = Signal()
        bad_op(k, Op.STORE)
        store_nop = nop(k, store_state == 0)
        count = head.args.move.count
        fp16 = head.args.move.flags[0]
        relu = head.args.move.flags[1]
        words_in = ceil_shift(count, P.bit_length() - 1)
        words_out = Mux(fp16, ceil_shift(count, (2 * P).bit_length() - 1), words_in)
        is_store = ready_to_run[k] & (head.op == Op.STORE) & (store_state == 0)
        s_out = glb_end(head, words_in)
        fail(is_store & s_out, ErrorCode.GLB_RANGE, Engine.STORE, taken[k])
        wc = self.write_cmd
        start_store = Signal()
        # Both the DMA and the output stage take a command whenever they are idle.
        m.d.comb += [
            wc.payload.addr.eq(head.args.move.addr),
            wc.payload.words.eq(words_out),
            output.desc.payload.values.eq(count),
            output.desc.payload.fp16.eq(fp16),
            output.desc.payload.relu.eq(relu),
            start_store.eq(is_store & ~s_out & ~self.write_busy & ~output.busy),
            wc.valid.eq(start_store),
            output.desc.valid.eq(start_store),
            take[k].eq(store_nop | start_store),
        ]
        with m.If(start_store):
            m.d.sync += [store_state.eq(1), store_reads.eq(words_in),
                         store_addr.eq(head.args.move.glb_addr)]
        sr = glb.read_addr[RD_STORE]
        m.d.comb += [sr.valid.eq(store_state == 1), sr.payload.eq(store_addr)]
        with m.If(sr.valid & sr.ready):
            m.d.sync += [store_addr.eq(store_addr + 1), store_reads.eq(store_reads - 1)]
            with m.If(store_reads == 1):
                m.d.sync += store_state.eq(2)
        wiring.connect(m, glb.read_data[RD_STORE], output.i)
        wiring.connect(m, output.data, wiring.flipped(self.write_data))
        with m.If((store_state == 2) & ~output.busy & ~self.write_busy):
            m.d.sync += store_state.eq(0)
            m.d.comb += store_done.eq(1)
        m.d.comb += pop[k].eq(take[k])
        completions[Engine.STORE] = store_nop + store_done
        engine_idle[Engine.STORE] = store_state == 0

        # FILTER, IFMAP, PSUM: GLB -> GIN.
        for e, s in senders.items():
            k = e.value
            head = heads[k]
            bad_op(k, Op.SEND)
            snop = nop(k, s.idle)
            is_send = ready_to_run[k] & (head.op == Op.SEND)
            vpp = s.values_per_packet
            d = s.desc
            addr, flags, first, _ = rows(k, d.valid & d.ready)
            out_of = addr + ceil_shift(head.args.rows.count, vpp.bit_length() - 1) > nglb
            fail(is_send & out_of, ErrorCode.GLB_RANGE, e, taken[k])
            m.d.comb += [
                d.valid.eq(is_send & ~out_of),
                d.payload.glb_addr.eq(addr),
                d.payload.values.eq(head.args.rows.count),
                d.payload.row_tag.eq(flags[:8]),
                d.payload.col_tag.eq(flags[8:]),
                d.payload.fence.eq(head.fence & first),
                take[k].eq(snop | (d.valid & d.ready)),
            ]
            completions[e] = snop + s.done
            engine_idle[e] = s.idle

        # RECV: GON -> GLB segments.
        k = Engine.RECV.value
        head = heads[k]
        bad_op(k, Op.RECV)
        rnop = nop(k, ~recv.busy)
        seg = recv.segment
        addr, flags, first, _ = rows(k, seg.valid & seg.ready)
        is_recv = ready_to_run[k] & (head.op == Op.RECV) & ~(head.fence & first & recv.busy)
        r_out = addr + ceil_shift(head.args.rows.count, P.bit_length() - 1) > nglb
        fail(is_recv & r_out, ErrorCode.GLB_RANGE, Engine.RECV, taken[k])
        m.d.comb += [
            seg.valid.eq(is_recv & ~r_out),
            seg.payload.src_row.eq(flags[:8]),
            seg.payload.src_col.eq(flags[8:]),
            seg.payload.glb_addr.eq(addr),
            seg.payload.values.eq(head.args.rows.count),
            take[k].eq(rnop | (seg.valid & seg.ready)),
            recv.restart.eq(restart),
        ]
        recv_nops = Signal(_COUNT_BITS)
        with m.If(rnop):
            m.d.sync += recv_nops.eq(recv_nops + 1)
        engine_idle[Engine.RECV] = ~recv.busy
        fail(running & recv.error, ErrorCode.GON_OVERFLOW, Engine.RECV, taken[k])

        # CONFIG: NoC writes and PE primitive sequences.
        k = Engine.CONFIG.value
        head = heads[k]
        bad_op(k, Op.NOC, Op.PE_CFG)
        pe_left = [Signal(16, name=f"pe{i}_left") for i in range(cfg.num_pes)]
        pe_cfg = [Signal(pes[0].config_layout, name=f"pe{i}_cfg") for i in range(cfg.num_pes)]
        seq_empty = Signal()
        pes_idle = Signal()
        m.d.comb += [seq_empty.eq(~Cat(x.any() for x in pe_left).any()),
                     pes_idle.eq(Cat(pe.idle for pe in pes).all())]
        array_drained = Signal()
        m.d.comb += array_drained.eq(seq_empty & pes_idle & Cat(s.idle for s in
                                                                  senders.values()).all())
        cnop = nop(k, array_drained)
        fenced = head.fence & ~array_drained
        # NoC write.
        nc = head.args.noc
        is_noc = ready_to_run[k] & (head.op == Op.NOC) & ~fenced
        noc_bad = (nc.net > NocNet.PSUM.value) | (nc.row >= cfg.rows) | \
            ((nc.op != NocCfgOp.ROW_ID.value) & (nc.col >= cfg.cols)) | \
            (nc.value >= (1 << max(2, cfg.noc_id_bits)))
        noc_bad = noc_bad & (nc.op != NocCfgOp.CLEAR.value)
        fail(is_noc & noc_bad, ErrorCode.NOC_CONFIG, Engine.CONFIG, taken[k])
        ncw = array.cfg
        m.d.comb += [
            ncw.valid.eq(is_noc & ~noc_bad),
            ncw.payload.op.eq(nc.op),
            ncw.payload.net.eq(nc.net),
            ncw.payload.row.eq(nc.row),
            ncw.payload.col.eq(nc.col),
            ncw.payload.value.eq(nc.value),
        ]
        # PE_CFG: check the primitive, wait for the rectangle's sequences to end, load them.
        pc = head.args.pe
        lim = pe_limits(filter_depth=cfg.filter_spad_depth, ifmap_depth=cfg.ifmap_spad_depth,
                        psum_depth=cfg.psum_spad_depth)
        is_pe = ready_to_run[k] & (head.op == Op.PE_CFG) & ~fenced
        qS = Signal(range(64 * 64))
        pqS = Signal(range(128 * 64 * 64))
        m.d.comb += [qS.eq(pc.q * pc.S), pqS.eq(pc.p * qS)]
        pe_bad = (pc.row0 > pc.row1) | (pc.row1 >= cfg.rows) | (pc.col0 > pc.col1) | \
            (pc.col1 >= cfg.cols) | (pc.S == 0) | (pc.U == 0) | (pc.p == 0) | (pc.q == 0) | \
            (pc.F == 0) | _above(pc.S, lim["S"]) | _above(pc.p, lim["p"]) | \
            _above(pc.q, lim["q"]) | _above(pc.F, lim["F"]) | (qS > cfg.ifmap_spad_depth) | \
            (pqS > cfg.filter_spad_depth) | pc.count[16:].any()
        fail(is_pe & pe_bad, ErrorCode.PE_CONFIG, Engine.CONFIG, taken[k])
        in_rect = []
        for r in range(cfg.rows):
            for c in range(cfg.cols):
                in_rect.append(~_above(pc.row0, r) & (pc.row1 >= r if r else Const(1))
                               & ~_above(pc.col0, c) & (pc.col1 >= c if c else Const(1)))
        rect_free = Signal()
        m.d.comb += rect_free.eq(~Cat(inside & pe_left[i].any()
                                      for i, inside in enumerate(in_rect)).any())
        load_pe = Signal()
        m.d.comb += [
            load_pe.eq(is_pe & ~pe_bad & rect_free),
            take[k].eq(cnop | (ncw.valid & ncw.ready) | load_pe),
            pop[k].eq(take[k]),
        ]
        new_cfg = Signal(pes[0].config_layout)
        m.d.comb += [new_cfg.S.eq(pc.S), new_cfg.U.eq(pc.U), new_cfg.p.eq(pc.p),
                     new_cfg.q.eq(pc.q), new_cfg.F.eq(pc.F), new_cfg.load_filter.eq(pc.load_filter),
                     new_cfg.use_psum_in.eq(pc.use_psum_in)]
        for i, pe in enumerate(pes):
            m.d.comb += [pe.cfg.valid.eq(pe_left[i].any()), pe.cfg.payload.eq(pe_cfg[i])]
            with m.If(load_pe & in_rect[i]):
                m.d.sync += [pe_left[i].eq(pc.count), pe_cfg[i].eq(new_cfg)]
            with m.Elif(pe.cfg.valid & pe.cfg.ready):
                m.d.sync += [pe_left[i].eq(pe_left[i] - 1), pe_cfg[i].load_filter.eq(0)]
        completions[Engine.CONFIG] = take[k]
        engine_idle[Engine.CONFIG] = Const(1)

        # Completion counters (RECV's is the receiver's in-order count plus NOPs).
        for k, e in enumerate(engines):
            if e == Engine.RECV:
                m.d.comb += done[k].eq(recv.retired + recv_nops)
                continue
            with m.If(layer_start):
                m.d.sync += done[k].eq(0)
            with m.Else():
                m.d.sync += done[k].eq(done[k] + completions[e])
        for k in range(len(engines)):
            with m.If(layer_start):
                m.d.sync += taken[k].eq(0)
        with m.If(layer_start):
            m.d.sync += recv_nops.eq(0)

        m.d.comb += engines_idle.eq(
            ~Cat(x.any() for x in list_left).any() & ~fetching
            & Cat(~q.r_rdy for q in queues).all()
            & Cat(engine_idle[e] for e in engines).all()
            & array_drained & ~recv.busy & ~output.busy)

        # --- Errors from the blocks, and the watchdog ---------------------------------------
        for dma_error, engine in ((self.read_error, Engine.LOAD),
                                  (self.write_error, Engine.STORE)):
            idx = taken[engine.value] - 1
            fail(dma_error == DmaError.WINDOW, ErrorCode.DMA_WINDOW, engine, idx)
            fail(dma_error == DmaError.ALIGN, ErrorCode.DMA_ALIGN, engine, idx)
            fail(dma_error == DmaError.RESPONSE, ErrorCode.DMA_RESPONSE, engine, idx)
        unmatched = array.unmatched
        for name, engine in (("filter", Engine.FILTER), ("ifmap", Engine.IFMAP),
                             ("psum", Engine.PSUM)):
            fail(getattr(unmatched, name), ErrorCode.NOC_UNMATCHED, engine,
                 taken[engine.value] - 1)
        quiet = Signal(32)
        progress = Signal()
        m.d.comb += progress.eq(Cat(take).any() | rd.valid | self.write_data.valid
                                | Cat(pe.events.mac_busy for pe in pes).any()
                                | array.gon.valid)
        with m.If(~running | progress):
            m.d.sync += quiet.eq(0)
        with m.Else():
            m.d.sync += quiet.eq(quiet + 1)
        fail(running & self.watchdog.any() & (quiet >= self.watchdog), ErrorCode.WATCHDOG)

        for cond, code, engine, index in reversed(errors):
            with m.If(cond):
                m.d.comb += [error_now.eq(code), error_engine_now.eq(engine),
                             error_index_now.eq(index)]
        with m.If(~failed & (error_now != ErrorCode.NONE)):
            m.d.sync += [failed.eq(1), self.error.eq(error_now),
                         self.error_engine.eq(error_engine_now),
                         self.error_index.eq(error_index_now)]

        # --- Events -------------------------------------------------------------------------
        ev = self.events
        pev = [data.View(PEEvents, pe.events.as_value()) for pe in pes]
        gin_stall = Cat(s.gin.valid & ~s.gin.ready for s in senders.values()).any()
        glb_stall = Cat([p.valid & ~p.ready for p in glb.read_addr]
                        + [p.valid & ~p.ready for p in glb.write]
                        + [array.gon.valid & ~array.gon.ready]).any()
        noc = array.events
        m.d.comb += [
            ev.mac_busy.eq(_popcount(Cat(p.mac_busy for p in pev))),
            ev.stall_noc.eq(gin_stall),
            ev.stall_glb.eq(glb_stall),
            ev.glb_read_filter.eq(glb.reads[RD_FILTER]),
            ev.glb_read_ifmap.eq(glb.reads[RD_IFMAP]),
            ev.glb_read_psum.eq(glb.reads[RD_PSUM]),
            ev.glb_read_output.eq(glb.reads[RD_STORE]),
            ev.glb_write_load.eq(glb.writes[WR_LOAD]),
            ev.glb_write_psum.eq(glb.writes[WR_RECV]),
            ev.noc_filter_values.eq(noc.filter_values),
            ev.noc_ifmap_values.eq(noc.ifmap_values),
            ev.noc_psum_values.eq(noc.psum_values),
            ev.noc_gon_values.eq(noc.gon_values),
            ev.spad_filter_reads.eq(_popcount(Cat(p.filter_read for p in pev))),
            ev.spad_filter_writes.eq(_popcount(Cat(p.filter_write for p in pev))),
            ev.spad_ifmap_reads.eq(_popcount(Cat(p.ifmap_read for p in pev))),
            ev.spad_ifmap_writes.eq(_popcount(Cat(p.ifmap_write for p in pev))),
            ev.spad_psum_reads.eq(_popcount(Cat(p.psum_read for p in pev))),
            ev.spad_psum_writes.eq(_popcount(Cat(p.psum_write for p in pev))),
        ]
        return m



class Accelerator(wiring.Component):
    """The accelerator top: ``m_axi``, ``s_axil``, ``irq`` (see the module docstring)."""

    def __init__(self, config):
        _check_config(config)
        self._config = config
        self._regmap = register_map(config)
        super().__init__({
            "m_axi": Out(AXI4Signature(addr_width=config.axi_addr_bits,
                                       data_width=config.axi_data_bits,
                                       id_width=config.axi_id_bits)),
            "s_axil": In(AXILiteSignature(addr_width=config.axil_addr_bits)),
            "irq": Out(1),
        })

    @property
    def config(self):
        return self._config

    @property
    def regmap(self):
        return self._regmap

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.regs = regs = RegisterFile(self._regmap)
        wiring.connect(m, wiring.flipped(self.s_axil), regs.bus)
        m.submodules.dma = dma = Dma(addr_width=cfg.axi_addr_bits, data_width=cfg.axi_data_bits,
                                     id_width=cfg.axi_id_bits)
        wiring.connect(m, dma.bus, wiring.flipped(self.m_axi))
        core = Core(cfg)
        core_reset = Signal()
        m.submodules.core = ResetInserter(core_reset)(core)

        ctrl = regs.ctrl
        written = regs.ctrl_written
        start = written & ctrl[0]
        soft_reset = written & ctrl[1]
        irq_clear = written & ctrl[2]

        # Idle -> running -> (stopping: the core held in reset while the DMA finishes the
        # bus transfers it issued) -> idle.
        done = Signal()
        error = Signal(ErrorCode)
        error_engine = Signal(Engine, init=Engine.NONE)
        error_index = Signal(_COUNT_BITS)
        layers = Signal(16)
        irq = Signal()
        stopping = Signal()
        abort = Signal()
        with m.FSM(name="top"):
            with m.State("IDLE"):
                m.d.comb += core_reset.eq(1)
                with m.If(start):
                    m.d.sync += [done.eq(0), error.eq(ErrorCode.NONE), error_engine.eq(Engine.NONE),
                                 error_index.eq(0), layers.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += core.start.eq(1)       # the core's FSM takes it once, when idle
                with m.If(core.layer_done):
                    m.d.sync += layers.eq(layers + 1)
                with m.If(soft_reset):
                    m.d.comb += abort.eq(1)
                    m.next = "STOP"
                with m.Elif(core.error != ErrorCode.NONE):
                    m.d.comb += abort.eq(1)
                    m.d.sync += [error.eq(core.error), error_engine.eq(core.error_engine),
                                 error_index.eq(core.error_index)]
                    with m.If(regs.irq_enable[1]):
                        m.d.sync += irq.eq(1)
                    m.next = "STOP"
                with m.Elif(core.finished):
                    m.d.sync += done.eq(1)
                    with m.If(regs.irq_enable[0]):
                        m.d.sync += irq.eq(1)
                    m.next = "IDLE"
            with m.State("STOP"):
                m.d.comb += [core_reset.eq(1), stopping.eq(1)]
                with m.If(~dma.read_busy & ~dma.write_busy):
                    m.next = "IDLE"
        with m.If(soft_reset):
            m.d.sync += [done.eq(0), error.eq(ErrorCode.NONE), error_engine.eq(Engine.NONE),
                         error_index.eq(0), irq.eq(0)]
        with m.Elif(irq_clear):
            m.d.sync += irq.eq(0)
        m.d.comb += self.irq.eq(irq)

        m.d.comb += [
            dma.window_base.eq(regs.window_base),
            dma.window_size.eq(regs.window_size),
            dma.clear.eq(start | soft_reset),
            dma.cancel.eq(abort),
            core.desc_addr.eq(regs.desc_addr),
            core.watchdog.eq(regs.watchdog),
            core.read_error.eq(dma.read_error),
            core.write_error.eq(dma.write_error),
            core.read_busy.eq(dma.read_busy),
            core.write_busy.eq(dma.write_busy),
        ]
        wiring.connect(m, core.read_cmd, dma.read_cmd)
        wiring.connect(m, dma.read_data, core.read_data)
        wiring.connect(m, core.write_cmd, dma.write_cmd)
        wiring.connect(m, core.write_data, dma.write_data)

        busy = Signal()
        m.d.comb += busy.eq(core.busy | stopping)
        m.d.comb += [
            regs.id.eq(ID_VALUE),
            regs.array.eq(Cat(Const(cfg.rows, 8), Const(cfg.cols, 8), Const(cfg.mac_stages, 4),
                              Const(cfg.noc_id_bits, 5))),
            regs.spads.eq(Cat(Const(cfg.filter_spad_depth, 12), Const(cfg.ifmap_spad_depth, 10),
                              Const(cfg.psum_spad_depth, 10))),
            regs.glb_words.eq(Cat(Const(glb_words(cfg), 24), Const(cfg.glb_word_bits // 8, 8))),
            regs.status.eq(Cat(busy, done, error != ErrorCode.NONE, irq, error.as_value(),
                               error_engine.as_value(), Const(0, 5), layers)),
            regs.error_index.eq(error_index),
        ]
        # The core is held in reset while idle: keep the counts of the last layer visible.
        for e in Engine:
            if e != Engine.NONE:
                with m.If(~core_reset):
                    m.d.sync += getattr(regs, f"taken_{e.name.lower()}").eq(core.taken[e.value])

        # Counters: the core's events plus what the bus shows.
        layout = _events_layout(cfg)
        m.submodules.counters = counters = EventCounters(layout, width=64)
        bus = self.m_axi
        wbytes = cfg.axi_data_bits // 8
        r_beat = bus.rvalid & bus.rready
        w_beat = bus.wvalid & bus.wready & bus.wstrb.any()
        m.d.comb += [
            counters.clear.eq(start),
            counters.events.eq(core.events),
            counters.events.cycles.eq(busy),
            counters.events.stall_memory.eq((dma.read_busy | dma.write_busy) & ~r_beat
                                            & ~(bus.wvalid & bus.wready)),
            counters.events.dram_read_bytes.eq(Mux(r_beat, wbytes, 0)),
            counters.events.dram_write_bytes.eq(Mux(w_beat, _popcount(bus.wstrb), 0)),
        ]
        for name in COUNTERS:
            value = counters.counts[name.lower()]
            m.d.comb += [getattr(regs, f"{name.lower()}_lo").eq(value[:32]),
                         getattr(regs, f"{name.lower()}_hi").eq(value[32:])]
        return m
