"""Bit-exact model of a whole layer run by a mapping, and its float64 reference with error bound.

:func:`run_layer` computes every output with :func:`rsaccel.sw.numerics.mac`, one binary32
rounding per product, in exactly the accumulation order of the mapping
(:meth:`rsaccel.sw.mapper.Mapping.term_order`: the bias, then the terms pass by pass, sets up the
psum chain, filter rows bottom to top, ``s`` outer, ``c`` inner). Padding positions are MACs
with an ifmap value of +0, as the hardware does them (``-0 + +0`` gives ``+0``; an infinite
weight times a padding zero gives NaN). The loop runs over the terms in order and is vectorized
over all outputs, so it is as exact as a scalar loop. The output stage (ReLU, FP32 -> FP16
round-to-nearest-even) follows :func:`rsaccel.sw.numerics.to_fp16`.

:func:`float64_bound` gives the float64 reference and the bound of DESIGN.md ("Numerics
contract") that every output of every order must satisfy.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .layers import Conv2d
from .mapper import Mapping
from .numerics import f32_values, mac, relu32, to_fp16
from .pe_model import UNIT_ROUNDOFF

__all__ = ["OUTPUTS", "accumulate", "float64_bound", "run_layer"]

#: What :func:`run_layer` returns: ``"acc"`` the FP32 accumulators (before the output stage),
#: ``"fp32"`` FP32 after ReLU (when the layer has it), ``"fp16"`` FP16 after ReLU.
OUTPUTS = ("acc", "fp32", "fp16")

#: Unit roundoff of binary16, and half the spacing of its subnormals.
FP16_UNIT_ROUNDOFF = 2.0 ** -11
FP16_HALF_SUBNORMAL = 2.0 ** -25

_GEOMETRY = ("N", "C", "M", "H", "W", "R", "S", "stride", "padding", "groups")


def _check_array(name, value, dtype, shape):
    """Raise TypeError/ValueError unless ``value`` is a numpy array of ``dtype`` and ``shape``
    (any shape when None)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of {np.dtype(dtype).name}, "
                        f"not {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, not {value.dtype}")
    if shape is not None and value.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, not {value.shape}")


def _check(layer, x, w, bias):
    if not isinstance(layer, Conv2d):
        raise TypeError(f"layer must be a Conv2d, not {layer!r}")
    _check_array("x (NCHW)", x, np.float16, layer.input_shape)
    _check_array("w (MCRS, C per group)", w, np.float16, layer.weight_shape)
    if layer.bias:
        if bias is None:
            raise ValueError(f"{layer.name} has a bias: bias must be given")
        _check_array("bias", bias, np.float32, (layer.M,))
    elif bias is not None:
        raise ValueError(f"{layer.name} has no bias (bias=False), but a bias was given")


def _check_out(out):
    if out not in OUTPUTS:
        raise ValueError(f"out must be one of {', '.join(OUTPUTS)}, not {out!r}")


def _padded(layer, values, dtype):
    """Return ``values`` (NCHW) padded with zeros, as ``[N][G][Cg][Hp][Wp]``."""
    pad = layer.padding
    xp = np.zeros((layer.N, layer.C, layer.H + 2 * pad, layer.W + 2 * pad), dtype)
    xp[:, :, pad:pad + layer.H, pad:pad + layer.W] = values
    return xp.reshape(layer.N, layer.groups, layer.Cg, *xp.shape[2:])


