"""Tests of the build options of sim/runner.py: lean Verilator builds make only the top's ports
public; ``waves=True`` keeps every signal visible and traced."""

from amaranth.back import verilog

from rsaccel import preset
from rsaccel.hw.tops import build_top, module_name
from rsaccel.sim import pipe, runner


def test_ports_control_lists_the_top_ports():
    module = module_name("outcvt")
    text = verilog.convert(build_top("outcvt", preset("tiny")), name=module)
    ports = runner.top_ports(text, module)
    assert {"clk", "rst", "i__valid", "i__payload", "o__ready", "o__payload"} <= set(ports)
    control = runner.ports_control(text, module).splitlines()
    assert control[0] == "`verilator_config"
    assert control[1:] == [f'public_flat_rw -module "{module}" -var "{p}"' for p in ports]


def test_lean_and_waves_builds():
    config = preset("tiny")
    words = [0x3F800000, 0x40490FDB, 0xC2F6E979]
    lean = runner.build("outcvt", config)
    full = runner.build("outcvt", config, waves=True)
    assert lean.directory != full.directory
    assert (lean.directory / "ports.vlt").exists() and not (full.directory / "ports.vlt").exists()
    assert pipe.stream_through("outcvt", config, words)[0] == \
        pipe.stream_through("outcvt", config, words, waves=True)[0]
    vcd = next(full.directory.glob("runs/pipe-*/dump.vcd")).read_text()
    assert "$scope module rsaccel_outcvt $end" in vcd
