"""Which learner, size and learning rate forecast *your* recordings best
within a memory and a per-step time budget: the grid behind `rtrl-edge tune`.

Layers, top to bottom:

- **Executors** (`rtrl_edge.executors`, re-exported here), one interface:
  ``map(fn, tasks, progress=None)`` returns ``[fn(t) for t in tasks]`` in
  task order.  `SerialExecutor` (this process), `LocalExecutor` (worker
  processes on this machine, every core by default), `DaskExecutor` (a
  Dask distributed cluster, ``pip install 'rtrl-edge[dask]'``);
  `executor(jobs, scheduler)` picks one.  ``benchmarks/bench_extmarker.py``
  runs its grids on the same executors.
- **The grid**: `Candidate` (learner, cell, hidden, lr) from `grid()`.
  Before anything is dispatched, the calling process checks each against
  the budgets (`check_budgets`): memory exactly (`planning.memory_bytes` of
  the model plus `Forecaster.buffer_bytes`, i.e. `Forecaster.memory_bytes`),
  time with `planning`'s cost model fitted on the calling machine (the
  predicted median of one learning step, as `rtrl-edge plan --step-us`
  reads it; the forecast's h forward steps come on top).  The workers'
  speed never changes which candidates run.
- **One task** (`Task`): one candidate, or a reference, on one channel of one
  recording, evaluated by `evaluate`, a pure module-level function.  The
  recording travels in the task as an array, so a CSV file only needs to be
  readable where `tune` is called.
- `tune()` builds the tasks, maps them and aggregates a `TuneResult`.

Scoring.  Each channel k of a recording (T, c) is forecast h samples ahead
from all c channels, the target first -- the model `rtrl-edge run` builds
(``OnlineRNN(c, hidden, 1, learner=, cell=, optimizer="sgd", lr=, clip=1.0,
normalize=True, seed=0)`` in ``Forecaster(net, h, delta=True)``) -- causally:
the forecast made at t is learnt from at t + h.  The first `WARMUP` of the
recording (at least h samples) is not scored; on the rest,

    ratio = RMSE(forecast) / RMSE(repeating the last value)

The score is the mean ratio over a recording's channels, averaged over the
recordings: below 1 beats doing nothing.  A channel whose last value is never
wrong (constant) is left out.  References, scored the same way: the last
value (1 by definition) and `Forecaster.auto`, the untuned mixture `run`
uses when no model flag is given.

Determinism.  Every model is seeded and every task is computed in one thread
by the same compiled code, so serial, local and Dask runs of the same grid
on the same machine give bitwise identical scores (the tests check this).
On Dask workers of another machine the scores are identical only if they run
the same build of rtrl_edge on the same kind of CPU (``RTRL_EDGE_NATIVE=1``
builds are tuned for the CPU that built them).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import planning
from .executors import (ByName, DaskExecutor, LocalExecutor, SchedulerError, SerialExecutor,
                        check_scheduler_url, executor)
from .executors import executor as _make_executor   # `tune` has a parameter of that name
from .forecast import Forecaster

__all__ = ["ByName", "Candidate", "DaskExecutor", "LocalExecutor", "NothingFits", "SchedulerError",
           "SerialExecutor", "TuneResult", "check_budgets", "check_scheduler_url",
           "evaluate", "executor", "grid", "tune"]

#: (learner, cell) pairs of the grid and the hidden sizes tried for each:
#: exact RTRL's n^4 step stops at 32; the diag cell is cheapest and pairs its units
SIZES: Dict[Tuple[str, str], Tuple[int, ...]] = {
    ("rtrl", "elman"): (8, 16, 32), ("snap1", "elman"): (8, 16, 32, 64),
    ("uoro", "elman"): (8, 16, 32, 64), ("rtrl", "diag"): (16, 32, 64, 128)}
LEARNERS: Tuple[Tuple[str, str], ...] = tuple(SIZES)
LRS = (0.003, 0.01, 0.03)
#: --quick: each learner's two smallest sizes, one learning rate
QUICK_SIZES, QUICK_LRS = 2, (0.01,)
#: what `rtrl-edge run` uses unless told otherwise (tests check they agree)
OPTIMIZER, SEED, CLIP = "sgd", 0, 1.0
WARMUP = 0.2                       # fraction of each recording not scored
MIN_SCORED = 20                    # samples a recording must leave to score


class NothingFits(ValueError):
    """No candidate of the grid is within the budgets."""


# --------------------------------------------------------------------------
# the grid and the budgets
# --------------------------------------------------------------------------

class Candidate(NamedTuple):
    """One configuration of the grid."""
    learner: str
    cell: str
    hidden: int
    lr: float


class Sized(NamedTuple):
    """A candidate with its exact bytes and predicted step time."""
    candidate: Candidate
    memory_bytes: int
    step_us: Optional[float]   # None without a time budget
    skipped: str               # "" if within the budgets, else why not


def grid(quick: bool = False, learners=None, hidden=None, lrs=None) -> List[Candidate]:
    """Every combination of `learners` ((learner, cell) pairs, default
    `LEARNERS`), hidden sizes (`hidden` for all, default each learner's
    `SIZES`) and learning rates (`lrs`, default `LRS`); `quick`: the two
    smallest sizes of each learner and one rate (`QUICK_SIZES`, `QUICK_LRS`)."""
    learners = LEARNERS if learners is None else learners
    lrs = (QUICK_LRS if quick else LRS) if lrs is None else lrs
    out = []
    for l, c in learners:
        sizes = SIZES.get((l, c), (8, 16)) if hidden is None else hidden
        for n in (sizes[:QUICK_SIZES] if quick and hidden is None else sizes):
            out += [Candidate(l, c, int(n), float(lr)) for lr in lrs]
    return out


def check_budgets(candidates: Sequence[Candidate], n_in: int, horizon: int, *,
                  memory_bytes: Optional[int] = None, step_us: Optional[float] = None
                  ) -> List[Sized]:
    """Each candidate's exact memory (model + forecaster window) and, with a
    time budget, predicted step time; `skipped` says which budget it exceeds.
    Raises `NothingFits` (naming the smallest figures) when none is within."""
    sized = []
    for c in candidates:
        mem = planning.memory_bytes(n_in, c.hidden, 1, learner=c.learner, cell=c.cell,
                                    optimizer=OPTIMIZER) \
            + Forecaster.buffer_bytes(n_in, 1, horizon)
        us = None
        if step_us is not None:
            a, b = planning.calibrate(c.learner, c.cell, n_in, 1, optimizer=OPTIMIZER)
            us = a + b * planning.work(n_in, c.hidden, 1, learner=c.learner, cell=c.cell)
        why = []
        if memory_bytes is not None and mem > memory_bytes:
            why.append("memory")
        if step_us is not None and us > step_us:
            why.append("time")
        sized.append(Sized(c, mem, us, " and ".join(why)))
    if sized and all(s.skipped for s in sized):
        least = min(s.memory_bytes for s in sized)
        parts = []
        if memory_bytes is not None:
            parts.append(f"the smallest needs {least:,} bytes (budget {memory_bytes:,})")
        if step_us is not None:
            fastest = min(s.step_us for s in sized)
            parts.append(f"the fastest step is predicted at {fastest:.1f} us here "
                         f"(budget {step_us:g} us)")
        raise NothingFits(f"no candidate of the grid fits the budgets: {'; '.join(parts)}")
    return sized


# --------------------------------------------------------------------------
# one task
# --------------------------------------------------------------------------

class Task(NamedTuple):
    """`what` -- a Candidate, or ("auto", hidden) for the mixture -- forecasting
    channel `target` of `data` (T, c) float64, `horizon` ahead, scored from
    target time `start` on."""
    what: object
    data: np.ndarray
    target: int
    horizon: int
    start: int


class Outcome(NamedTuple):
    """Sums over the scored samples of one task."""
    sse: float                 # squared forecast errors (inf if a forecast was not finite)
    sse_last: float            # squared errors of repeating the last value
    scored: int
    recoveries: int            # divergence-guard recoveries and rejected samples


def _forecaster(what, n_in: int, horizon: int):
    if isinstance(what, Candidate):
        from .model import OnlineRNN
        net = OnlineRNN(n_in, what.hidden, 1, learner=what.learner, cell=what.cell,
                        optimizer=OPTIMIZER, lr=what.lr, clip=CLIP, normalize=True, seed=SEED)
        return Forecaster(net, horizon, delta=True)
    from .auto import AutoForecaster
    return AutoForecaster(n_in, 1, horizon, seed=SEED, hidden=what[1])


def evaluate(task: Task) -> Outcome:
    """Run one task (module doc): feed the channels (target first) through
    a fresh forecaster one sample at a time and sum the squared errors of
    the forecasts whose targets lie at or after `task.start`.  A sample the
    forecaster rejects (its state went non-finite) resets it, as the online
    loop does, and its forecast falls back to the last value."""
    data, k, h, start = task.data, task.target, task.horizon, task.start
    c = data.shape[1]
    x = np.ascontiguousarray(data[:, [k] + [i for i in range(c) if i != k]])
    fc = _forecaster(task.what, c, h)
    preds = np.empty(len(x))
    recoveries = 0
    for t in range(len(x)):
        try:
            preds[t] = fc.update(x[t], x[t, :1])[0]
        except FloatingPointError:
            fc.reset()
            recoveries += 1
            preds[t] = x[t, 0]
    y = x[:, 0]
    made = slice(start - h, len(x) - h)            # forecasts of the scored targets
    err, last = preds[made] - y[start:], y[made] - y[start:]
    sse = float(np.dot(err, err)) if np.isfinite(err).all() else math.inf
    net = getattr(fc, "net", None)
    if net is not None:
        recoveries += int(net.stats["divergence_recoveries"])
    return Outcome(sse, float(np.dot(last, last)), len(err), recoveries)


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

class TuneResult(NamedTuple):
    """What `tune` found.  `rows`: one dict per candidate (learner, cell,
    hidden, lr, memory_bytes, step_us, skipped, score, per_recording,
    recoveries, diverged), ranked: scored ones best first (a candidate with a
    non-finite forecast scores inf: diverged), then the skipped ones.
    `chosen`: the best row within the budgets (None if every one diverged)."""
    horizon: int
    budgets: dict
    recordings: list
    rows: list
    references: dict
    chosen: Optional[dict]

    @property
    def score(self) -> Optional[float]:
        return self.chosen["score"] if self.chosen else None

    def to_dict(self) -> dict:
        """Everything as plain data (None where nothing was measured;
        inf for a candidate whose forecasts went non-finite)."""
        return dict(horizon=self.horizon, warmup=WARMUP, budgets=self.budgets,
                    optimizer=OPTIMIZER, seed=SEED, recordings=self.recordings,
                    chosen=self.chosen and {k: self.chosen[k] for k in
                                            ("learner", "cell", "hidden", "lr")},
                    score=self.score, references=self.references, candidates=self.rows)


def _scored_start(T: int, horizon: int) -> int:
    return max(horizon, int(math.ceil(WARMUP * T)))


def check_recordings(recordings: Mapping[str, np.ndarray], horizon: int
                     ) -> Dict[str, Tuple[np.ndarray, List[int]]]:
    """Each recording as float64 (T, c) and the channels it scores (those
    whose last value is not always right).  ValueError, naming the
    recording, for a bad shape, non-finite values, a recording too short for
    the horizon and the warm-up, one with nothing to forecast, or recordings
    with different numbers of channels."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    if not recordings:
        raise ValueError("no recording to tune on")
    out = {}
    for name, data in recordings.items():
        data = np.asarray(data, dtype=np.float64)
        if data.ndim == 1:
            data = data[:, None]
        if data.ndim != 2 or data.shape[1] < 1:
            raise ValueError(f"recording {name!r}: expected shape (T, channels), "
                             f"got {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError(f"recording {name!r} holds NaN or inf")
        T = len(data)
        start = _scored_start(T, horizon)
        if T - start < MIN_SCORED:
            raise ValueError(f"recording {name!r} has {T} samples: horizon {horizon} and the "
                             f"warm-up (the first {WARMUP:.0%}) leave fewer than {MIN_SCORED} "
                             f"to score")
        changes = data[start:] - data[start - horizon:T - horizon]
        channels = [k for k in range(data.shape[1]) if np.any(changes[:, k])]
        if not channels:
            raise ValueError(f"recording {name!r} never changes over {horizon} samples: "
                             f"nothing to forecast")
        out[name] = (np.ascontiguousarray(data), channels)
    widths = sorted({d.shape[1] for d, _ in out.values()})
    if len(widths) > 1:
        raise ValueError(f"the recordings have different numbers of channels ({widths}); "
                         f"one model must read them all")
    return out


def tune(recordings: Mapping[str, np.ndarray], horizon: int, *,
         memory_bytes: Optional[int] = None, step_us: Optional[float] = None,
         candidates: Optional[Sequence[Candidate]] = None, quick: bool = False,
         executor=None, jobs: Optional[int] = None, progress=None) -> TuneResult:
    """Evaluate the grid on `recordings` ({name: array (T, channels)}) and
    rank it (module doc).

    `candidates` defaults to `grid(quick)`; those outside `memory_bytes` /
    `step_us` are skipped before anything runs (`NothingFits` if all are).
    The tasks run on `executor` (default: `executor(jobs)`, every core);
    `progress(done, total)` is called as tasks finish.  ValueError for bad
    recordings (`check_recordings`).
    """
    data = check_recordings(recordings, horizon)
    n_in = next(iter(data.values()))[0].shape[1]
    candidates = grid(quick) if candidates is None else list(candidates)
    sized = check_budgets(candidates, n_in, horizon, memory_bytes=memory_bytes,
                          step_us=step_us)
    from .auto import DEFAULT_HIDDEN, AutoForecaster
    # the longest tasks first, so that no worker is left with one at the end
    fits = sorted((s.candidate for s in sized if not s.skipped), key=lambda c: -planning.work(
        n_in, c.hidden, 1, learner=c.learner, cell=c.cell))
    whats = [("auto", DEFAULT_HIDDEN)] + fits
    tasks, keys = [], []
    for what in whats:
        for name, (d, channels) in data.items():
            for k in channels:
                tasks.append(Task(what, d, k, horizon, _scored_start(len(d), horizon)))
                keys.append((what, name))
    own = executor is None
    ex = _make_executor(jobs) if own else executor
    try:
        outcomes = ex.map(evaluate, tasks, progress=progress)
    finally:
        if own:
            ex.close()
    ratios: Dict[object, Dict[str, list]] = {}
    recoveries: Dict[object, int] = {}
    for key, o in zip(keys, outcomes):
        ratio = math.sqrt(o.sse / o.sse_last) if math.isfinite(o.sse) else math.inf
        ratios.setdefault(key[0], {}).setdefault(key[1], []).append(ratio)
        recoveries[key[0]] = recoveries.get(key[0], 0) + o.recoveries

    def scores(what):
        per = {name: float(np.mean(r)) for name, r in ratios[what].items()}
        return float(np.mean(list(per.values()))), per

    rows = []
    for s in sized:
        c = s.candidate
        row = dict(learner=c.learner, cell=c.cell, hidden=c.hidden, lr=c.lr,
                   memory_bytes=s.memory_bytes, step_us=s.step_us, skipped=s.skipped,
                   score=None, per_recording={}, recoveries=0, diverged=False)
        if not s.skipped:
            row["score"], row["per_recording"] = scores(c)
            row["recoveries"] = recoveries[c]
            row["diverged"] = not math.isfinite(row["score"])
        rows.append(row)
    rows.sort(key=lambda r: (bool(r["skipped"]), r["score"] or 0.0,
                             r["memory_bytes"], r["learner"], r["cell"], r["hidden"], r["lr"]))
    best = rows[0] if rows[0]["score"] is not None and math.isfinite(rows[0]["score"]) \
        else None
    auto_score, auto_per = scores(("auto", DEFAULT_HIDDEN))
    auto_bytes = AutoForecaster(n_in, 1, horizon, seed=SEED, hidden=DEFAULT_HIDDEN).memory_bytes
    references = {
        "last value": dict(score=1.0, per_recording={n: 1.0 for n in data}),
        "auto": dict(score=auto_score, per_recording=auto_per, hidden=DEFAULT_HIDDEN,
                     memory_bytes=auto_bytes,
                     within_memory=memory_bytes is None or auto_bytes <= memory_bytes,
                     recoveries=recoveries[("auto", DEFAULT_HIDDEN)]),
    }
    recs = [dict(name=name, samples=len(d), channels=d.shape[1], scored_channels=ch,
                 scored_from=_scored_start(len(d), horizon)) for name, (d, ch) in data.items()]
    return TuneResult(horizon, dict(memory_bytes=memory_bytes, step_us=step_us), recs, rows,
                      references, best)

