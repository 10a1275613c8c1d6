"""rsaccel: generator of a Row-Stationary CNN accelerator with FP16 x FP16 + FP32 MACs."""

from .config import ArrayConfig, PRESETS, DEFAULT_PRESET, preset

__all__ = ["ArrayConfig", "PRESETS", "DEFAULT_PRESET", "preset"]
__version__ = "0.1.0"
