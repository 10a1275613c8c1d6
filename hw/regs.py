"""Control registers: a register map defined once, its AXI4-Lite register file, and the host's
copies of it (Python module, C header, Markdown table).

Registers are 32 bits wide at word-aligned byte addresses. Access kinds:

- ``RO``: the design drives the value (port ``<name>``, an input); writes are refused.
- ``RW``: the host writes, the design reads (port ``<name>``, an output) and is told of each
  write (``<name>_written``, a one-cycle pulse). Byte strobes are honoured.
- ``WO``: write-only command register: the written value appears on ``<name>`` for the one
  cycle ``<name>_written`` is high; reads are refused.

A refused access (unmapped or misaligned address, write to ``RO``, read of ``WO``) is answered
``SLVERR`` (``DECERR`` for an unmapped address), changes nothing and reads as zero.
"""

from dataclasses import dataclass, field

from amaranth import Cat, Module, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXILiteSignature, Resp

__all__ = ["Access", "Field", "Register", "RegisterFile", "RegisterMap"]


class Access(enum.Enum):
    RO = "RO"
    RW = "RW"
    WO = "WO"


@dataclass(frozen=True)
class Field:
    """A named bit range of a register."""
    name: str
    offset: int
    width: int = 1
    description: str = ""


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    access: Access
    description: str
    fields: tuple = field(default=())
    reset: int = 0


class RegisterMap:
    """An ordered, checked set of registers."""

    def __init__(self, registers, *, addr_width):
        self.addr_width = addr_width
        self.registers = tuple(registers)
        names, addresses = set(), set()
        for reg in self.registers:
            if not reg.name.isidentifier() or reg.name.upper() != reg.name:
                raise ValueError(f"register name must be an upper-case identifier, "
                                 f"not {reg.name!r}")
            if reg.name in names:
                raise ValueError(f"register name {reg.name!r} is used twice")
            if reg.address % 4 or not 0 <= reg.address < 1 << addr_width:
                raise ValueError(f"register {reg.name} address {reg.address:#x} must be "
                                 f"word-aligned and below {1 << addr_width:#x}")
            if reg.address in addresses:
                raise ValueError(f"register {reg.name} address {reg.address:#x} is used twice")
            if not 0 <= reg.reset < 1 << 32:
                raise ValueError(f"register {reg.name} reset value {reg.reset!r} is not 32-bit")
            bits = 0
            for f in reg.fields:
                mask = ((1 << f.width) - 1) << f.offset
                if f.width < 1 or f.offset < 0 or f.offset + f.width > 32 or bits & mask:
                    raise ValueError(f"field {reg.name}.{f.name} (bits {f.offset}+{f.width}) "
                                     f"overlaps another field or leaves the register")
                bits |= mask
            names.add(reg.name)
            addresses.add(reg.address)

    def __iter__(self):
        return iter(self.registers)

    def __getitem__(self, name):
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise KeyError(f"no register {name!r}")

    def to_python(self, module_doc="Register map of the rsaccel accelerator (generated)."):
        """Return the source of a Python module with the addresses, fields and access kinds."""
        lines = [f'"""{module_doc}"""', "", "REGISTERS = {"]
        for reg in self:
            fields = ", ".join(f"{f.name!r}: ({f.offset}, {f.width})" for f in reg.fields)
            lines.append(f"    {reg.name!r}: {{'address': {reg.address:#06x}, "
                         f"'access': {reg.access.value!r}, 'fields': {{{fields}}}}},")
        lines += ["}", ""]
        for reg in self:
            lines.append(f"{reg.name} = {reg.address:#06x}")
        return "\n".join(lines) + "\n"

    def to_c_header(self, prefix="RSACCEL"):
        """Return a C header with one ``#define`` per register address and field."""
        guard = f"{prefix}_REGS_H"
        lines = ["/* Register map of the rsaccel accelerator (generated). */",
                 f"#ifndef {guard}", f"#define {guard}", ""]
        for reg in self:
            lines.append(f"/* {reg.description} ({reg.access.value}) */")
            lines.append(f"#define {prefix}_{reg.name} 0x{reg.address:04x}u")
            for f in reg.fields:
                name = f"{prefix}_{reg.name}_{f.name.upper()}"
                lines.append(f"#define {name}_SHIFT {f.offset}u")
                lines.append(f"#define {name}_MASK 0x{((1 << f.width) - 1) << f.offset:08x}u")
        lines += ["", f"#endif /* {guard} */", ""]
        return "\n".join(lines)

    def to_markdown(self):
        """Return the register map as a Markdown table."""
        lines = ["| address | name | access | reset | description |",
                 "|---|---|---|---|---|"]
        for reg in self:
            desc = reg.description
            if reg.fields:
                desc += "<br>" + "<br>".join(
                    f"[{f.offset + f.width - 1}:{f.offset}] `{f.name}`: {f.description}"
                    if f.width > 1 else f"[{f.offset}] `{f.name}`: {f.description}"
                    for f in reg.fields)
            lines.append(f"| 0x{reg.address:04x} | `{reg.name}` | {reg.access.value} | "
                         f"0x{reg.reset:x} | {desc} |")
        return "\n".join(lines) + "\n"


