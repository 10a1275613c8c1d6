"""rsaccel: generator of a Row-Stationary CNN accelerator with FP16 x FP16 + FP32 MACs."""

from .config import DEFAULT_PRESET, PRESETS, ArrayConfig, preset

__all__ = ["DEFAULT_PRESET", "PRESETS", "ArrayConfig", "preset"]
__version__ = "0.1.0"
