"""Tests of the host driver: input checks, and random layers end to end through the model and
the generated Verilog (Verilator; Icarus when installed), bit for bit against the layer model
and within the float64 bound."""

import numpy as np
import pytest

from rsaccel import preset
from rsaccel.sim.runner import available_simulators
from rsaccel.sw import layer_model
from rsaccel.sw.driver import Accelerator
from rsaccel.sw.layers import Conv2d


def random_layer(rng, *, max_hw=11, max_c=6):
    """Return conv2d arguments of a random layer: shapes, stride, padding, groups, R, S."""
    groups = int(rng.choice([1, 1, 2]))
    C = groups * int(rng.integers(1, max_c // groups + 1))
    M = groups * int(rng.integers(1, max_c // groups + 1))
    R, S = (int(rng.integers(1, min(7, max_hw) + 1)) for _ in range(2))
    stride, padding = int(rng.integers(1, 5)), int(rng.integers(0, 3))
    H = int(rng.integers(max(1, R - 2 * padding), max_hw + 1))
    W = int(rng.integers(max(1, S - 2 * padding), max_hw + 1))
    N = int(rng.integers(1, 3))
    return {"N": N, "C": C, "M": M, "H": H, "W": W, "R": R, "S": S, "stride": stride, "padding": padding,
                "groups": groups, "bias": bool(rng.integers(0, 2)), "relu": bool(rng.integers(0, 2)),
                "fp16": bool(rng.integers(0, 2))}


def tensors(rng, p):
    x = rng.standard_normal((p["N"], p["C"], p["H"], p["W"])).astype(np.float16)
    w = (rng.standard_normal((p["M"], p["C"] // p["groups"], p["R"], p["S"])) / 2) \
        .astype(np.float16)
    b = rng.standard_normal(p["M"]).astype(np.float32) if p["bias"] else None
    return x, w, b


def check(acc, p, x, w, b):
    """Run layer ``p`` on ``acc``; compare with the layer model (bit for bit) and float64."""
    y = acc.conv2d(x, w, b, stride=p["stride"], padding=p["padding"], groups=p["groups"],
                   relu=p["relu"], out_dtype=np.float16 if p["fp16"] else np.float32)
    layer = Conv2d("conv2d", p["N"], p["C"], p["M"], p["H"], p["W"], p["R"], p["S"],
                   stride=p["stride"], padding=p["padding"], groups=p["groups"],
                   bias=p["bias"], relu=p["relu"])
    out = "fp16" if p["fp16"] else "fp32"
    ref = layer_model.run_layer(layer, acc.last_program.mapping, x, w, b, out=out)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    bits = np.uint16 if p["fp16"] else np.uint32
    assert np.array_equal(y.view(bits), ref.view(bits)), p
    y64, bound = layer_model.float64_bound(layer, x, w, b, out=out)
    assert np.all(np.abs(y.astype(np.float64) - y64) <= bound), p
    s = acc.stats
    assert s.macs == layer.macs and 0 < s.utilization <= 1 and s.energy > 0
    return y


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("name", ["tiny", "small"])
def test_model_backend_random_layers(name, seed):
    rng = np.random.default_rng(seed)
    p = random_layer(rng)
    check(Accelerator(name, "model"), p, *tensors(rng, p))


# Tiny: half with random stalls on every AXI channel (cocotbext-axi's AxiRam), half in the HDL
# harness with a narrow, slow memory; small: the harness at the AXI port's rate.
RTL_CASES = [(sim, name, seed) for sim in available_simulators()
             for name, seeds in (("tiny", range(6)), ("small", range(3)))
             for seed in seeds if sim == "verilator" or (name, seed) == ("tiny", 0)]


def memory_options(name, seed):
    if name == "tiny" and seed % 2 == 0:
        return {"pause": 0.2}
    if name == "tiny":
        return {"dram_bandwidth": 1.5, "dram_latency": 40}
    return {}


@pytest.mark.parametrize("simulator, name, seed", RTL_CASES)
def test_rtl_random_layers_equal_the_model(simulator, name, seed):
    rng = np.random.default_rng(100 + seed)
    p = random_layer(rng, max_hw=9 if simulator == "verilator" else 5,
                     max_c=6 if simulator == "verilator" else 2)
    x, w, b = tensors(rng, p)
    acc = Accelerator(name, simulator, seed=seed, **memory_options(name, seed))
    y = check(acc, p, x, w, b)
    model = Accelerator(name, "model")
    ym = model.conv2d(x, w, b, stride=p["stride"], padding=p["padding"], groups=p["groups"],
                      relu=p["relu"], out_dtype=y.dtype)
    assert np.array_equal(y, ym, equal_nan=True)
    assert acc.stats.counters["MAC_BUSY"] == acc.stats.macs


def test_linear_is_a_1x1_convolution():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 10)).astype(np.float16)
    w = rng.standard_normal((5, 10)).astype(np.float16)
    b = rng.standard_normal(5).astype(np.float32)
    acc = Accelerator("tiny", "model")
    y = acc.linear(x, w, b, relu=True, out_dtype=np.float32)
    y4 = acc.conv2d(x[:, :, None, None], w[:, :, None, None], b, relu=True,
                    out_dtype=np.float32)
    assert y.shape == (3, 5) and np.array_equal(y, y4[:, :, 0, 0])
    ref = np.maximum(x.astype(np.float64) @ w.T.astype(np.float64) + b, 0)
    assert np.allclose(y, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("call, message", [
    (lambda a, x, w: a.conv2d(x.astype(np.float32), w), "x must have dtype float16"),
    (lambda a, x, w: a.conv2d(x[0], w), "x must have 4 dimensions"),
    (lambda a, x, w: a.conv2d(x, w[:, :2]), "w must have C / groups = 4"),
    (lambda a, x, w: a.conv2d(x, w, groups=3), "groups=3 must divide"),
    (lambda a, x, w: a.conv2d(x, w, np.zeros(2, np.float32)), r"bias must have shape \(6,\)"),
    (lambda a, x, w: a.conv2d(x, w, np.zeros(6)), "bias must have dtype float32"),
    (lambda a, x, w: a.conv2d(x, w, stride=0), "stride must be an integer of at least 1"),
    (lambda a, x, w: a.conv2d(x, w, out_dtype=np.int8), "out_dtype must be float16 or float32"),
    (lambda a, x, w: a.conv2d(x[:, :, :2, :2], w), "larger than the padded"),
    (lambda a, x, w: a.conv2d(x, w, stride=16), "stride"),
    (lambda a, x, w: a.linear(x[:, :, 0, 0], w[:, :, 0, 0].T), "input features"),
])
def test_bad_input_is_refused_clearly(call, message):
    x = np.zeros((1, 4, 8, 8), np.float16)
    w = np.zeros((6, 4, 3, 3), np.float16)
    with pytest.raises((TypeError, ValueError), match=message):
        call(Accelerator("tiny", "model"), x, w)


def test_bad_configuration_and_backend():
    with pytest.raises(ValueError, match="backend must be one of model, verilator, icarus"):
        Accelerator("tiny", "fpga")
    with pytest.raises(TypeError, match="config must be an ArrayConfig"):
        Accelerator(3)
    with pytest.raises(ValueError, match="timeout must be"):
        Accelerator(preset("tiny"), timeout=0)
    with pytest.raises(ValueError, match="dram_bandwidth must be"):
        Accelerator("tiny", "verilator", dram_bandwidth=0)
    with pytest.raises(ValueError, match="dram_latency must be"):
        Accelerator("tiny", "verilator", dram_latency=-1)
    with pytest.raises(ValueError, match="give one or the other"):
        Accelerator("tiny", "verilator", pause=0.1, dram_bandwidth=2)


def test_timeout_stops_a_run():
    rng = np.random.default_rng(1)
    p = random_layer(rng)
    x, w, b = tensors(rng, p)
    acc = Accelerator("tiny", "verilator", timeout=50)
    with pytest.raises(TimeoutError, match="did not finish within 50 cycles"):
        acc.conv2d(x, w, b, stride=p["stride"], padding=p["padding"], groups=p["groups"])


@pytest.mark.parametrize("name, channels", [("tiny", 8), ("small", 16)])
def test_alexnet_conv5_geometry_runs_on_the_rtl(name, channels):
    # 13 x 13, 3 x 3, padding 1, groups 2, several steps and NoC reprogrammings: this layer
    # deadlocked the array before the senders skipped rows whose PEs could not take a packet.
    from rsaccel.cli import _reduced, run_layer
    from rsaccel.sw.layers import layer

    lay = _reduced(layer("alexnet.conv5"), channels)
    result = run_layer(preset(name), lay, backend="verilator", seed=1)
    assert result["mismatches"] == 0 and result["outside_bound"] == 0
    assert result["stats"].cycles > 0 and result["stats"].counters["MAC_BUSY"] == lay.macs


@pytest.mark.parametrize("diagonal", [True, False], ids=["diagonal", "per-row"])
def test_ifmap_multicast_on_the_rtl(monkeypatch, diagonal):
    # The same layer with ifmap rows multicast along diagonals and sent per filter row:
    # both exact on the RTL, with several passes per run (the next pass's rows sent while
    # the chains finish this one).
    from rsaccel.sw import driver, mapper

    p = {"N": 2, "C": 4, "M": 4, "H": 9, "W": 9, "R": 3, "S": 3, "stride": 1, "padding": 1,
         "groups": 1, "bias": True, "relu": False, "fp16": True}
    layer = Conv2d("conv2d", 2, 4, 4, 9, 9, 3, 3, padding=1)
    m = mapper.make_mapping(layer, preset("small"), p=2, q=2, diagonal=diagonal)
    assert m.diagonal == diagonal and sum(1 for _ in m.passes()) > 2 * len(m.steps)
    monkeypatch.setattr(driver, "map_layer", lambda *args, **kwargs: m)
    x, w, b = tensors(np.random.default_rng(7), p)
    check(Accelerator("small", "verilator"), p, x, w, b)
