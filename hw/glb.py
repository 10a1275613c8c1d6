"""The global buffer: banked on-chip SRAM shared by the data movers.

``banks`` banks of ``depth`` words of ``word_bits`` bits form one word-addressed space (bank
``addr // depth``); which banks hold ifmaps and which psums is the layer's choice, made by the
addresses it uses. Each bank is a simple dual-port SRAM: one read and one write per cycle.
Requesters reach any bank through per-bank round-robin arbiters, so none starves.

Read ports take an address on ``read_addr[k]`` and answer, in order, on ``read_data[k]``; each
port sustains one word per cycle while its data is taken. Write ports take ``{addr, data}`` on
``write[k]``. An address beyond the buffer is consumed without effect (a read of it answers
zero) and sets the sticky ``error`` flag, cleared by ``clear``.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .plumbing import RoundRobin

__all__ = ["GlobalBuffer", "WriteRequest"]


def WriteRequest(addr_width, word_bits):
    """Return the layout of a global buffer write: word address and data."""
    return data.StructLayout({"addr": addr_width, "data": word_bits})


class GlobalBuffer(wiring.Component):
    """Banked global buffer with ``read_ports`` read and ``write_ports`` write requesters.

    ``reads[k]`` and ``writes[k]`` strobe for each word port ``k`` moves (the counters of the
    energy model).
    """

    # Words a read port can hold besides the one arriving: enough for one per cycle.
    _READ_BUFFER = 2

    def __init__(self, *, banks, depth, word_bits, read_ports, write_ports):
        for name, value in (("banks", banks), ("read_ports", read_ports),
                            ("write_ports", write_ports), ("word_bits", word_bits)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"global buffer {name} must be a positive integer, "
                                 f"not {value!r}")
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"global buffer bank depth must be a power of two, not {depth!r}")
        self._banks, self._depth, self._word_bits = banks, depth, word_bits
        self._addr_width = max(1, (banks * depth - 1).bit_length())
        self._read_ports, self._write_ports = read_ports, write_ports
        super().__init__({
            "read_addr": In(stream.Signature(self._addr_width)).array(read_ports),
            "read_data": Out(stream.Signature(word_bits)).array(read_ports),
            "write": In(stream.Signature(WriteRequest(self._addr_width, word_bits)))
            .array(write_ports),
            "reads": Out(read_ports),
            "writes": Out(write_ports),
            "error": Out(1),
            "clear": In(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def words(self):
        return self._banks * self._depth

    def elaborate(self, platform):
        m = Module()
        shift = self._depth.bit_length() - 1
        outside_strobes = []

        def bank_of(addr):
            return addr[shift:]

        # Per read port: a FIFO for answers, and a credit check so an accepted read always
        # finds room when its data arrives a cycle later.
        answers, pending, pending_bank, pending_outside, can_read = [], [], [], [], []
        for k in range(self._read_ports):
            buf = fifo.SyncFIFO(width=self._word_bits, depth=self._READ_BUFFER)
            m.submodules[f"read{k}_fifo"] = buf
            answers.append(buf)
            pending.append(Signal(name=f"read{k}_pending"))
            pending_bank.append(Signal(range(self._banks), name=f"read{k}_bank"))
            pending_outside.append(Signal(name=f"read{k}_outside"))
            # Words held next cycle: those held now, plus the one arriving, less one taken.
            room = Signal(name=f"read{k}_room")
            m.d.comb += room.eq(buf.level + pending[k] - (buf.r_en & buf.r_rdy)
                                < self._READ_BUFFER)
            can_read.append(room)
            wiring.connect(m, wiring.flipped(self.read_data[k]), buf.r_stream)

        read_taken = [Signal(name=f"read{k}_taken") for k in range(self._read_ports)]
        write_taken = [Signal(name=f"write{k}_taken") for k in range(self._write_ports)]
        bank_data = []
        for b in range(self._banks):
            bank = memory.Memory(shape=self._word_bits, depth=self._depth, init=[])
            m.submodules[f"bank{b}"] = bank
            rd = bank.read_port()
            wr = bank.write_port()
            bank_data.append(rd.data)

            warb = RoundRobin(self._write_ports)
            m.submodules[f"bank{b}_write_arbiter"] = warb
            m.d.comb += warb.advance.eq(1)
            for k, port in enumerate(self.write):
                m.d.comb += warb.requests[k].eq(port.valid & (bank_of(port.payload.addr) == b))
                with m.If(warb.grant[k]):
                    m.d.comb += [wr.en.eq(1), wr.addr.eq(port.payload.addr[:shift]),
                                 wr.data.eq(port.payload.data), write_taken[k].eq(1)]

            rarb = RoundRobin(self._read_ports)
            m.submodules[f"bank{b}_read_arbiter"] = rarb
            m.d.comb += [rarb.advance.eq(1), rd.en.eq(rarb.grant.any())]
            for k, port in enumerate(self.read_addr):
                m.d.comb += rarb.requests[k].eq(port.valid & can_read[k]
                                                & (bank_of(port.payload) == b))
                with m.If(rarb.grant[k]):
                    m.d.comb += [rd.addr.eq(port.payload[:shift]), read_taken[k].eq(1)]
                    m.d.sync += pending_bank[k].eq(b)

        for k, port in enumerate(self.write):
            outside = port.payload.addr >= self.words
            m.d.comb += [
                port.ready.eq(write_taken[k] | outside),
                self.writes[k].eq(port.valid & write_taken[k]),
            ]
            outside_strobes.append(port.valid & outside)

        for k, port in enumerate(self.read_addr):
            outside = port.payload >= self.words
            accept = read_taken[k] | (outside & can_read[k])
            m.d.comb += [port.ready.eq(accept), self.reads[k].eq(port.valid & read_taken[k])]
            m.d.sync += [pending[k].eq(port.valid & accept),
                         pending_outside[k].eq(outside)]
            outside_strobes.append(port.valid & outside & can_read[k])
            word = Signal(self._word_bits, name=f"read{k}_word")
            with m.Switch(pending_bank[k]):
                for b in range(self._banks):
                    with m.Case(b):
                        m.d.comb += word.eq(bank_data[b])
            m.d.comb += [answers[k].w_en.eq(pending[k]),
                         answers[k].w_data.eq(Mux(pending_outside[k], 0, word))]

        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.Elif(Cat(outside_strobes).any()):
            m.d.sync += self.error.eq(1)
        return m

