"""Tests of sw/program.py and sw/program_model.py: compiled layers run bit-exact in the model."""

import dataclasses
import itertools

import numpy as np
import pytest

from rsaccel.config import preset
from rsaccel.hw.commands import (
    COMMAND,
    COMMAND_BYTES,
    DESCRIPTOR,
    DESCRIPTOR_MAGIC,
    Engine,
    ErrorCode,
    Op,
    decode_command,
    encode_command,
)
from rsaccel.sw.layer_model import run_layer
from rsaccel.sw.layers import Conv2d
from rsaccel.sw.mapper import SHARE_BUFFERS, make_mapping, map_layer, predict
from rsaccel.sw.program import ENGINES, Program, chain, compile_layer
from rsaccel.sw.program_model import ModelError, _rows, run, run_program

TINY, SMALL = preset("tiny"), preset("small")
BASE = 0x4000


def random_data(lay, rng, special=False):
    x = rng.normal(0, 1, lay.input_shape).astype(np.float16)
    w = rng.normal(0, 1, lay.weight_shape).astype(np.float16)
    x[rng.random(x.shape) < 0.05] = 0
    w[rng.random(w.shape) < 0.03] = np.float16(2.0 ** -20)       # subnormal
    if special:
        x.flat[rng.integers(x.size)] = np.inf
        w.flat[rng.integers(w.size)] = np.nan
    bias = rng.normal(0, 1, (lay.M,)).astype(np.float32) if lay.bias else None
    return x, w, bias


def same(a, b):
    """Bit for bit, NaN-aware (NaNs where the reference has them, the rest identical)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    nan = np.isnan(b)
    assert np.array_equal(np.isnan(a), nan)
    bits = np.uint16 if a.dtype == np.float16 else np.uint32
    assert np.array_equal(a.view(bits)[~nan], b.view(bits)[~nan])


def check(lay, config, mapping=None, *, fp16=True, seeds=(None, 1), special=False, data_seed=0):
    """Compile and run ``lay`` in the model for each scheduling seed; compare with run_layer."""
    m = map_layer(lay, config) if mapping is None else mapping
    prog = compile_layer(config, m, relu=lay.relu, out_fp16=fp16, has_bias=lay.bias)
    x, w, bias = random_data(lay, np.random.default_rng(data_seed), special)
    ref = run_layer(lay, m, x, w, bias, out="fp16" if fp16 else "fp32")
    for seed in seeds:
        out, result = run_program(prog, x, w, bias, base=BASE, seed=seed)
        same(out, ref)
        assert result.counts["macs"] == lay.macs
        assert result.completed == [{e: prog.stats["rows"][e.name] for e in ENGINES}]
    return prog, result


def random_layer(rng, k):
    R, S = (int(v) for v in rng.integers(1, 8, 2))
    U, pad = int(rng.integers(1, 5)), int(rng.integers(0, 3))
    G = int(rng.choice([1, 1, 2, 3]))
    H = int(rng.integers(max(R - 2 * pad, 1), 13))
    W = int(rng.integers(max(S - 2 * pad, 1), 13))
    return Conv2d(f"rand{k}", int(rng.integers(1, 4)), G * int(rng.integers(1, 5)),
                  G * int(rng.integers(1, 6)), H, W, R, S, stride=U, padding=pad, groups=G,
                  bias=bool(rng.integers(0, 2)), relu=bool(rng.integers(0, 2)))


@pytest.mark.parametrize("config", [TINY, SMALL], ids=["tiny", "small"])
@pytest.mark.parametrize("seed", range(6))
def test_random_layers(config, seed):
    """Random layers, the mapper's choice, both output formats, two schedules each."""
    rng = np.random.default_rng(1000 * seed + config.rows)
    for k in range(5):
        lay = random_layer(rng, k)
        check(lay, config, fp16=bool(k % 2), seeds=(None, seed + k), data_seed=k)


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 2), (2, 1), (3, 0), (4, 2)])
def test_strides_and_padding(stride, padding):
    lay = Conv2d("s", 2, 3, 4, 11, 9, 3, 4, stride=stride, padding=padding)
    check(lay, TINY)


