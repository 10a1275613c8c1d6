"""The mixed-precision MAC (FP16 x FP16 + FP32 -> FP32) and the FP32 -> FP16 output converter."""

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .fp import FP16, FP16_INF, FP16_QNAN, FP32, FP32_INF, FP32_QNAN, leading_zeros, relu32

__all__ = ["MAC_SECTIONS", "FMac", "Fp32ToFp16", "MacOp", "MacResult", "fp32_to_fp16"]

#: Number of combinational sections the MAC datapath is cut into; see ``FMac``.
MAC_SECTIONS = 6

# Pipeline registers placed after each section (multiply, normalize product, order addends,
# align and add, normalize, round), for depths up to MAC_SECTIONS; chosen from the ECP5 timing
# of each section (README, "MAC pipeline depth"). Deeper pipelines add the extra registers at
# the output.
_REGISTERS_AFTER = {
    1: (0, 0, 0, 0, 0, 1),
    2: (0, 0, 1, 0, 0, 1),
    3: (0, 1, 0, 1, 0, 1),
    4: (0, 1, 1, 1, 0, 1),
    5: (1, 1, 1, 1, 0, 1),
    6: (1, 1, 1, 1, 1, 1),
}


def MacOp(tag_bits):
    """Return the layout of one MAC operation: ``a * b + c``, with a tag carried alongside."""
    return data.StructLayout({"a": FP16, "b": FP16, "c": FP32, "tag": tag_bits})


def MacResult(tag_bits):
    """Return the layout of one MAC result, with the tag of its operation."""
    return data.StructLayout({"sum": FP32, "tag": tag_bits})


class FMac(wiring.Component):
    """Fused multiply-add: binary16 x binary16, exact product, plus binary32, one rounding.

    Computes ``round_rne(a * b + c)`` in binary32 with IEEE 754 semantics: subnormal inputs and
    outputs (no flush to zero), signed zeros (``x + -x = +0``, ``-0 + -0 = -0``), overflow to
    infinity, ``inf * 0`` and ``inf - inf`` give NaN. Every NaN result is the canonical quiet
    NaN ``0x7FC00000``. As the binary16 product is exact in binary32, the result equals
    ``float32(a) * float32(b) + c`` evaluated in binary32.

    Timing: ``stages`` register stages from ``i`` to ``o``. An operation is accepted on every
    cycle in which ``o`` is not stalled; when ``o.valid & ~o.ready`` the whole pipeline holds.
    The ``tag`` travels with its operation unchanged, so independent accumulations can be
    interleaved.

    Parameters
    ----------
    stages : int
        Pipeline depth, at least 1.
    tag_bits : int
        Width of the tag, at least 1.
    """

    def __init__(self, *, stages=3, tag_bits=1):
        if not isinstance(stages, int) or stages < 1:
            raise ValueError(f"MAC stages must be a positive integer, not {stages!r}")
        if not isinstance(tag_bits, int) or tag_bits < 1:
            raise ValueError(f"MAC tag_bits must be a positive integer, not {tag_bits!r}")
        self._stages = stages
        self._tag_bits = tag_bits
        super().__init__({
            "i": In(stream.Signature(MacOp(tag_bits))),
            "o": Out(stream.Signature(MacResult(tag_bits))),
        })

    @property
    def stages(self):
        return self._stages

    @property
    def tag_bits(self):
        return self._tag_bits

    def elaborate(self, platform):
        m = Module()
        regs = list(_REGISTERS_AFTER[min(self.stages, MAC_SECTIONS)])
        regs[-1] += max(0, self.stages - MAC_SECTIONS)

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        op = self.i.payload
        values = {"a": op.a.as_value(), "b": op.b.as_value(), "c": op.c.as_value()}
        carried = {"valid": self.i.valid, "tag": op.tag}
        sections = (_multiply, _normalize_product, _prepare, _align_add, _normalize, _round)
        for index, (section, count) in enumerate(zip(sections, regs)):
            values = section(m, index, values)
            for _ in range(count):
                values, carried = _register(m, index, values, carried, advance)

        m.d.comb += [
            self.o.valid.eq(carried["valid"]),
            self.o.payload.sum.eq(values["result"]),
            self.o.payload.tag.eq(carried["tag"]),
        ]
        return m


