"""Run host scripts on the simulated accelerator top (``sim/bench_top.py``).

A script is a list of steps, each a tuple: ``("mem_write", addr, bytes)``, ``("mem_read",
addr, length)`` -> bytes, ``("reg_write", addr, value)`` -> AXI response code,
``("reg_read", addr)`` -> (value, response code), ``("cycles", n)``, ``("wait_irq",
max_cycles)`` -> cycles waited or None, ``("accesses",)`` -> the memory accesses since the
last such step (kind, address, length), ``("cycle",)`` -> the current cycle.
"""

import os
import pickle
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from . import runner

__all__ = ["run_script"]


def run_script(config, steps, *, memory, simulator="verilator", pause=0.0, seed=0,
               waves=False, name="top", progress=None):
    """Run ``steps`` on the ``top`` of ``config`` with ``memory`` bytes of host memory and
    channel stalls at rate ``pause``; return the list of the steps' results.

    ``progress``, when given, is called now and then with the cycles a ``wait_irq`` step has
    waited so far (from this thread, while the simulation runs in another).
    """
    bld = runner.build("top", config, simulator=simulator, waves=waves)
    run_dir = bld.directory / "runs" / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    stem = run_dir / f"{name}-{seed}-{os.getpid()}"
    with open(f"{stem}.pkl", "wb") as f:
        pickle.dump({"memory": memory, "pause": pause, "seed": seed, "steps": list(steps)}, f)
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

