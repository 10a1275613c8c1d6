"""cocotb tests of the accelerator top (Verilator; Icarus when installed): programs of several
passes with psum spills through the GLB, every error path, soft reset, counters."""

import pytest

from rsaccel import preset
from rsaccel.hw.commands import Engine, ErrorCode, Op, command
from rsaccel.hw.top import COUNTERS, glb_words, register_map
from rsaccel.sim.top_session import run_script
from rsaccel.sim.top_workload import custom_program, rs_program

TINY = preset("tiny")
REGS = {reg.name: reg.address for reg in register_map(TINY)}
MEMORY = 1 << 16


def start(prog, *, window=None):
    """Steps that load ``prog`` and start it with the window around its image."""
    base, size = window or (prog.base, len(prog.image))
    return [
        ("mem_write", prog.base, prog.image),
        ("reg_write", REGS["WINDOW_BASE"], base),
        ("reg_write", REGS["WINDOW_SIZE"], size),
        ("reg_write", REGS["IRQ_ENABLE"], 3),
        ("reg_write", REGS["DESC_ADDR"], prog.desc_addr),
        ("reg_write", REGS["CTRL"], 1),
    ]


def status_fields(value):
    return {"busy": value & 1, "done": value >> 1 & 1, "error": value >> 2 & 1,
            "irq": value >> 3 & 1, "code": ErrorCode(value >> 4 & 15), "engine": value >> 8 & 7,
            "layers": value >> 16}


def counters():
    return [("reg_read", REGS[f"{name}_LO"]) for name in ("CYCLES", "MAC_BUSY")]


@pytest.mark.parametrize("R, e, r, t, passes, bias, relu, fp16, pause", [
    (2, 2, 1, 1, 2, True, False, True, 0.0),
    (1, 2, 2, 1, 3, False, True, False, 0.3),
    (3, 4, 1, 1, 2, True, True, True, 0.3),
    (1, 1, 1, 2, 1, True, False, False, 0.2),
])
def test_program_runs_bit_exact(R, e, r, t, passes, bias, relu, fp16, pause):
    prog = rs_program(TINY, R=R, e=e, r=r, t=t, passes=passes, bias=bias, relu=relu,
                      fp16=fp16, seed=R * 10 + e)
    steps = start(prog) + [("wait_irq", 200_000), ("reg_read", REGS["STATUS"]),
                           ("mem_read", prog.out_addr, prog.out_bytes), *counters()]
    res = run_script(TINY, steps, memory=MEMORY, pause=pause, seed=passes)
    waited, (status, _), out = res[6], res[7], res[8]
    assert waited is not None, "no interrupt"
    st = status_fields(status)
    assert st["code"] == ErrorCode.NONE and st["done"] and not st["busy"], st
    assert out == prog.expected
    cycles, mac_busy = res[9][0], res[10][0]
    assert 0 < mac_busy <= cycles * TINY.num_pes


# --- Error paths ------------------------------------------------------------------------------

BASE = 0x1000
DATA = BASE + 64
GOOD = {"R": 2, "e": 2, "passes": 2, "seed": 5}


def run_error(lists=None, *, image=None, window=(BASE, 0x4000), desc=BASE, watchdog=None,
              data=b"", pause=0.2):
    """Run a faulty program, then the good one; return (status of the first, memory accesses
    of the first, status of the good one, whether its output was right)."""
    if image is None:
        image = custom_program(lists, base=BASE, data=data)
    good = rs_program(TINY, base=0x8000, **GOOD)
    steps = [("mem_write", BASE, image),
             ("reg_write", REGS["WINDOW_BASE"], window[0]),
             ("reg_write", REGS["WINDOW_SIZE"], window[1]),
             ("reg_write", REGS["IRQ_ENABLE"], 3)]
    if watchdog is not None:
        steps.append(("reg_write", REGS["WATCHDOG"], watchdog))
    steps += [("accesses",),
              ("reg_write", REGS["DESC_ADDR"], desc),
              ("reg_write", REGS["CTRL"], 1),
              ("wait_irq", 100_000),
              ("reg_read", REGS["STATUS"]),
              ("reg_read", REGS["ERROR_INDEX"]),
              ("accesses",),
              ("reg_write", REGS["CTRL"], 4),               # irq_clear
              ("reg_write", REGS["WATCHDOG"], 1 << 20),
              *start(good, window=(0x8000, 0x4000)),
              ("wait_irq", 200_000),
              ("reg_read", REGS["STATUS"]),
              ("mem_read", good.out_addr, good.out_bytes)]
    res = run_script(TINY, steps, memory=MEMORY, pause=pause, seed=1)
    k = 4 + (watchdog is not None)
    assert res[k + 3] is not None, "the faulty program did not stop"
    first = status_fields(res[k + 4][0])
    first["index"] = res[k + 5][0]
    assert not first["busy"] and first["irq"] and first["error"], first
    after = status_fields(res[-2][0])
    return first, res[k + 6], after, res[-1] == good.expected