class RegisterFile(wiring.Component):
    """AXI4-Lite subordinate holding ``regmap``; ports as the module docstring describes.

    One write and one read are handled at a time; a write takes AW and W together.
    """

    def __init__(self, regmap):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {regmap!r}")
        self._regmap = regmap
        members = {"bus": In(AXILiteSignature(addr_width=regmap.addr_width))}
        for reg in regmap:
            name = reg.name.lower()
            members[name] = In(32) if reg.access == Access.RO else Out(32)
            if reg.access != Access.RO:
                members[f"{name}_written"] = Out(1)
        super().__init__(members)

    @property
    def regmap(self):
        return self._regmap

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        regs = {reg.name: reg for reg in self._regmap}
        stored = {}
        for reg in regs.values():
            if reg.access == Access.RW:
                stored[reg.name] = Signal(32, name=f"reg_{reg.name.lower()}", init=reg.reset)
                m.d.comb += getattr(self, reg.name.lower()).eq(stored[reg.name])

        # Writes: take AW and W together, answer on B.
        take_write = bus.awvalid & bus.wvalid & ~bus.bvalid
        m.d.comb += [bus.awready.eq(take_write), bus.wready.eq(take_write)]
        mask = Signal(32)
        m.d.comb += mask.eq(Cat(bus.wstrb[i].replicate(8) for i in range(4)))
        write_resp = Signal(Resp)
        m.d.comb += write_resp.eq(Resp.DECERR)
        with m.Switch(bus.awaddr):
            for reg in regs.values():
                with m.Case(reg.address):
                    if reg.access == Access.RO:
                        m.d.comb += write_resp.eq(Resp.SLVERR)
                    else:
                        m.d.comb += write_resp.eq(Resp.OKAY)
        for reg in regs.values():
            name = reg.name.lower()
            if reg.access == Access.RO:
                continue
            hit = take_write & (bus.awaddr == reg.address)
            m.d.sync += getattr(self, f"{name}_written").eq(hit)
            if reg.access == Access.RW:
                with m.If(hit):
                    m.d.sync += stored[reg.name].eq(stored[reg.name] & ~mask | bus.wdata & mask)
            else:
                with m.If(hit):
                    m.d.sync += getattr(self, name).eq(bus.wdata & mask)
                with m.Else():
                    m.d.sync += getattr(self, name).eq(0)
        with m.If(take_write):
            m.d.sync += [bus.bvalid.eq(1), bus.bresp.eq(write_resp)]
        with m.Elif(bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # Reads: answer on R the cycle after AR.
        take_read = bus.arvalid & ~bus.rvalid
        m.d.comb += bus.arready.eq(take_read)
        with m.If(take_read):
            m.d.sync += [bus.rvalid.eq(1), bus.rresp.eq(Resp.DECERR), bus.rdata.eq(0)]
            with m.Switch(bus.araddr):
                for reg in regs.values():
                    with m.Case(reg.address):
                        if reg.access == Access.WO:
                            m.d.sync += bus.rresp.eq(Resp.SLVERR)
                        else:
                            value = (stored[reg.name] if reg.access == Access.RW
                                     else getattr(self, reg.name.lower()))
                            m.d.sync += [bus.rresp.eq(Resp.OKAY), bus.rdata.eq(value)]
        with m.Elif(bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        return m

