"""Run host scripts on the simulated accelerator top (``sim/bench_top.py``).

A script is a list of steps, each a tuple: ``("mem_write", addr, bytes)``, ``("mem_read",
addr, length)`` -> bytes, ``("reg_write", addr, value)`` -> AXI response code,
``("reg_read", addr)`` -> (value, response code), ``("cycles", n)``, ``("wait_irq",
max_cycles)`` -> cycles waited or None, ``("accesses",)`` -> the memory accesses since the
last such step (kind, address, length; not in the harness), ``("cycle",)`` -> the current
cycle, ``("time",)`` -> the simulator process's clock (seconds), ``("fault",)`` -> the address
of the harness memory's first fault (None: none; see ``sim/hdl/harness.v``).
"""

import os
import pickle
from concurrent.futures import ThreadPoolExecutor, wait
from fractions import Fraction
from pathlib import Path

from . import runner

__all__ = ["run_script"]


def run_script(config, steps, *, memory, simulator="verilator", pause=0.0, seed=0,
               waves=False, name="top", progress=None, harness=False, bandwidth=None,
               latency=0):
    """Run ``steps`` on the ``top`` of ``config`` with ``memory`` bytes of host memory and
    channel stalls at rate ``pause``; return the list of the steps' results.

    ``harness`` runs the top inside the HDL harness (clock and memory in the HDL: fast, no
    stalls, no access record); its memory then answers reads ``latency`` cycles after the
    address and moves at most ``bandwidth`` bytes per cycle (a fraction, or None: a word per
    cycle each way). ``progress``, when given, is called now and then with the cycles a
    ``wait_irq`` step has waited so far (from this thread, while the simulation runs in
    another).
    """
    job = {"memory": memory, "pause": pause, "seed": seed, "steps": list(steps)}
    if harness:
        if pause:
            raise ValueError("the harness's memory does not stall at random: pause must be 0")
        if any(step[0] == "accesses" for step in job["steps"]):
            raise ValueError("the harness's memory does not record accesses")
        if memory > runner.HARNESS_MEMORY[simulator]:
            raise ValueError(f"{memory} bytes of host memory do not fit the {simulator} "
                             f"harness's {runner.HARNESS_MEMORY[simulator]}")
        ratio = Fraction(bandwidth or 0).limit_denominator(1 << 16)
        if ratio < 0:
            raise ValueError(f"bandwidth must be positive, not {bandwidth!r}")
        job.update(harness=True, word_bytes=config.axi_data_bits // 8, latency=int(latency),
                   bandwidth=(ratio.numerator, ratio.denominator))
    bld = runner.build("top", config, simulator=simulator, waves=waves, harness=harness)
    run_dir = bld.directory / "runs" / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    stem = run_dir / f"{name}-{seed}-{os.getpid()}"
    with open(f"{stem}.pkl", "wb") as f:
        pickle.dump(job, f)
    env = {"TOP_SCRIPT": f"{stem}.pkl", "TOP_OUT": f"{stem}-out.pkl",
           "TOP_PROGRESS": f"{stem}.progress"}
    Path(env["TOP_PROGRESS"]).unlink(missing_ok=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        sim = pool.submit(runner.run, bld, "rsaccel.sim.bench_top", name=name, seed=seed,
                          env=env)
        while not wait([sim], timeout=0.5).done:
            if progress is not None:
                try:
                    progress(int(Path(env["TOP_PROGRESS"]).read_text() or 0))
                except (FileNotFoundError, ValueError):
                    pass
        sim.result()                        # raises what the simulation raised
    with open(f"{stem}-out.pkl", "rb") as f:
        return pickle.load(f)