def test_groups_bias_relu_fp32():
    lay = Conv2d("g", 2, 6, 9, 7, 6, 3, 3, padding=1, groups=3, bias=True, relu=True)
    check(lay, SMALL, fp16=False, seeds=(None, 3, 4))


def test_special_values():
    """Inf and NaN inputs give NaN where the reference does (canonical NaN bits)."""
    lay = Conv2d("nan", 1, 2, 3, 6, 6, 3, 3, padding=1, relu=False)
    check(lay, TINY, special=True)
    check(lay, TINY, special=True, fp16=False)


def test_row_and_column_chunks():
    """R and S larger than the array and scratchpads allow in one pass: several reduction
    steps whose psums go back through the GLB."""
    lay = Conv2d("big", 1, 2, 2, 9, 10, 7, 7, padding=1)
    m = map_layer(lay, TINY)
    assert len(m.row_chunks) > 1
    check(lay, TINY, m)
    m = make_mapping(lay, TINY, p=2, q=2)                   # q * S > the ifmap scratchpad
    assert len(m.row_chunks) > 1 and len(m.col_chunks) > 1
    check(lay, TINY, m, seeds=(None, 9))


def test_steps_with_different_layouts():
    """Row chunks of different heights and r: later steps write their psums row by row where
    the first step put them (single-pass blocks)."""
    lay = Conv2d("mix", 1, 2, 2, 9, 6, 4, 2, bias=True)
    m = make_mapping(lay, TINY, p=1, q=1, rows=(3, 1), r=(1, 3))
    prog, _ = check(lay, TINY, m, seeds=(None, 5, 6))
    assert prog.stats["blocks"] == prog.stats["passes"]


def test_odd_psum_rows_across_steps():
    """F * p odd with several steps: single-pass blocks keep psum rows word aligned."""
    lay = Conv2d("odd", 1, 1, 3, 37, 5, 2, 1, bias=False, relu=False)
    m = make_mapping(lay, TINY, p=3, q=1, rows=1)
    prog, _ = check(lay, TINY, m)
    assert prog.stats["blocks"] == prog.stats["passes"] > 2


def test_short_passes_reprogram_the_noc():
    """A pass with fewer units leaves PEs idle: the NoC is reprogrammed for it."""
    lay = Conv2d("short", 2, 2, 3, 7, 7, 3, 3, padding=1)
    prog, _ = check(lay, TINY, seeds=(None, 2, 7))
    assert prog.stats["noc_reprograms"] > 1


def test_eyeriss_grouped_chains():
    """The full-size array: chained channel sets (r > 1), groups, 5 x 5 filters."""
    lay = Conv2d("eye", 2, 16, 16, 13, 13, 5, 5, padding=2, groups=2)
    m = map_layer(lay, preset("eyeriss"))
    assert m.r > 1
    check(lay, preset("eyeriss"), m, seeds=(4,))


def test_filters_streamed_through_a_ring():
    """A run's filters larger than the GLB has room for: rows stream through a ring, each
    loaded once the row before it in the same words has been sent."""
    config = TINY.replace(glb_banks=2, glb_bank_depth=24, glb_filter_depth=16)
    lay = Conv2d("ring", 1, 3, 8, 7, 12, 4, 6, bias=False)
    prog, _ = check(lay, config, seeds=(None, 1, 2, 3))
    assert prog.stats["buffers"]["filter"] == 0 and prog.glb["filter_ring"][1] < 20


@pytest.mark.parametrize("pack", ["image", "flat"])
def test_batch_tiles_and_strips(pack):
    """Batch > 1, several tiles and output strips, filter blocks of unequal size."""
    lay = Conv2d("tiles", 3, 2, 5, 6, 12, 3, 3, padding=1)
    m = make_mapping(lay, TINY, p=2, q=2, t=1, tile_units=4, pack=pack, out_strips=2)
    assert len(m.tiles) > 1 and len(m.strips) == 2 and len(m.filter_blocks()) > 1
    prog, _ = check(lay, TINY, m, seeds=(None, 8))
    assert prog.stats["jobs"] == len(m.tiles) * 2 * len(m.filter_blocks())


