"""AlexNet CONV1-5, channels reduced, through the eyeriss preset's RTL (168 PEs) in the HDL
harness: bit for bit against the layer model, within the float64 bound, every MAC counted.

One test for the five layers, so that a single worker builds the eyeriss model (minutes) and
runs them; this file sorts early so that the build starts first. The full layers are in
``make bench``.
"""

from rsaccel import preset
from rsaccel.cli import _reduced, run_layer
from rsaccel.sw.layers import layer

CHANNELS = 8


def test_alexnet_reduced_on_the_eyeriss_rtl():
    eyeriss = preset("eyeriss")
    failures = []
    for k in range(1, 6):
        lay = _reduced(layer(f"alexnet.conv{k}"), CHANNELS)
        result = run_layer(eyeriss, lay, backend="verilator", seed=k)
        s = result["stats"]
        if result["mismatches"] or result["outside_bound"] or s.counters["MAC_BUSY"] != lay.macs:
            failures.append(f"{lay.name}: {result['mismatches']} mismatches, "
                            f"{result['outside_bound']} outside the bound, MAC_BUSY "
                            f"{s.counters['MAC_BUSY']} for {lay.macs} MACs")
    assert not failures, failures
