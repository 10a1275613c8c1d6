"""Run traffic through the generated NoC (top ``noc``, :class:`rsaccel.hw.noc.NocTop`) in cocotb,
model what it must deliver, and measure its sustained throughput.

:func:`run_noc` writes a scenario (configuration words, GIN packets, a behaviour for every PE)
to a file, runs :mod:`rsaccel.sim.bench_noc` on it and returns what every PE and the GON
received. :func:`expected_gin` and :func:`expected_gon` say what that must be.
:func:`noc_benchmark` prints packets per cycle for the usual multicast patterns.
"""

import json

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from ..hw.fp import FP16, FP32
from ..hw.noc import (
    ROUTE_FROM_GIN,
    ROUTE_TO_GON,
    GinPacket,
    GonPacket,
    NocCfgOp,
    NocCfgWrite,
    NocNet,
)
from ..sw.noc_ids import destinations, noc_map
from . import runner

__all__ = [
    "BENCH_PATTERNS",
    "cfg_words",
    "check_noc",
    "expected_gin",
    "expected_gon",
    "format_table",
    "gin_word",
    "noc_benchmark",
    "pack",
    "rs_traffic",
    "run_noc",
    "unpack",
    "values_per_packet",
]

_NETS = {"filter": (NocNet.FILTER, FP16), "ifmap": (NocNet.IFMAP, FP16),
         "psum": (NocNet.PSUM, FP32)}


def _width(shape):
    if isinstance(shape, data.Layout) or (isinstance(shape, type)
                                          and issubclass(shape, data.Struct)):
        return data.Layout.cast(shape).size
    return Shape.cast(shape).width


def pack(layout, fields):
    """Return the bits of ``fields`` (a dict of ints, lists of ints for array fields) laid out
    as ``layout``; missing fields are zero."""
    bits = 0
    for name, value in fields.items():
        field = layout[name]
        if isinstance(field.shape, data.ArrayLayout):
            w = _width(field.shape.elem_shape)
            for k, v in enumerate(value):
                bits |= (int(v) & ((1 << w) - 1)) << (field.offset + k * w)
        else:
            bits |= (int(value) & ((1 << field.width) - 1)) << field.offset
    return bits


def unpack(layout, bits):
    """Return the fields of ``bits`` laid out as ``layout`` (inverse of :func:`pack`)."""
    out = {}
    for name, field in layout:
        if isinstance(field.shape, data.ArrayLayout):
            w = _width(field.shape.elem_shape)
            out[name] = [(bits >> (field.offset + k * w)) & ((1 << w) - 1)
                         for k in range(field.shape.length)]
        else:
            out[name] = (bits >> field.offset) & ((1 << field.width) - 1)
    return out


def values_per_packet(config, net):
    """Return V of network ``net`` ("filter", "ifmap", "psum" or "gon")."""
    return getattr(config, f"{net}_values_per_packet")


def gin_word(config, net, tag, values, count=None):
    """Return the packet word for GIN ``net`` carrying ``values`` (at most V) to ``tag``.

    ``count`` overrides the count field (to test out-of-range counts)."""
    nval = values_per_packet(config, net)
    layout = GinPacket(_NETS[net][1], nval, config.noc_id_bits)
    values = list(values)
    return pack(layout, {"row_tag": tag[0], "col_tag": tag[1],
                         "count": len(values) if count is None else count,
                         "data": values + [0] * (nval - len(values))})