def test_chained_layers():
    """Two programs chained by their descriptors run one after the other."""
    l1 = Conv2d("c1", 1, 2, 3, 6, 6, 3, 3, padding=1)
    l2 = Conv2d("c2", 1, 3, 2, 5, 5, 2, 2, stride=2, bias=False)
    progs = [compile_layer(TINY, map_layer(lay, TINY), relu=lay.relu, has_bias=lay.bias)
             for lay in (l1, l2)]
    bases = chain(progs, BASE)
    rng = np.random.default_rng(5)
    data = [random_data(lay, rng) for lay in (l1, l2)]
    mem = bytearray(bases[-1] + progs[-1].size - BASE)
    for k, (prog, (x, w, b)) in enumerate(zip(progs, data)):
        nxt = bases[k + 1] if k + 1 < len(progs) else 0
        img = prog.image(x, w, b, base=bases[k], next=nxt)
        mem[bases[k] - BASE:bases[k] - BASE + len(img)] = img
    result = run(TINY, bytes(mem), BASE, origin=BASE, seed=3)
    assert len(result.completed) == 2
    for prog, lay, (x, w, b) in zip(progs, (l1, l2), data):
        ref = run_layer(lay, prog.mapping, x, w, b, out="fp16")
        same(prog.output(result.memory, bases[progs.index(prog)], origin=BASE), ref)


def test_program_api():
    lay = Conv2d("api", 2, 2, 4, 6, 7, 3, 3, padding=1)
    m = map_layer(lay, TINY)
    prog = compile_layer(TINY, m, relu=True, has_bias=True)
    assert isinstance(prog, Program)
    glb = prog.glb
    assert glb["used"] <= glb["capacity"] == 4 * 128 + 128
    regions = sorted(v for k, v in glb.items() if k not in ("used", "capacity") and v[1])
    for (a, n), (b, _) in itertools.pairwise(regions):
        assert a + n <= b                                  # no overlap
    areas = sorted(prog.layout.values())
    for (a, n), (b, _) in itertools.pairwise(areas):
        assert a + n <= b and b % 16 == 0
    assert areas[-1][0] + areas[-1][1] <= prog.size
    order = prog.sequential_order()
    assert len(order) == sum(prog.stats["rows"].values())
    text = prog.listing(BASE)
    assert "PE_CFG" in text and "RECV" in text and "wait LOAD>=" in text
    desc = int.from_bytes(prog.descriptor(BASE, next=0x100), "little")
    view = DESCRIPTOR.from_bits(desc)
    assert view.magic == DESCRIPTOR_MAGIC and view.next == 0x100
    for k, e in enumerate(ENGINES):
        assert view.lists[k].addr == BASE + prog.layout[f"list.{e.name}"][0]
        assert view.lists[k].count == len(prog.commands()[e])
    x, w, b = random_data(lay, np.random.default_rng(0))
    img = prog.image(x, w, b, base=BASE)
    assert len(img) == prog.size and img[:64] == prog.descriptor(BASE)
    with pytest.raises(ValueError, match="bias must be given"):
        prog.image(x, w, base=BASE)
    with pytest.raises(ValueError, match="shape"):
        prog.image(x[:1], w, b, base=BASE)
    with pytest.raises(TypeError, match="float16"):
        prog.image(x.astype(np.float32), w, b, base=BASE)
    with pytest.raises(ValueError, match="base"):
        prog.image(x, w, b, base=8)
    with pytest.raises(ValueError, match="does not hold"):
        prog.output(img[:100], BASE, origin=BASE)


def test_check_rules():
    """Every wait is for a count its engine reaches; one beyond the list is reported."""
    lay = Conv2d("rules", 1, 2, 3, 9, 6, 3, 3)
    prog = compile_layer(TINY, map_layer(lay, TINY), has_bias=True)
    prog.check_rules()
    send = next(c for c in prog._cmds[Engine.IFMAP] if c.wait and c.wait[0] is Engine.LOAD)
    send.wait = (Engine.LOAD, len(prog._cmds[Engine.LOAD]) + 1)   # white box: break it
    with pytest.raises(ValueError, match=r"IFMAP\[\d+\] waits for LOAD >= \d+ of \d+"):
        prog.check_rules()


