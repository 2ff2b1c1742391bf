"""The library's weight initialisations (``OnlineRNN(init=...)``) side by
side, same seeds, on the causal respiratory rows of ``bench_extmarker.py``
and on the stream of ``bench_peers.py``.

Initialisations (``rtrl_edge.INITS``; the OnlineRNN docstring has the
details): "gaussian" (W_in uniform +-1/sqrt(m), W_rec Gaussian at spectral
radius about 0.9, b = 0, W_out N(0, 1/n), b_out = 0), "uniform" (PyTorch's
nn.RNNCell and nn.Linear: every weight and bias uniform +-1/sqrt(n)),
"orthogonal" (W_rec a random orthogonal matrix, the rest as "gaussian").
The diag cell keeps its LRU initialisation; ``init`` sets only its readout,
so its "orthogonal" run is the "gaussian" one, draw for draw.

Two parts, every run causal (``Forecaster(delta=True)``, as both benchmarks'
causal rows), sgd, gradient-norm clipping at 100, inputs the last L = 12
samples (108 inputs), 9 outputs:

  extmarker  the 9 ExtMarker sessions x the horizons below, n = 32 for every
             learner (snap2 at W_rec density 0.1, tbptt with window 16) --
             the shape the causal grid of bench_extmarker.py chooses most;
             learning rates {3e-4, 1e-3, 3e-3, 1e-2} (its causal grid).
  peers      bench_peers.py's setting: session 201205181211, h = 5 (0.5 s),
             n = 32 and 64, learners rtrl, snap1, uoro, tbptt (k = 16), diag,
             learning rates {0.001, 0.003, 0.01, 0.03} (its grid).

For every (learner, size, init, seed) the learning rate is chosen by the
validation nRMSE (targets [300, 600)) averaged over the part's sessions and
horizons, and the test nRMSE (targets from 600 on) of that learning rate,
averaged the same way, is the seed's score.  Reported: the median over seeds
of that score, and how many seeds score below "gaussian" with the same seed
(paired: the same W_in draw for "gaussian" and "orthogonal").  Each run
streams a whole session once; validation and test are scored from it.

    python benchmarks/bench_init.py --quick --no-write     # a minute
    python benchmarks/bench_init.py                        # ~35 minutes on 2 cores
    python benchmarks/bench_init.py --part peers           # ~5 minutes
    python benchmarks/bench_init.py --part extmarker --learners snap1 tbptt --seeds 0 1 2

With ``--cache FILE`` every finished run is appended to FILE and runs found
there are not repeated: run it in parts (``--learners rtrl --no-write``,
then the others), and a last invocation with the same cache writes the
results at once.

Writes results/bench_init.json and the block between the bench_init markers
in benchmarks/README.md (unless --no-write).  This is a benchmark, not a
test: nothing asserts on the numbers.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402

import extmarker as em  # noqa: E402

JSON_PATH = os.path.join(common.RESULTS_DIR, "bench_init.json")
BEGIN, END = "<!-- bench_init:begin -->", "<!-- bench_init:end -->"
COMMAND = "python benchmarks/bench_init.py"

INITS = ("gaussian", "uniform", "orthogonal")
L = 12
OPTIONS = {"snap2": dict(rec_density=0.1), "tbptt": dict(window=16)}
PARTS = {
    "extmarker": dict(learners=("rtrl", "snap1", "snap2", "uoro", "tbptt", "diag"),
                      sizes=(32,), sessions=None, horizons=(1, 3, 5, 10, 15, 21),
                      lrs=(0.0003, 0.001, 0.003, 0.01)),
    "peers": dict(learners=("rtrl", "snap1", "uoro", "tbptt", "diag"), sizes=(32, 64),
                  sessions=("201205181211",), horizons=(5,),
                  lrs=(0.001, 0.003, 0.01, 0.03)),
}
QUICK = {
    "extmarker": dict(sessions=("201205101519", "201205181211"), horizons=(2, 10),
                      lrs=(0.001, 0.003)),
    "peers": dict(sizes=(32,), lrs=(0.003, 0.01)),
}
SEEDS, QUICK_SEEDS = (0, 1, 2, 3, 4), (0, 1)


# --------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------

_SESSIONS = {}      # name -> (Session, z, mu, sg, X); filled in each process


def _session(name):
    if name not in _SESSIONS:
        (s,) = em.load_sessions([name])
        z, mu, sg = em.standardise(s.xyz)
        _SESSIONS[name] = (s, z, mu, sg, em.windows(z, L))
    return _SESSIONS[name]


def run_task(task):
    """task = (learner, n, init, lr, session, h, seed) -> (task, validation
    nRMSE, test nRMSE, divergence-guard recoveries); a non-finite score is
    inf."""
    learner, n, init, lr, name, h, seed = task
    s, z, mu, sg, X = _session(name)
    net = em.make_net(learner, X.shape[1], n, lr, seed, init=init, **OPTIONS.get(learner, {}))
    preds = em.rnn(net, X, z, h, True, delta=True)
    out = []
    for phase in ("valid", "test"):
        v = em.score(preds, s, mu, sg, phase)["nrmse"]
        out.append(v if np.isfinite(v) else float("inf"))
    return task, out[0], out[1], int(net.stats["divergence_recoveries"])


def run_tasks(tasks, jobs, t0, cache=None):
    """({task: (valid, test, recoveries)}, how many came from the cache), in
    `jobs` forked workers, longest tasks first (rtrl at n = 64 dominates).
    With a `cache` file (JSON lines), runs found in it are not repeated and
    every new run is appended as it finishes, so that a long benchmark can
    be run in parts."""
    out = load_cache(cache, set(tasks)) if cache else {}
    cached = len(out)
    todo = sorted((t for t in tasks if t not in out),
                  key=lambda t: -(t[1] ** (4 if t[0] == "rtrl" else 2)))
    if out:
        print(f"  {len(out)} runs from {cache}, {len(todo)} to run", file=sys.stderr)
    step = max(1, len(todo) // 20)
    sink = open(cache, "a", encoding="utf-8") if cache else None
    try:
        if jobs > 1:
            pool = multiprocessing.get_context("fork").Pool(jobs)
            results = pool.imap_unordered(run_task, todo, chunksize=1)
        else:
            pool, results = None, map(run_task, todo)
        for i, (task, *r) in enumerate(results):
            out[task] = tuple(r)
            if sink:
                sink.write(json.dumps([list(task), r]) + "\n")
                sink.flush()
            if (i + 1) % step == 0:
                _progress(i + 1, len(todo), t0)
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if sink:
            sink.close()
    return out, cached


def load_cache(path, wanted):
    """The runs of `wanted` recorded in the cache file at `path` (JSON lines
    [task, [valid, test, recoveries]]); a missing file is an empty cache, a
    line cut short (the run was killed while writing it) is skipped."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                task, r = json.loads(line)
            except ValueError:          # a line cut short by an interrupted run
                continue
            task = tuple(task)
            if task in wanted:
                out[task] = (float(r[0]), float(r[1]), int(r[2]))
    return out


