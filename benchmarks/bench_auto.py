"""What the auto forecaster (``rtrl_edge.Forecaster.auto``) does on one
recording: its members' weights, and their recent errors, over time.

Stream and protocol as ``bench_extmarker.py`` (``extmarker.py``): one
ExtMarker session (default 201205181211, 3198 samples at about 10 Hz), the 9
coordinates standardised with the statistics of the first 300 samples;
``Forecaster.auto(9, 9, h, seed=0)`` fed ``update(z_t, z_t)``, causal
(``extmarker.auto``), h = 5 samples (0.5 s) by default.  Every ``--every``
samples (default 10, 1 s) the forecaster's ``weights`` (name -> weight) and
``stats["members"]`` (each member's recent normalised error: mean squared
error over about the last 100 targets over the mean squared change over the
horizon, so the last value scores about 1) are recorded.  Scored like the
study's protocol (nRMSE in mm over the validation targets [300, 600) and the
test targets [600, end)), beside repeat-last-value.

    python benchmarks/bench_auto.py                       # writes results
    python benchmarks/bench_auto.py --horizon 10 --no-write
    python benchmarks/bench_auto.py --quick --no-write    # the first 700 samples

Writes results/bench_auto.json, results/bench_auto.png (with matplotlib) and
the block between the bench_auto markers in benchmarks/README.md.  This is a
benchmark, not a test: nothing asserts on the numbers.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import extmarker as em  # noqa: E402

JSON_PATH = os.path.join(common.RESULTS_DIR, "bench_auto.json")
PNG_PATH = os.path.join(common.RESULTS_DIR, "bench_auto.png")
BEGIN, END = "<!-- bench_auto:begin -->", "<!-- bench_auto:end -->"
COMMAND = "python benchmarks/bench_auto.py"

SESSION = "201205181211"
HORIZON = 5                  # samples (0.5 s)
EVERY = 10                   # samples between two records (1 s)
QUICK_SAMPLES = 700
RATE_HZ = 10.0
TABLE_AT_S = (10, 30, 60, 120, 180, 240, 300)   # the table's times, s (and the end)


def trace(z, h, seed, every):
    """Stream z through ``Forecaster.auto``, recording every `every`
    samples.  Returns (preds, fc, record): preds as ``extmarker.stream``'s;
    record = dict(samples: (R,) count of samples taken, names, weights (R, K),
    recent_error (R, K))."""
    from rtrl_edge import Forecaster
    fc = Forecaster.auto(em.DIM, em.DIM, h, seed=seed)
    samples, weights, errors = [], [], []

    def call(x, y):
        out = fc.update(x, y)
        n = fc.counters["samples"]
        if n % every == 0:
            members = fc.stats["members"]
            samples.append(n)
            weights.append([members[k]["weight"] for k in fc.names])
            errors.append([members[k]["recent_error"] for k in fc.names])
        return out

    preds = em.stream(call, z, z, h)
    record = dict(samples=np.array(samples), names=list(fc.names),
                  weights=np.array(weights), recent_error=np.array(errors))
    return preds, fc, record


def summarise(record, T):
    """Per member: mean weight over the validation and test parts, and the
    share of the test part's records in which it weighs most."""
    s, W = record["samples"], record["weights"]
    valid = (s > em.TRAIN) & (s <= em.VALID)
    test = s > em.VALID
    top = np.argmax(W[test], axis=1) if test.any() else np.array([], int)
    out = {}
    for i, name in enumerate(record["names"]):
        out[name] = dict(
            mean_weight_valid=float(W[valid, i].mean()) if valid.any() else None,
            mean_weight_test=float(W[test, i].mean()) if test.any() else None,
            share_largest_test=float(np.mean(top == i)) if len(top) else None)
    return out


def table_rows(record, T):
    """The records nearest the table's times, and the last one."""
    s = record["samples"]
    want = [t for t in TABLE_AT_S if t * RATE_HZ < T] + [None]
    rows = []
    for t in want:
        i = len(s) - 1 if t is None else int(np.argmin(np.abs(s - t * RATE_HZ)))
        if i not in rows:
            rows.append(i)
    return rows


def format_weights(record, T):
    names, s = record["names"], record["samples"]
    rows = table_rows(record, T)
    lines = ["| member | " + " | ".join(f"{s[i] / RATE_HZ:.0f} s" for i in rows) + " |",
             "|---|" + "---:|" * len(rows)]
    for k, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * record['weights'][i, k]:.0f} % ({record['recent_error'][i, k]:.2f})"
            for i in rows) + " |")
    return ("Weight of each member at a few times (its recent normalised error in "
            "brackets; the last value scores about 1, lower is better):\n\n"
            + "\n".join(lines))


def format_summary(summary):
    def pct(v):
        return "—" if v is None else f"{100 * v:.0f} %"
    lines = ["| member | mean weight, validation (30-60 s) | mean weight, test (60 s on) "
             "| test records in which it weighs most |", "|---|---:|---:|---:|"]
    for name, r in summary.items():
        lines.append(f"| {name} | {pct(r['mean_weight_valid'])} | {pct(r['mean_weight_test'])} "
                     f"| {pct(r['share_largest_test'])} |")
    return "\n".join(lines)