def test_encoding_matches_layouts():
    word = encode_command(Op.SEND, wait_engine=Engine.LOAD, wait_count=5, fence=True, count=7,
                          glb_addr=3, flags=0x0102)
    ref = COMMAND.const({"op": Op.SEND, "wait_engine": Engine.LOAD, "fence": 1, "wait_count": 5,
                         "args": {"move": {"count": 7, "glb_addr": 3, "flags": 0x0102}}})
    assert word == ref.as_value().value
    word = encode_command(Op.PE_CFG, row0=1, row1=2, col0=0, col1=3, count=4, S=3, U=2, p=5,
                          q=2, F=9, load_filter=1, use_psum_in=1)
    ref = COMMAND.const({"op": Op.PE_CFG, "wait_engine": Engine.NONE, "args": {"pe": {
        "row0": 1, "row1": 2, "col0": 0, "col1": 3, "count": 4, "S": 3, "U": 2, "p": 5, "q": 2,
        "F": 9, "load_filter": 1, "use_psum_in": 1}}})
    assert word == ref.as_value().value
    cmd = decode_command(word)
    assert cmd["op"] is Op.PE_CFG and cmd["args"]["F"] == 9 and cmd["wait_engine"] is Engine.NONE
    word = encode_command(Op.NOC, op=1, net=2, row=3, col=4, value=5)
    assert decode_command(word)["args"] == {"op": 1, "net": 2, "row": 3, "col": 4, "value": 5}
    with pytest.raises(ValueError, match="does not fit"):
        encode_command(Op.LOAD, count=1 << 24)
    with pytest.raises(ValueError, match="no operand"):
        encode_command(Op.LOAD, row0=1)


def test_compile_errors():
    lay = Conv2d("e", 1, 2, 2, 6, 6, 3, 3)
    m = map_layer(lay, TINY)
    with pytest.raises(TypeError, match="ArrayConfig"):
        compile_layer("tiny", m)
    with pytest.raises(TypeError, match="Mapping"):
        compile_layer(TINY, lay)
    with pytest.raises(ValueError, match="config 'tiny', not 'small'"):
        compile_layer(SMALL, m)
    with pytest.raises(TypeError, match="relu must be a bool"):
        compile_layer(TINY, m, relu=1)


# -- The model catches broken programs ----------------------------------------------------------

def _image(prog, lay, seed=0):
    x, w, b = random_data(lay, np.random.default_rng(seed))
    return prog.image(x, w, b, base=BASE), (x, w, b)


def _patch(prog, image, engine, index, change):
    """Return ``image`` with command ``index`` of ``engine``'s list changed by ``change``."""
    off = prog.layout[f"list.{engine.name}"][0] + index * COMMAND_BYTES
    img = bytearray(image)
    cmd = decode_command(int.from_bytes(img[off:off + COMMAND_BYTES], "little"))
    change(cmd)
    img[off:off + COMMAND_BYTES] = encode_command(
        cmd["op"], wait_engine=cmd["wait_engine"], wait_count=cmd["wait_count"],
        fence=cmd["fence"], **cmd["args"]).to_bytes(COMMAND_BYTES, "little")
    return bytes(img)


def _first(prog, engine, pred):
    for k, word in enumerate(prog.commands(BASE)[engine]):
        if pred(decode_command(word)):
            return k
    raise AssertionError("no such command")


@pytest.fixture(scope="module")
def compiled():
    lay = Conv2d("m", 2, 2, 3, 12, 7, 3, 3, padding=1)     # more passes than ifmap buffers
    prog = compile_layer(TINY, map_layer(lay, TINY), relu=True, has_bias=True)
    image, data = _image(prog, lay)
    return lay, prog, image, data


def _error(image, code, seed=None):
    with pytest.raises(ModelError) as info:
        run(TINY, image, BASE, origin=BASE, seed=seed)
    assert info.value.code is code, str(info.value)
    return str(info.value)


def test_model_segment_overflow(compiled):
    _, prog, image, _ = compiled

    def shrink(cmd):
        cmd["args"]["count"] -= 2
    bad = _patch(prog, image, Engine.RECV, 0, shrink)
    assert "psums into RECV[0]" in _error(bad, ErrorCode.GON_OVERFLOW)


