"""Tests of sw/pe_model.py: the documented accumulation order, and the float64 error bound."""

import numpy as np
import pytest

from rsaccel.sim.pe_bench import random_values16
from rsaccel.sw import numerics, pe_model
from rsaccel.sw.numerics import f16_bits, f32_bits, f32_values


def scalar_primitive(weights, ifmap, psum_in, U):
    """The primitive exactly as documented, one scalar MAC at a time."""
    p, q, S = weights.shape
    F = (ifmap.shape[1] - S) // U + 1
    out = np.zeros((F, p), np.uint32)
    for x in range(F):
        for f in range(p):
            acc = np.uint32(0) if psum_in is None else psum_in[x, f]
            for s in range(S):
                for c in range(q):
                    acc = numerics.mac(weights[f, c, s], ifmap[c, x * U + s], acc)
            out[x, f] = acc
    return out


@pytest.mark.parametrize("p,q,S,U,F", [(1, 1, 1, 1, 1), (3, 2, 3, 1, 5), (4, 3, 2, 3, 4),
                                       (2, 1, 5, 7, 3), (5, 4, 1, 1, 6)])
@pytest.mark.parametrize("with_psum", [False, True])
def test_model_follows_the_documented_order(p, q, S, U, F, with_psum):
    rng = np.random.default_rng(p * 100 + q * 10 + S)
    weights = random_values16(rng, (p, q, S), special_rate=0.05)
    ifmap = random_values16(rng, (q, pe_model.ifmap_width(F, S, U)), special_rate=0.05)
    psum_in = rng.normal(0, 4, (F, p)).astype(np.float32).view(np.uint32) if with_psum else None
    got = pe_model.run_primitive(weights, ifmap, psum_in, U)
    assert got.dtype == np.uint32 and got.shape == (F, p)
    assert (got == scalar_primitive(weights, ifmap, psum_in, U)).all()


def test_order_matters_and_is_s_outer():
    """Terms that cancel differently in another order: the model must pick (s outer, c inner)."""
    # Two channels, two taps: w*x products 2**24, 1, -2**24, 1 in (s, c) order give 1 (the
    # first 1 is lost against 2**24, the second survives); c-outer order would add
    # 2**24, -2**24, 1, 1 = 2.
    weights = f16_bits(np.array([[[2.0 ** 12, -2.0 ** 12], [1.0, 1.0]]]))    # [p=1][q=2][S=2]
    ifmap = f16_bits(np.array([[2.0 ** 12, 2.0 ** 12], [1.0, 1.0]]))         # [q=2][W=2]
    got = f32_values(pe_model.run_primitive(weights, ifmap, None, 1))
    assert got.tolist() == [[1.0]]


def test_positive_zero_start():
    """Without psum_in the accumulator starts at +0: -0 products give +0, as the MAC does."""
    weights = f16_bits(np.full((1, 1, 1), -0.0))
    ifmap = f16_bits(np.ones((1, 1)))
    assert pe_model.run_primitive(weights, ifmap, None, 1)[0, 0] == 0
    psum = f32_bits(np.full((1, 1), -0.0))
    assert pe_model.run_primitive(weights, ifmap, psum, 1)[0, 0] == 0x80000000


@pytest.mark.parametrize("q,S,with_psum", [(4, 3, False), (16, 11, True), (64, 3, False),
                                           (1, 1, True)])
def test_model_within_float64_bound(q, S, with_psum):
    rng = np.random.default_rng(q * S)
    p, U, F = 8, 2, 40
    weights = random_values16(rng, (p, q, S), special_rate=0)
    ifmap = random_values16(rng, (q, pe_model.ifmap_width(F, S, U)), special_rate=0)
    psum_in = (rng.normal(0, 64, (F, p)).astype(np.float32).view(np.uint32)
               if with_psum else None)
    y = f32_values(pe_model.run_primitive(weights, ifmap, psum_in, U)).astype(np.float64)
    y64, bound = pe_model.reference_f64(weights, ifmap, psum_in, U)
    err = np.abs(y - y64)
    assert (err <= bound).all(), float((err / bound).max())
    if q * S > 1:
        assert err.max() > 0            # the check saw rounding, not only exact sums


def test_rejects_inconsistent_shapes():
    w = np.zeros((2, 3, 4), np.uint16)
    with pytest.raises(ValueError, match="channels"):
        pe_model.run_primitive(w, np.zeros((2, 10), np.uint16), None, 2)
    with pytest.raises(ValueError, match="not \\(F - 1\\) \\* U \\+ S"):
        pe_model.run_primitive(w, np.zeros((3, 9), np.uint16), None, 2)
    with pytest.raises(ValueError, match="psum_in must be"):
        pe_model.run_primitive(w, np.zeros((3, 10), np.uint16), np.zeros((3, 3), np.uint32), 2)
    with pytest.raises(ValueError, match="weights must be"):
        pe_model.run_primitive(w[0], np.zeros((3, 10), np.uint16), None, 2)
    assert pe_model.ifmap_width(4, 4, 2) == 10
