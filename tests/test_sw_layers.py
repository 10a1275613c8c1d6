"""Tests of sw/layers.py: layer shapes and checks, and the named network tables."""

import dataclasses
import itertools

import pytest

from rsaccel.sw.layers import NETWORKS, Conv2d, layer, linear, network


def test_alexnet_macs_match_eyeriss():
    """DESIGN.md's table: 0.42 / 0.90 / 0.60 / 0.45 / 0.30 GMAC at batch 4."""
    convs = [lay for lay in network("alexnet", batch=4) if ".conv" in lay.name]
    assert [round(lay.macs / 1e9, 2) for lay in convs] == [0.42, 0.90, 0.60, 0.45, 0.30]
    assert [(lay.E, lay.F) for lay in convs] == [(55, 55), (27, 27), (13, 13), (13, 13),
                                                 (13, 13)]
    assert [lay.groups for lay in convs] == [1, 2, 1, 2, 2]
    conv2 = layer("alexnet.conv2", batch=4)
    assert (conv2.Cg, conv2.Mg, conv2.weight_shape) == (48, 128, (256, 48, 5, 5))


def test_networks_chain():
    """Each layer takes what the one before gives (after pooling), and the tables are complete."""
    for name in NETWORKS:
        layers = network(name, batch=2)
        for a, b in itertools.pairwise(layers):
            assert b.C == (a.M * 6 * 6 if (name, b.name) == ("alexnet", "alexnet.fc6")
                           else a.M * 7 * 7 if b.name == "vgg16.fc6" else a.M)
        assert all(lay.N == 2 for lay in layers)
    vgg = network("vgg16")
    assert sum(".conv" in lay.name for lay in vgg) == 13
    assert sum(".fc" in lay.name for lay in vgg) == 3
    assert [lay.H for lay in vgg if ".conv" in lay.name] == \
        [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3
    assert layer("vgg16.conv4_2").C == 512 and layer("vgg16.fc8").relu is False


def test_lookup():
    lay = layer("alexnet.conv3", batch=4)
    assert (lay.N, lay.C, lay.M, lay.R, lay.padding) == (4, 256, 384, 3, 1)
    assert layer("alexnet.conv3").N == 1
    with pytest.raises(ValueError, match=r"unknown layer 'alexnet\.conv9'; known layers: "
                                         r"alexnet\.conv1, .*vgg16\.fc8"):
        layer("alexnet.conv9")
    with pytest.raises(ValueError, match="unknown network 'resnet'"):
        network("resnet")


def test_linear_is_a_1x1_convolution():
    fc = linear("fc", 3, 100, 10, relu=False)
    assert (fc.N, fc.C, fc.M, fc.H, fc.W, fc.R, fc.S, fc.E, fc.F) == (3, 100, 10, 1, 1, 1, 1, 1, 1)
    assert fc.macs == 3 * 100 * 10 and fc.bias and not fc.relu


def test_derived_sizes():
    lay = Conv2d("x", 2, 6, 4, 11, 9, 3, 5, stride=2, padding=1, groups=2)
    assert (lay.E, lay.F, lay.U) == (6, 4, 2)     # (11 + 2 - 3) // 2 + 1, (9 + 2 - 5) // 2 + 1
    assert lay.terms == 3 * 3 * 5
    assert lay.macs == 2 * 4 * 6 * 4 * lay.terms
    assert lay.output_shape == (2, 4, 6, 4)
    g = lay.group(1)
    assert (g.C, g.M, g.groups, g.name) == (3, 2, 1, "x.g1")
    with pytest.raises(ValueError, match="group must be 0 to 1, not 2"):
        lay.group(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lay.N = 3


@pytest.mark.parametrize("changes, message", [
    ({"C": 5, "groups": 2}, "C = 5 input channels are not divisible by groups = 2"),
    ({"M": 3, "groups": 2}, "M = 3 output channels are not divisible by groups = 2"),
    ({"R": 9}, r"filter height R = 9 is larger than the padded input height H \+ 2 \* pad"),
    ({"S": 12}, "filter width S = 12 is larger than the padded input width"),
    ({"N": 0}, "N must be a positive integer, not 0"),
    ({"stride": 1.5}, "stride must be a positive integer"),
    ({"padding": -1}, "padding must be a non-negative integer, not -1"),
    ({"groups": True}, "groups must be a positive integer, not True"),
    ({"relu": 1}, "relu must be a bool, not 1"),
    ({"name": ""}, "name must be a non-empty string"),
])
def test_rejects_bad_layers(changes, message):
    base = {"name": "bad", "N": 1, "C": 4, "M": 4, "H": 6, "W": 6, "R": 3, "S": 3,
            "padding": 1}
    with pytest.raises((ValueError, TypeError), match=message):
        Conv2d(**{**base, **changes})
