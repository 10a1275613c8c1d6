"""Stream helpers for Amaranth simulator testbenches (``sim.add_testbench``).

They follow the transfer rules of ``amaranth.lib.stream``: a transfer happens on a clock edge
where both ``valid`` and ``ready`` are high. Payloads are raw integers (``Value.cast(payload)``),
so callers pack and unpack bits with the formats of ``rsaccel.hw``.
"""

from amaranth import Value

__all__ = ["run_simulation", "stream_get", "stream_put"]


async def stream_put(ctx, stream, payload, *, gap=0):
    """Offer ``payload`` on ``stream`` until it is taken, then idle ``gap`` cycles."""
    ctx.set(stream.valid, 1)
    ctx.set(Value.cast(stream.payload), payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)
    if gap:
        await ctx.tick().repeat(gap)


async def stream_get(ctx, stream, *, stall=0):
    """Return the next payload (an integer) of ``stream``, refusing it for ``stall`` cycles."""
    if stall:
        await ctx.tick().repeat(stall)
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(Value.cast(stream.payload)).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def run_simulation(dut, *testbenches, background=(), deadline_cycles=100_000, vcd=None):
    """Run ``testbenches`` (async functions of ``ctx``) against ``dut`` with a 1 MHz clock.

    ``background`` testbenches (monitors) run alongside and are dropped when the others are
    done. Fails with ``TimeoutError`` if those are not all done within ``deadline_cycles``.
    """
    from amaranth.sim import Simulator

    running = [len(testbenches)]

    def counted(bench):
        async def wrapper(ctx):
            try:
                await bench(ctx)
            finally:
                running[0] -= 1
        return wrapper

    async def watchdog(ctx):
        for _ in range(deadline_cycles):
            if not running[0]:
                return
            await ctx.tick()
        raise TimeoutError(f"simulation did not finish within {deadline_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(watchdog)
    for bench in testbenches:
        sim.add_testbench(counted(bench))
    for bench in background:
        sim.add_testbench(bench, background=True)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
