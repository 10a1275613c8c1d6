"""Test vectors for the MAC and the output converter: directed special cases plus random ones.

Uniformly random bit patterns would almost never put the addends close to each other, so the
random MAC vectors draw the accumulator near the product (alignment, cancellation) as well.
"""

import numpy as np

from ..hw.fp import FP32_INF
from ..sw.numerics import f16_values, f32_bits

__all__ = [
    "FP16_SPECIALS",
    "FP32_SPECIALS",
    "cvt_directed",
    "cvt_random",
    "mac_directed",
    "mac_random",
    "mac_ties",
]

#: binary16 operands of every class: zeros, subnormals, normals at the edges, Inf, NaN.
FP16_SPECIALS = np.array([
    0x0000, 0x0001, 0x0002, 0x0155, 0x03FF, 0x0400, 0x0401, 0x07FF, 0x1000, 0x3555, 0x3BFF,
    0x3C00, 0x3C01, 0x3E00, 0x4000, 0x5640, 0x7800, 0x7BFE, 0x7BFF, 0x7C00, 0x7C01, 0x7E00,
    0x7FFF,
], dtype=np.uint16)
FP16_SPECIALS = np.concatenate([FP16_SPECIALS, FP16_SPECIALS | 0x8000])

#: binary32 accumulators of every class.
FP32_SPECIALS = np.array([
    0x00000000, 0x00000001, 0x00000002, 0x003FFFFF, 0x007FFFFF, 0x00800000, 0x00800001,
    0x01000000, 0x1F800000, 0x2F800000, 0x33800000, 0x337FFFFF, 0x3F800000, 0x3F800001,
    0x3FFFFFFF, 0x4B800000, 0x4F800000, 0x4F7FFFFF, 0x7F000000, 0x7F7FFFFE, 0x7F7FFFFF,
    0x7F800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF,
], dtype=np.uint32)
FP32_SPECIALS = np.concatenate([FP32_SPECIALS, FP32_SPECIALS | 0x80000000])


def mac_directed():
    """Return (a, b, c): every pair of special operands against every special accumulator."""
    a, b, c = np.meshgrid(FP16_SPECIALS, FP16_SPECIALS, FP32_SPECIALS, indexing="ij")
    return a.ravel(), b.ravel(), c.ravel()


def mac_ties(rng, count):
    """Return (a, b, c) whose exact sums lie halfway between two binary32 values.

    ``a = 2**j`` and ``b`` an odd integer make ``a * b`` an odd multiple of half an ulp of an
    accumulator of exponent ``j + 24``; about half of the ties round up, half down.
    """
    j = rng.integers(-24, 16, count)
    a16 = np.asarray(np.ldexp(1.0, j), dtype=np.float16).view(np.uint16)
    odd = rng.integers(0, 1024, count) * 2 + 1
    b16 = np.asarray(odd, dtype=np.float16).view(np.uint16)
    # Accumulator: a binary32 value of exponent j + 24, random mantissa, either sign.
    exp_field = (j + 24 + 127).astype(np.uint32)
    c = (exp_field << 23) | rng.integers(0, 1 << 23, count, dtype=np.uint32)
    sign = rng.integers(0, 2, (3, count), dtype=np.uint16)
    return (a16 | (sign[0] << 15), b16 | (sign[1] << 15),
            c | (sign[2].astype(np.uint32) << 31))


def mac_random(rng, count):
    """Return (a, b, c) random: operands of any class, accumulators near and far from a*b."""
    a = rng.integers(0, 1 << 16, count, dtype=np.uint16)
    b = rng.integers(0, 1 << 16, count, dtype=np.uint16)
    # Keep most operands finite so the arithmetic paths, not the special ones, get most vectors.
    finite = rng.random((2, count)) < 0.95
    a = np.where(finite[0] & ((a & 0x7C00) == 0x7C00), a & 0xBFFF, a)
    b = np.where(finite[1] & ((b & 0x7C00) == 0x7C00), b & 0xBFFF, b)
    with np.errstate(all="ignore"):
        p = f16_values(a).astype(np.float64) * f16_values(b).astype(np.float64)
    kind = rng.integers(0, 6, count)
    scale = np.ldexp(1.0, rng.integers(-30, 31, count)) * rng.uniform(0.5, 2.0, count)
    near = -p * (1.0 + rng.integers(-4, 5, count) * 2.0**-23)            # cancellation
    with np.errstate(all="ignore"):
        candidates = [
            rng.integers(0, 1 << 32, count, dtype=np.uint32),            # any pattern
            f32_bits(p * scale),                                         # aligned nearby
            f32_bits(-p * scale),                                        # subtraction
            f32_bits(near),                                              # near cancellation
            rng.integers(0, 1 << 24, count, dtype=np.uint32)             # subnormals, tiny
            | (rng.integers(0, 2, count, dtype=np.uint32) << 31),
            f32_bits(p) ^ rng.integers(0, 1 << 3, count, dtype=np.uint32) ^ (1 << 31),
        ]
    c = np.choose(kind, candidates).astype(np.uint32)
    return a, b, c


def cvt_directed():
    """Return binary32 inputs for the converter: every binary16 value, every tie between two
    neighbouring binary16 values, one binary32 ulp either side of each tie, and specials."""
    h = np.arange(0x7C00, dtype=np.uint16)                     # every finite magnitude
    lo = f16_values(h).astype(np.float64)
    hi = np.append(lo[1:], 65520.0)                            # 65520: the overflow tie
    ties = f32_bits(((lo + hi) / 2).astype(np.float32))
    exact = f32_bits(lo.astype(np.float32))
    mags = np.concatenate([exact, ties, ties - 1, ties + 1,
                           FP32_SPECIALS & 0x7FFFFFFF,
                           np.array([FP32_INF, FP32_INF | 1, 0x477FE000, 0x477FEFFF, 0x477FF000,
                                     0x477FF001, 0x33000000, 0x33000001, 0x32FFFFFF],
                                    dtype=np.uint32)]).astype(np.uint32)
    return np.concatenate([mags, mags | np.uint32(0x80000000)])


def cvt_random(rng, count):
    """Return random binary32 inputs, most of them within binary16's exponent range."""
    exp = rng.integers(100, 150, count, dtype=np.uint32)
    near = (exp << 23) | rng.integers(0, 1 << 23, count, dtype=np.uint32)
    anyp = rng.integers(0, 1 << 32, count, dtype=np.uint32)
    x = np.where(rng.random(count) < 0.8, near, anyp)
    return x | (rng.integers(0, 2, count, dtype=np.uint32) << 31)
