"""Convolution and fully connected layers as the mapper and the models see them, and named networks.

A :class:`Conv2d` is one layer for a batch: ``N`` images of ``C x H x W`` (NCHW) convolved with
``M`` filters of ``C / groups x R x S`` (MCRS) at stride ``stride`` with ``padding`` zeros on
every side, giving ``N x M x E x F``. A fully connected layer is a 1x1 convolution on a 1x1
input (:func:`linear`). :func:`layer` looks up the layers of :data:`NETWORKS` by name
(``"alexnet.conv3"``, ``"vgg16.conv4_2"``) for a chosen batch.
"""

import dataclasses
from dataclasses import dataclass

__all__ = ["NETWORKS", "Conv2d", "layer", "linear", "network"]


@dataclass(frozen=True)
class Conv2d:
    """Describe one convolution layer: shapes, stride, padding, groups and its output stage.

    Fields: ``name``; batch ``N``; input channels ``C``; output channels ``M``; input height
    ``H`` and width ``W``; filter height ``R`` and width ``S``; ``stride`` (U, both directions);
    ``padding`` (zeros on each side); ``groups`` (``C`` and ``M`` split into that many independent
    convolutions); ``bias`` (an FP32 bias per output channel, the accumulators' initial value);
    ``relu`` (ReLU in the output stage).
    """

    name: str
    N: int
    C: int
    M: int
    H: int
    W: int
    R: int
    S: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = True
    relu: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, not {self.name!r}")
        for name in ("N", "C", "M", "H", "W", "R", "S", "stride", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{self.name}: {name} must be a positive integer, not {value!r}")
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) \
                or self.padding < 0:
            raise ValueError(f"{self.name}: padding must be a non-negative integer, "
                             f"not {self.padding!r}")
        for name in ("bias", "relu"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{self.name}: {name} must be a bool, "
                                 f"not {getattr(self, name)!r}")
        if self.C % self.groups:
            raise ValueError(f"{self.name}: C = {self.C} input channels are not divisible by "
                             f"groups = {self.groups}")
        if self.M % self.groups:
            raise ValueError(f"{self.name}: M = {self.M} output channels are not divisible by "
                             f"groups = {self.groups}")
        if self.R > self.H + 2 * self.padding:
            raise ValueError(f"{self.name}: filter height R = {self.R} is larger than the padded "
                             f"input height H + 2 * padding = {self.H + 2 * self.padding}")
        if self.S > self.W + 2 * self.padding:
            raise ValueError(f"{self.name}: filter width S = {self.S} is larger than the padded "
                             f"input width W + 2 * padding = {self.W + 2 * self.padding}")

    # Derived sizes
    @property
    def U(self):
        """The stride, as DESIGN.md names it."""
        return self.stride

    @property
    def E(self):
        """Output height."""
        return (self.H + 2 * self.padding - self.R) // self.stride + 1

    @property
    def F(self):
        """Output width."""
        return (self.W + 2 * self.padding - self.S) // self.stride + 1

    @property
    def Cg(self):
        """Input channels per group (the channels one filter sees)."""
        return self.C // self.groups

    @property
    def Mg(self):
        """Output channels (filters) per group."""
        return self.M // self.groups

    @property
    def macs(self):
        """Multiply-accumulates of the layer, padding positions included (as Eyeriss counts)."""
        return self.N * self.M * self.E * self.F * self.Cg * self.R * self.S

    @property
    def terms(self):
        """Products added into each output: ``Cg * R * S``."""
        return self.Cg * self.R * self.S

    @property
    def input_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def weight_shape(self):
        return (self.M, self.Cg, self.R, self.S)

    @property
    def output_shape(self):
        return (self.N, self.M, self.E, self.F)

    def replace(self, **changes):
        """Return a copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def group(self, g):
        """Return group ``g`` as a layer of its own (``groups = 1``)."""
        if not isinstance(g, int) or not 0 <= g < self.groups:
            raise ValueError(f"{self.name}: group must be 0 to {self.groups - 1}, not {g!r}")
        return self.replace(name=f"{self.name}.g{g}", C=self.Cg, M=self.Mg, groups=1)


def linear(name, N, in_features, out_features, *, bias=True, relu=True):
    """Return a fully connected layer as a 1x1 convolution on a 1x1 input."""
    return Conv2d(name, N, in_features, out_features, 1, 1, 1, 1, bias=bias, relu=relu)


def _alexnet(N):
    # The original grouped AlexNet, as in the Eyeriss papers (227 x 227 input).
    return [
        Conv2d("alexnet.conv1", N, 3, 96, 227, 227, 11, 11, stride=4),
        Conv2d("alexnet.conv2", N, 96, 256, 27, 27, 5, 5, padding=2, groups=2),
        Conv2d("alexnet.conv3", N, 256, 384, 13, 13, 3, 3, padding=1),
        Conv2d("alexnet.conv4", N, 384, 384, 13, 13, 3, 3, padding=1, groups=2),
        Conv2d("alexnet.conv5", N, 384, 256, 13, 13, 3, 3, padding=1, groups=2),
        linear("alexnet.fc6", N, 256 * 6 * 6, 4096),
        linear("alexnet.fc7", N, 4096, 4096),
        linear("alexnet.fc8", N, 4096, 1000, relu=False),
    ]


def _vgg16(N):
    layers = []
    size, channels = 224, 3
    for block, (width, count) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        for k in range(count):
            layers.append(Conv2d(f"vgg16.conv{block + 1}_{k + 1}", N, channels, width, size,
                                 size, 3, 3, padding=1))
            channels = width
        size //= 2
    layers += [
        linear("vgg16.fc6", N, 512 * 7 * 7, 4096),
        linear("vgg16.fc7", N, 4096, 4096),
        linear("vgg16.fc8", N, 4096, 1000, relu=False),
    ]
    return layers


#: Named networks: name -> function of the batch returning the list of layers.
NETWORKS = {"alexnet": _alexnet, "vgg16": _vgg16}


def network(name, batch=1):
    """Return the layers of network ``name`` (a key of :data:`NETWORKS`) for ``batch`` images."""
    try:
        build = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; networks: {', '.join(NETWORKS)}") from None
    return build(batch)


def _known():
    return [lay.name for net in NETWORKS for lay in NETWORKS[net](1)]


def layer(name, batch=1):
    """Return the layer called ``name`` (``"network.layer"``, e.g. ``"alexnet.conv3"``) for
    ``batch`` images. Raises ValueError listing the known names when there is none."""
    net = name.split(".", 1)[0] if isinstance(name, str) else None
    if net in NETWORKS:
        for lay in NETWORKS[net](batch):
            if lay.name == name:
                return lay
    raise ValueError(f"unknown layer {name!r}; known layers: {', '.join(_known())}")