def _progress(done, total, t0):
    print(f"  {done}/{total} runs, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
          flush=True)


# --------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------

def summarise(part, spec, seeds, raw):
    """Per (learner, n, init): per seed the chosen lr and its mean test
    nRMSE; the median over seeds; seeds below gaussian's."""
    cells = defaultdict(lambda: defaultdict(list))   # (learner, n, init, seed) -> lr -> runs
    for (learner, n, init, lr, name, h, seed), r in raw.items():
        cells[(learner, n, init, seed)][lr].append((name, h) + r)
    rows = {}
    for learner, n, init in itertools.product(spec["learners"], spec["sizes"], INITS):
        per_seed = []
        for seed in seeds:
            by_lr = cells[(learner, n, init, seed)]
            valid = {lr: float(np.mean([r[2] for r in runs])) for lr, runs in by_lr.items()}
            lr = min(valid, key=lambda k: (valid[k], k))
            runs = by_lr[lr]
            per_seed.append(dict(
                seed=seed, lr=lr, valid_nrmse=valid[lr],
                test_nrmse=float(np.mean([r[3] for r in runs])),
                test_by_horizon={h: float(np.mean([r[3] for r in runs if r[1] == h]))
                                 for h in spec["horizons"]},
                recoveries=int(sum(r[4] for r in runs)),
                lr_at_grid_edge=lr in (min(spec["lrs"]), max(spec["lrs"]))
                and len(spec["lrs"]) > 2))
        rows[(learner, n, init)] = dict(
            per_seed=per_seed,
            median_test_nrmse=float(np.median([p["test_nrmse"] for p in per_seed])))
    for (learner, n, init), row in rows.items():
        base = rows[(learner, n, "gaussian")]["per_seed"]
        diffs = [p["test_nrmse"] - b["test_nrmse"] for p, b in zip(row["per_seed"], base)]
        row["median_diff_vs_gaussian"] = float(np.median(diffs))
        row["seeds_better_than_gaussian"] = int(sum(d < 0 for d in diffs))
    return rows