def _register(m, index, values, carried, enable):
    """Register every live value; only ``valid`` has a reset value."""
    out_values, out_carried = {}, {}
    for group, out in ((values, out_values), (carried, out_carried)):
        for name, value in group.items():
            value = Value.cast(value)
            reg = Signal(value.shape(), name=f"s{index}_{name}", reset_less=(name != "valid"))
            with m.If(enable):
                m.d.sync += reg.eq(value)
            out[name] = reg
    return out_values, out_carried


def _wire(m, name, value, shape=None):
    """Return a named combinational signal driven by ``value`` (for readable Verilog)."""
    sig = Signal(Value.cast(value).shape() if shape is None else shape, name=name)
    m.d.comb += sig.eq(value)
    return sig


def _multiply(m, index, v):
    """Unpack both binary16 operands and form their exact 22-bit product significand."""
    a = FP16(_wire(m, "a", v["a"], FP16))
    b = FP16(_wire(m, "b", v["b"], FP16))

    def classify(x):
        denorm = ~x.exp.any()
        sig = Cat(x.mant, ~denorm)
        exp = Mux(denorm, 1, x.exp)
        top = x.exp == 0x1F
        return sig, exp, top & ~x.mant.any(), top & x.mant.any(), denorm & ~x.mant.any()

    a_sig, a_exp, a_inf, a_nan, a_zero = classify(a)
    b_sig, b_exp, b_inf, b_nan, b_zero = classify(b)
    p_nan = a_nan | b_nan | (a_inf & b_zero) | (b_inf & a_zero)
    return {
        "p_sig": _wire(m, "p_sig", a_sig * b_sig, 22),
        "p_esum": _wire(m, "p_esum", a_exp + b_exp, 6),
        "p_sign": a.sign ^ b.sign,
        "p_nan": p_nan,
        "p_inf": (a_inf | b_inf) & ~p_nan,
        "c": v["c"],
    }


def _normalize_product(m, index, v):
    """Normalize the product to binary32 magnitude bits, exactly."""
    # The product p_sig * 2**(p_esum - 50) is never below 2**-48: always a binary32 normal.
    p_lz = _wire(m, "p_lz", leading_zeros(v["p_sig"]))
    p_norm = _wire(m, "p_norm", (v["p_sig"] << p_lz)[:22], 22)
    p_zero = ~v["p_sig"].any()
    p_exp = Mux(p_zero, 0, v["p_esum"] + 98 - p_lz)
    out = {k: v[k] for k in ("p_sign", "p_nan", "p_inf", "c")}
    out["p_mag"] = _wire(m, "p_mag", Cat(Const(0, 2), p_norm[:21], p_exp[:8]), 31)
    return out


def _prepare(m, index, v):
    """Order the addends by magnitude and find the alignment shift."""
    p_mag = v["p_mag"]
    c = FP32(_wire(m, "c", v["c"], FP32))
    c_mag = c.as_value()[:31]
    c_top = c.exp == 0xFF
    c_nan = c_top & c.mant.any()
    c_inf = c_top & ~c.mant.any()

    swap = c_mag > p_mag
    big = _wire(m, "big", Mux(swap, c_mag, p_mag), 31)
    small = _wire(m, "small", Mux(swap, p_mag, c_mag), 31)
    big_sign = Mux(swap, c.sign, v["p_sign"])
    small_sign = Mux(swap, v["p_sign"], c.sign)
    big_exp = Mux(~big[23:].any(), 1, big[23:])
    small_exp = Mux(~small[23:].any(), 1, small[23:])

    nan = v["p_nan"] | c_nan | (v["p_inf"] & c_inf & (v["p_sign"] != c.sign))
    return {
        "big_sig": Cat(big[:23], big[23:].any()),
        "big_exp": big_exp,
        "small_sig": Cat(small[:23], small[23:].any()),
        "shift": _wire(m, "align_shift", big_exp - small_exp, 8),
        "sub": big_sign != small_sign,
        "sign": big_sign,
        "zero_sign": big_sign & small_sign,
        "nan": nan,
        "inf": (v["p_inf"] | c_inf) & ~nan,
        "inf_sign": Mux(v["p_inf"], v["p_sign"], c.sign),
    }


def _align_add(m, index, v):
    """Align the smaller addend (3 guard bits plus sticky) and add or subtract."""
    shift = Mux(v["shift"] > 27, 27, v["shift"])
    wide = _wire(m, "align_wide", Cat(Const(0, 30), v["small_sig"]) >> shift, 54)
    aligned = Cat(wide[27] | wide[:27].any(), wide[28:54])
    big = Cat(Const(0, 3), v["big_sig"])
    total = Mux(v["sub"], big - aligned, big + aligned)
    out = {k: v[k] for k in ("big_exp", "sign", "zero_sign", "nan", "inf", "inf_sign")}
    out["sum"] = _wire(m, "sum", total, 28)
    return out


