"""IEEE 754 bit formats shared by the gateware and the host side.

Fields are listed least significant first, as Amaranth lays out a ``data.Struct``.
"""

from amaranth import Cat, Const, Mux
from amaranth.lib import data

__all__ = [
    "FP16",
    "FP16_INF",
    "FP16_QNAN",
    "FP32",
    "FP32_INF",
    "FP32_QNAN",
    "leading_zeros",
    "relu32",
]

FP16_QNAN = 0x7E00
FP16_INF = 0x7C00
FP32_QNAN = 0x7FC00000
FP32_INF = 0x7F800000


class FP16(data.Struct):
    """IEEE 754 binary16."""
    mant: 10
    exp:  5
    sign: 1


class FP32(data.Struct):
    """IEEE 754 binary32."""
    mant: 23
    exp:  8
    sign: 1


def relu32(value):
    """Return binary32 ``value`` with ReLU applied: every value with its sign set (negative
    numbers, -0, -inf) becomes +0; NaN stays."""
    x = FP32(value)
    nan = (x.exp == 0xFF) & x.mant.any()
    return Mux(x.sign & ~nan, 0, x.as_value())


def leading_zeros(value):
    """Return the count of leading zero bits of ``value`` (its width when it is zero).

    Built as a tree of halves, so its depth grows with the log of the width.
    """
    width = len(value)
    count, _ = _lzc(value)
    return Mux(count > width, width, count)[:width.bit_length()]


def _lzc(value):
    """Return (leading zeros, all zero) of ``value``, zero-padded on the right to 2**k bits."""
    width = len(value)
    if width == 1:
        return ~value[0], ~value[0]
    half = 1 << ((width - 1).bit_length() - 1)         # upper part: the top ``half`` bits
    top, bottom = value[width - half:], value[:width - half]
    top_count, top_zero = _lzc(top)
    bottom_count, bottom_zero = _lzc(Cat(Const(0, 2 * half - width), bottom))
    count = Mux(top_zero, half + bottom_count, top_count)
    return count, top_zero & bottom_zero