def cfg_words(config, row_ids=None, col_ids=None, routes=None, clear=True):
    """Return configuration words writing the given IDs (dicts by network name) and routes."""
    layout = NocCfgWrite(config)

    def word(op, net, row, col, value):
        return pack(layout, {"op": op.value, "net": net.value, "row": row, "col": col,
                             "value": value})

    words = [word(NocCfgOp.CLEAR, NocNet.FILTER, 0, 0, 0)] if clear else []
    for name, ids in (row_ids or {}).items():
        words += [word(NocCfgOp.ROW_ID, _NETS[name][0], r, 0, v) for r, v in enumerate(ids)]
    for name, ids in (col_ids or {}).items():
        words += [word(NocCfgOp.COL_ID, _NETS[name][0], r, c, v)
                  for r, row in enumerate(ids) for c, v in enumerate(row)]
    if routes is not None:
        words += [word(NocCfgOp.ROUTE, NocNet.FILTER, r, c, v)
                  for r, row in enumerate(routes) for c, v in enumerate(row)]
    return words


def expected_gin(config, net, row_ids, col_ids, packets):
    """Return ``(per_pe, unmatched)``: the values each PE ``(r, c)`` must receive (a dict of
    lists) from ``packets`` (``(tag, values)`` pairs, or ``(tag, values, count)``), and how many
    packets match no PE."""
    nval = values_per_packet(config, net)
    per_pe = {(r, c): [] for r in range(config.rows) for c in range(config.cols)}
    unmatched = 0
    for packet in packets:
        tag, values = packet[0], list(packet[1])
        count = packet[2] if len(packet) > 2 else len(values)
        n = nval if count == 0 or count > nval else count
        values = (values + [0] * nval)[:n]
        dests = destinations(row_ids, col_ids, tag, config.noc_id_bits)
        unmatched += not dests
        for pe in dests:
            per_pe[pe] += values
    return per_pe, unmatched


def expected_gon(config, streams):
    """Return the GON packets each source must send, ``{(r, c): [(count, last, data)]}``, for
    psum ``streams`` ``{(r, c): [(data, last), ...]}`` leaving the PEs."""
    nval = config.gon_values_per_packet
    out = {}
    for src, psums in streams.items():
        packets, current = [], []
        for value, last in psums:
            current.append(value)
            if last or len(current) == nval:
                packets.append((len(current), int(bool(last)), current))
                current = []
        assert not current, f"psums of {src} end without a last mark in a partial packet"
        out[src] = packets
    return out


def run_noc(config, scenario, *, simulator="verilator", name="noc", bld=None):
    """Run ``scenario`` on the generated NoC and return the bench's results (a dict).

    ``scenario`` keys: ``cfg`` (configuration words, written first), ``filter``, ``ifmap``,
    ``psum`` (GIN packet words), ``gap`` (rate of idle input cycles), ``stall`` (rate at which
    each PE refuses a value), ``gon_stall``, ``add`` and ``period`` (per PE, index
    ``r * cols + c``: a psum taken in leaves ``psum_out`` plus ``add``, with ``last`` on every
    ``period``-th and on the ``last_at``-th), ``seed_psums`` (per PE, ``[data, last]`` pairs sent before anything else),
    ``record`` (keep the PE-side values), ``max_cycles``, ``seed``.

    Results: ``cycles``, per PE lists ``filter``, ``ifmap``, ``psum_in`` (index
    ``r * cols + c``), ``gon`` (``[src_row, src_col, count, last, data]``), ``accepted``
    (per GIN, the cycle of each accepted packet), ``gon_cycles``, ``events`` (sums per field),
    ``unmatched`` (flags at the end), ``timeout``.
    """
    bld = bld or runner.build("noc", config, simulator=simulator)
    run_dir = bld.directory / "runs" / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{name}.json"
    result = run_dir / f"{name}-out.json"
    full = {"rows": config.rows, "cols": config.cols, "record": True, "gap": 0.0, "stall": 0.0,
            "gon_stall": 0.0, "seed": 0, "max_cycles": 100_000, "cfg": [], "filter": [],
            "ifmap": [], "psum": [], "add": [0] * config.num_pes,
            "period": [0] * config.num_pes, "last_at": [0] * config.num_pes, "seed_psums": [[] for _ in range(config.num_pes)],
            "gon_layout": {n: [f.offset, f.width] for n, f in GonPacket(
                config.rows, config.cols, config.gon_values_per_packet) if n != "data"},
            "gon_values": config.gon_values_per_packet,
            "gon_data": GonPacket(config.rows, config.cols,
                                  config.gon_values_per_packet)["data"].offset,
            "events": _event_fields(config)}
    full.update(scenario)
    path.write_text(json.dumps(full))
    runner.run(bld, "rsaccel.sim.bench_noc", name=name,
               env={"NOC_SCENARIO": str(path), "NOC_RESULT": str(result)})
    return json.loads(result.read_text())


