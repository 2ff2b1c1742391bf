"""Which learner, cell and size fit a memory and a per-step time budget.

Memory comes from the exact layout (`_layout.layout`, the same function the
compiled core allocates from), so it is exact, not estimated.  Time comes from
a cost model measured on the machine that asks: every configuration's
multiply-adds per step are counted from its structure, and the seconds per
multiply-add and the fixed overhead per step are fitted to a few timed
steps of small models of that configuration (well under a second in all).
"""
from __future__ import annotations

import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import _layout

#: (learner, cell) pairs that plan() considers, with what each is.
CANDIDATES: Tuple[Tuple[str, str, str], ...] = (
    ("rtrl", "elman", "exact RTRL"),
    ("snap2", "elman", "SnAp-2 on a sparse W_rec"),
    ("snap1", "elman", "SnAp-1"),
    ("uoro", "elman", "UORO, unbiased rank-one"),
    ("tbptt", "elman", "truncated BPTT"),
    ("rtrl", "diag", "diagonal cell, exact"),
    ("rtrl", "gru", "GRU, exact RTRL"),
    ("snap1", "gru", "GRU, SnAp-1"),
)

#: hidden sizes tried, smallest first
SIZES = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
         1536, 2048)


class Option(NamedTuple):
    learner: str
    cell: str
    n_hidden: int
    memory_bytes: int
    step_us: float          # predicted median time of one learning step
    what: str


def _config(learner, cell, n, m, o, optimizer, rec_density, window, threads=1):
    kw = dict(learner=learner, cell=cell, optimizer=optimizer, threads=threads)
    if learner == "tbptt":
        kw["window"] = window
    if learner == "snap2":
        kw["rec_density"] = rec_density
    return kw


def _mask(n, rec_density, seed=0):
    # the mask OnlineRNN(..., rec_density=d, seed=0) draws
    from .model import _check_mask
    return _check_mask(n, rec_density, None, "elman", seed)


def memory_bytes(n_in: int, n_hidden: int, n_out: int, *, learner: str = "rtrl",
                 cell: str = "elman", optimizer: str = "adam", window: int = 16,
                 rec_density: float = 0.1, threads: int = 1) -> int:
    """Exact `memory_bytes` of a model, computed without building it (for
    snap2, with the mask that ``seed=0`` draws)."""
    mask = _mask(n_hidden, rec_density) if learner == "snap2" else None
    structure = _layout.snap2_structure(mask, n_in, cell) if mask is not None else None
    buffers = _layout.layout(n_hidden, n_in, n_out, cell=cell, learner=learner,
                             optimizer=optimizer,
                             window=window if learner == "tbptt" else None,
                             mask=mask, snap2=structure, threads=threads)
    return _layout.memory_bytes(buffers)


def work(n_in: int, n_hidden: int, n_out: int, *, learner: str, cell: str,
         window: int = 16, rec_density: float = 0.1) -> float:
    """Multiply-adds (and comparable element operations) of one learning step."""
    n, m, o = n_hidden, n_in, n_out
    K = n + m + 1
    p = _layout.n_params(n, m, o, cell)
    common = o * n + 6 * p                       # readout, optimiser passes
    if cell == "diag":
        return common + 2 * n * (m + 1) + 4 * n * (2 * m + 4)
    if cell == "gru":
        return common + _gru_work(n, m, learner, window, rec_density)
    common += n * K                              # the Elman forward pass
    if learner == "rtrl":
        return common + n * n * n * K + 2 * n * n * K
    if learner == "snap1":
        return common + 2 * n * K
    if learner == "uoro":
        return common + n * n + 3 * n * K
    if learner == "tbptt":
        return common + window * (n * K + n * n)
    s = _layout.snap2_structure(_mask(n, rec_density), m)
    sizes, ld = np.diff(s["s_off"]), s["ld"]
    return common + float(np.sum(sizes * sizes * ld + 2 * sizes * ld + sizes * sizes))


def _gru_work(n, m, learner, window, rec_density) -> float:
    """The GRU's forward pass and learner (_gru.pyx): N = 3n(n+m+2) core
    parameters, D_t formed from three n x n blocks."""
    N = _layout.n_core(n, m, "gru")
    forward = 3 * n * (n + m) + 20 * n
    if learner == "rtrl":
        return forward + n * n * N + 2 * n * N + 3 * n * n
    if learner == "snap1":
        return forward + 2 * N
    if learner == "uoro":
        return forward + 3 * n * n + 3 * N
    if learner == "tbptt":
        return forward + window * (N + 3 * n * n)
    s = _layout.snap2_structure(_mask(n, rec_density), m, "gru")
    sizes, ld = np.diff(s["s_off"]), s["ld"]
    return forward + float(np.sum(sizes * sizes * ld + 2 * sizes * ld + 3 * sizes * sizes))


