"""The blocks that can be generated on their own as a Verilog top, each built from a config."""

from .dma import Dma
from .mac import FMac, Fp32ToFp16
from .noc import ArrayTop, NocTop
from .pe import PE
from .top import Accelerator

__all__ = ["DEFAULT_TOP", "TOPS", "build_top", "module_name"]

#: Top name -> constructor from an ``ArrayConfig``; ``top`` is the whole accelerator.
TOPS = {
    "top": lambda config: Accelerator(config),
    "mac": lambda config: FMac(stages=config.mac_stages, tag_bits=config.mac_tag_bits),
    "outcvt": lambda config: Fp32ToFp16(),
    "dma": lambda config: Dma(addr_width=config.axi_addr_bits, data_width=config.axi_data_bits,
                              id_width=config.axi_id_bits),
    "noc": lambda config: NocTop(config),
    "array": lambda config: ArrayTop(config),
    "pe": lambda config: PE(filter_depth=config.filter_spad_depth,
                            ifmap_depth=config.ifmap_spad_depth,
                            psum_depth=config.psum_spad_depth, mac_stages=config.mac_stages),
}
DEFAULT_TOP = "top"


def build_top(name, config):
    """Return a new component for top ``name`` sized from ``config``."""
    try:
        return TOPS[name](config)
    except KeyError:
        raise ValueError(f"unknown top {name!r}; tops: {', '.join(TOPS)}") from None


def module_name(name):
    """Return the Verilog module name of top ``name``."""
    return f"rsaccel_{name}"
