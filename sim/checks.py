"""Check the generated MAC and converter against the references, vector by vector.

Shared by the test suite (small counts, must find no mismatch) and ``rsaccel bench`` (a
million vectors and more, printing the counts).
"""

import numpy as np

from ..sw import numerics
from . import pipe, vectors

__all__ = ["check_mac", "check_outcvt"]


def _report(name, got, want, sf_want, cycles, fmt):
    bad = np.flatnonzero(got != want)
    return {
        "block": name,
        "checked": len(got),
        "mismatches": int(bad.size),
        "softfloat_checked": len(sf_want),
        "softfloat_mismatches": int((got[:len(sf_want)] != sf_want).sum()),
        "first_mismatches": [fmt(k) for k in bad[:5]],
        "cycles": cycles,
    }


def _sample(rng, arrays, directed):
    """Return all of ``arrays`` (``directed`` True), none (False) or ``directed`` of them."""
    if directed is True:
        return arrays
    n = len(arrays[0])
    pick = rng.choice(n, min(int(directed), n), replace=False)
    return tuple(x[pick] for x in arrays)


def check_mac(config, count, *, simulator="verilator", seed=0, directed=True, softfloat=None,
              gap=0.0, stall=0.0):
    """Run ``count`` random vectors, plus directed special-case and rounding-tie vectors,
    through the MAC RTL and compare with numpy float32 and SoftFloat.

    ``directed`` is True for all directed vectors, or how many of them to sample. SoftFloat,
    being slow, checks the first ``softfloat`` vectors (all when ``None``), directed ones first.
    """
    rng = np.random.default_rng(seed)
    parts = [vectors.mac_random(rng, count)]
    if directed:
        parts += [_sample(rng, vectors.mac_directed(), directed),
                  vectors.mac_ties(rng, max(100, count // 10))]
    a, b, c = (np.concatenate(x) for x in zip(*parts))
    # Directed vectors first, so that a SoftFloat subset still covers every special case.
    a, b, c = a[::-1].copy(), b[::-1].copy(), c[::-1].copy()
    tags = rng.integers(0, 1 << config.mac_tag_bits, len(a))
    words, cycles = pipe.stream_through("mac", config, pipe.pack_mac_ops(a, b, c, tags),
                                        simulator=simulator, gap=gap, stall=stall, seed=seed,
                                        name="mac")
    got, got_tags = pipe.unpack_mac_results(words)
    if len(got) != len(a) or (got_tags != tags).any():
        raise AssertionError("MAC results lost, duplicated or reordered (tags do not match)")
    n_sf = len(a) if softfloat is None else min(softfloat, len(a))
    sf_want, _ = numerics.softfloat_mac(a[:n_sf], b[:n_sf], c[:n_sf])
    want = numerics.mac(a, b, c)
    return _report("mac", got, want, sf_want, cycles, lambda k: (
        f"a={a[k]:#06x} b={b[k]:#06x} c={c[k]:#010x}: got {got[k]:#010x}, "
        f"want {want[k]:#010x}"))


def check_outcvt(config, count, *, simulator="verilator", seed=0, directed=True, relu=False,
                 softfloat=None, gap=0.0, stall=0.0):
    """Run ``count`` random binary32 values, plus directed ones (every binary16 value, every tie
    between neighbours and one binary32 ulp either side; ``directed`` as for :func:`check_mac`)
    through the converter RTL; compare with numpy and SoftFloat (SoftFloat only without ReLU,
    which it does not model)."""
    rng = np.random.default_rng(seed)
    parts = [vectors.cvt_random(rng, count)]
    if directed:
        parts += [_sample(rng, (vectors.cvt_directed(),), directed)[0]]
    x = np.concatenate(parts)[::-1].copy()
    words, cycles = pipe.stream_through("outcvt", config, [int(v) for v in x],
                                        simulator=simulator, settings={"relu": int(relu)},
                                        gap=gap, stall=stall, seed=seed, name="outcvt")
    got = np.array(words, dtype=np.uint16)
    if len(got) != len(x):
        raise AssertionError(f"{len(got)} converter results for {len(x)} inputs")
    want = numerics.to_fp16(x, relu=relu)
    n_sf = 0 if relu else (len(x) if softfloat is None else min(softfloat, len(x)))
    sf_want = numerics.softfloat_to_fp16(x[:n_sf])
    return _report("outcvt" + ("+relu" if relu else ""), got, want, sf_want, cycles,
                   lambda k: f"x={x[k]:#010x}: got {got[k]:#06x}, want {want[k]:#06x}")