def load(addr, count, glb_addr=0, **kw):
    return command(Op.LOAD, addr=addr, count=count, glb_addr=glb_addr, **kw)


def tags(row, col):
    return row | col << 8


ERRORS = {
    "bad magic": ({"image": b"\x00" * 64}, ErrorCode.DESCRIPTOR, Engine.NONE, 0),
    "misaligned descriptor": ({"lists": {}, "desc": BASE + 8}, ErrorCode.DESCRIPTOR,
                              Engine.NONE, 0),
    "wrong operation": ({"lists": {Engine.FILTER: [command(Op.NOP), load(DATA, 1)]}},
                        ErrorCode.COMMAND, Engine.FILTER, 1),
    "GLB range": ({"lists": {Engine.LOAD: [load(DATA, 2, glb_words(TINY) - 1)]}, "data": b"1" * 16},
                  ErrorCode.GLB_RANGE, Engine.LOAD, 0),
    # Rows of one SEND (hw.commands, "Rows"): the fourth leaves the GLB; indices count rows.
    "GLB range in a later row": ({"lists": {Engine.IFMAP: [command(
        Op.SEND, count=0, glb_addr=glb_words(TINY) - 2, glb_stride=1, repeat=3)]}},
        ErrorCode.GLB_RANGE, Engine.IFMAP, 3),
    "impossible primitive": ({"lists": {Engine.CONFIG: [command(
        Op.PE_CFG, row0=0, row1=0, col0=0, col1=0, count=1, S=3, U=1, p=2,
        q=TINY.ifmap_spad_depth, F=4)]}}, ErrorCode.PE_CONFIG, Engine.CONFIG, 0),
    "PEs outside the array": ({"lists": {Engine.CONFIG: [command(
        Op.PE_CFG, row0=0, row1=TINY.rows, col0=0, col1=0, count=1, S=1, U=1, p=1, q=1,
        F=1)]}}, ErrorCode.PE_CONFIG, Engine.CONFIG, 0),
    "NoC write outside the array": ({"lists": {Engine.CONFIG: [command(
        Op.NOC, op=0, net=0, row=TINY.rows, col=0, value=1)]}}, ErrorCode.NOC_CONFIG,
        Engine.CONFIG, 0),
    "read outside the window": ({"lists": {Engine.LOAD: [load(BASE - 64, 2)]}},
                                ErrorCode.DMA_WINDOW, Engine.LOAD, 0),
    "write outside the window": ({"lists": {Engine.STORE: [command(
        Op.STORE, addr=BASE + 0x4000 - 8, count=8, glb_addr=0)]}}, ErrorCode.DMA_WINDOW,
        Engine.STORE, 0),
    "misaligned read": ({"lists": {Engine.LOAD: [load(DATA + 4, 1)]}, "data": b"1" * 16},
                        ErrorCode.DMA_ALIGN, Engine.LOAD, 0),
    "memory error": ({"lists": {Engine.LOAD: [load(MEMORY - 16, 4)]},
                          "window": (BASE, MEMORY)}, ErrorCode.DMA_RESPONSE, Engine.LOAD, 0),
    "unmatched packet": ({"lists": {Engine.LOAD: [load(DATA, 1)], Engine.IFMAP: [command(
        Op.SEND, wait=(Engine.LOAD, 1), count=4, glb_addr=0, flags=tags(63, 63))]},
        "data": b"1" * 8}, ErrorCode.NOC_UNMATCHED, Engine.IFMAP, 0),
    "watchdog": ({"lists": {Engine.PSUM: [command(Op.NOP, wait=(Engine.LOAD, 3))]},
                      "watchdog": 500}, ErrorCode.WATCHDOG, Engine.NONE, 0),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_stops_cleanly_and_a_good_layer_follows(case):
    kwargs, code, engine, index = ERRORS[case]
    first, accesses, after, right = run_error(**kwargs)
    assert (first["code"], first["engine"]) == (code, engine.value), first
    if engine != Engine.NONE:
        assert first["index"] == index
    window = kwargs.get("window", (BASE, 0x4000))
    for kind, addr, length in accesses:
        assert window[0] <= addr and addr + length <= sum(window), (kind, addr, length)
    assert not after["error"] and after["done"], after
    assert right


def test_psum_overflow_is_an_error():
    def short_segment(lists):
        # The first segment takes 3 of its source's 8 psums (count: bits 64 to 87).
        cmd = int.from_bytes(lists[Engine.RECV][0], "little")
        cmd = cmd & ~(0xFFFFFF << 64) | 3 << 64
        lists[Engine.RECV][0] = cmd.to_bytes(16, "little")
    prog = rs_program(TINY, base=BASE, **GOOD, edit=short_segment)
    first, _, after, right = run_error(image=prog.image)
    assert first["code"] == ErrorCode.GON_OVERFLOW, first
    assert after["done"] and right


def test_soft_reset_mid_layer_then_a_correct_layer():
    prog = rs_program(TINY, R=3, e=4, passes=3, base=BASE, seed=9)
    good = rs_program(TINY, base=0x8000, **GOOD)
    steps = [*start(prog, window=(BASE, 0x4000)),
             ("cycles", 400),
             ("reg_read", REGS["STATUS"]),
             ("reg_write", REGS["CTRL"], 2),                # soft reset in mid-layer
             ("cycles", 300),
             ("reg_read", REGS["STATUS"]),
             ("accesses",),
             *start(good, window=(0x8000, 0x4000)),
             ("wait_irq", 200_000),
             ("reg_read", REGS["STATUS"]),
             ("mem_read", good.out_addr, good.out_bytes)]
    res = run_script(TINY, steps, memory=MEMORY, pause=0.3, seed=3)
    assert status_fields(res[7][0])["busy"], "the layer had ended before the soft reset"
    after_reset = status_fields(res[10][0])
    assert not after_reset["busy"] and not after_reset["error"] and not after_reset["irq"]
    writes = [(addr, n) for kind, addr, n in res[11] if kind == "write"]
    assert all(BASE <= addr and addr + n <= BASE + 0x4000 for addr, n in writes), writes
    final = status_fields(res[-2][0])
    assert final["done"] and not final["error"], final
    assert res[-1] == good.expected


def test_layers_chain_and_registers():
    second = rs_program(TINY, base=0x3000, R=1, e=2, r=2, passes=2, relu=True, seed=4)
    first = rs_program(TINY, base=BASE, next_desc=second.desc_addr, **GOOD)
    steps = [("mem_write", second.base, second.image),
             *start(first, window=(BASE, 0x4000)),
             ("reg_write", REGS["CTRL"], 1),                # START while busy: ignored
             ("wait_irq", 300_000),
             ("reg_read", REGS["STATUS"]),
             ("mem_read", first.out_addr, first.out_bytes),
             ("mem_read", second.out_addr, second.out_bytes),
             ("reg_write", REGS["STATUS"], 1),             # RO: SLVERR
             ("reg_read", REGS["CTRL"]),                   # WO: SLVERR
             ("reg_read", 0x800),                          # unmapped: DECERR
             ("reg_read", REGS["ID"]),
             ("reg_read", REGS["ARRAY"]),
             *[("reg_read", REGS[f"{name}_LO"]) for name in COUNTERS]]
    res = run_script(TINY, steps, memory=MEMORY, seed=2)
    st = status_fields(res[9][0])
    assert st["done"] and not st["error"] and st["layers"] == 2, st
    assert res[10] == first.expected and res[11] == second.expected
    assert res[12] == 2 and res[13][1] == 2 and res[14][1] == 3
    assert res[15][0] == 0x52534131
    assert res[16][0] & 0xFFFF == TINY.rows | TINY.cols << 8
    counts = dict(zip(COUNTERS, (value for value, _ in res[17:]), strict=True))
    assert 0 < counts["MAC_BUSY"] <= counts["CYCLES"] * TINY.num_pes
    image_bytes = len(first.image) + len(second.image)
    assert counts["DRAM_READ_BYTES"] <= image_bytes
    assert counts["DRAM_WRITE_BYTES"] == first.out_bytes + second.out_bytes
    assert counts["GLB_WRITE_LOAD"] > 0 and counts["NOC_GON_VALUES"] > 0
    assert counts["SPAD_FILTER_READS"] == counts["MAC_BUSY"]
