"""Tests of sw/layer_model.py: bit-exact order, the float64 bound, output stage, input checks."""

import numpy as np
import pytest

from rsaccel.config import preset
from rsaccel.sw import numerics
from rsaccel.sw.layer_model import accumulate, float64_bound, run_layer
from rsaccel.sw.layers import Conv2d, linear
from rsaccel.sw.mapper import make_mapping, map_layer


def random_data(lay, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, lay.input_shape).astype(np.float16)
    w = rng.normal(0, scale, lay.weight_shape).astype(np.float16)
    # Some exact zeros and tiny (subnormal) values, as real data has.
    x[rng.random(x.shape) < 0.05] = 0
    w[rng.random(w.shape) < 0.02] = np.float16(2.0 ** -20)
    bias = rng.normal(0, 1, (lay.M,)).astype(np.float32) if lay.bias else None
    return x, w, bias


def sequential(lay, mapping, x, w, bias):
    """The documented order, one scalar MAC at a time, walking the passes in order."""
    xb, wb = x.view(np.uint16), w.view(np.uint16)
    E, U, pad = lay.E, lay.U, lay.padding

    def ifmap(n, c, row, col):
        row, col = row - pad, col - pad
        inside = 0 <= row < lay.H and 0 <= col < lay.W
        return xb[n, c, row, col] if inside else np.uint16(0)

    acc = {}
    for ps in mapping.passes():
        g = ps.group
        for unit in ps.units:
            n, e = divmod(unit, E)
            for f_local in ps.filters:
                m = g * lay.Mg + f_local
                for col in ps.out_cols:
                    key = (n, m, e, col)
                    if ps.first:
                        assert key not in acc
                        a = np.uint32(0) if bias is None else bias.view(np.uint32)[m]
                    else:
                        a = acc[key]
                    for cset in ps.step.channel_sets:           # bottom to top of the chain
                        for i in ps.step.rows:                  # filter rows bottom to top
                            for s in ps.step.cols:              # s outer
                                for c in cset:                  # c inner
                                    a = numerics.mac(wb[m, c, i, s],
                                                     ifmap(n, g * lay.Cg + c, e * U + i,
                                                           col * U + s), a)
                    acc[key] = a
    out = np.zeros(lay.output_shape, np.uint32)
    for key, value in acc.items():
        out[key] = value
    return numerics.f32_values(out)


def test_model_equals_sequential_order():
    """Row chunks with different r, column chunks, groups, tiles, bias: bit for bit."""
    lay = Conv2d("seq", 2, 6, 4, 7, 6, 5, 5, stride=2, padding=2, groups=2)
    mapping = make_mapping(lay, preset("tiny"), p=2, q=2, t=1, rows=(2, 1, 2), r=(1, 3, 1),
                           col_width=3, tile_units=2, pack="flat", out_strips=2)
    assert len(mapping.row_chunks) == 3 and len(mapping.col_chunks) == 2
    assert len(mapping.tiles) > 1
    x, w, bias = random_data(lay, 1, scale=8.0)
    got = accumulate(lay, mapping, x, w, bias)
    ref = sequential(lay, mapping, x, w, bias)
    assert got.dtype == np.float32 and got.shape == lay.output_shape
    assert (got.view(np.uint32) == ref.view(np.uint32)).all()


def test_model_follows_the_mapping_order():
    """Cancelling terms: two mappings' orders give different bits, each its sequential result."""
    lay = Conv2d("cancel", 1, 2, 1, 2, 1, 2, 1, bias=False)
    # Products (c, i): (0, 0) = 2**24, (1, 0) = -2**24, (0, 1) = 1, (1, 1) = 1.
    x = np.array([[2.0 ** 12, 1.0], [2.0 ** 12, 1.0]], np.float16).reshape(lay.input_shape)
    w = np.array([[2.0 ** 12, 1.0], [-(2.0 ** 12), 1.0]], np.float16).reshape(lay.weight_shape)
    results = []
    for q, expect in ((2, 2.0), (1, 1.0)):
        # q=2: (0,0) (1,0) (0,1) (1,1) -> 0 + 1 + 1; q=1: (0,0) (0,1) (1,0) (1,1): 1 is lost.
        m = make_mapping(lay, preset("tiny"), p=1, q=q)
        got = accumulate(lay, m, x, w, None)
        assert (got.view(np.uint32) == sequential(lay, m, x, w, None).view(np.uint32)).all()
        results.append(float(got.item()))
        assert results[-1] == expect


@pytest.mark.parametrize("lay, config", [
    (Conv2d("s1", 2, 3, 4, 8, 9, 3, 3, padding=1), "tiny"),
    (Conv2d("s2", 3, 4, 6, 11, 10, 5, 4, stride=2, padding=2, relu=False), "tiny"),
    (Conv2d("s3", 2, 6, 4, 13, 13, 7, 7, stride=3, padding=3, groups=2), "tiny"),
    (Conv2d("s4", 2, 2, 3, 17, 16, 6, 2, stride=4, padding=1, bias=False), "tiny"),
    (Conv2d("r1", 4, 8, 8, 5, 5, 1, 1, groups=4), "tiny"),
    (Conv2d("deep", 2, 24, 10, 6, 6, 3, 3, padding=1), "small"),
    (Conv2d("wide", 1, 3, 5, 9, 20, 3, 13, stride=2, padding=1), "tiny"),
    (linear("fc", 3, 50, 7), "tiny"),
])
@pytest.mark.parametrize("out", ["acc", "fp32", "fp16"])
def test_model_within_float64_bound(lay, config, out):
    mapping = map_layer(lay, preset(config))
    x, w, bias = random_data(lay, sum(map(ord, lay.name)))
    y = run_layer(lay, mapping, x, w, bias, out=out)
    assert y.dtype == (np.float16 if out == "fp16" else np.float32)
    assert y.shape == lay.output_shape
    y64, bound = float64_bound(lay, x, w, bias, out=out)
    err = np.abs(y.astype(np.float64) - y64)
    assert (err <= bound).all(), f"worst excess {(err - bound).max()}"
    if out != "acc" and lay.relu:
        assert (y >= 0).all()


