"""The host driver: run convolution and linear layers on the accelerator from numpy.

``Accelerator(config, backend=...)`` maps each layer (:func:`rsaccel.sw.mapper.map_layer`),
compiles it (:func:`rsaccel.sw.program.compile_layer`), lays the program and tensors out in
host memory, and hands the image to a *transport*:

* ``"model"``: the bit-exact program model (:mod:`rsaccel.sw.program_model`) runs the command
  lists; cycles are the mapper's prediction.
* ``"verilator"``, ``"icarus"``: the generated Verilog of the ``top`` runs under cocotb
  (``sim/bench_top.py``); the image is written to the simulated memory, the layer is started
  through the AXI4-Lite registers (cocotbext-axi), and the results come back through the real
  AXI paths; cycles and access counts are the hardware's counters. The memory and the clock
  are in the HDL harness (``sim/hdl/harness.v``: whole layers at Verilator speed, with the
  DRAM bandwidth and latency given), or, with ``pause``, cocotbext-axi's AxiRam stalling every
  channel at random (Python on every cycle: small layers only).

After each call ``stats`` holds cycles, MAC utilization, accesses per memory level and the
normalized energy (Eyeriss's costs: DRAM 200, GLB 6, NoC 2, scratchpad 1, MAC 1).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ..config import ArrayConfig, preset
from ..hw.commands import Engine, ErrorCode
from ..hw.top import COUNTERS, register_map
from .layer_model import _check_array as _check_type
from .layers import Conv2d
from .mapper import CostModel, map_layer, predict
from .program import compile_layer

__all__ = ["BACKENDS", "COSTS", "Accelerator", "AcceleratorError", "Stats"]

BACKENDS = ("model", "verilator", "icarus")
#: Normalized energy per access (16-bit value) of each level, and per MAC (Eyeriss).
COSTS = {"dram": 200.0, "glb": 6.0, "noc": 2.0, "spad": 1.0, "mac": 1.0}
_BASE = 0x1000


class AcceleratorError(RuntimeError):
    """The accelerator stopped a layer: ``code`` (:class:`~rsaccel.hw.commands.ErrorCode`),
    the ``engine`` and the ``index`` of the command in its list."""

    def __init__(self, code, engine, index):
        super().__init__(f"the accelerator stopped with {code.name} at {engine.name} command "
                         f"{index}")
        self.code, self.engine, self.index = code, engine, index


@dataclass
class Stats:
    """Figures of the last call. Accesses are in 16-bit units (one FP16 value; an FP32 psum
    counts 2), per level; ``energy`` is normalized to one MAC."""
    backend: str = ""
    cycles: int = 0
    predicted_cycles: int = 0
    macs: int = 0
    pes: int = 1
    accesses: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    #: Seconds the simulator took for the layer's cycles alone (None: no simulator).
    sim_seconds: float | None = None

    @property
    def utilization(self):
        return self.macs / (self.pes * self.cycles) if self.cycles else 0.0

    @property
    def energy(self):
        return sum(COSTS[level] * n for level, n in self.accesses.items()) + \
            COSTS["mac"] * self.macs

    @property
    def energy_per_mac(self):
        return self.energy / self.macs if self.macs else 0.0


def _check_array(name, value, dtype, ndim):
    _check_type(name, value, dtype, None)
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, not shape {value.shape}")


def _int(name, value, lo):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an integer of at least {lo}, not {value!r}")
    return int(value)


class ModelTransport:
    """Run programs on the bit-exact program model."""

    def __init__(self, config):
        self.config = config

    def run(self, program, image, base, timeout_cycles):
        from .program_model import ModelError, run
        try:
            result = run(self.config, image, base, origin=base)
        except ModelError as err:
            raise AcceleratorError(err.code, Engine.NONE, 0) from err
        c = result.counts
        noc = c["noc_values"]
        return result.memory, None, {
            "dram": (c["dram_read_bytes"] + c["dram_write_bytes"]) // 2,
            "glb": sum(c["glb_reads"].values()) + sum(c["glb_writes"].values()),
            "noc": noc.get("filter", 0) + noc.get("ifmap", 0)
            + 2 * (noc.get("psum", 0) + noc.get("gon", 0)),
        }, None


class SimTransport:
    """Run programs on the generated Verilog under cocotb (``simulator``: verilator or icarus);
    ``pause`` stalls every AXI channel at that rate (AxiRam), else the HDL harness's memory
    moves ``bandwidth`` bytes per cycle and answers reads after ``latency`` cycles; ``waves``
    records a trace."""

    def __init__(self, config, simulator, *, pause=0.0, waves=False, seed=0, progress=None,
                 bandwidth=None, latency=0):
        self.config, self.simulator = config, simulator
        self.pause, self.waves, self.seed, self.progress = pause, waves, seed, progress
        self.bandwidth, self.latency = bandwidth, latency
        self.regs = {reg.name: reg.address for reg in register_map(config)}

    def run(self, program, image, base, timeout_cycles):
        from ..sim.top_session import run_script
        regs = self.regs
        steps = [("mem_write", base, image),
                 ("reg_write", regs["WINDOW_BASE"], base),
                 ("reg_write", regs["WINDOW_SIZE"], len(image)),
                 ("reg_write", regs["IRQ_ENABLE"], 3),
                 ("reg_write", regs["DESC_ADDR"], base),
                 ("time",),
                 ("reg_write", regs["CTRL"], 1)]
        k = len(steps)
        steps += [("wait_irq", timeout_cycles),
                  ("time",),
                  ("reg_read", regs["STATUS"]),
                  ("reg_read", regs["ERROR_INDEX"]),
                  ("mem_read", base, len(image)),
                  ("fault",)]
        steps += [("reg_read", regs[f"{name}_{half}"]) for name in COUNTERS for half in ("LO", "HI")]
        res = run_script(self.config, steps, memory=base + len(image), simulator=self.simulator,
                         pause=self.pause, seed=self.seed, waves=self.waves, name="driver",
                         progress=self.progress, harness=not self.pause,
                         bandwidth=self.bandwidth or self.config.axi_data_bits / 8,
                         latency=self.latency)
        waited, end, (status, _), (index, _), memory, fault = res[k:k + 6]
        if fault is not None:
            raise RuntimeError(f"the accelerator's memory access at {fault:#x} broke the AXI "
                               f"rules or left the memory (a hardware bug)")
        if waited is None:
            raise TimeoutError(f"the accelerator did not finish within {timeout_cycles} cycles")
        if status >> 2 & 1:
            raise AcceleratorError(ErrorCode(status >> 4 & 15), Engine(status >> 8 & 7), index)
        values = [v for v, _ in res[k + 6:]]
        counters = {name: values[2 * j] | values[2 * j + 1] << 32
                    for j, name in enumerate(COUNTERS)}
        return memory, counters, None, end - res[k - 2]


class Accelerator:
    """The accelerator of ``config`` (an ArrayConfig or a preset name) on ``backend``.

    ``timeout``: the most cycles a layer may take (None: 20 times the predicted cycles plus
    100000). ``dram_bandwidth``: bytes per cycle the memory moves, reads and writes together
    (None: one AXI word); the mapper plans for it and the simulated memory keeps to it, which
    answers reads ``dram_latency`` cycles after their address. Simulation options: ``pause``
    (random AXI stalls in every channel, with the Python memory), ``waves``, ``seed``, and
    ``progress``: called now and then with ``(cycles so far, predicted cycles)``.
    """

    def __init__(self, config="small", backend="model", *, timeout=None, pause=0.0,
                 waves=False, seed=0, progress=None, dram_bandwidth=None, dram_latency=0):
        if isinstance(config, str):
            config = preset(config)
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig or a preset name, not {config!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if timeout is not None:
            _int("timeout", timeout, 1)
        _int("dram_latency", dram_latency, 0)
        if dram_bandwidth is not None and not (isinstance(dram_bandwidth, (int, float))
                                               and 0 < dram_bandwidth <= config.axi_data_bits / 4):
            raise ValueError(f"dram_bandwidth must be a number of bytes per cycle in (0, "
                             f"{config.axi_data_bits // 4}] (two AXI words), not "
                             f"{dram_bandwidth!r}")
        if pause and (dram_bandwidth is not None or dram_latency):
            raise ValueError("pause runs the memory in Python, which keeps no dram_bandwidth "
                             "or dram_latency: give one or the other")
        self.config, self.backend, self.timeout = config, backend, timeout
        self.cost_model = CostModel(dram_bytes_per_cycle=dram_bandwidth)
        self.transport = ModelTransport(config) if backend == "model" else \
            SimTransport(config, backend, pause=pause, waves=waves, seed=seed,
                         bandwidth=dram_bandwidth, latency=dram_latency)
        self._progress = progress
        self.stats = Stats(backend=backend)
        self.last_program = None

    def conv2d(self, x, w, bias=None, stride=1, padding=0, groups=1, relu=False,
               out_dtype=np.float16):
        """Return ``conv2d(x, w) + bias`` (NCHW), optionally ReLU, as ``out_dtype``.

        ``x``: float16 ``(N, C, H, W)``; ``w``: float16 ``(M, C / groups, R, S)``; ``bias``:
        float32 ``(M,)`` or None; ``out_dtype``: numpy.float16 or numpy.float32. The sums are
        FP32, added in the order the mapping defines (bit-exact with
        :mod:`rsaccel.sw.layer_model`).
        """
        _check_array("x", x, np.float16, 4)
        _check_array("w", w, np.float16, 4)
        N, C, H, W = x.shape
        M, Cg, R, S = w.shape
        stride, padding = _int("stride", stride, 1), _int("padding", padding, 0)
        groups = _int("groups", groups, 1)
        if C % groups or M % groups:
            raise ValueError(f"groups={groups} must divide the {C} input and {M} output channels")
        if Cg != C // groups:
            raise ValueError(f"w must have C / groups = {C // groups} input channels, not {Cg} "
                             f"(w shape {w.shape}, x shape {x.shape})")
        if bias is not None:
            _check_array("bias", bias, np.float32, 1)
            if bias.shape != (M,):
                raise ValueError(f"bias must have shape ({M},), not {bias.shape}")
        if H + 2 * padding < R or W + 2 * padding < S:
            raise ValueError(f"the {R}x{S} filter is larger than the padded {H}x{W} input")
        out_dtype = np.dtype(out_dtype)
        if out_dtype not in (np.float16, np.float32):
            raise ValueError(f"out_dtype must be float16 or float32, not {out_dtype}")
        layer = Conv2d("conv2d", N, C, M, H, W, R, S, stride=stride, padding=padding,
                       groups=groups, bias=bias is not None, relu=bool(relu))
        return self._run(layer, x, w, bias, out_dtype == np.float16)

    def linear(self, x, w, bias=None, relu=False, out_dtype=np.float16):
        """Return ``x @ w.T + bias``, optionally ReLU: ``x`` float16 ``(N, in)``, ``w``
        float16 ``(out, in)``, ``bias`` float32 ``(out,)`` or None (a 1x1 convolution)."""
        _check_array("x", x, np.float16, 2)
        _check_array("w", w, np.float16, 2)
        if w.shape[1] != x.shape[1]:
            raise ValueError(f"w must have {x.shape[1]} input features, not shape {w.shape}")
        y = self.conv2d(x[:, :, None, None], w[:, :, None, None], bias, relu=relu,
                        out_dtype=out_dtype)
        return y[:, :, 0, 0]

    def _run(self, layer, x, w, bias, out_fp16):
        start = time.perf_counter()
        mapping = map_layer(layer, self.config, model=self.cost_model)
        program = compile_layer(self.config, mapping, relu=layer.relu, out_fp16=out_fp16,
                                has_bias=layer.bias)
        self.last_program = program
        image = program.image(x, w, bias, base=_BASE)
        pred = predict(mapping, model=self.cost_model)
        predicted = int(pred["cycles"])
        timeout = self.timeout or 20 * predicted + 100_000
        if self._progress is not None and self.backend != "model":
            self.transport.progress = lambda cycles: self._progress(cycles, predicted)
        memory, counters, counts, sim_seconds = self.transport.run(program, image, _BASE,
                                                                   timeout)
        y = program.output(memory, _BASE, origin=_BASE)
        stats = Stats(backend=self.backend, predicted_cycles=predicted, macs=layer.macs,
                      pes=self.config.num_pes)
        if counters is not None:
            word16 = self.config.glb_word_bits // 16
            stats.cycles = counters["CYCLES"]
            stats.counters = counters
            stats.accesses = {
                "dram": (counters["DRAM_READ_BYTES"] + counters["DRAM_WRITE_BYTES"]) // 2,
                "glb": word16 * sum(counters[n] for n in COUNTERS if n.startswith("GLB_")),
                "noc": counters["NOC_FILTER_VALUES"] + counters["NOC_IFMAP_VALUES"]
                + 2 * (counters["NOC_PSUM_VALUES"] + counters["NOC_GON_VALUES"]),
                "spad": sum(counters[n] for n in COUNTERS if n.startswith("SPAD_")),
            }
        else:
            stats.cycles = predicted
            stats.accesses = dict(counts, glb=self.config.glb_word_bits // 16 * counts["glb"],
                                  spad=int(pred["spad"]["total"]))
        stats.wall_seconds = time.perf_counter() - start
        stats.sim_seconds = sim_seconds
        self.stats = stats
        return y.astype(np.float16 if out_fp16 else np.float32, copy=False)