def format_scores(scores, T, h, seed, every, elapsed, us):
    return (f"Session {SESSION} ({T} samples), horizon h = {h} ({h / RATE_HZ:.1f} s), "
            f"`Forecaster.auto(9, 9, {h}, seed={seed})` fed `update(z_t, z_t)`, causal; "
            f"weights recorded every {every} samples.  nRMSE (study's metric, mm): "
            f"validation {scores['auto']['valid']['nrmse']:.3f}, test "
            f"{scores['auto']['test']['nrmse']:.3f}; repeat-last-value "
            f"{scores['last value']['valid']['nrmse']:.3f} and "
            f"{scores['last value']['test']['nrmse']:.3f}.  Mean time per sample "
            f"{us:.0f} µs (the stream and the records; not a latency measurement).  "
            f"Run time {elapsed:.1f} s.")


def write_plot(record, h, env, quick):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    secs = record["samples"] / RATE_HZ
    names = record["names"]
    colors = [f"C{i}" for i in range(len(names))]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.4), sharex=True,
                                      gridspec_kw=dict(height_ratios=(3, 2)))
    top.stackplot(secs, record["weights"].T, labels=names, colors=colors, alpha=0.85)
    top.set_ylim(0, 1)
    top.set_ylabel("weight (stacked)")
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for k, name in enumerate(names):
        bottom.plot(secs, np.maximum(record["recent_error"][:, k], 1e-4), color=colors[k],
                    linewidth=1)
    bottom.set_yscale("log")
    bottom.set_ylabel("recent normalised error")
    bottom.set_xlabel("time, s")
    for ax in (top, bottom):
        for t in (em.TRAIN / RATE_HZ, em.VALID / RATE_HZ):
            ax.axvline(t, color="k", linewidth=0.7, linestyle="--")
        ax.grid(True, alpha=0.3)
    for t, label in ((em.TRAIN / RATE_HZ, "validation from here"),
                     (em.VALID / RATE_HZ, "test from here")):
        bottom.text(t, 0.97, label, transform=bottom.get_xaxis_transform(), fontsize=7,
                    rotation=90, ha="right", va="top")
    fig.suptitle(f"Forecaster.auto on ExtMarker {SESSION}, h = {h / RATE_HZ:.1f} s — "
                 f"{env['date'][:10]}" + (" — QUICK run" if quick else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=110)
    plt.close(fig)
    return PNG_PATH


SECTION = ("## `bench_auto.py` -- the auto forecaster's members over time\n\n"
           "`Forecaster.auto` on one ExtMarker recording (the protocol of "
           "`bench_extmarker.py`), causal: each member's weight in the forecast and its "
           "recent error, sampled every second, and the forecast's error beside "
           "repeat-last-value.  Regenerate (a few seconds):\n\n"
           f"    {COMMAND}\n\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--horizon", type=int, default=HORIZON,
                   help=f"samples ahead (default {HORIZON}, {HORIZON / RATE_HZ:.1f} s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the RNN members (default 0)")
    p.add_argument("--every", type=int, default=EVERY,
                   help=f"samples between two records (default {EVERY})")
    p.add_argument("--quick", action="store_true",
                   help=f"the first {QUICK_SAMPLES} samples only: a smoke run")
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON, plot or README block")
    args = p.parse_args(argv)
    if not 1 <= args.horizon <= max(em.HORIZONS):
        p.error(f"--horizon must lie in 1 ... {max(em.HORIZONS)}")
    if args.every < 1:
        p.error("--every must be >= 1")
    rtrl_edge = common.import_library()
    env = common.environment(rtrl_edge)
    (s,) = em.load_sessions([SESSION])
    if args.quick:
        s = em.Session(s.name, s.markers, s.xyz[:QUICK_SAMPLES], s.dropped)
    z, mu, sg = em.standardise(s.xyz)
    T, h = len(z), args.horizon
    t0 = time.perf_counter()
    preds, fc, record = trace(z, h, args.seed, args.every)
    elapsed = time.perf_counter() - t0
    scores = {name: {phase: em.score(p_, s, mu, sg, phase) for phase in ("valid", "test")}
              for name, p_ in (("auto", preds), ("last value", em.last_value(z, h)))}
    summary = summarise(record, T)
    text = "\n\n".join(
        ([f"Quick run (`--quick`): the first {QUICK_SAMPLES} samples; indicative only."]
         if args.quick else [])
        + [format_scores(scores, T, h, args.seed, args.every, elapsed, elapsed / T * 1e6),
           format_weights(record, T),
           "Over the scored parts (records every "
           f"{args.every} samples):\n\n" + format_summary(summary),
           "Environment: " + common.format_environment(env)])
    print(text)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(
        benchmark="bench_auto", quick=bool(args.quick), command=" ".join([COMMAND, *given]),
        environment=env, elapsed_s=elapsed,
        setting=dict(session=SESSION, samples=T, horizon=h, seed=args.seed, every=args.every,
                     forecaster=f"Forecaster.auto(9, 9, {h}, seed={args.seed})",
                     memory_bytes=fc.memory_bytes),
        scores=scores, summary=summary, names=record["names"],
        records=dict(samples=record["samples"].tolist(),
                     weights=np.round(record["weights"], 5).tolist(),
                     recent_error=np.round(record["recent_error"], 5).tolist()),
        final_stats={k: v for k, v in fc.stats.items() if k != "members"},
    )
    if not args.no_write:
        common.publish(result, text, JSON_PATH,
                       lambda block: common.write_block(BEGIN, END, block, SECTION),
                       plot=lambda: write_plot(record, h, env, args.quick),
                       alt="member weights (stacked) and recent errors over time",
                       compact=True)
    return result


if __name__ == "__main__":
    main()