def average_row(spec, rows):
    """Per (n, init): the mean over learners of the median over seeds."""
    return {(n, init): float(np.mean([rows[(lr_, n, init)]["median_test_nrmse"]
                                      for lr_ in spec["learners"]]))
            for n in spec["sizes"] for init in INITS}


def format_part(part, spec, seeds, rows, avg):
    lines = ["| learner | n | " + " | ".join(INITS) + " | uniform − gaussian (seeds better) "
             "| orthogonal − gaussian (seeds better) |",
             "|---|---:|" + "---:|" * (len(INITS) + 2)]
    for learner, n in itertools.product(spec["learners"], spec["sizes"]):
        cells = []
        best = min(INITS, key=lambda i: rows[(learner, n, i)]["median_test_nrmse"])
        for init in INITS:
            r = rows[(learner, n, init)]
            lrs = sorted({p["lr"] for p in r["per_seed"]})
            v = f"{r['median_test_nrmse']:.4f}"
            cells.append((f"**{v}**" if init == best else v)
                         + f" <sub>lr {'/'.join(f'{x:g}' for x in lrs)}</sub>")
        for init in ("uniform", "orthogonal"):
            r = rows[(learner, n, init)]
            cells.append(f"{r['median_diff_vs_gaussian']:+.4f} "
                         f"({r['seeds_better_than_gaussian']}/{len(seeds)})")
        lines.append(f"| {learner} | {n} | " + " | ".join(cells) + " |")
    for n in spec["sizes"]:
        lines.append(f"| **mean over learners** | {n} | "
                     + " | ".join(f"{avg[(n, i)]:.4f}" for i in INITS) + " | "
                     + " | ".join(f"{avg[(n, i)] - avg[(n, 'gaussian')]:+.4f}"
                                  for i in ("uniform", "orthogonal")) + " |")
    return "\n".join(lines)


