"""cocotb bench of the NoC top (``noc``): play every PE and the buffers around the network.

The caller (:func:`rsaccel.sim.noc_bench.run_noc`) writes a scenario as JSON; the bench writes
the configuration words, then offers the GIN packets (with random idle cycles), refuses values
at every PE at random, models each PE's psum path (a psum taken in leaves ``psum_out`` with a
constant added and a ``last`` mark every ``period`` psums and on the ``last_at``-th), takes GON packets (with random
refusals) and records everything. It stops when nothing has moved for a while after all input
is taken, or at ``max_cycles`` (``timeout`` set). Signals are driven after the falling edge and
transfers read at ``ReadOnly`` before the rising edge.

Environment: ``NOC_SCENARIO`` (JSON in), ``NOC_RESULT`` (JSON out).
"""

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

_QUIET = 40          # cycles without any transfer that end the run


def _random_mask(rng, n, rate):
    """Return an ``n``-bit mask with each bit set with probability ``1 - rate``."""
    if rate <= 0:
        return (1 << n) - 1
    if rate == 0.5:
        return rng.getrandbits(n)
    if rate == 0.25:
        return ~(rng.getrandbits(n) & rng.getrandbits(n)) & ((1 << n) - 1)
    mask = 0
    for k in range(n):
        if rng.random() >= rate:
            mask |= 1 << k
    return mask


def _bits(value):
    return value.to_unsigned()


def _each_bit(x):
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


@cocotb.test()
async def noc_scenario(dut):
    sc = json.loads(Path(os.environ["NOC_SCENARIO"]).read_text())
    n = sc["rows"] * sc["cols"]
    rng = random.Random(sc["seed"])
    record = sc["record"]
    gap, stall, gon_stall = sc["gap"], sc["stall"], sc["gon_stall"]

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for name in ("filter", "ifmap", "psum", "cfg"):
        getattr(dut, f"{name}__valid").value = 0
    dut.gon__ready.value = 0
    for link in ("filter_in", "ifmap_in", "psum_in"):
        getattr(dut, f"pe_{link}_ready").value = 0
    dut.pe_psum_out_valid.value = 0
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0

    # Configuration, one word per cycle.
    for word in sc["cfg"]:
        dut.cfg__valid.value = 1
        dut.cfg__payload.value = word
        await FallingEdge(dut.clk)
    dut.cfg__valid.value = 0

    gins = ("filter", "ifmap", "psum")
    links = ("filter_in", "ifmap_in", "psum_in")
    widths = {"filter_in": 16, "ifmap_in": 16, "psum_in": 32}
    sent = dict.fromkeys(gins, 0)
    accepted = {g: [] for g in gins}
    got = {link: [[] for _ in range(n)] for link in links}
    queues = [[(int(d), int(last)) for d, last in sc["seed_psums"][k]] for k in range(n)]
    taken_in = [0] * n
    add, period, last_at = sc["add"], sc["period"], sc.get("last_at", [0] * n)
    gon_layout, gon_values = sc["gon_layout"], sc["gon_values"]
    ev_fields = sc["events"]
    events = dict.fromkeys(ev_fields, 0)
    gon, gon_cycles = [], []
    data_off = sc["gon_data"]
    mask32 = (1 << 32) - 1

    cycle = quiet = 0
    timeout = False
    while True:
        await FallingEdge(dut.clk)
        cycle += 1
        if cycle > sc["max_cycles"]:
            timeout = True
            break
        offered = {}
        for g in gins:
            words = sc[g]
            valid = sent[g] < len(words) and (gap <= 0 or rng.random() >= gap)
            getattr(dut, f"{g}__valid").value = int(valid)
            if valid:
                getattr(dut, f"{g}__payload").value = words[sent[g]]
            offered[g] = valid
        readies = {link: _random_mask(rng, n, stall) for link in links}
        for link in links:
            getattr(dut, f"pe_{link}_ready").value = readies[link]
        po_valid = po_data = 0
        for k in range(n):
            if queues[k]:
                value, last = queues[k][0]
                po_valid |= 1 << k
                po_data |= (value | last << 32) << (33 * k)
        dut.pe_psum_out_valid.value = po_valid
        dut.pe_psum_out_data.value = po_data
        gon_ready = gon_stall <= 0 or rng.random() >= gon_stall
        dut.gon__ready.value = int(gon_ready)

        await ReadOnly()
        moved = False
        for g in gins:
            if offered[g] and getattr(dut, f"{g}__ready").value:
                accepted[g].append(cycle)
                sent[g] += 1
                moved = True
        for link in links:
            xfer = _bits(getattr(dut, f"pe_{link}_valid").value) & readies[link]
            if not xfer:
                continue
            moved = True
            if not record and link != "psum_in":
                continue
            data = _bits(getattr(dut, f"pe_{link}_data").value)
            w = widths[link]
            for k in _each_bit(xfer):
                value = (data >> (w * k)) & ((1 << w) - 1)
                if record:
                    got[link][k].append(value)
                if link == "psum_in":
                    taken_in[k] += 1
                    last = int(period[k] > 0 and taken_in[k] % period[k] == 0
                               or taken_in[k] == last_at[k])
                    queues[k].append(((value + add[k]) & mask32, last))
        if po_valid:
            taken = po_valid & _bits(dut.pe_psum_out_ready.value)
            for k in _each_bit(taken):
                queues[k].pop(0)
                moved = True
        if gon_ready and dut.gon__valid.value:
            word = _bits(dut.gon__payload.value)
            fields = {name: (word >> off) & ((1 << w) - 1) for name, (off, w) in
                      gon_layout.items()}
            data = [(word >> (data_off + 32 * k)) & mask32 for k in range(gon_values)]
            if record:
                gon.append([fields["src_row"], fields["src_col"], fields["count"],
                            fields["last"], data[:fields["count"]]])
            gon_cycles.append(cycle)
            moved = True
        ev = _bits(dut.events.value)
        if ev:
            for name, (off, w) in ev_fields.items():
                events[name] += (ev >> off) & ((1 << w) - 1)
        inputs_done = all(sent[g] == len(sc[g]) for g in gins) and not any(queues)
        quiet = 0 if moved else quiet + 1
        if inputs_done and quiet >= _QUIET:
            break

    flags = _bits(dut.unmatched.value)
    result = {
        "cycles": cycle, "timeout": timeout, "accepted": accepted, "gon": gon,
        "gon_cycles": gon_cycles, "events": events,
        "unmatched": {g: (flags >> k) & 1 for k, g in enumerate(gins)},
        "filter": got["filter_in"], "ifmap": got["ifmap_in"], "psum_in": got["psum_in"],
    }
    Path(os.environ["NOC_RESULT"]).write_text(json.dumps(result))