def _event_fields(config):
    from ..hw.noc import NocEvents

    return {name: [field.offset, field.width] for name, field in NocEvents(config)}


def rs_traffic(config, sets, segments, *, values=5, psums=3, seed=0):
    """Return ``(scenario, expect)``: configure the map of a placement (:func:`noc_map`) and send
    every filter row, ifmap row and psum column it needs, as in a processing pass.

    Each filter row and ifmap row is ``values`` values, each injected psum column ``psums``
    psums; the keys' packets are interleaved. PE ``k`` adds ``add[k]`` to each psum it passes
    on and marks every ``psums``-th ``last``. ``expect`` has, from the placement alone (not the
    IDs), the values each lane must receive (``filter``, ``ifmap``: lane -> list) and the GON
    packets of each source (``gon``: ``(r, c)`` -> ``[(count, last, data)]``).
    """
    nm = noc_map(config, sets, segments)
    rng = np.random.default_rng(seed)
    n, cols = config.num_pes, config.cols
    add = [(k + 1) * 0x1001 for k in range(n)]

    def chunks(data, nval):
        return [data[p:p + nval] for p in range(0, len(data), nval)]

    per_key = {"filter": [], "ifmap": [], "psum": []}
    rows_of = {"filter": {}, "ifmap": {}}
    for k, s in enumerate(sets):
        fid, iid = (s.out, s.chan), (s.image, s.chan)
        if fid not in rows_of["filter"]:
            rows_of["filter"][fid] = {i: rng.integers(0, 1 << 16, values).tolist()
                                      for i in range(s.height)}
            per_key["filter"] += [[(nm.filter_tag(k, i), part) for part in chunks(
                data, config.filter_values_per_packet)]
                for i, data in rows_of["filter"][fid].items()]
        if iid not in rows_of["ifmap"]:
            rows_of["ifmap"][iid] = {h: rng.integers(0, 1 << 16, values).tolist()
                                     for h in s.ifmap_rows}
            per_key["ifmap"] += [[(nm.ifmap_tag(k, h), part) for part in chunks(
                data, config.ifmap_values_per_packet)]
                for h, data in rows_of["ifmap"][iid].items()]
    expect = {"filter": {}, "ifmap": {}, "gon": {}}
    for k, s in enumerate(sets):
        for i in range(s.height):
            for j in range(s.width):
                r, c = nm.pe(k, i, j)
                expect["filter"][r * cols + c] = rows_of["filter"][s.out, s.chan][i]
                expect["ifmap"][r * cols + c] = rows_of["ifmap"][s.image, s.chan][
                    s.ifmap_row(i, j)]
        for j in range(s.width):
            try:
                tag = nm.psum_tag(k, j)
            except ValueError:                  # takes its psums from the set below
                continue
            data = rng.integers(0, 1 << 32, psums).tolist()
            per_key["psum"].append([(tag, part) for part in
                                    chunks(data, config.psum_values_per_packet)])
            chain = nm.chain(k, j)
            total = sum(add[r * cols + c] for r, c in chain)
            expect["gon"][chain[-1]] = [((v + total) & 0xFFFFFFFF, int(m == psums - 1))
                                        for m, v in enumerate(data)]
    expect["gon"] = expected_gon(config, expect["gon"])
    scenario = {"cfg": nm.writes(), "add": add, "period": [psums] * n}
    for net, keys in per_key.items():
        order = []
        for step in range(max((len(p) for p in keys), default=0)):
            order += [p[step] for p in keys if step < len(p)]
        scenario[net] = [gin_word(config, net, tag, part) for tag, part in order]
    return scenario, expect