_CALIBRATION: Dict[tuple, Tuple[float, float]] = {}


def _time_step(net, steps: int) -> float:
    x = np.linspace(-1.0, 1.0, net.n_in, dtype=np.float32)
    y = np.zeros(net.n_out, dtype=np.float32)
    for _ in range(max(steps // 5, 5)):
        net.step(x, y)
    times = np.empty(steps)
    clock = time.perf_counter_ns
    for i in range(steps):
        t0 = clock()
        net.step(x, y)
        times[i] = clock() - t0
    return float(np.median(times)) / 1e3


def calibrate(learner: str, cell: str, n_in: int, n_out: int, *, optimizer: str = "adam",
              window: int = 16, rec_density: float = 0.1,
              threads: int = 1) -> Tuple[float, float]:
    """Fit ``step_us = a + b * work`` to timed steps of a few small models of
    this configuration on this machine (with ``threads``, so that the fit
    holds the pool's speed-up and its hand-off cost); cached for the process."""
    from .model import OnlineRNN
    key = (learner, cell, n_in, n_out, optimizer, window, rec_density, threads)
    if key not in _CALIBRATION:
        sizes = (8, 16, 32) if learner == "rtrl" and cell != "diag" else (16, 64, 128)
        rows = []
        for n in sizes:
            net = OnlineRNN(n_in, n, n_out, **_config(learner, cell, n, n_in, n_out,
                                                      optimizer, rec_density, window,
                                                      threads))
            us = _time_step(net, 300 if n <= 32 else 150)
            rows.append((work(n_in, n, n_out, learner=learner, cell=cell, window=window,
                              rec_density=rec_density), us))
        w, t = np.array(rows).T
        b, a = np.polyfit(w, t, 1)
        b = max(b, 1e-9)
        a = max(a, float(np.min(t - b * w)), 0.0)
        _CALIBRATION[key] = (a, b)
    return _CALIBRATION[key]


def plan(n_in: int, n_out: int, *, memory_bytes: Optional[int] = None,
         step_us: Optional[float] = None, optimizer: str = "adam", window: int = 16,
         rec_density: float = 0.1, candidates: Optional[Sequence[Tuple[str, str]]] = None,
         sizes: Sequence[int] = SIZES, threads: int = 1) -> List[Option]:
    """For each learner/cell, the largest hidden size within the budgets.

    Parameters
    ----------
    n_in, n_out : int
        The stream's inputs and outputs.
    memory_bytes : int, optional
        Budget for the model's `memory_bytes` (exact).
    step_us : float, optional
        Budget for the median time of one learning step, in microseconds,
        predicted by a cost model fitted on this machine (see module doc).
    optimizer, window, rec_density, threads :
        As for `OnlineRNN` (window for tbptt, rec_density for snap2; threads
        splits exact RTRL's n^4 term, and is timed as such).
    candidates : sequence of (learner, cell), optional
        Restrict the search (default: every pair in `CANDIDATES`).

    Returns a list of `Option`, largest n_hidden first; a learner/cell for
    which not even the smallest size fits is left out.
    """
    if memory_bytes is None and step_us is None:
        raise ValueError("give memory_bytes and/or step_us: a budget to plan against")
    for name, value in (("memory_bytes", memory_bytes), ("step_us", step_us)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    chosen = [(l, c, what) for l, c, what in CANDIDATES
              if candidates is None or (l, c) in set(map(tuple, candidates))]
    options = []
    for learner, cell, what in chosen:
        cost = None if step_us is None else calibrate(
            learner, cell, n_in, n_out, optimizer=optimizer, window=window,
            rec_density=rec_density, threads=threads)
        best = None
        for n in sizes:
            if cell == "diag" and n % 2:
                continue
            mem = globals()["memory_bytes"](n_in, n, n_out, learner=learner, cell=cell,
                                            optimizer=optimizer, window=window,
                                            rec_density=rec_density, threads=threads)
            us = float("nan") if cost is None else cost[0] + cost[1] * work(
                n_in, n, n_out, learner=learner, cell=cell, window=window,
                rec_density=rec_density)
            if (memory_bytes is not None and mem > memory_bytes) or (
                    step_us is not None and us > step_us):
                break
            best = Option(learner, cell, n, mem, us, what)
        if best is not None:
            options.append(best)
    return sorted(options, key=lambda o: -o.n_hidden)


def format_plan(options: List[Option]) -> str:
    lines = [f"{'learner':8s} {'cell':6s} {'n_hidden':>8s} {'memory_bytes':>13s} "
             f"{'step (us)':>10s}  what"]
    for o in options:
        us = "-" if np.isnan(o.step_us) else f"{o.step_us:10.1f}"
        lines.append(f"{o.learner:8s} {o.cell:6s} {o.n_hidden:8d} {o.memory_bytes:13,d} "
                     f"{us:>10s}  {o.what}")
    return "\n".join(lines)
