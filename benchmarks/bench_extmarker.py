"""Respiratory-motion forecasting under the protocol of Pohl et al. (CMPB 2025,
arXiv 2403.01607), every learner of the library beside the study's published
table, causal and (clearly labelled) in the study's non-causal setting.

Protocol (``extmarker.py`` has the details): the 9 ExtMarker sessions, input
= the 9 standardised coordinates of the last L samples, target = the 9
coordinates h samples ahead, h = 1 ... 21 (0.1 ... 2.1 s at 10 Hz); online
learning from the first sample to the last; hyper-parameters chosen per
session, horizon and method by the validation nRMSE (targets in samples
300-600, i.e. 30-60 s); then scored on the test part (targets from 600 on)
over several initialisations; everything averaged over seeds, sessions and
horizons, as the study does.

Methods:

  last value            the forecast of z_{t+h} is z_t.
  LMS                   the study's multivariate LMS (``extmarker.lms``).
  linear regression     offline least squares on the pairs whose target lies
                        before the scored window (validation: before 300;
                        test: before 600), then fixed.
  ridge                 the same pairs, ridge-regularised (``extmarker.
                        ridge_regression``; the bias not penalised); causal
                        setting only.
  auto, no tuning       ``rtrl_edge.Forecaster.auto(9, 9, h, seed=s)`` fed
                        ``update(z_t, z_t)`` (``extmarker.auto``): a mixture of
                        last-value, linear, seasonal and RNN members weighted
                        online.  ONE configuration for every session and
                        horizon: it takes no part in the validation search,
                        only in the test runs (over the test seeds).  Causal
                        setting only.
  rtrl, snap1, snap2, uoro, tbptt, diag
                        ``rtrl_edge.OnlineRNN`` (tanh Elman cell, linear
                        readout, sgd, gradient-norm clipping at 100), snap2
                        with W_rec density 0.1, tbptt with window 16, diag =
                        cell="diag" with exact traces.

Two settings:

  non-causal  the study's: the model is updated at time t with z_{t+h},
              before that target could have been observed.  Grid as the
              study's code at 10 Hz: L in {12, 24, 36, 48, 60}, lr in
              {0.005, 0.01, 0.02}, n in {10, 25, 40} for rtrl and {30, 60,
              ..., 180} for snap1 and uoro; for the learners the study does
              not have, n in {30, 90, 180} for diag, {30, 60} for snap2 and
              {30, 60, 90} for tbptt (their cost grows faster); weights from
              N(0, 0.02); LMS lr in {1e-4, 2e-4, 5e-4}.
  causal      ours (DESIGN §3.8): the forecast made at t is learnt from at
              t + h, through ``rtrl_edge.forecast.Forecaster`` with
              delta=True and the library's initialisation.  Grid: L in {3,
              12, 36}, lr in {3e-4, 1e-3, 3e-3, 1e-2}, n in {16, 32} for rtrl
              and {32, 64} for the others; LMS as above, causally; ridge: L
              in {3, 12, 36}, alpha in {0.1, 1, 10, 100}; auto: no grid.

One validation seed per configuration, three test seeds (0-2) for the chosen
one.  A third setting answers "how accurate within a latency budget": the
non-causal choice made only among the configurations whose measured step
takes at most 15.2 µs here (100x below the study's SnAp-1 1.52 ms); every
configuration of the non-causal grids is timed for it, alone in the process,
before the test runs.  ``--quick`` shrinks the grids to one or two points per method and uses
one seed (about 3 minutes on 2 cores); its numbers are indicative only and the
output says so.  Per-step latency is measured after the accuracy runs, alone
in the process (no parallel workers): each distinct chosen configuration is
timed call by call with ``time.perf_counter_ns`` on the longest session.

    python benchmarks/bench_extmarker.py --quick      # a few minutes
    python benchmarks/bench_extmarker.py              # the full grids
    python benchmarks/bench_extmarker.py --quick --no-write --sessions 201205111057
    python benchmarks/bench_extmarker.py --methods auto ridge lms last --modes causal \
        --carry-over                                  # about 10 minutes

The accuracy runs go to ``rtrl_edge.executors``: ``--jobs N``
local worker processes (default: every core), or with ``--scheduler
tcp://HOST:PORT`` the workers of a Dask cluster (``pip install
".[dask]"``), which must see this folder and the data at the same paths (the
same machine, or a shared file system).  The results do not depend on which.

``--methods`` and ``--modes`` run a subset (short names: auto, last, lms,
linreg); ``--carry-over`` then keeps, from the results JSON already written,
the rows this run does not produce -- if that run covered the same sessions,
horizons, seeds and grids -- and marks them in the report with the command
and date that produced them.

This is a benchmark, not a test: nothing asserts on the numbers.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402

import numpy as np  # noqa: E402

import extmarker as em  # noqa: E402

JSON_PATH = os.path.join(common.RESULTS_DIR, "bench_extmarker.json")
PNG_PATH = os.path.join(common.RESULTS_DIR, "bench_extmarker.png")
BEGIN, END = "<!-- bench_extmarker:begin -->", "<!-- bench_extmarker:end -->"
COMMAND = "python benchmarks/bench_extmarker.py"

LAST, LMS, LINREG, RIDGE = "last value", "LMS", "linear regression", "ridge"
AUTO = "auto, no tuning"
LEARNERS = ("rtrl", "snap1", "snap2", "uoro", "tbptt", "diag")
METHODS = (LAST, LMS, LINREG, RIDGE) + LEARNERS + (AUTO,)
#: short names accepted by --methods
ALIASES = {"last": LAST, "lms": LMS, "linreg": LINREG, "auto": AUTO}
SEEDED = LEARNERS + (AUTO,)          # run over the seeds and timed
CAUSAL_ONLY = (RIDGE, AUTO)
MODES = ("non-causal", "causal")
BUDGET_US = 1520.0 / 100       # 100x below the study's SnAp-1 1.52 ms per step
BUDGET = f"non-causal, <= {BUDGET_US:.1f} µs"   # the non-causal choice within that budget
LEARNER_OPTIONS = {"snap2": dict(rec_density=0.1), "tbptt": dict(window=16)}
# the study's label of each method, where it has one
STUDY_NAME = {"rtrl": "RTRL", "uoro": "UORO", "snap1": "SnAp-1", LMS: "LMS"}
TARGET_NRMSE = 0.157            # the study's best (SnAp-1), averaged over horizons
TARGET_SPEEDUP = 100.0          # below the study's SnAp-1 1.52 ms per step
TARGET_AUTO = 0.60              # auto's causal nRMSE, averaged over horizons
AUTO_BASELINES = (LMS, RIDGE, LAST)   # auto at or below the best of these at every horizon
CARRIED = "†"                   # marks rows carried over from an earlier run
METRICS = ("nrmse", "rmse", "mae", "max", "jitter")

_BIG = (30, 60, 90, 120, 150, 180)
_STUDY_L, _STUDY_LR = (12, 24, 36, 48, 60), (0.005, 0.01, 0.02)
_LMS = dict(L=_STUDY_L, lr=(1e-4, 2e-4, 5e-4))
GRIDS = {
    "full": {
        "non-causal": {
            LMS: _LMS,
            LINREG: dict(L=_STUDY_L),
            **{k: dict(L=_STUDY_L, lr=_STUDY_LR, n=ns)
               for k, ns in (("rtrl", (10, 25, 40)), ("snap1", _BIG), ("uoro", _BIG),
                             ("diag", (30, 90, 180)), ("snap2", (30, 60)),
                             ("tbptt", (30, 60, 90)))},
        },
        "causal": {
            LMS: _LMS,
            LINREG: dict(L=_STUDY_L),
            RIDGE: dict(L=(3, 12, 36), alpha=(0.1, 1, 10, 100)),
            **{k: dict(L=(3, 12, 36), lr=(0.0003, 0.001, 0.003, 0.01),
                       n=(16, 32) if k == "rtrl" else (32, 64)) for k in LEARNERS},
        },
    },
    "quick": {
        "non-causal": {
            LMS: dict(L=(12,), lr=(2e-4, 5e-4)),
            LINREG: dict(L=(12, 24)),
            **{k: dict(L=(12,), lr=(0.01, 0.02), n=ns)
               for k, ns in (("rtrl", (25,)), ("snap1", (90,)), ("uoro", (90,)),
                             ("diag", (90,)), ("snap2", (30,)), ("tbptt", (30,)))},
        },
        "causal": {
            LMS: dict(L=(12,), lr=(2e-4, 5e-4)),
            LINREG: dict(L=(12, 24)),
            RIDGE: dict(L=(12,), alpha=(1, 10)),
            **{k: dict(L=(12,), lr=(0.001, 0.003), n=(16,) if k == "rtrl" else (32,))
               for k in LEARNERS},
        },
    },
}
SEEDS = {"full": dict(valid=(0,), test=(0, 1, 2)),
         "quick": dict(valid=(0,), test=(0,))}


def configs(grid):
    """Every hyper-parameter combination of a grid, as dicts."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def config_label(cfg):
    return ", ".join(f"{k}={cfg[k]:g}" for k in sorted(cfg))