def accumulate(layer, mapping, x, w, bias=None):
    """Return the FP32 accumulators ``[N][M][E][F]`` (float32) of ``layer`` run by ``mapping``,
    bit for bit: ``x`` float16 NCHW, ``w`` float16 ``[M][C / groups][R][S]``, ``bias`` float32
    ``[M]`` (exactly when the layer has a bias)."""
    _check(layer, x, w, bias)
    if not isinstance(mapping, Mapping):
        raise TypeError(f"mapping must be a Mapping, not {mapping!r}")
    if any(getattr(mapping.layer, f) != getattr(layer, f) for f in _GEOMETRY):
        raise ValueError(f"the mapping is for {mapping.layer}, not for {layer}")
    N, G, Mg, E, F, U = layer.N, layer.groups, layer.Mg, layer.E, layer.F, layer.U
    xp = _padded(layer, x.view(np.uint16), np.uint16)
    wb = w.view(np.uint16).reshape(G, Mg, layer.Cg, layer.R, layer.S)
    if bias is None:
        acc = np.zeros((N, G, Mg, E, F), np.uint32)       # +0.0
    else:
        acc = np.broadcast_to(bias.view(np.uint32).reshape(1, G, Mg, 1, 1),
                              (N, G, Mg, E, F)).copy()
    rows = (E - 1) * U + 1
    cols = (F - 1) * U + 1
    for c, i, s in mapping.term_order().tolist():
        xs = xp[:, :, c, i:i + rows:U, s:s + cols:U]          # [N][G][E][F]
        acc = mac(wb[None, :, :, c, i, s, None, None], xs[:, :, None], acc)
    return f32_values(acc.reshape(N, layer.M, E, F))


def run_layer(layer, mapping, x, w, bias=None, *, out="acc"):
    """Return the outputs of ``layer`` run by ``mapping`` (:func:`accumulate`), through the
    output stage ``out`` (:data:`OUTPUTS`): float32 for ``"acc"`` and ``"fp32"``, float16 for
    ``"fp16"``."""
    _check_out(out)
    acc = accumulate(layer, mapping, x, w, bias)
    if out == "acc":
        return acc
    bits = acc.view(np.uint32)
    if out == "fp32":
        return f32_values(relu32(bits) if layer.relu else bits)
    return to_fp16(bits, relu=layer.relu).view(np.float16)


def float64_bound(layer, x, w, bias=None, *, out="acc"):
    """Return ``(y64, bound)``, float64 ``[N][M][E][F]``: the layer's exact outputs (ReLU
    applied for ``out`` ``"fp32"`` and ``"fp16"`` when the layer has it) and the bound that
    every binary32 accumulation order satisfies, ``|y - y64| <= bound``.

    ``bound = gamma_k * (sum |w * x| + |bias|)``, ``gamma_k = k u / (1 - k u)``,
    ``k = (C / groups) * R * S``, ``u = 2**-24``; with ``out="fp16"`` plus the FP16 rounding of
    the result, ``2**-11 * (|y64| + bound) + 2**-25``. It holds for finite data while no partial
    sum overflows binary32 (and, for FP16, while the result stays below FP16's overflow).
    """
    _check(layer, x, w, bias)
    _check_out(out)
    N, G, Mg, E, F, U = layer.N, layer.groups, layer.Mg, layer.E, layer.F, layer.U
    xp = _padded(layer, x.astype(np.float64), np.float64)
    wf = w.astype(np.float64).reshape(G, Mg, layer.Cg, layer.R, layer.S)
    win = sliding_window_view(xp, (layer.R, layer.S), axis=(3, 4))[:, :, :, ::U, ::U]
    win = win[:, :, :, :E, :F]                                   # [N][G][Cg][E][F][R][S]
    # Products of binary16 values are exact in float64; float64 sums of them are far more
    # accurate than the binary32 bound, so y64 stands for the exact value.
    y64 = np.einsum("ngcefrs,gmcrs->ngmef", win, wf).reshape(N, layer.M, E, F)
    mag = np.einsum("ngcefrs,gmcrs->ngmef", np.abs(win), np.abs(wf)).reshape(N, layer.M, E, F)
    if bias is not None:
        b = bias.astype(np.float64).reshape(1, layer.M, 1, 1)
        y64 = y64 + b
        mag = mag + np.abs(b)
    k = layer.terms
    gamma = k * UNIT_ROUNDOFF / (1 - k * UNIT_ROUNDOFF)
    bound = gamma * mag
    if out != "acc" and layer.relu:
        y64 = np.maximum(y64, 0.0)          # ReLU is 1-Lipschitz: the bound carries over
    if out == "fp16":
        bound = bound + FP16_UNIT_ROUNDOFF * (np.abs(y64) + bound) + FP16_HALF_SUBNORMAL
    return y64, bound
