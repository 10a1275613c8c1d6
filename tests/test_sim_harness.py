"""The HDL harness (``sim/hdl/harness.v``): the accelerator with its clock and host memory in the
HDL, for long runs. Its memory must behave as the Python one (AxiRam) does, keep to the
bandwidth it is given, and report accesses it cannot serve."""

import pytest

from rsaccel import preset
from rsaccel.hw.commands import ErrorCode
from rsaccel.hw.top import register_map
from rsaccel.sim.runner import HARNESS_MEMORY, available_simulators
from rsaccel.sim.top_session import run_script
from rsaccel.sim.top_workload import rs_program

TINY = preset("tiny")
REGS = {reg.name: reg.address for reg in register_map(TINY)}


def start(prog, window=None):
    base, size = window or (prog.base, len(prog.image))
    return [("mem_write", prog.base, prog.image),
            ("reg_write", REGS["WINDOW_BASE"], base),
            ("reg_write", REGS["WINDOW_SIZE"], size),
            ("reg_write", REGS["IRQ_ENABLE"], 3),
            ("reg_write", REGS["DESC_ADDR"], prog.desc_addr),
            ("reg_write", REGS["CTRL"], 1)]


def read64(name):
    return [("reg_read", REGS[f"{name}_LO"]), ("reg_read", REGS[f"{name}_HI"])]


@pytest.mark.parametrize("simulator", available_simulators())
def test_memory_reads_back_what_was_written(simulator):
    steps = [("mem_write", 0x100, bytes(range(1, 40))),         # ends inside a word
             ("mem_write", 0x10b, b"\xaa\xbb\xcc"),              # inside one word
             ("mem_write", 0x1fe, bytes(range(100, 120))),       # starts inside a word
             ("mem_read", 0xf8, 56), ("mem_read", 0x1fd, 23), ("mem_read", 0x109, 1),
             ("fault",)]
    res = run_script(TINY, steps, memory=1 << 12, simulator=simulator, harness=True)
    first = bytearray(bytes(8) + bytes(range(1, 40)) + bytes(9))
    first[8 + 11:8 + 14] = b"\xaa\xbb\xcc"
    assert res[3] == first
    assert res[4] == bytes(1) + bytes(range(100, 120)) + bytes(2)
    assert res[5] == bytes([10])
    assert res[6] is None


@pytest.mark.parametrize("bandwidth, latency", [(None, 0), (1.25, 0), (3, 60)])
def test_program_runs_within_the_bandwidth(bandwidth, latency):
    prog = rs_program(TINY, R=3, e=4, passes=2, seed=7)
    steps = start(prog) + [("wait_irq", 200_000), ("reg_read", REGS["STATUS"]),
                           ("mem_read", prog.out_addr, prog.out_bytes), ("fault",),
                           *read64("CYCLES"), *read64("DRAM_READ_BYTES"),
                           *read64("DRAM_WRITE_BYTES")]
    res = run_script(TINY, steps, memory=1 << 16, harness=True, bandwidth=bandwidth,
                     latency=latency)
    assert res[6] is not None, "no interrupt"
    assert ErrorCode(res[7][0] >> 4 & 15) == ErrorCode.NONE and res[7][0] & 2
    assert res[8] == prog.expected
    assert res[9] is None
    cycles, read, written = (res[k][0] | res[k + 1][0] << 32 for k in (10, 12, 14))
    limit = bandwidth or TINY.axi_data_bits / 8
    # Two beats of credit at most are banked (sim/hdl/harness.v).
    assert read + written <= limit * cycles + 2 * TINY.axi_data_bits / 8
    if bandwidth == 1.25:
        # This program moves more bytes than it computes cycles at 1.25 bytes a cycle: the
        # memory sets the pace, close to its limit.
        assert read + written >= 0.8 * limit * cycles


def test_access_outside_the_memory_is_answered_and_reported():
    # The window lets the accelerator fetch a descriptor beyond the harness's memory: the
    # harness answers DECERR, the accelerator stops with DMA_RESPONSE, the fault names it.
    outside = HARNESS_MEMORY["verilator"] + 0x1000
    steps = [("reg_write", REGS["WINDOW_BASE"], 0),
             ("reg_write", REGS["WINDOW_SIZE"], outside + 0x1000),
             ("reg_write", REGS["IRQ_ENABLE"], 3),
             ("reg_write", REGS["DESC_ADDR"], outside),
             ("reg_write", REGS["CTRL"], 1),
             ("wait_irq", 10_000), ("reg_read", REGS["STATUS"]), ("fault",)]
    res = run_script(TINY, steps, memory=1 << 12, harness=True)
    assert res[5] is not None
    assert ErrorCode(res[6][0] >> 4 & 15) == ErrorCode.DMA_RESPONSE
    assert res[7] == outside


def test_harness_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="pause must be 0"):
        run_script(TINY, [], memory=1 << 12, harness=True, pause=0.1)
    with pytest.raises(ValueError, match="do not fit"):
        run_script(TINY, [], memory=HARNESS_MEMORY["verilator"] + 1, harness=True)
    with pytest.raises(ValueError, match="accesses"):
        run_script(TINY, [("accesses",)], memory=1 << 12, harness=True)