def pairs(methods, modes):
    """The (method, mode) pairs a run covers: ridge and auto are causal only."""
    return [(m, md) for m in methods for md in modes
            if md == "causal" or m not in CAUSAL_ONLY]


# --------------------------------------------------------------------------
# one run: a method with one configuration on one session, one horizon, one seed
# --------------------------------------------------------------------------

_SESSIONS = {}      # name -> (Session, z, mu, sg); filled in each process
_WINDOWS = {}       # (name, L) -> X


def _session(name):
    if name not in _SESSIONS:
        (s,) = em.load_sessions([name])
        z, mu, sg = em.standardise(s.xyz)
        _SESSIONS[name] = (s, z, mu, sg)
    return _SESSIONS[name]


def _windows(name, L):
    key = (name, L)
    if key not in _WINDOWS:
        if len(_WINDOWS) > 64:
            _WINDOWS.clear()
        _WINDOWS[key] = em.windows(_session(name)[1], L)
    return _WINDOWS[key]


def forecasts(method, mode, cfg, name, h, seed, phase, timer=None):
    """Standardised forecasts (T, 9) of one run, and the network's
    divergence count (0 for the baselines)."""
    s, z, mu, sg = _session(name)
    causal = mode == "causal"
    end = em.VALID if phase == "valid" else len(z)   # nothing after is scored
    z = z[:end]
    if method == LAST:
        return em.last_value(z, h), 0
    if method == AUTO:
        preds, fc = em.auto(z, h, seed, timer=timer)
        return preds, em.auto_divergences(fc)
    X = _windows(name, cfg["L"])[:end]
    if method == LMS:
        return em.lms(X, z, h, cfg["lr"], causal), 0
    if method == LINREG:
        return em.linear_regression(X, z, h, em.split(phase, len(s)).start), 0
    if method == RIDGE:
        return em.ridge_regression(X, z, h, em.split(phase, len(s)).start, cfg["alpha"]), 0
    net = em.make_net(method, X.shape[1], cfg["n"], cfg["lr"], seed,
                      init="library" if causal else "study", **LEARNER_OPTIONS.get(method, {}))
    preds = em.rnn(net, X, z, h, causal, delta=causal, timer=timer)
    return preds, int(net.stats["divergence_recoveries"])


def run_task(task):
    """One run; `task` = (method, mode, frozen config, session, h, seed, phase)."""
    method, mode, cfg, name, h, seed, phase = task
    preds, div = forecasts(method, mode, dict(cfg), name, h, seed, phase)
    s, z, mu, sg = _session(name)
    m = em.score(preds, s, mu, sg, phase)
    if not all(np.isfinite(v) for v in m.values()):
        m = {k: float("inf") for k in m}
    m["divergences"] = div
    return task, m