def test_different_mappings_agree_within_bound():
    lay = Conv2d("m", 2, 12, 6, 9, 9, 5, 5, padding=2, groups=2)
    config = preset("tiny")
    x, w, bias = random_data(lay, 7, scale=4.0)
    _, bound = float64_bound(lay, x, w, bias)
    mappings = [map_layer(lay, config),
                make_mapping(lay, config, p=3, q=1, rows=(2, 2, 1), r=(1, 1, 3), col_width=2),
                make_mapping(lay, config, p=1, q=2, t=2, rows=1, r=3)]
    orders = {tuple(map(tuple, m.term_order().tolist())) for m in mappings}
    assert len(orders) == 3
    ys = [accumulate(lay, m, x, w, bias).astype(np.float64) for m in mappings]
    assert any((ys[0] != y).any() for y in ys[1:])      # the orders do change the bits
    for y in ys[1:]:
        assert (np.abs(ys[0] - y) <= 2 * bound).all()


def test_padding_is_multiplied_like_data():
    """The hardware MACs padding zeros: an infinite weight makes border outputs NaN."""
    lay = Conv2d("pad", 1, 1, 1, 4, 4, 3, 3, padding=1, bias=False, relu=False)
    x = np.ones(lay.input_shape, np.float16)
    w = np.zeros(lay.weight_shape, np.float16)
    w[0, 0, 0, 0] = np.inf                   # touches padding for output row 0 and column 0
    y = accumulate(lay, map_layer(lay, preset("tiny")), x, w, None)
    assert np.isnan(y[0, 0, 0, :]).all() and np.isnan(y[0, 0, :, 0]).all()
    assert np.isinf(y[0, 0, 1:, 1:]).all()
    assert (y.view(np.uint32)[np.isnan(y)] == 0x7FC00000).all()


def test_accumulator_starts_at_positive_zero():
    lay = Conv2d("zero", 1, 2, 2, 3, 3, 2, 2, bias=False, relu=False)
    x = np.zeros(lay.input_shape, np.float16)
    w = np.full(lay.weight_shape, -1.0, np.float16)       # products -0: +0 + -0 = +0
    y = accumulate(lay, map_layer(lay, preset("tiny")), x, w, None)
    assert (y.view(np.uint32) == 0).all()


def test_output_stage():
    lay = Conv2d("stage", 1, 2, 3, 4, 4, 3, 3, padding=1)
    mapping = map_layer(lay, preset("tiny"))
    x, w, bias = random_data(lay, 3, scale=30.0)
    acc = run_layer(lay, mapping, x, w, bias)
    fp32 = run_layer(lay, mapping, x, w, bias, out="fp32")
    fp16 = run_layer(lay, mapping, x, w, bias, out="fp16")
    assert (fp32 == np.maximum(acc, 0)).all() and (acc < 0).any()
    assert (fp16.view(np.uint16) == numerics.to_fp16(acc.view(np.uint32), relu=True)).all()
    plain = lay.replace(relu=False)
    assert (run_layer(plain, mapping, x, w, bias, out="fp32") == acc).all()


@pytest.mark.parametrize("change, error, message", [
    ({"x": np.zeros((1, 2, 4, 4), np.float32)}, TypeError, r"x \(NCHW\) must have dtype float16"),
    ({"x": np.zeros((1, 2, 4, 5), np.float16)}, ValueError,
     r"x \(NCHW\) must have shape \(1, 2, 4, 4\), not \(1, 2, 4, 5\)"),
    ({"w": [[1.0]]}, TypeError, "must be a numpy array of float16, not list"),
    ({"w": np.zeros((3, 1, 3, 3), np.float16)}, ValueError, r"w \(MCRS, C per group\) must"),
    ({"bias": None}, ValueError, "has a bias: bias must be given"),
    ({"bias": np.zeros(3, np.float64)}, TypeError, "bias must have dtype float32"),
    ({"out": "int8"}, ValueError, "out must be one of acc, fp32, fp16"),
])
def test_checks_inputs(change, error, message):
    lay = Conv2d("check", 1, 2, 3, 4, 4, 3, 3, padding=1)
    mapping = map_layer(lay, preset("tiny"))
    args = {"x": np.zeros(lay.input_shape, np.float16),
            "w": np.zeros(lay.weight_shape, np.float16),
            "bias": np.zeros(lay.M, np.float32), "out": "acc", **change}
    with pytest.raises(error, match=message):
        run_layer(lay, mapping, args["x"], args["w"], args["bias"], out=args["out"])


def test_checks_layer_and_mapping():
    lay = Conv2d("check", 1, 2, 3, 4, 4, 3, 3, padding=1)
    other = lay.replace(padding=0)
    x = np.zeros(lay.input_shape, np.float16)
    w = np.zeros(lay.weight_shape, np.float16)
    with pytest.raises(ValueError, match="the mapping is for"):
        accumulate(lay, map_layer(other, preset("tiny")), x, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="has no bias"):
        accumulate(lay.replace(bias=False), map_layer(lay, preset("tiny")), x, w,
                   np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="mapping must be a Mapping"):
        accumulate(lay, None, x, w, np.zeros(3, np.float32))