def check_noc(config, result, expect):
    """Return the differences (strings, at most a few per kind) between a :func:`run_noc`
    result and ``expect`` (``filter``, ``ifmap``, ``psum_in``: lane -> values; ``gon``:
    ``(r, c)`` -> packets; ``events``: name -> total; ``unmatched``: net -> flag)."""
    problems = []
    if result.get("timeout"):
        problems.append(f"timed out after {result['cycles']} cycles")
    cols = config.cols
    for net in ("filter", "ifmap", "psum_in"):
        if net not in expect:
            continue
        bad = [k for k in range(config.num_pes) if result[net][k] != expect[net].get(k, [])]
        problems += [f"{net} of PE {divmod(k, cols)}: got {result[net][k][:6]}..., want "
                     f"{expect[net].get(k, [])[:6]}... ({len(result[net][k])} vs "
                     f"{len(expect[net].get(k, []))} values)" for k in bad[:3]]
    if "gon" in expect:
        got = {}
        for src_row, src_col, count, last, data in result["gon"]:
            got.setdefault((src_row, src_col), []).append((count, last, data))
        for src in sorted(set(got) | set(expect["gon"])):
            if got.get(src, []) != expect["gon"].get(src, []):
                problems.append(f"GON packets of PE {src}: got {got.get(src, [])[:3]}..., "
                                f"want {expect['gon'].get(src, [])[:3]}...")
    for name, want in expect.get("events", {}).items():
        if result["events"][name] != want:
            problems.append(f"event {name}: {result['events'][name]}, want {want}")
    for net, want in expect.get("unmatched", {}).items():
        if result["unmatched"][net] != want:
            problems.append(f"unmatched flag of {net}: {result['unmatched'][net]}, want {want}")
    return problems


# -- Benchmark ---------------------------------------------------------------------------------

def _pattern(config, pattern):
    """Return (row_ids, col_ids, tags) of a benchmark pattern on GIN ``ifmap``."""
    rows, cols = config.rows, config.cols
    if pattern == "broadcast":
        return [0] * rows, [[0] * cols for _ in range(rows)], [(0, 0)]
    if pattern == "row multicast":
        return list(range(rows)), [[0] * cols for _ in range(rows)], \
            [(r, 0) for r in range(rows)]
    if pattern == "column multicast":
        return [0] * rows, [list(range(cols)) for _ in range(rows)], \
            [(0, c) for c in range(cols)]
    if pattern == "diagonal":
        # Stride-1 RS ifmap rows: PE (r, c) needs row r + c; one row group.
        n = rows + cols - 1
        if n > (1 << config.noc_id_bits) - 1:
            raise ValueError(f"{n} diagonals need more IDs than noc_id_bits gives")
        return [0] * rows, [[r + c for c in range(cols)] for r in range(rows)], \
            [(0, h) for h in range(n)]
    if pattern == "unicast":
        return list(range(rows)), [list(range(cols)) for _ in range(rows)], \
            [(r, c) for r in range(rows) for c in range(cols)]
    raise ValueError(f"unknown pattern {pattern!r}")


BENCH_PATTERNS = ("broadcast", "row multicast", "column multicast", "diagonal", "unicast")


def _steady_rate(cycles):
    """Events per cycle from the first quarter of ``cycles`` on (past the buffers filling)."""
    start = len(cycles) // 4
    return (len(cycles) - 1 - start) / max(1, cycles[-1] - cycles[start])