def test_model_unmatched_tag(compiled):
    _, prog, image, _ = compiled
    k = _first(prog, Engine.IFMAP, lambda c: c["op"] is Op.SEND)

    def retag(cmd):
        cmd["args"]["flags"] = 0x3E3E
    assert "matches no PE" in _error(_patch(prog, image, Engine.IFMAP, k, retag),
                                     ErrorCode.NOC_UNMATCHED)


def test_model_memory_and_glb_ranges(compiled):
    _, prog, image, _ = compiled

    def far(cmd):
        cmd["args"]["addr"] = 0x10000000
    _error(_patch(prog, image, Engine.LOAD, 0, far), ErrorCode.DMA_WINDOW)

    def odd(cmd):
        cmd["args"]["addr"] += 4
    _error(_patch(prog, image, Engine.LOAD, 0, odd), ErrorCode.DMA_ALIGN)

    def high(cmd):
        cmd["args"]["glb_addr"] = 0xFFF0
    k = _first(prog, Engine.IFMAP, lambda c: c["op"] is Op.SEND)
    _error(_patch(prog, image, Engine.IFMAP, k, high), ErrorCode.GLB_RANGE)


def test_model_wait_never_met(compiled):
    _, prog, image, _ = compiled

    def forever(cmd):
        cmd["wait_engine"], cmd["wait_count"] = Engine.STORE, 1000
    k = _first(prog, Engine.IFMAP, lambda c: c["op"] is Op.SEND)
    message = _error(_patch(prog, image, Engine.IFMAP, k, forever), ErrorCode.WATCHDOG)
    assert f"IFMAP[{k}] SEND waits STORE >= 1000" in message


def test_model_primitive_without_inputs(compiled):
    """A PE given one primitive more than its data: the layer never ends."""
    _, prog, image, _ = compiled
    k = _first(prog, Engine.CONFIG, lambda c: c["op"] is Op.PE_CFG)

    def more(cmd):
        cmd["args"]["count"] += 1
    assert "waits for" in _error(_patch(prog, image, Engine.CONFIG, k, more), ErrorCode.WATCHDOG)


def test_passes_overlap_without_fences():
    """The next pass's ifmap and psum rows are not fenced: each waits in the sender for the
    row with its tags only, and the program still gives the exact result in every schedule
    (chains of 3 PEs sharing ifmap rows, several passes)."""
    lay = Conv2d("f", 1, 2, 2, 14, 8, 3, 3)
    m = make_mapping(lay, TINY, p=2, q=1)
    prog, _ = check(lay, TINY, m, seeds=(None, 1, 2, 3))
    for e in (Engine.IFMAP, Engine.PSUM):
        sends = [c for c in prog._cmds[e] if c.op is Op.SEND]
        assert len(sends) > 3 and not any(c.fence for c in sends)
        tags = [c.args["flags"] for c in sends]
        assert len(set(tags)) < len(tags)          # rows of later passes reuse the tags


def test_model_missing_waits_show(compiled):
    """Without its wait a LOAD overwrites ifmaps still to be sent; without the CONFIG wait
    a sender uses the NoC before it is programmed. Some schedule shows each."""
    lay, prog, image, (x, w, b) = compiled
    ref = run_layer(lay, prog.mapping, x, w, b, out="fp16")
    k = _first(prog, Engine.LOAD, lambda c: c["wait_engine"] is Engine.IFMAP)
    j = _first(prog, Engine.FILTER, lambda c: c["wait_engine"] is Engine.CONFIG)

    def nowait(cmd):
        cmd["wait_engine"], cmd["wait_count"] = Engine.NONE, 0
    for bad in (_patch(prog, image, Engine.LOAD, k, nowait),
                _patch(prog, image, Engine.FILTER, j, nowait)):
        caught = 0
        for seed in range(24):
            try:
                result = run(TINY, bad, BASE, origin=BASE, seed=seed)
            except ModelError:
                caught += 1
                continue
            out = prog.output(result.memory, BASE, origin=BASE)
            caught += not np.array_equal(out.view(np.uint16), ref.view(np.uint16))
        assert caught


