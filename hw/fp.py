"""IEEE 754 bit formats shared by the gateware and the host side.

Fields are listed least significant first, as Amaranth lays out a ``data.Struct``.
"""

from amaranth import Const, Mux
from amaranth.lib import data

__all__ = [
    "FP16",
    "FP16_INF",
    "FP16_QNAN",
    "FP32",
    "FP32_INF",
    "FP32_QNAN",
    "leading_zeros",
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


def leading_zeros(value):
    """Return the count of leading zero bits of ``value`` (its width when it is zero)."""
    width = len(value)
    count = Const(width, range(width + 1))
    for i in range(width):  # the most significant set bit, seen last, wins
        count = Mux(value[i], width - 1 - i, count)
    return count
