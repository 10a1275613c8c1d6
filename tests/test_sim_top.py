"""cocotb tests of the accelerator top (Verilator; Icarus when installed): programs of several
passes with psum spills through the GLB, every error path, soft reset, counters."""

import pytest

from rsaccel import preset
from rsaccel.hw.commands import ErrorCode
from rsaccel.hw.top import register_map
from rsaccel.sim.top_session import run_script
from rsaccel.sim.top_workload import rs_program

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
