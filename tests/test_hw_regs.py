"""Tests of hw/regs.py: the register map checks, its host copies, and the AXI4-Lite register
file in Amaranth's simulator."""

import runpy

import pytest

from rsaccel.hw.axi import Resp
from rsaccel.hw.regs import Access, Field, Register, RegisterFile, RegisterMap
from rsaccel.sim.streams import run_simulation

MAP = RegisterMap([
    Register("ID", 0x00, Access.RO, "identification"),
    Register("CTRL", 0x04, Access.WO, "commands", (Field("start", 0, 1, "start a layer"),
                                                   Field("reset", 1, 1, "soft reset"))),
    Register("BASE", 0x08, Access.RW, "window base", reset=0x1000),
    Register("SIZE", 0x10, Access.RW, "window size", (Field("kib", 10, 22, "size in KiB"),)),
], addr_width=8)


async def axil_write(ctx, bus, addr, data, strobe=0xF):
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, strobe)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    await ctx.tick().until(bus.awready & bus.wready)
    ctx.set(bus.awvalid, 0)
    ctx.set(bus.wvalid, 0)
    ctx.set(bus.bready, 1)
    resp, = await ctx.tick().sample(bus.bresp).until(bus.bvalid)
    ctx.set(bus.bready, 0)
    return Resp(resp)


async def axil_read(ctx, bus, addr):
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    ctx.set(bus.rready, 1)
    data, resp = await ctx.tick().sample(bus.rdata, bus.rresp).until(bus.rvalid)
    ctx.set(bus.rready, 0)
    return data, Resp(resp)


def test_register_file():
    dut = RegisterFile(MAP)
    pulses = []

    async def bench(ctx):
        ctx.set(dut.id, 0xC0FFEE)
        assert await axil_read(ctx, dut.bus, 0x00) == (0xC0FFEE, Resp.OKAY)
        assert await axil_read(ctx, dut.bus, 0x08) == (0x1000, Resp.OKAY)
        assert await axil_write(ctx, dut.bus, 0x08, 0x12345678) == Resp.OKAY
        assert ctx.get(dut.base) == 0x12345678
        assert await axil_write(ctx, dut.bus, 0x08, 0xAABBCCDD, strobe=0b0101) == Resp.OKAY
        assert await axil_read(ctx, dut.bus, 0x08) == (0x12BB56DD, Resp.OKAY)
        # Refused accesses change nothing.
        assert await axil_write(ctx, dut.bus, 0x00, 1) == Resp.SLVERR
        assert await axil_write(ctx, dut.bus, 0x0C, 1) == Resp.DECERR
        assert await axil_write(ctx, dut.bus, 0x09, 1) == Resp.DECERR
        assert await axil_read(ctx, dut.bus, 0x04) == (0, Resp.SLVERR)
        assert await axil_read(ctx, dut.bus, 0x40) == (0, Resp.DECERR)
        assert ctx.get(dut.base) == 0x12BB56DD
        assert await axil_write(ctx, dut.bus, 0x04, 0b10) == Resp.OKAY
        await ctx.tick().repeat(2)
        assert pulses == [0b10]       # one pulse, carrying the written value

    async def watch(ctx):
        async for _, _, written, value in ctx.tick().sample(dut.ctrl_written, dut.ctrl):
            if written:
                pulses.append(value)

    run_simulation(dut, bench, background=[watch])


def test_emitters(tmp_path):
    (tmp_path / "regs.py").write_text(MAP.to_python())
    namespace = runpy.run_path(str(tmp_path / "regs.py"))
    assert namespace["SIZE"] == 0x10
    assert namespace["REGISTERS"]["CTRL"]["fields"] == {"start": (0, 1), "reset": (1, 1)}
    header = MAP.to_c_header()
    assert "#define RSACCEL_SIZE_KIB_MASK 0xfffffc00u" in header
    assert "#define RSACCEL_CTRL 0x0004u" in header
    md = MAP.to_markdown()
    assert "| 0x0008 | `BASE` | RW | 0x1000 | window base |" in md


@pytest.mark.parametrize("registers, message", [
    ([Register("A", 0, Access.RO, ""), Register("A", 4, Access.RO, "")], "used twice"),
    ([Register("A", 0, Access.RO, ""), Register("B", 0, Access.RO, "")], "0x0 is used twice"),
    ([Register("A", 2, Access.RO, "")], "word-aligned"),
    ([Register("lower", 0, Access.RO, "")], "upper-case"),
    ([Register("A", 0, Access.RO, "", (Field("x", 0, 4), Field("y", 3, 2)))], "overlaps"),
    ([Register("A", 0, Access.RO, "", (Field("x", 30, 4),))], "leaves the register"),
])
def test_map_checks(registers, message):
    with pytest.raises(ValueError, match=message):
        RegisterMap(registers, addr_width=8)


def test_register_file_rejects_non_map():
    with pytest.raises(TypeError, match="regmap must be a RegisterMap"):
        RegisterFile([])