def noc_benchmark(config, *, packets=600, stall=0.25, seed=1, simulator="verilator",
                  patterns=BENCH_PATTERNS, out=print):
    """Measure sustained GIN and GON throughput on the generated NoC; print and return a table.

    For each multicast pattern (on the ifmap GIN, full packets of V values), ``packets``
    packets are offered back to back, the tags cycling through the pattern's destinations;
    PEs take values always (``stall`` 0) or refusing each with probability ``stall``. The
    GON line has every PE sending psums at once (``psum_out`` always valid), the output taking
    always or refusing with probability ``stall``. Packets per cycle count from the end of
    the first quarter of the packets (the buffers have filled) to the last. Bound: what the
    PEs can take at one value per cycle each, or the network's one packet per cycle.
    """
    rows = []
    bld = runner.build("noc", config, simulator=simulator)
    nval = config.ifmap_values_per_packet
    rng = np.random.default_rng(seed)
    for pattern in patterns:
        row_ids, col_ids, tags = _pattern(config, pattern)
        words = [gin_word(config, "ifmap", tags[k % len(tags)],
                          rng.integers(0, 1 << 16, nval).tolist()) for k in range(packets)]
        # Each PE takes one value per cycle: a tag's PEs take a packet per V cycles.
        bound = min(1.0, len(tags) / nval)
        for s in (0.0, stall):
            res = run_noc(config, {"cfg": cfg_words(config, {"ifmap": row_ids},
                                                    {"ifmap": col_ids}),
                                   "ifmap": words, "stall": s, "record": False, "seed": seed},
                          bld=bld, name="bench")
            acc = res["accepted"]["ifmap"]
            rate = _steady_rate(acc)
            fanout = np.mean([len(destinations(row_ids, col_ids, tag, config.noc_id_bits))
                              for tag in tags])
            rows.append({"pattern": pattern, "stall": s, "packets": len(acc),
                         "packets_per_cycle": rate, "bound": bound,
                         "pe_values_per_cycle": float(rate * nval * fanout)})
    # GON: every PE streams psums.
    gval = config.gon_values_per_packet
    per_pe = max(4, packets * gval // config.num_pes)
    seeds = [[[int(v), int(k == per_pe - 1)] for k, v in
              enumerate(rng.integers(0, 1 << 32, per_pe))] for _ in range(config.num_pes)]
    routes = [[ROUTE_FROM_GIN | ROUTE_TO_GON] * config.cols for _ in range(config.rows)]
    for s in (0.0, stall):
        res = run_noc(config, {"cfg": cfg_words(config, routes=routes), "seed_psums": seeds,
                               "gon_stall": s, "record": False, "seed": seed},
                      bld=bld, name="bench")
        cyc = res["gon_cycles"]
        rate = _steady_rate(cyc)
        rows.append({"pattern": "GON, all PEs", "stall": s, "packets": len(cyc),
                     "packets_per_cycle": rate, "bound": 1.0,
                     "pe_values_per_cycle": rate * gval})
    if out:
        out(format_table(config, rows))
    return rows


def format_table(config, rows):
    """Return the benchmark rows as a text table."""
    title = (f"NoC throughput on {config.name} ({config.rows} x {config.cols} PEs), ifmap GIN "
             f"V={config.ifmap_values_per_packet}, GON V={config.gon_values_per_packet}")
    header = (f"{'pattern':<18} {'stall':>6} {'packets':>8} {'pkt/cycle':>10} {'bound':>6} "
              f"{'values/cycle':>13}")
    lines = [title, header]
    for row in rows:
        lines.append(f"{row['pattern']:<18} {row['stall']:>6.2f} {row['packets']:>8} "
                     f"{row['packets_per_cycle']:>10.3f} {row['bound']:>6.2f} "
                     f"{row['pe_values_per_cycle']:>13.1f}")
    lines += ["stall: chance that each PE refuses a value in a cycle (GON: the output a packet)",
              "bound: one value per cycle per PE, one packet per cycle per network",
              "values/cycle: values the PEs take per cycle (GON: psums out)"]
    return "\n".join(lines)
