"""Bit-exact numerics of the datapath, on bit patterns held in numpy arrays.

These are the hardware's arithmetic contract (DESIGN.md, "Numerics contract"): the PE and layer
models build on :func:`mac` and :func:`to_fp16`, and the gateware is tested against them. The
``softfloat_*`` functions compute the same results independently with Berkeley SoftFloat.
"""

import numpy as np
import softfloatpy as sf

from ..hw.fp import FP16_QNAN, FP32_QNAN

__all__ = [
    "f16_bits",
    "f16_values",
    "f32_bits",
    "f32_values",
    "mac",
    "relu32",
    "softfloat_mac",
    "softfloat_to_fp16",
    "to_fp16",
]


def f16_bits(values):
    """Return the binary16 bit patterns (uint16) of ``values``."""
    return np.asarray(values, dtype=np.float16).view(np.uint16)


def f32_bits(values):
    """Return the binary32 bit patterns (uint32) of ``values``."""
    return np.asarray(values, dtype=np.float32).view(np.uint32)


def f16_values(bits):
    """Return the float16 values of binary16 bit patterns."""
    return np.asarray(bits, dtype=np.uint16).view(np.float16)


def f32_values(bits):
    """Return the float32 values of binary32 bit patterns."""
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def mac(a, b, c):
    """Return ``round_rne(a * b + c)`` as binary32 bits, as the hardware MAC computes it.

    ``a`` and ``b`` are binary16 bit patterns, ``c`` binary32 bit patterns (broadcast together).
    The binary16 product is exact in binary32, so one binary32 addition rounds once, as the
    fused hardware does. NaN results are the canonical quiet NaN.
    """
    with np.errstate(all="ignore"):
        result = (f16_values(a).astype(np.float32) * f16_values(b).astype(np.float32)
                  + f32_values(c))
    bits = result.view(np.uint32)
    return np.where(np.isnan(result), np.uint32(FP32_QNAN), bits)


def relu32(x):
    """Return binary32 bits with ReLU applied: every value with its sign set becomes +0, NaN stays."""
    x = np.asarray(x, dtype=np.uint32)
    nan = np.isnan(f32_values(x))
    return np.where((x >> 31).astype(bool) & ~nan, np.uint32(0), x)


def to_fp16(x, relu=False):
    """Return binary16 bits of binary32 bits ``x``, rounded to nearest even, ReLU first if asked.

    Overflow gives infinity, underflow a subnormal or zero, NaN the canonical quiet NaN.
    """
    x = relu32(x) if relu else np.asarray(x, dtype=np.uint32)
    with np.errstate(all="ignore"):
        result = f32_values(x).astype(np.float16)
    return np.where(np.isnan(result), np.uint16(FP16_QNAN), result.view(np.uint16))


def _sf32(bits):
    return sf.Float32.from_bytes(int(bits).to_bytes(4, "big"))


def _sf16(bits):
    return sf.Float16.from_bytes(int(bits).to_bytes(2, "big"))


def softfloat_mac(a, b, c):
    """Return, by SoftFloat, the fused ``a * b + c`` (binary16, binary16, binary32 bits).

    Returns the binary32 bits (NaN canonical) and the exception flags raised, per element.
    """
    out = np.empty(np.broadcast(a, b, c).shape, dtype=np.uint32)
    flags = np.empty(out.shape, dtype=np.uint8)
    for idx, (x, y, z) in enumerate(np.broadcast(a, b, c)):
        sf.set_exception_flags(0)
        r = sf.f32_mul_add(sf.f16_to_f32(_sf16(x)), sf.f16_to_f32(_sf16(y)), _sf32(z))
        bits = int.from_bytes(r.to_bytes(), "big")
        out.flat[idx] = FP32_QNAN if sf.f32_is_nan(r) else bits
        flags.flat[idx] = sf.get_exception_flags()
    return out, flags


def softfloat_to_fp16(x):
    """Return, by SoftFloat, the binary16 bits (NaN canonical) of binary32 bits ``x``."""
    x = np.asarray(x, dtype=np.uint32)
    out = np.empty(x.shape, dtype=np.uint16)
    for idx, bits in enumerate(x.flat):
        r = sf.f32_to_f16(_sf32(bits))
        out.flat[idx] = FP16_QNAN if sf.f16_is_nan(r) else int.from_bytes(r.to_bytes(), "big")
    return out