def test_filter_rows_go_by_chain_height():
    """The filter rows of one height of the chains (every filter sub-block, both bands) are
    sent together, interleaved; each height after a fence, bottom to top."""
    lay = Conv2d("bands", 1, 3, 16, 47, 47, 11, 11, stride=4)
    m = make_mapping(lay, SMALL, p=6, q=1, t=3, rows=3)
    prog, _ = check(lay, SMALL, m, seeds=(None,))
    cmds = prog._cmds[Engine.FILTER]
    height, sizes = None, []
    for k, c in enumerate(cmds):
        if c.op is not Op.SEND:
            continue
        _, cr, i = (int(v) for v in c.note.split("(")[-1].rstrip(")").split(", "))
        fenced = c.fence or (k and cmds[k - 1].op is Op.NOP and cmds[k - 1].fence)
        assert fenced == ((cr, i) != height or cmds[k - 1].op is Op.NOP)
        if (cr, i) != height:
            sizes.append(0)
        height = (cr, i)
        sizes[-1] += 1
    assert max(sizes) == 3


def test_rows_in_one_command():
    """Runs of SEND and RECV rows go to memory as one command each (hw.commands, "Rows"): the
    lists shrink, and written out row by row they are the compiler's commands, in order."""
    lay = Conv2d("rows", 2, 8, 8, 13, 13, 3, 3, padding=1)
    prog = compile_layer(SMALL, map_layer(lay, SMALL), relu=False, has_bias=False)
    words = prog.commands(BASE)
    assert prog.stats["commands"]["IFMAP"] * 3 <= prog.stats["rows"]["IFMAP"]
    assert prog.stats["commands"]["RECV"] < prog.stats["rows"]["RECV"]
    for e in ENGINES:
        expanded = [row for w in words[e] for row in _rows(decode_command(w))]
        single = [decode_command(c.word(BASE, prog._resolve)) for c in prog._cmds[e]]
        assert expanded == single, e.name


def test_outputs_stored_while_the_next_job_computes():
    """A job's first run writes over the outputs of the job before in its psum region block by
    block, each block after the STORE of the words it writes only, so that the stores overlap
    computing. Exact in every schedule; without that wait some schedule overwrites outputs
    before they are stored."""
    lay = Conv2d("s", 1, 4, 8, 8, 8, 3, 3, padding=1)
    prog, _ = check(lay, TINY, make_mapping(lay, TINY, p=2, q=1), seeds=(None, 1, 2, 3))
    assert prog.glb["psum0"][1] < 4 * 2 * 8 * 8    # 4 jobs (filter blocks) in 2 regions
    nops = [k for k, c in enumerate(prog._cmds[Engine.CONFIG])
            if c.op is Op.NOP and c.wait[0] is Engine.STORE]
    # A job stores its 2 passes' outputs one by one; each block of the job 2 later in the
    # region waits for one of them.
    assert len(prog._cmds[Engine.STORE]) == 8
    assert [prog._cmds[Engine.CONFIG][k].wait[1] for k in nops] == [1, 2, 3, 4]

    x, w, b = random_data(lay, np.random.default_rng(0))
    image = prog.image(x, w, b, base=BASE)
    ref = run_layer(lay, prog.mapping, x, w, b, out="fp16")

    def nowait(cmd):
        cmd["wait_engine"], cmd["wait_count"] = Engine.NONE, 0
    bad = image
    for k in nops:
        bad = _patch(prog, bad, Engine.CONFIG, k, nowait)
    wrong = 0
    for seed in range(64):
        out = prog.output(run(TINY, bad, BASE, origin=BASE, seed=seed).memory, BASE, origin=BASE)
        wrong += not np.array_equal(out.view(np.uint16), ref.view(np.uint16))
    assert wrong



def test_ifmap_rows_per_filter_row():
    """A mapping that is not ``diagonal`` sends each ifmap row to one filter row's PEs at a
    time (R rows per output row, not a diagonal's); the program is exact in every schedule."""
    lay = Conv2d("rows", 2, 4, 4, 9, 9, 3, 3, padding=1)
    sends = {}
    for diagonal in (True, False):
        m = make_mapping(lay, SMALL, p=2, q=2, diagonal=diagonal)
        prog, _ = check(lay, SMALL, m, seeds=(None, 1, 2, 3))
        sends[diagonal] = sum(c.op is Op.SEND for c in prog._cmds[Engine.IFMAP])
        if not diagonal:
            assert sends[False] == sum(len(ps.units) * len(ps.step.rows)
                                       * len(ps.step.channel_sets) for ps in m.passes())
    assert sends[True] < sends[False]


