"""Tests of generate.py and the ``rsaccel generate`` command: Verilog, manifest, lint."""

import importlib.util
import json
import re
import shutil
import subprocess

import pytest

from rsaccel import preset
from rsaccel.cli import main
from rsaccel.generate import generate
from rsaccel.hw.tops import TOPS

# Tops with the whole PE array take minutes to elaborate and lint on the larger presets:
# they are tested on tiny here, and `make bench` generates the eyeriss accelerator.
HEAVY = ("array", "top")
CASES = [(name, top) for name in ("tiny", "small", "eyeriss") for top in sorted(TOPS)
         if top not in HEAVY or name == "tiny"]


@pytest.mark.parametrize("name, top", CASES)
def test_generate_lints_and_lists_ports(tmp_path, name, top):
    vpath, mpath = generate(preset(name), top, tmp_path)
    text = vpath.read_text()
    manifest = json.loads(mpath.read_text())
    assert manifest["config"] == preset(name).to_dict()
    assert manifest["module"] == f"rsaccel_{top}"
    assert {"amaranth", "python", "verilator", "rsaccel"} <= set(manifest["tools"])
    header = text[text.index(f"module rsaccel_{top}("):]
    for port in manifest["ports"]:
        width = "" if port["width"] == 1 else rf"\[{port['width'] - 1}:0\] "
        assert re.search(rf"\b{port['direction']} {width}{port['name']};", header), port
    if top == "top":
        # The host's copies of the register map.
        assert manifest["register_map"] == ["regs.h", "regs.md", "regs.py"]
        spec = importlib.util.spec_from_file_location("regs", tmp_path / "regs.py")
        regs = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(regs)
        assert regs.STATUS == 0x14 and regs.REGISTERS["CTRL"]["access"] == "WO"
        assert "#define RSACCEL_CTRL 0x0010u" in (tmp_path / "regs.h").read_text()
        assert "| 0x0014 | `STATUS` | RO |" in (tmp_path / "regs.md").read_text()


def test_mac_ports_sized_from_config(tmp_path):
    _, mpath = generate(preset("eyeriss").replace(psum_spad_depth=100), "mac", tmp_path)
    ports = {p["name"]: p for p in json.loads(mpath.read_text())["ports"]}
    assert ports["i__payload"]["width"] == 16 + 16 + 32 + 7
    assert ports["o__payload"]["width"] == 32 + 7


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed")
@pytest.mark.parametrize("top", sorted(TOPS))
def test_icarus_elaborates(tmp_path, top):
    name = "tiny" if top in HEAVY else "eyeriss"         # see CASES
    vpath, _ = generate(preset(name), top, tmp_path, run_lint=False)
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "a.out"), str(vpath)], check=True)


def test_cli_generate(tmp_path, capsys):
    assert main(["generate", "--preset", "tiny", "--top", "mac", "--set", "mac_stages=2", "-o",
                 str(tmp_path)]) == 0
    assert "rsaccel_mac.v" in capsys.readouterr().out
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["mac_stages"] == 2


def test_cli_rejects_bad_setting(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--set", "rows=0", "-o", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "rows must be between 1 and 64, not 0" in capsys.readouterr().err