def format_horizons(spec, rows):
    """Mean over learners of the median over seeds, by horizon."""
    hs = spec["horizons"]
    lines = ["| init | n | " + " | ".join(f"{h / 10:.1f} s" for h in hs) + " |",
             "|---|---:|" + "---:|" * len(hs)]
    for n, init in itertools.product(spec["sizes"], INITS):
        vals = [np.mean([np.median([p["test_by_horizon"][h]
                                    for p in rows[(lr_, n, init)]["per_seed"]])
                         for lr_ in spec["learners"]]) for h in hs]
        lines.append(f"| {init} | {n} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    return "\n".join(lines)


def describe(part, spec, seeds, sessions):
    return (f"**{part}**: sessions {', '.join(sessions)}; horizons "
            f"{', '.join(str(h) for h in spec['horizons'])} samples; n "
            f"{', '.join(map(str, spec['sizes']))}; learning rates "
            f"{{{', '.join(f'{x:g}' for x in spec['lrs'])}}} chosen per seed on validation; "
            f"seeds {', '.join(map(str, seeds))}.  Median over seeds of the test nRMSE "
            f"(mean over sessions and horizons; the lowest in bold; the learning rates "
            f"chosen across seeds under each), and the median over seeds of the paired "
            f"difference to gaussian with the number of seeds where it is lower:")


SECTION = ("## `bench_init.py` -- the weight initialisations compared\n\n"
           "`OnlineRNN(init=...)`: \"gaussian\", \"uniform\" (PyTorch's defaults) and "
           "\"orthogonal\", same seeds, on the causal rows of `bench_extmarker.py` (9 "
           "sessions, several horizons) and on `bench_peers.py`'s stream (n = 32 and 64); "
           "the learning rate chosen per seed on validation.  Protocol in the file's "
           "docstring.  Regenerate (about 35 minutes on 2 cores; `--quick` a minute):\n\n"
           f"    {COMMAND}\n\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("extmarker", "peers", "both"), default="both")
    p.add_argument("--learners", nargs="+", default=None, metavar="L",
                   help="restrict each part to these learners")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help=f"seeds (default {' '.join(map(str, SEEDS))}; --quick "
                        f"{' '.join(map(str, QUICK_SEEDS))})")
    p.add_argument("--quick", action="store_true",
                   help="2 sessions x 2 horizons, 2 learning rates, n = 32, 2 seeds: indicative")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--cache", default=None, metavar="FILE",
                   help="JSON-lines file of finished runs: reused, and appended to (to "
                        "run the benchmark in parts)")
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON or README block")
    args = p.parse_args(argv)
    rtrl_edge = common.import_library()
    if tuple(rtrl_edge.INITS) != INITS:
        p.error(f"the library's initialisations are {rtrl_edge.INITS}, this script knows {INITS}")
    seeds = tuple(args.seeds or (QUICK_SEEDS if args.quick else SEEDS))
    parts = ("extmarker", "peers") if args.part == "both" else (args.part,)
    env = common.environment(rtrl_edge)
    t0 = time.perf_counter()
    specs, tasks = {}, []
    for part in parts:
        spec = dict(PARTS[part], **(QUICK[part] if args.quick else {}))
        if args.learners:
            spec["learners"] = tuple(x for x in spec["learners"] if x in args.learners)
            if not spec["learners"]:
                p.error(f"no learner of {args.learners} in part {part}")
        spec["sessions"] = tuple(spec["sessions"] or sorted(em.session_files()))
        specs[part] = spec
        for learner, n, init, lr, name, h, seed in itertools.product(
                spec["learners"], spec["sizes"], INITS, spec["lrs"], spec["sessions"],
                spec["horizons"], seeds):
            tasks.append((learner, n, init, lr, name, h, seed))
    tasks = sorted(set(tasks))                 # the parts may share runs
    for name in sorted({t[4] for t in tasks}):
        _session(name)                         # before the fork
    raw, cached = run_tasks(tasks, args.jobs, t0, args.cache)
    elapsed = time.perf_counter() - t0
    texts, result_parts = [], {}
    for part, spec in specs.items():
        mine = {t: r for t, r in raw.items()
                if t[0] in spec["learners"] and t[1] in spec["sizes"] and t[3] in spec["lrs"]
                and t[4] in spec["sessions"] and t[5] in spec["horizons"]}
        rows = summarise(part, spec, seeds, mine)
        avg = average_row(spec, rows)
        texts += [describe(part, spec, seeds, spec["sessions"]),
                  format_part(part, spec, seeds, rows, avg),
                  "By horizon (mean over learners of the median over seeds):",
                  format_horizons(spec, rows)]
        result_parts[part] = dict(
            spec={k: list(v) for k, v in spec.items()},
            rows=[dict(learner=k[0], n=k[1], init=k[2], **v) for k, v in rows.items()],
            mean_over_learners=[dict(n=k[0], init=k[1], test_nrmse=v) for k, v in avg.items()],
            recoveries=int(sum(r[2] for r in mine.values())),
            recoveries_at_chosen_lr=int(sum(p["recoveries"] for r in rows.values()
                                            for p in r["per_seed"])))
    texts.append("Divergence-guard recoveries, all runs / the chosen learning rates' runs: "
                 + "; ".join(f"{part} {r['recoveries']} / {r['recoveries_at_chosen_lr']}"
                             for part, r in result_parts.items())
                 + f".  {len(raw)} runs"
                 + (f", {cached} of them from the cache {args.cache} (earlier invocations)"
                    if cached else "")
                 + f"; {elapsed:.0f} s in this invocation ({args.jobs} workers).")
    texts.append("Environment: " + common.format_environment(env))
    if args.quick:
        texts.insert(0, "**Quick run** (`--quick`): 2 sessions x 2 horizons, 2 learning "
                        "rates, n = 32, 2 seeds; indicative only.")
    text = "\n\n".join(texts)
    print(text)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_init", quick=bool(args.quick),
                  command=" ".join([COMMAND, *given]), environment=env, seeds=list(seeds),
                  inits=list(INITS), L=L, parts=result_parts, elapsed_s=elapsed)
    if not args.no_write:
        common.publish(result, text, JSON_PATH,
                       lambda block: common.write_block(BEGIN, END, block, SECTION))
    return result


if __name__ == "__main__":
    main()
