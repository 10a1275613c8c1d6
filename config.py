"""The design point: one frozen :class:`ArrayConfig` sizes every block of the accelerator."""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["DEFAULT_PRESET", "PRESETS", "ArrayConfig", "preset"]


def _is_pow2(n):
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class ArrayConfig:
    """Describe one design point of the Row-Stationary accelerator.

    Sizes are in entries of the stored type: filter and ifmap scratchpads hold FP16 values,
    the psum scratchpad FP32 values. Global buffer banks are ``glb_bank_depth`` words of
    ``glb_word_bits`` bits; NoC buses are given in bits and carry whole values.
    """

    name: str = "custom"
    # PE array
    rows: int = 12
    cols: int = 14
    # Per-PE scratchpads (entries)
    filter_spad_depth: int = 224
    ifmap_spad_depth: int = 12
    psum_spad_depth: int = 24
    # MAC pipeline registers between operands in and sum out
    mac_stages: int = 6
    # Global buffer: ifmap/psum banks, split per layer, plus filter storage
    glb_banks: int = 25
    glb_bank_depth: int = 512
    glb_word_bits: int = 64
    glb_filter_depth: int = 1024
    # NoC bus widths (bits): global input networks per data type and the output network
    filter_bus_bits: int = 64
    ifmap_bus_bits: int = 64
    psum_bus_bits: int = 64
    gon_bus_bits: int = 64
    # Width of the NoC multicast tags and IDs (row and column each); the all-ones ID is the
    # unused one. Eyeriss's AlexNet mappings need 5 (CONV2: 31 ifmap rows share one row
    # group, sw/noc_ids.py); 6 leaves room for foldings that put more rows in a group.
    noc_id_bits: int = 6
    # Host interfaces
    axi_data_bits: int = 64
    axi_addr_bits: int = 32
    axi_id_bits: int = 4
    axil_addr_bits: int = 12

    # Limits that keep derived widths (tags, counters, addresses) reasonable.
    _LIMITS: ClassVar[dict] = {
        "rows": (1, 64),
        "cols": (1, 64),
        "filter_spad_depth": (1, 4096),
        "ifmap_spad_depth": (1, 4096),
        "psum_spad_depth": (1, 4096),
        "mac_stages": (1, 8),
        "glb_banks": (1, 256),
        "glb_bank_depth": (16, 65536),
        "glb_filter_depth": (16, 65536),
        "axi_addr_bits": (16, 64),
        "axi_id_bits": (1, 16),
        "axil_addr_bits": (8, 16),
        "noc_id_bits": (1, 16),
    }

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int) and (not isinstance(value, int)
                                               or isinstance(value, bool)):
                raise TypeError(f"{field.name} must be an integer, not {value!r}")
        for name, (lo, hi) in self._LIMITS.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be between {lo} and {hi}, not {value!r}")
        for name in ("axi_data_bits", "glb_word_bits"):
            value = getattr(self, name)
            if not (_is_pow2(value) and 32 <= value <= 1024):
                raise ValueError(f"{name} must be a power of two from 32 to 1024, not {value!r}")
        for name, elem in (("filter_bus_bits", 16), ("ifmap_bus_bits", 16),
                           ("psum_bus_bits", 32), ("gon_bus_bits", 32)):
            value = getattr(self, name)
            if not (_is_pow2(value) and elem <= value <= 1024):
                raise ValueError(f"{name} must be a power of two from {elem} (one value) to "
                                 f"1024, not {value!r}")
        need = max(self.rows, self.cols).bit_length()
        if self.noc_id_bits < need:
            raise ValueError(f"noc_id_bits must be at least {need} to give each of "
                             f"{max(self.rows, self.cols)} rows or columns its own ID besides "
                             f"the unused one, not {self.noc_id_bits!r}")
        if not self.name.isidentifier():
            raise ValueError(f"name must be an identifier, not {self.name!r}")

    # Derived sizes
    @property
    def num_pes(self):
        return self.rows * self.cols

    @property
    def mac_tag_bits(self):
        """Width of the tag a MAC carries: enough to name every psum scratchpad entry."""
        return max(1, (self.psum_spad_depth - 1).bit_length())

    @property
    def glb_bytes(self):
        return (self.glb_banks * self.glb_bank_depth + self.glb_filter_depth) * self.glb_word_bits // 8

    @property
    def filter_values_per_packet(self):
        return self.filter_bus_bits // 16

    @property
    def ifmap_values_per_packet(self):
        return self.ifmap_bus_bits // 16

    @property
    def psum_values_per_packet(self):
        return self.psum_bus_bits // 32

    @property
    def gon_values_per_packet(self):
        return self.gon_bus_bits // 32

    def replace(self, **changes):
        """Return a copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def with_settings(self, settings):
        """Return a copy with ``key=value`` strings (as given on the command line) applied."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for item in settings:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"setting must look like key=value, not {item!r}")
            if key not in fields:
                raise ValueError(f"unknown configuration field {key!r}; known fields: "
                                 f"{', '.join(sorted(fields))}")
            if key == "name":
                changes[key] = text
            else:
                try:
                    changes[key] = int(text, 0)
                except ValueError:
                    raise ValueError(f"{key} must be an integer, not {text!r}") from None
        return self.replace(**changes)

    def to_dict(self):
        return dataclasses.asdict(self)


# Eyeriss's numbers with FP16 data and FP32 psums. Its 64-bit buses carry four 16-bit psums a
# packet; ours carry FP32 psums, so the GLB words and the NoC buses are 128 bits (four FP32
# psums, eight FP16 values) and the banks half as deep: the same 25 x 4 KB of ifmap/psum
# banks and 8 KB of filters. The DRAM link's bandwidth is set where the layer runs.
EYERISS = ArrayConfig(name="eyeriss", glb_bank_depth=256, glb_word_bits=128,
                      glb_filter_depth=512, filter_bus_bits=128, ifmap_bus_bits=128,
                      psum_bus_bits=128, gon_bus_bits=128, axi_data_bits=128)
SMALL = ArrayConfig(
    name="small", rows=6, cols=8, filter_spad_depth=96, ifmap_spad_depth=12,
    psum_spad_depth=16, glb_banks=8, glb_bank_depth=512, glb_filter_depth=512)
TINY = ArrayConfig(
    name="tiny", rows=3, cols=4, filter_spad_depth=32, ifmap_spad_depth=8,
    psum_spad_depth=8, glb_banks=4, glb_bank_depth=128, glb_filter_depth=128)

PRESETS = {c.name: c for c in (EYERISS, SMALL, TINY)}
DEFAULT_PRESET = "small"


def preset(name):
    """Return the preset called ``name``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
