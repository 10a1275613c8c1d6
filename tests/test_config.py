"""Tests of config.py: presets, derived sizes and the checks that reject impossible values."""

import dataclasses

import pytest

from rsaccel import PRESETS, ArrayConfig, preset


def test_presets():
    eyeriss = preset("eyeriss")
    assert (eyeriss.rows, eyeriss.cols, eyeriss.num_pes) == (12, 14, 168)
    assert (eyeriss.filter_spad_depth, eyeriss.ifmap_spad_depth, eyeriss.psum_spad_depth) == \
        (224, 12, 24)
    assert eyeriss.glb_bytes == 108 * 1024
    assert eyeriss.glb_banks == 25 and eyeriss.glb_bank_depth * eyeriss.glb_word_bits == 512 * 64
    assert eyeriss.mac_tag_bits == 5
    assert set(PRESETS) == {"eyeriss", "small", "tiny"}
    assert preset("tiny").num_pes < preset("small").num_pes < eyeriss.num_pes


def test_noc_id_bits_names_every_row_and_column():
    assert preset("eyeriss").noc_id_bits == 6
    assert preset("tiny").replace(rows=7, cols=7, noc_id_bits=3).noc_id_bits == 3
    with pytest.raises(ValueError, match="noc_id_bits must be at least 4"):
        preset("tiny").replace(cols=15, noc_id_bits=3)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("tiny").rows = 3


@pytest.mark.parametrize("field, value, message", [
    ("rows", 0, "rows must be between 1 and 64, not 0"),
    ("cols", 65, "cols must be between 1 and 64, not 65"),
    ("psum_spad_depth", 0, "psum_spad_depth must be between"),
    ("mac_stages", 0, "mac_stages must be between 1 and 8"),
    ("axi_data_bits", 48, "axi_data_bits must be a power of two from 32 to 1024, not 48"),
    ("glb_word_bits", 16, "glb_word_bits must be a power of two"),
    ("psum_bus_bits", 16, "psum_bus_bits must be a power of two from 32"),
    ("name", "no spaces", "name must be an identifier"),
    ("noc_id_bits", 0, "noc_id_bits must be between 1 and 16, not 0"),
    ("noc_id_bits", 3, "noc_id_bits must be at least 4 to give each of 8 rows or columns"),
])
def test_rejects_impossible_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        preset("small").replace(**{field: value})


@pytest.mark.parametrize("value", [2.5, "3", True])
def test_rejects_non_integers(value):
    with pytest.raises(TypeError, match=f"rows must be an integer, not {value!r}"):
        ArrayConfig(rows=value)


def test_with_settings():
    config = preset("tiny").with_settings(["rows=5", "mac_stages=0x2", "name=t5"])
    assert (config.rows, config.mac_stages, config.name) == (5, 2, "t5")
    with pytest.raises(ValueError, match="unknown configuration field 'colz'"):
        preset("tiny").with_settings(["colz=3"])
    with pytest.raises(ValueError, match="key=value"):
        preset("tiny").with_settings(["rows"])
    with pytest.raises(ValueError, match="rows must be an integer, not 'x'"):
        preset("tiny").with_settings(["rows=x"])


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'big'; presets: eyeriss, small, tiny"):
        preset("big")
