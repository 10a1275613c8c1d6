"""Bit-exact model of one PE primitive (``rsaccel.hw.pe``), and its float64 reference.

For each output column ``x`` and filter ``f``, the PE computes, one binary32 rounding per MAC::

    acc = psum_in[x][f] if psum_in is not None else +0.0
    for s in range(S):                  # filter column, outer
        for c in range(q):              # channel, inner
            acc = mac(w[f][c][s], ifmap[c][x * U + s], acc)
    psum_out[x][f] = acc

:func:`run_primitive` follows that order exactly; :func:`reference_f64` gives the float64 value
and the error bound of DESIGN.md ("Numerics contract") that every output must satisfy.
"""

import numpy as np

from ..hw.pe import pe_limits
from .numerics import f16_values, f32_values, mac

__all__ = ["UNIT_ROUNDOFF", "check_primitive", "ifmap_width", "reference_f64", "run_primitive"]

#: Unit roundoff of the binary32 accumulator.
UNIT_ROUNDOFF = 2.0 ** -24


def ifmap_width(F, S, U):
    """Return the ifmap row width ``W = (F - 1) * U + S`` of a primitive."""
    return (F - 1) * U + S


def check_primitive(p, q, S, U, F, *, filter_depth, ifmap_depth, psum_depth, max_width=4095):
    """Raise ``ValueError`` (naming the limit) unless a PE of these sizes can run the primitive.

    ``p`` filters, ``q`` channels, filter width ``S``, stride ``U``, output width ``F``. The
    hardware is never given a primitive this rejects: it does not check its configuration.
    """
    limits = pe_limits(filter_depth=filter_depth, ifmap_depth=ifmap_depth,
                       psum_depth=psum_depth, max_width=max_width)
    for name, value in (("p", p), ("q", q), ("S", S), ("U", U), ("F", F)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if U > 15:
        raise ValueError(f"stride U must be between 1 and 15, not {U!r}")
    if q * S > ifmap_depth:
        raise ValueError(f"q * S = {q * S} ifmap values (q={q}, S={S}) exceed the ifmap "
                         f"scratchpad depth {ifmap_depth}")
    if p * q * S > filter_depth:
        raise ValueError(f"p * q * S = {p * q * S} weights (p={p}, q={q}, S={S}) exceed the "
                         f"filter scratchpad depth {filter_depth}")
    if p > psum_depth:
        raise ValueError(f"p = {p} psums exceed the psum scratchpad depth {psum_depth}")
    if F > limits["F"]:
        raise ValueError(f"output width F = {F} exceeds the PE's max_width {max_width}")


def _shapes(weights, ifmap, psum_in, U):
    weights = np.asarray(weights, dtype=np.uint16)
    ifmap = np.asarray(ifmap, dtype=np.uint16)
    if weights.ndim != 3 or ifmap.ndim != 2:
        raise ValueError(f"weights must be [p][q][S] and ifmap [q][W], not shapes "
                         f"{weights.shape} and {ifmap.shape}")
    p, q, S = weights.shape
    if ifmap.shape[0] != q:
        raise ValueError(f"ifmap has {ifmap.shape[0]} channels, weights {q}")
    W = ifmap.shape[1]
    if not isinstance(U, (int, np.integer)) or U < 1 or W < S or (W - S) % U:
        raise ValueError(f"ifmap width {W} is not (F - 1) * U + S for S={S}, U={U!r}")
    F = (W - S) // U + 1
    if psum_in is not None:
        psum_in = np.asarray(psum_in, dtype=np.uint32)
        if psum_in.shape != (F, p):
            raise ValueError(f"psum_in must be [F][p] = {(F, p)}, not {psum_in.shape}")
    return weights, ifmap, psum_in, (p, q, S, F)


def run_primitive(weights, ifmap, psum_in, U):
    """Return the PE's psums (uint32 binary32 bits, ``[F][p]``), bit for bit.

    ``weights`` are binary16 bits ``[p][q][S]``, ``ifmap`` binary16 bits ``[q][W]`` with
    ``W = (F - 1) * U + S``, ``psum_in`` binary32 bits ``[F][p]`` or ``None`` (start from +0).
    """
    weights, ifmap, psum_in, (p, q, S, F) = _shapes(weights, ifmap, psum_in, U)
    acc = np.zeros((F, p), np.uint32) if psum_in is None else psum_in.copy()
    cols = np.arange(F) * U
    for s in range(S):
        for c in range(q):
            acc = mac(weights[None, :, c, s], ifmap[c, cols + s][:, None], acc)
    return acc


def reference_f64(weights, ifmap, psum_in, U):
    """Return ``(y64, bound)``, both float64 ``[F][p]``: the exact-in-float64 sums and the bound.

    Any binary32 evaluation order with one rounding per addition lies within ``bound`` of
    ``y64``: ``gamma_k * (sum |w * x| + |psum_in|)``, ``gamma_k = k u / (1 - k u)``,
    ``u = 2**-24``, ``k = q * S`` additions. It holds while no partial sum overflows (with
    subnormals, additions are exact, so underflow does not weaken it).
    """
    weights, ifmap, psum_in, (p, q, S, F) = _shapes(weights, ifmap, psum_in, U)
    w = f16_values(weights).astype(np.float64)                     # [p][q][S]
    cols = np.arange(F)[:, None] * U + np.arange(S)[None, :]       # [F][S]
    xs = f16_values(ifmap).astype(np.float64)[:, cols]             # [q][F][S]
    # Products of binary16 values are exact in float64; float64 sums of at most a few thousand
    # of them are far more accurate than the binary32 bound, so y64 stands for the exact value.
    prods = np.einsum("pqs,qfs->fpqs", w, xs).reshape(F, p, q * S)
    y64 = prods.sum(axis=2)
    mag = np.abs(prods).sum(axis=2)
    if psum_in is not None:
        init = f32_values(psum_in).astype(np.float64)
        y64 = y64 + init
        mag = mag + np.abs(init)
    k = q * S
    gamma = k * UNIT_ROUNDOFF / (1 - k * UNIT_ROUNDOFF)
    return y64, gamma * mag