def _normalize(m, index, v):
    """Shift the sum so its leading one sits at bit 26, stopping at the subnormal exponent."""
    total, exp = v["sum"], v["big_exp"]
    lz = _wire(m, "sum_lz", leading_zeros(total[:27]))
    limit = (exp - 1)[:8]
    left = Mux(lz > limit, limit, lz)
    carry = total[27]
    norm = Mux(carry, Cat(total[1] | total[0], total[2:28]), (total[:27] << left)[:27])
    norm_exp = Mux(carry, exp + 1, exp - left)
    out = {k: v[k] for k in ("sign", "zero_sign", "nan", "inf", "inf_sign")}
    out["norm"] = _wire(m, "norm", norm, 27)
    # A subnormal result keeps the exponent field at zero.
    out["exp_field"] = _wire(m, "exp_field", Mux(norm[26], norm_exp, 0), 9)
    out["zero"] = ~total.any()
    return out


def _round(m, index, v):
    """Round to nearest even and pack, selecting the special results."""
    norm = v["norm"]
    guard, rest, lsb = norm[2], norm[:2].any(), norm[3]
    round_up = guard & (rest | lsb)
    # Adding the increment to {exponent, mantissa} carries into the exponent on mantissa
    # overflow, turns a subnormal into a normal, and reaches infinity exactly at the top.
    packed = Cat(norm[3:26], v["exp_field"][:8]) + round_up
    overflow = v["exp_field"] >= 0xFF
    result = Mux(v["nan"], FP32_QNAN,
             Mux(v["inf"] | overflow, Cat(Const(FP32_INF, 31), Mux(v["inf"], v["inf_sign"],
                                                                    v["sign"])),
             Mux(v["zero"], Cat(Const(0, 31), v["zero_sign"]),
                 Cat(packed[:31], v["sign"]))))
    return {"result": _wire(m, "result", result, 32)}


def fp32_to_fp16(m, value, relu):
    """Return binary16 of binary32 ``value``, rounded to nearest even; ReLU first if ``relu``.

    ReLU maps every value with the sign bit set (negative numbers, -0, -inf) to +0 and leaves
    NaN alone. Overflow gives infinity, small values become subnormals or zero. NaN gives the
    canonical quiet NaN ``0x7E00``.
    """
    x = FP32(_wire(m, "cvt_in", Mux(relu, relu32(value), value), FP32))
    is_nan = (x.exp == 0xFF) & x.mant.any()
    is_inf = (x.exp == 0xFF) & ~x.mant.any()

    # Unbiased exponent e = exp - 127; binary16 normals have e >= -14 (exp >= 113).
    sig = Cat(x.mant, x.exp.any())                          # 24 bits, value sig * 2**(e - 23)
    sub = _wire(m, "cvt_sub", Mux(x.exp < 113, 113 - x.exp, 0), 8)
    shift = _wire(m, "cvt_shift", 13 + Mux(sub > 12, 12, sub), 5)
    wide = _wire(m, "cvt_wide", Cat(Const(0, 25), sig) >> shift, 49)
    kept = wide[25:36]                                      # 11 bits, hidden bit at 10
    guard = wide[24]
    sticky = wide[:24].any()
    round_up = guard & (sticky | kept[0])
    base = _wire(m, "cvt_base", Mux(x.exp >= 113, x.exp - 113, 0), 8)
    packed = _wire(m, "cvt_packed", (base << 10) + kept + round_up, 18)
    overflow = (x.exp > 142) | (packed >= FP16_INF)
    magnitude = Mux(is_nan, FP16_QNAN, Mux(is_inf | overflow, FP16_INF, packed[:15]))
    return Cat(magnitude, x.sign & ~is_nan)


class Fp32ToFp16(wiring.Component):
    """Convert a stream of binary32 values to binary16, with optional ReLU first.

    ``relu`` is a per-layer setting, sampled with each value. Rounding and special cases as in
    :func:`fp32_to_fp16`. One register stage; a value is accepted on every cycle in which ``o``
    is not stalled.
    """

    i: In(stream.Signature(FP32))
    o: Out(stream.Signature(FP16))
    relu: In(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [
                self.o.valid.eq(self.i.valid),
                self.o.payload.eq(fp32_to_fp16(m, self.i.payload, self.relu)),
            ]
        return m