def run_tasks(tasks, ex, what, t0):
    """Run tasks on `ex`, an executor of ``rtrl_edge.executors`` (this process,
    local worker processes or a Dask cluster), with progress on stderr;
    returns {task: metrics}, in task order."""
    step = max(1, len(tasks) // 20)

    def progress(done, total):
        if done % step == 0:
            _progress(what, done, total, t0)
    from rtrl_edge.executors import ByName, DaskExecutor
    # Dask workers import this file from HERE; local workers are forked from this process
    fn = ByName("bench_extmarker", "run_task", (HERE,)) if isinstance(ex, DaskExecutor) \
        else run_task
    return dict(ex.map(fn, tasks, progress=progress))


def _progress(what, done, total, t0):
    print(f"  {what}: {done}/{total} runs, {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)


def _freeze(cfg):
    return tuple(sorted(cfg.items()))


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------

def select(methods, modes, names, horizons, grids, seeds, ex, t0):
    """Validation: the configuration of least mean validation nRMSE per
    (method, mode, session, horizon).  Returns the choices and the validation
    scores of every configuration."""
    tasks = []
    for method, mode in pairs(methods, modes):
        if method in (LAST, AUTO):            # nothing to choose
            continue
        for cfg in configs(grids[mode][method]):
            run_seeds = seeds if method in LEARNERS else (0,)
            for name, h, seed in itertools.product(names, horizons, run_seeds):
                tasks.append((method, mode, _freeze(cfg), name, h, seed, "valid"))
    results = run_tasks(tasks, ex, "validation", t0)
    scores = defaultdict(lambda: defaultdict(list))
    for task, m in results.items():
        method, mode, cfg, name, h, seed, _ = task
        scores[(method, mode, name, h)][cfg].append(m["nrmse"])
    chosen = {}
    for key, by_cfg in scores.items():
        mean = {c: float(np.mean(v)) for c, v in by_cfg.items()}
        best = min(mean, key=lambda c: (mean[c], c))
        chosen[key] = dict(config=dict(best), valid_nrmse=mean[best],
                           at_edge=_at_edge(dict(best), grids[key[1]][key[0]]))
    for method, mode in pairs(methods, modes):
        if method in (LAST, AUTO):            # one configuration for every session and horizon
            for name, h in itertools.product(names, horizons):
                chosen[(method, mode, name, h)] = dict(config={}, valid_nrmse=None, at_edge=[])
    return chosen, scores


def _at_edge(cfg, grid):
    """Hyper-parameters chosen at an end of their grid (of three values or
    more): the optimum may lie outside it."""
    return [k for k, v in cfg.items() if len(grid[k]) > 2 and v in (min(grid[k]), max(grid[k]))]


def evaluate(chosen, seeds, ex, t0):
    """Test scores of every chosen configuration over the test seeds."""
    tasks = []
    for (method, mode, name, h), c in chosen.items():
        run_seeds = seeds if method in SEEDED else (0,)
        for seed in run_seeds:
            tasks.append((method, mode, _freeze(c["config"]), name, h, seed, "test"))
    raw = run_tasks(tasks, ex, "test", t0)
    per = defaultdict(list)
    for task, m in raw.items():
        method, mode, cfg, name, h, seed, _ = task
        per[(method, mode, name, h)].append(m)
    return {key: {k: float(np.mean([m[k] for m in ms])) for k in METRICS + ("divergences",)}
            | {"nrmse_per_seed": [m["nrmse"] for m in ms]}
            for key, ms in per.items()}


def time_configs(chosen, methods, modes, steps, t0):
    """Per-step latency of every distinct chosen configuration (and horizon,
    for the causal setting, whose forecast costs h forward steps), alone in
    this process, on the longest session; returns per (method, mode) the
    choice-weighted median and the worst median, in µs, and memory."""
    longest = max(_SESSIONS, key=lambda k: len(_SESSIONS[k][0]))
    out = {}
    for method, mode in itertools.product(methods, modes):
        if method not in SEEDED:
            continue
        picks = Counter()
        for (m, md, name, h), c in chosen.items():
            if m == method and md == mode:
                picks[(_freeze(c["config"]), h if mode == "causal" else 0)] += 1
        if not picks:
            continue
        medians, p99s, weights, memory = [], [], [], []
        for (cfg, h), count in sorted(picks.items()):
            cfg = dict(cfg)
            timer = np.zeros(len(_session(longest)[0]), np.int64)
            run_h = h or 1
            preds, _ = forecasts(method, mode, cfg, longest, run_h, 0, "test", timer=timer)
            ns = timer[:min(steps, len(timer) - run_h)]
            ns = ns[len(ns) // 10:]                      # warm-up
            medians.append(np.median(ns) / 1e3)
            p99s.append(np.percentile(ns, 99) / 1e3)
            weights.append(count)
            memory.append(_memory_bytes(method, cfg, run_h))
        order = np.argsort(medians)
        cum = np.cumsum(np.array(weights)[order])
        med = float(np.array(medians)[order][np.searchsorted(cum, cum[-1] / 2)])
        out[(method, mode)] = dict(
            median_us=med, worst_median_us=float(max(medians)),
            p99_us_at_median_config=float(np.array(p99s)[order][np.searchsorted(cum, cum[-1] / 2)]),
            configs_timed=len(medians),
            memory_bytes_median=int(np.median(np.repeat(memory, weights))),
            memory_bytes_max=int(max(memory)))
        _progress(f"timing {method} {mode}", len(medians), len(medians), t0)
    return out


def _memory_bytes(method, cfg, h):
    """`memory_bytes` of a learner's network, or of the whole auto forecaster."""
    if method == AUTO:
        from rtrl_edge import Forecaster
        return Forecaster.auto(em.DIM, em.DIM, h).memory_bytes
    return em.make_net(method, em.DIM * cfg["L"], cfg["n"], 0.01, 0, init="library",
                       **LEARNER_OPTIONS.get(method, {})).memory_bytes


def time_grid(methods, grid_by_method, steps, t0):
    """Median µs of one non-causal learning step (``OnlineRNN.step``; its cost
    does not depend on h) for every (L, n) of every learner's grid, alone in
    this process, on the longest session."""
    longest = max(_SESSIONS, key=lambda k: len(_SESSIONS[k][0]))
    out = {}
    for method in methods:
        if method not in LEARNERS:
            continue
        grid = grid_by_method[method]
        for L, n in itertools.product(grid["L"], grid["n"]):
            cfg = dict(L=L, n=n, lr=grid["lr"][0])
            timer = np.zeros(len(_session(longest)[0]), np.int64)
            forecasts(method, "non-causal", cfg, longest, 1, 0, "test", timer=timer)
            ns = timer[:min(steps, len(timer) - 1)]
            us = float(np.median(ns[len(ns) // 10:]) / 1e3)
            for lr in grid["lr"]:
                out[(method, _freeze(dict(cfg, lr=lr)))] = us
        _progress(f"grid timing {method}", len(grid["L"]) * len(grid["n"]),
                  len(grid["L"]) * len(grid["n"]), t0)
    return out


def select_within_budget(scores, latency, methods, names, horizons):
    """Per (learner, session, horizon): the configuration of least validation
    nRMSE among those whose non-causal step takes at most BUDGET_US.  A
    learner is left out if some (session, horizon) has no such configuration."""
    chosen = {}
    for method in methods:
        if method not in LEARNERS:
            continue
        picks = {}
        for name, h in itertools.product(names, horizons):
            fast = {c: float(np.mean(v)) for c, v in scores[(method, "non-causal", name, h)].items()
                    if latency[(method, c)] <= BUDGET_US}
            if not fast:
                picks = None
                break
            best = min(fast, key=lambda c: (fast[c], c))
            picks[(method, BUDGET, name, h)] = dict(config=dict(best), valid_nrmse=fast[best],
                                                    at_edge=[])
        chosen.update(picks or {})
    return chosen


def aggregate(test, methods, modes, names, horizons):
    """Per (method, mode): every metric averaged over sessions and horizons
    (each session's number already the mean over seeds); and per horizon."""
    table, by_h = {}, {}
    for method, mode in itertools.product(methods, modes):
        if (method, mode, names[0], horizons[0]) not in test:
            continue
        rows = [test[(method, mode, n, h)] for n in names for h in horizons]
        table[(method, mode)] = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
        table[(method, mode)]["divergences"] = int(sum(r["divergences"] for r in rows))
        by_h[(method, mode)] = {h: float(np.mean([test[(method, mode, n, h)]["nrmse"]
                                                  for n in names])) for h in horizons}
    return table, by_h




# --------------------------------------------------------------------------
# rows of an earlier run (--carry-over)
# --------------------------------------------------------------------------

def ran_pairs(methods, modes):
    """Every (method, setting) pair a run with these methods and modes
    produces, the latency-budget setting included."""
    out = set(pairs(methods, modes))
    if "non-causal" in modes:
        out |= {(m, BUDGET) for m in methods if m in LEARNERS}
    return out


def carry_over(path, ran, names, horizons, seeds, grids, quick):
    """The rows of an earlier run of this script (its JSON at `path`) for
    every (method, setting) pair outside `ran`: (test, chosen, timing,
    grid_us, validation, provenance), keyed as this run's.  Exits if that run
    covered other sessions, horizons or test seeds, was of the other mode
    (quick / full), or searched another grid for a pair it would lend."""
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--carry-over: cannot read {path}: {exc}")
    if (bool(old.get("quick")) != quick or [s["name"] for s in old["sessions"]] != names
            or old["horizons"] != horizons or old["seeds"]["test"] != list(seeds["test"])):
        raise SystemExit(f"--carry-over: {path} covers other sessions, horizons, test seeds "
                         "or mode than this run; run those methods again instead")
    env = old["environment"]
    earlier = dict(command=old["command"], date=env["date"], git=env["git"],
                   cpu=env["cpu_model"])
    test, chosen, provenance = {}, {}, {}
    for r in old["runs"]:
        pair = (r["method"], r["mode"])
        if pair in ran:
            continue
        grid_mode = "non-causal" if r["mode"] == BUDGET else r["mode"]
        grid = old["grids"][grid_mode].get(r["method"], {})
        now = {k: list(v) for k, v in grids[grid_mode].get(r["method"], {}).items()}
        if grid != now:
            raise SystemExit(f"--carry-over: {r['method']}, {r['mode']} was chosen on another "
                             f"grid in {path} ({grid}, now {now}); run it again instead")
        key = pair + (r["session"], r["horizon"])
        test[key] = {k: r[k] for k in METRICS + ("divergences", "nrmse_per_seed")}
        chosen[key] = dict(config=r["config"], valid_nrmse=r["valid_nrmse"],
                           at_edge=[] if r["mode"] == BUDGET else _at_edge(r["config"], grid))
        provenance[pair] = old.get("provenance", {}).get("|".join(pair), earlier)
    timing = {tuple(k.split("|")): v for k, v in old["timing"].items()
              if tuple(k.split("|")) in provenance}
    grid_us = {(g["method"], _freeze(g["config"])): g["median_us"]
               for g in old["grid_latency_us"] if (g["method"], BUDGET) in provenance}
    validation = [v for v in old["validation"] if (v["method"], v["mode"]) in provenance]
    return test, chosen, timing, grid_us, validation, provenance


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def _fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def _us(v):
    return "—" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def _name(method, mode, carried):
    return f"{method} {CARRIED}" if (method, mode) in carried else method


def format_main_table(table, timing, methods, carried=()):
    lines = ["| setting | method | nRMSE | RMSE mm | MAE mm | max mm | jitter mm | "
             "µs / step | vs published ms / step |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for study, p in em.PUBLISHED.items():
        lines.append(f"| published (non-causal; MATLAB, i7-13700) | {study} | {p['nrmse']:.3f} | "
                     f"{p['rmse']:.3f} | {p['mae']:.3f} | {p['max']:.2f} | {p['jitter']:.3f} | "
                     f"{p['ms'] * 1000:g} | — |")
    labels = {"non-causal": "ours, **non-causal** (the study's setting)",
              BUDGET: f"ours, non-causal, configurations within {BUDGET_US:.1f} µs / step",
              "causal": "ours, **causal**"}
    for mode in ("non-causal", BUDGET, "causal"):
        label = labels[mode]
        for method in methods:
            if (method, mode) not in table:
                continue
            r = table[(method, mode)]
            t = timing.get((method, mode))
            us = None if t is None else t["median_us"]
            study = STUDY_NAME.get(method)
            ratio = "—"
            if study and us:
                ratio = f"{em.PUBLISHED[study]['ms'] * 1000 / us:,.0f}x faster"
            lines.append(f"| {label} | {_name(method, mode, carried)} | {r['nrmse']:.3f} | "
                         f"{r['rmse']:.3f} | {r['mae']:.3f} | {r['max']:.2f} | "
                         f"{r['jitter']:.3f} | {_us(us)} | {ratio} |")
    return "\n".join(lines)


def format_horizon_table(by_h, methods, horizons, carried=()):
    show = [h for h in horizons if h in (1, 2, 3, 5, 7, 10, 14, 17, 21)] or horizons
    lines = ["| setting | method | " + " | ".join(f"{h / 10:.1f} s" for h in show) + " |",
             "|---|---|" + "---:|" * len(show)]
    for mode in ("non-causal", BUDGET, "causal"):
        for method in methods:
            if (method, mode) not in by_h:
                continue
            vals = by_h[(method, mode)]
            lines.append(f"| {mode} | {_name(method, mode, carried)} | "
                         + " | ".join(f"{vals[h]:.3f}" for h in show) + " |")
    return "\n".join(lines)


def auto_margins(by_h, horizons):
    """Per horizon: (auto, {baseline: nRMSE}, the best baseline, auto - best),
    causal, means over sessions and seeds; None without auto or a baseline."""
    have = [b for b in AUTO_BASELINES if (b, "causal") in by_h]
    if (AUTO, "causal") not in by_h or not have:
        return None
    out = {}
    for h in horizons:
        base = {b: by_h[(b, "causal")][h] for b in have}
        best = min(base, key=base.get)
        a = by_h[(AUTO, "causal")][h]
        out[h] = (a, base, best, a - base[best])
    return out


def format_auto_table(by_h, horizons, carried=()):
    margins = auto_margins(by_h, horizons)
    if margins is None:
        return ""
    have = list(next(iter(margins.values()))[1])
    lines = ["| horizon | auto | " + " | ".join(_name(b, "causal", carried) for b in have)
             + " | best of those | auto − best | auto at or below |",
             "|---:|---:|" + "---:|" * len(have) + "---|---:|---|"]
    for h, (a, base, best, d) in margins.items():
        lines.append(f"| {h / 10:.1f} s | {a:.3f} | "
                     + " | ".join(f"{base[b]:.3f}" for b in have)
                     + f" | {best} | {d:+.3f} | {'yes' if d <= 0 else '**no**'} |")
    return ("Auto against the causal baselines, test nRMSE by horizon (mean over sessions "
            "and seeds):\n\n" + "\n".join(lines))


def best_learner(table, mode, methods):
    learners = [m for m in methods if m in LEARNERS and (m, mode) in table]
    return min(learners, key=lambda m: table[(m, mode)]["nrmse"]) if learners else None


def format_targets(table, timing, methods, by_h=None, horizons=()):
    out = []
    best = best_learner(table, "non-causal", methods)
    v = None
    if best is not None:
        v = table[(best, "non-causal")]["nrmse"]
        status = "met" if v <= TARGET_NRMSE else f"MISSED by {v - TARGET_NRMSE:.4f}"
        out.append(f"- Like for like (non-causal), best learner's nRMSE averaged over horizons "
                   f"<= {TARGET_NRMSE}: {best} {v:.4f} -- **{status}**")
        us = timing.get((best, "non-causal"), {}).get("median_us")
        if us is not None:
            budget = em.PUBLISHED["SnAp-1"]["ms"] * 1000 / TARGET_SPEEDUP
            speed = em.PUBLISHED["SnAp-1"]["ms"] * 1000 / us
            status = ("met" if us <= budget else
                      f"MISSED: {speed:.0f}x, {us / budget:.1f}x too slow for "
                      f"{TARGET_SPEEDUP:.0f}x")
            out.append(f"- Its per-step latency at least {TARGET_SPEEDUP:.0f}x below the "
                       f"published SnAp-1 1.52 ms (<= {budget:.1f} µs): {us:.1f} µs, "
                       f"{speed:,.0f}x -- **{status}**")
    bb = best_learner(table, BUDGET, methods)
    if bb is not None:
        bv = table[(bb, BUDGET)]["nrmse"]
        bus = timing.get((bb, BUDGET), {}).get("median_us")
        status = "met" if bv <= TARGET_NRMSE else f"MISSED by {bv - TARGET_NRMSE:.3f}"
        out.append(f"- Both at once: choosing, per session and horizon, only among the "
                   f"configurations whose step takes <= {BUDGET_US:.1f} µs here, the best "
                   f"learner is {bb}, nRMSE {bv:.3f} at {_us(bus)} µs per step -- nRMSE "
                   f"**{status}**")
    cb = best_learner(table, "causal", methods)
    last = table.get((LAST, "causal"), {}).get("nrmse")
    if cb is not None:
        cv = table[(cb, "causal")]["nrmse"]
        extra = f"; repeat-last-value {last:.3f}" if last is not None else ""
        versus = f", {cv - v:+.3f} against the best non-causal" if v is not None else ""
        out.append(f"- Causal (no future target used), as close as it gets: best learner {cb} "
                   f"{cv:.3f}{versus}{extra}")
    if (AUTO, "causal") in table:
        av = table[(AUTO, "causal")]["nrmse"]
        status = "met" if av <= TARGET_AUTO else f"MISSED by {av - TARGET_AUTO:.3f}"
        others = [f"{m} {table[(m, 'causal')]['nrmse']:.3f}"
                  for m in ([cb] if cb else []) + [LMS, RIDGE, LAST] if (m, "causal") in table]
        out.append(f"- Auto, one configuration for every recording and horizon, nothing chosen "
                   f"on validation: causal nRMSE averaged over horizons <= {TARGET_AUTO:.2f}: "
                   f"{av:.3f} -- **{status}** (causal, tuned on validation: "
                   f"{', '.join(others)})")
        margins = auto_margins(by_h or {}, horizons)
        if margins is not None:
            names = ", ".join(next(iter(margins.values()))[1])
            worse = {h: m[3] for h, m in margins.items() if m[3] > 0}
            h_worst = max(margins, key=lambda h: margins[h][3])
            worst = (f"largest margin {margins[h_worst][3]:+.3f} at {h_worst / 10:.1f} s "
                     f"(against {margins[h_worst][2]})")
            status = ("met" if not worse else
                      f"MISSED at {len(worse)} of {len(margins)} horizons ("
                      + ", ".join(f"{h / 10:.1f} s {d:+.3f}" for h, d in worse.items()) + ")")
            out.append(f"- Auto at or below the best of causal {names} at every horizon "
                       f"(mean over sessions and seeds): {len(margins) - len(worse)} of "
                       f"{len(margins)} horizons, {worst} -- **{status}**")
    return "\n".join(out) if out else "no target applies to the methods run."


def format_choices(chosen, methods, modes, grids, carried=()):
    lines = []
    for mode in modes:
        for method in methods:
            if method == LAST:
                continue
            picks = Counter(config_label(c["config"]) for (m, md, _, _), c in chosen.items()
                            if m == method and md == mode)
            if not picks:
                continue
            name = _name(method, mode, carried)
            if method == AUTO:
                lines.append(f"- {mode}, {name}: one configuration "
                             f"(`Forecaster.auto(9, 9, h, seed=s)`) for every session and "
                             f"horizon; nothing chosen on validation")
                continue
            edge = Counter(k for (m, md, _, _), c in chosen.items() if m == method and md == mode
                           for k in c["at_edge"])
            total = sum(picks.values())
            top = "; ".join(f"{cfg} ({n})" for cfg, n in picks.most_common(3))
            edges = ", ".join(f"{k} {n}/{total}" for k, n in sorted(edge.items())) or "none"
            lines.append(f"- {mode}, {name}: {len(configs(grids[mode][method]))} "
                         f"configurations; most chosen: {top}; at a grid edge: {edges}")
    return "\n".join(lines)


def format_scope(args, methods, modes, names, horizons, provenance, this_run):
    """What this command ran, and where the other rows come from."""
    ran = sorted({m for (m, md), p in provenance.items() if p is this_run},
                 key=METHODS.index)
    line = (f"This run: {', '.join(ran)}; settings: {', '.join(modes)}; "
            f"{'all ' if len(names) == 9 else ''}{len(names)} sessions, horizons "
            f"{horizons[0]}-{horizons[-1]} samples ({len(horizons)})"
            + ("." if set(ran) == set(METHODS) and len(modes) == len(MODES)
               else " (a subset of the methods and settings: `--methods` / `--modes`)."))
    carried = {}
    for pair, p in provenance.items():
        if p is not this_run:
            carried.setdefault((p["command"], p["date"], p["git"], p["cpu"]), []).append(pair)
    for (command, date, git, cpu), ps in carried.items():
        line += (f"  Rows marked {CARRIED} were not run by this command: carried over "
                 f"(`--carry-over`) from the results of `{command}` ({date[:10]}, {git}, "
                 f"{cpu}), their scores, choices and timings as that run measured them "
                 f"(scores rounded to 5 significant digits): "
                 + ", ".join(f"{m} {md}" for m, md in sorted(
                     ps, key=lambda p: (METHODS.index(p[0]), p[1]))) + ".")
    return line


def format_notes(args, sessions, seeds, timing, table, elapsed, methods):
    divs = ", ".join(f"{m} {md} {table[(m, md)]['divergences']}" for md in MODES
                     for m in methods if m in SEEDED and (m, md) in table)
    lines = [
        f"Sessions: {len(sessions)} ({', '.join(f'{s.name} ({len(s)})' for s in sessions)}; "
        f"samples in brackets); horizons {args['horizons'][0]}-{args['horizons'][-1]} samples; "
        f"validation seeds {list(seeds['valid'])}, test seeds {list(seeds['test'])}; "
        f"divergence-guard recoveries in test runs (auto: its RNN members', plus member "
        f"forecasts set aside as non-finite): {divs or 'none run'}.",
        "µs / step: one `OnlineRNN.step` call (non-causal) or one `Forecaster.update` call "
        "(causal: a learning step plus h forward steps of a state copy; auto: one "
        "`AutoForecaster.update`, every member), at the chosen "
        "configurations, median over the (session, horizon) choices of each configuration's "
        "median; LMS, linear regression and ridge are numpy loops, not timed.  Worst chosen "
        "configuration's median / p99 at the median one: " + "; ".join(
            f"{m} {md} {t['worst_median_us']:.1f} / {t['p99_us_at_median_config']:.1f} µs"
            for (m, md), t in sorted(timing.items())) + ".",
        "Memory (`memory_bytes`; auto: the whole mixture) at the chosen configurations, "
        "median / largest: " + "; ".join(
            f"{m} {md} {t['memory_bytes_median'] / 1024:,.0f} / "
            f"{t['memory_bytes_max'] / 1024:,.0f} KiB"
            for (m, md), t in sorted(timing.items())) + ".",
        f"Run time of this command {elapsed:.0f} s.",
    ]
    return "\n\n".join(lines)


DIFFERENCES = """Where this run differs from the study:
- **Data rows.** The library's loader drops the recorder's all-zero terminator rows and the 0-6 rows per session with corrupt timestamps; the study's code keeps the latter and drops each file's last row.  The splits count samples (300 = 30 s) as the study's do.
- **Network.** Our Elman cell has a hidden bias (the study feeds a constant 1 input instead, the same thing) and a readout bias b_out (9 more parameters; the study's readout has none).  Non-causal runs start from the study's N(0, 0.02) weights, b_out at 0.
- **Runs.** The study averages 300 test runs per configuration after 50 validation runs; we use the seeds listed below.  Its per-step times are MATLAB on an i7-13700; ours are this library on the machine below, so the ratio mixes implementation and hardware.
- **DNI** is not a learner of this library (no row of ours); **snap2, tbptt and diag** have no published row.
- **Causal rows** are ours only: the study publishes no causal figures.  They use the library's forecasting setup (lagged-stream training, displacement target, its own initialisation) and their own grid, chosen on the same validation split.  **Ridge** (causal only) is chosen like the others; **auto** (`Forecaster.auto`, causal only) is one configuration for every session and horizon, given the current sample only, and chooses nothing on validation."""


def write_plot(by_h, methods, horizons, env, quick):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    secs = np.array(horizons, float) / 10.0
    modes = [md for md in MODES if any((m, md) in by_h for m in methods)]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.6), sharey=False,
                             squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for method in methods:
            if (method, mode) not in by_h:
                continue
            style = {LAST: "k--", LMS: "s:", LINREG: "d:", RIDGE: "v:", AUTO: "k-"}.get(
                method, "o-")
            ax.plot(secs, [by_h[(method, mode)][h] for h in horizons], style, label=method,
                    markersize=3, linewidth=2.2 if method == AUTO else 1.2)
        if mode == "non-causal":
            for study, color in (("SnAp-1", "tab:red"), ("LMS", "tab:grey")):
                ax.axhline(em.PUBLISHED[study]["nrmse"], color=color, linewidth=0.8,
                           linestyle="-.", label=f"published {study} (mean over horizons)")
        ax.set_title(f"{mode}" + (" (the study's setting: learns from z_{t+h} at t)"
                                  if mode == "non-causal" else " (learns at t+h)"), fontsize=9)
        ax.set_xlabel("forecast horizon, s")
        ax.set_ylabel("test nRMSE (mean over sessions and seeds)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"ExtMarker, protocol of Pohl et al. — {env['date'][:10]}"
                 + (" — QUICK run (reduced grids, 1 seed)" if quick else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=110)
    plt.close(fig)
    return PNG_PATH


SECTION = ("## `bench_extmarker.py` -- the published respiratory-motion study, like for "
           "like and causal\n\n"
           "Every learner, repeat-last-value, LMS, offline linear and ridge regression and "
           "the auto forecaster under the "
           "protocol of Pohl et al. (CMPB 2025, arXiv 2403.01607) on the 9 ExtMarker "
           "sessions, beside the study's published table; hyper-parameters chosen per "
           "session and horizon on the validation split.  Rows marked non-causal use the "
           "study's setting (the model learns from a target before it could be observed) and "
           "exist only for the like-for-like comparison; causal rows are what a deployment "
           "gets.  Protocol and grids in the file's docstring.  Regenerate (quick: a few "
           "minutes; full: about 50 minutes on 2 cores):\n\n"
           f"    {COMMAND} --quick\n    {COMMAND}\n\n")


def _rounded(obj):
    """Floats to 5 significant digits (the per-run records are most of the JSON)."""
    if isinstance(obj, float):
        return float(f"{obj:.5g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def _method(name):
    """--methods: a method's name or short alias (auto, last, lms, linreg)."""
    return ALIASES.get(name.lower(), name)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one or two configurations per method, one seed: minutes, indicative")
    p.add_argument("--sessions", nargs="+", default=None, metavar="ID",
                   help="session ids (default: all 9)")
    p.add_argument("--horizons", type=int, nargs="+", default=None, metavar="H",
                   help="horizons in samples (default 1 ... 21)")
    p.add_argument("--methods", nargs="+", default=None, type=_method, choices=METHODS,
                   metavar="M", help="methods (default: all): " + ", ".join(METHODS)
                   + "; short names: " + ", ".join(ALIASES))
    p.add_argument("--modes", nargs="+", default=None, choices=MODES, metavar="SETTING",
                   help="settings (default: both): " + ", ".join(MODES))
    p.add_argument("--carry-over", action="store_true",
                   help="keep, from the results JSON already written, the rows of the "
                        "methods and settings this run does not produce (marked in the "
                        "report, with the command and date that produced them)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes for the accuracy runs (default: all cores)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the accuracy runs on this Dask scheduler's workers instead "
                        "(pip install 'rtrl-edge[dask]'); they must see this folder and "
                        "the data at the same paths (the same machine, or a shared file "
                        "system)")
    p.add_argument("--timing-steps", type=int, default=2000,
                   help="calls timed per chosen configuration (default 2000)")
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON, plot or README block")
    args = p.parse_args(argv)
    rtrl_edge = common.import_library()
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    horizons = sorted(set(args.horizons or em.HORIZONS))
    if horizons[0] < 1 or horizons[-1] > max(em.HORIZONS):
        p.error(f"--horizons must lie in 1 ... {max(em.HORIZONS)}")
    methods = [m for m in METHODS if m in (args.methods or METHODS)]
    modes = tuple(md for md in MODES if md in (args.modes or MODES))
    if not pairs(methods, modes):
        p.error(f"nothing to run: {', '.join(CAUSAL_ONLY)} run in the causal setting only")
    level = "quick" if args.quick else "full"
    grids, seeds = GRIDS[level], SEEDS[level]
    sessions = em.load_sessions(args.sessions)
    names = [s.name for s in sessions]
    for s in sessions:
        _session(s.name)
    earlier = (carry_over(JSON_PATH, ran_pairs(methods, modes), names, horizons, seeds, grids,
                          args.quick) if args.carry_over else None)
    env = common.environment(rtrl_edge)
    t0 = time.perf_counter()
    from rtrl_edge.executors import SchedulerError, executor
    try:
        ex = executor(args.jobs, args.scheduler)
    except ValueError as exc:
        p.error(f"--scheduler: {exc}")
    except (ImportError, SchedulerError) as exc:
        p.error(str(exc))
    with ex:             # local workers exist only inside each map: timing runs alone
        chosen, scores = select(methods, modes, names, horizons, grids, seeds["valid"], ex,
                                t0)
        grid_us = {}
        if "non-causal" in modes:
            grid_us = time_grid(methods, grids["non-causal"], args.timing_steps, t0)
            chosen.update(select_within_budget(scores, grid_us, methods, names, horizons))
        test = evaluate(chosen, seeds["test"], ex, t0)
    timing = time_configs(chosen, methods, modes + (BUDGET,), args.timing_steps, t0)
    elapsed = time.perf_counter() - t0
    given = list(argv) if argv is not None else sys.argv[1:]
    this_run = dict(command=" ".join([COMMAND, *given]), date=env["date"], git=env["git"],
                    cpu=env["cpu_model"])
    provenance = {(m, md): this_run for (m, md, _, _) in test}
    validation = [dict(method=k[0], mode=k[1], config=dict(c),
                       mean_valid_nrmse=float(np.mean([np.mean(scores[(k[0], k[1], n, h)][c])
                                                       for n in names for h in horizons])))
                  for k in sorted({(m, md) for (m, md, _, _) in scores})
                  for c in sorted(scores[(k[0], k[1], names[0], horizons[0])])]
    if earlier is not None:
        for mine, theirs in zip((test, chosen, timing, grid_us), earlier[:4]):
            mine.update(theirs)
        validation += earlier[4]
        provenance.update(earlier[5])
    carried = {pair for pair, p in provenance.items() if p is not this_run}
    shown = [m for m in METHODS if any(m == pair[0] for pair in provenance)]
    shown_modes = tuple(md for md in MODES if any(md == pair[1] for pair in provenance))
    table, by_h = aggregate(test, shown, MODES + (BUDGET,), names, horizons)

    settings = dict(horizons=horizons)
    text = "\n\n".join(part for part in [
        ("**Quick run**: grids of one or two points per method and one seed; indicative "
         "only.  The full run is the command without `--quick`." if args.quick else
         "Full run: the grids in the file's docstring."),
        format_scope(args, methods, modes, names, horizons, provenance, this_run),
        "Test scores, averaged over sessions, horizons and seeds (published: averaged over "
        "recordings and horizons, 10 Hz):",
        format_main_table(table, timing, shown, carried),
        "Targets:\n" + format_targets(table, timing, shown, by_h, horizons),
        "Test nRMSE by horizon (mean over sessions and seeds):",
        format_horizon_table(by_h, shown, horizons, carried),
        format_auto_table(by_h, horizons, carried),
        "Hyper-parameters chosen on the validation split (per session and horizon):\n"
        + format_choices(chosen, shown, shown_modes, grids, carried),
        DIFFERENCES,
        format_notes(settings, sessions, seeds, timing, table, elapsed, shown),
        "Environment (this command): " + common.format_environment(env),
    ] if part)
    print(text)
    key = "|".join
    result = dict(
        benchmark="bench_extmarker", quick=bool(args.quick),
        command=this_run["command"], environment=env, elapsed_s=elapsed,
        methods_run=methods, modes_run=list(modes),
        provenance={key(k): v for k, v in sorted(provenance.items())},
        sessions=[dict(name=s.name, markers=list(s.markers), samples=len(s),
                       dropped_rows=s.dropped) for s in sessions],
        horizons=horizons, seeds={k: list(v) for k, v in seeds.items()},
        grids={mode: {m: {k: list(v) for k, v in g.items()} for m, g in grids[mode].items()}
               for mode in MODES},
        published=em.PUBLISHED, budget_us=BUDGET_US,
        grid_latency_us=[dict(method=m, config=dict(c), median_us=v)
                         for (m, c), v in sorted(grid_us.items())],
        validation=validation,
        table={key(k): v for k, v in table.items()},
        by_horizon={key(k): v for k, v in by_h.items()},
        timing={key(k): v for k, v in timing.items()},
        runs=[_rounded(dict(method=k[0], mode=k[1], session=k[2], horizon=k[3],
                            config=chosen[k]["config"], valid_nrmse=chosen[k]["valid_nrmse"],
                            **test[k]))
              for k in sorted(test, key=str)],
    )
    if not args.no_write:
        common.publish(result, text, JSON_PATH,
                       lambda block: common.write_block(BEGIN, END, block, SECTION),
                       plot=lambda: write_plot(by_h, shown, horizons, env, args.quick),
                       alt="test nRMSE against horizon, non-causal and causal",
                       compact=True, numbers="All numbers, per session and horizon")
    return result


if __name__ == "__main__":
    main()