def _loaded(prog, what):
    """DRAM bytes and count of the LOADs whose note starts with ``what``."""
    loads = [c for c in prog._cmds[Engine.LOAD] if c.note.startswith(what)]
    return sum(c.args["count"] for c in loads) * prog.config.glb_word_bits // 8, len(loads)


@pytest.mark.parametrize("config", [TINY, SMALL], ids=["tiny", "small"])
def test_filters_resident_across_tiles(config):
    """With ``resident_filters`` a filter block's filters (every step's) are loaded once and
    stay in the GLB while the strips and tiles go through them; bias rows are loaded once per
    strip and filter block. Exact in every schedule, and the cost model counts the bytes the
    program loads."""
    lay = Conv2d("res", 3, 6, 5, 8, 12, 3, 3, padding=1, groups=1)
    kw = {"p": 2, "q": 2, "t": 1, "tile_units": 4, "out_strips": 2}
    progs = {}
    for resident in (False, True):
        m = make_mapping(lay, config, resident_filters=resident, **kw)
        assert len(m.tiles) > 1 and len(m.filter_blocks()) > 1 and len(m.steps) > 1
        progs[resident], _ = check(lay, config, m, seeds=(None, 1, 2, 5))
        pred = predict(m)
        assert pred["dram"]["filter"] == _loaded(progs[resident], "filters")[0]
        assert pred["dram"]["bias"] == _loaded(progs[resident], "bias")[0]
    fbs, steps = len(m.filter_blocks()), len(m.steps)
    assert _loaded(progs[True], "filters")[0] == progs[True].layout["filter"][1]
    assert _loaded(progs[True], "filters")[1] == fbs * steps
    assert _loaded(progs[False], "filters")[1] == fbs * steps * 2 * len(m.tiles)
    assert _loaded(progs[True], "bias")[1] == _loaded(progs[False], "bias")[1] == 2 * fbs


@pytest.mark.parametrize("config, kw, shared", [
    (TINY, {}, True), (SMALL, {}, True),
    # Two ifmap buffers: the next pass's rows could not be loaded ahead, so none are shared.
    (dataclasses.replace(TINY, glb_bank_depth=56), {"tile_units": 6}, False),
], ids=["tiny", "small", "tiny-two-buffers"])
def test_consecutive_passes_share_ifmap_rows(config, kw, shared):
    """With three ifmap buffers or more, a pass reads the ifmap rows it shares with the pass
    before it in the same run from that pass's buffer instead of loading them again (a buffer
    is reloaded only once both passes are done with it): exact in every schedule, fewer bytes
    than loading every pass's rows, and as many as the cost model counts, which knows how many
    buffers the compiler lays out."""
    lay = Conv2d("share", 2, 3, 4, 14, 10, 3, 3, padding=1)
    m = make_mapping(lay, config, p=2, q=2, t=2, **kw)
    prog, _ = check(lay, config, m, seeds=(None, 1, 2, 3, 4))
    assert (prog.stats["buffers"]["ifmap"] >= SHARE_BUFFERS) == shared
    wb = config.glb_word_bits // 8
    every = 0
    for ps in m.passes():
        W = (len(ps.out_cols) - 1) * lay.U + len(ps.step.cols)
        rows = {(n, y * lay.U + i) for n, y0, length in ps.runs for y in range(y0, y0 + length)
                for i in ps.step.rows if lay.padding <= y * lay.U + i < lay.padding + lay.H}
        every += len(rows) * sum(-(-W * len(c) * 2 // wb) * wb for c in ps.step.channel_sets)
    loaded = _loaded(prog, "ifmap")[0]
    assert loaded == predict(m)["dram"]["ifmap"]
    assert (loaded < every) if shared else (loaded == every)
    # A pass's rows go around those the buffer's last pass lent to the pass after it: its
    # loads wait for that last pass only (``n`` passes before), not for the one after it.
    n = prog.stats["buffers"]["ifmap"]
    waits = {c.wait[1][1] - (int(c.note.split()[-1]) - n) for c in prog._cmds[Engine.LOAD]
             if c.note.startswith("ifmap rows") and c.wait}
    assert waits == ({0} if len(list(m.passes())) > n else set())
