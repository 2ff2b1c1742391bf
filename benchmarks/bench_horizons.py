"""Forecast error against horizon on the respiration recordings, for every
learner worth showing, against repeat-last-value and a causal NLMS baseline.

For each shipped recording (`rtrl_edge.data.list_recordings()`, a marker's
xyz in mm at 10 Hz) and each horizon h (default 1, 2, 3, 5, 7, 10, 15, 20
samples = 0.1 ... 2.0 s) the marker's 3 channels are streamed causally, one
sample at a time:

  learners   ``Forecaster(OnlineRNN(3, n, 3, normalize=True, clip=1.0,
             optimizer="sgd", lr=..., seed=s, ...), h, delta=True)``;
             ``update(x_t, x_t)`` learns from the target that has just arrived
             and returns the forecast of x_{t+h}.  rtrl (n=16, lr 0.01), snap1
             (n=32, lr 0.01), uoro (n=32, lr 3e-3), cell="diag" (n=32, lr
             0.01); seeds 0, 1, 2.
  last       repeat the last value: the forecast of x_{t+h} is x_t.
  NLMS       a linear forecaster learnt online by normalised least mean
             squares: input phi_t = [x_{t-1} - x_t, ..., x_{t-L} - x_t, 1]
             (L = 10 past samples relative to the current one, 3L + 1 = 31
             features), output the displacement x_{t+h} - x_t, forecast
             x_t + W phi_t.  W is updated with phi_{t-h} when x_t arrives (h
             samples later), W += mu e phi^T / (1e-6 + |phi|^2): as causal as
             the learners.  mu is chosen per recording and horizon from
             {1e-4, 3e-4, ..., 0.3, 1} (half decades) by the RMSE of the forecasts
             whose targets lie in the second quarter of the stream, i.e. on
             the FIRST half only; the chosen mu is then scored on the second
             half like everything else.

Score: 3-D Euclidean RMSE in mm over the forecasts whose targets lie in the
second half of the stream (the same target samples for every horizon and
method), after learning on everything before.  Tables: RMSE averaged over
recordings (and seeds), and the ratio to repeat-last-value (the per-recording,
per-seed ratio, averaged).

    python benchmarks/bench_horizons.py                  # full run, writes results
    python benchmarks/bench_horizons.py --quick --no-write   # smoke run

This is a benchmark, not a test: nothing asserts on the numbers.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

JSON_PATH = os.path.join(common.RESULTS_DIR, "bench_horizons.json")
PNG_PATH = os.path.join(common.RESULTS_DIR, "bench_horizons.png")
BEGIN, END = "<!-- bench_horizons:begin -->", "<!-- bench_horizons:end -->"
COMMAND = "python benchmarks/bench_horizons.py"

HORIZONS = (1, 2, 3, 5, 7, 10, 15, 20)
SEEDS = (0, 1, 2)
RATE_HZ = 10.0                       # nominal rate of the recordings
#: (label, n_hidden, lr, OnlineRNN keywords)
LEARNERS = (
    ("rtrl n=16", 16, 1e-2, dict(learner="rtrl")),
    ("snap1 n=32", 32, 1e-2, dict(learner="snap1")),
    ("uoro n=32", 32, 3e-3, dict(learner="uoro")),
    ("diag n=32", 32, 1e-2, dict(cell="diag")),
)
COMMON_KW = dict(normalize=True, clip=1.0, optimizer="sgd")
LAST, NLMS = "last value", "NLMS"
NLMS_LAGS = 10
NLMS_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
NLMS_EPS = 1e-6


def methods():
    return [LAST, NLMS] + [label for label, _, _, _ in LEARNERS]


# --------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------

def rmse(forecast, truth):
    """3-D Euclidean RMSE: sqrt(mean_t |forecast_t - truth_t|^2)."""
    d = np.asarray(forecast, np.float64) - np.asarray(truth, np.float64)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


def scored_targets(T):
    """Indices s of the scored targets: the second half of the stream."""
    return np.arange(T // 2, T)


# --------------------------------------------------------------------------
# the methods; each returns forecasts[t] = forecast of x_{t+h} made at time t
# --------------------------------------------------------------------------

def run_learner(rtrl_edge, xyz32, h, n, lr, kw, seed):
    from rtrl_edge.forecast import Forecaster
    net = rtrl_edge.OnlineRNN(3, n, 3, lr=lr, seed=seed, **COMMON_KW, **kw)
    fc = Forecaster(net, h, delta=True)
    out = np.empty((len(xyz32), 3))
    for t, x in enumerate(xyz32):
        out[t] = fc.update(x, x)
    return out, int(net.stats["divergence_recoveries"])


def nlms_features(xyz, lags=NLMS_LAGS):
    """phi_t = [x_{t-1} - x_t, ..., x_{t-L} - x_t, 1] (samples before the
    start clamped to x_0, i.e. a zero difference)."""
    T = len(xyz)
    phi = np.ones((T, 3 * lags + 1))
    for k in range(1, lags + 1):
        past = xyz[np.maximum(np.arange(T) - k, 0)]
        phi[:, 3 * (k - 1):3 * k] = past - xyz
    return phi


def run_nlms(xyz, h, grid=NLMS_GRID):
    """Causal NLMS for every step size of `grid` at once.

    Returns forecasts (G, T, 3): forecasts[g, t] is the forecast of x_{t+h}
    made at time t with step size grid[g], after the update with the target
    x_t of the forecast made at t - h (the same order as Forecaster.update).
    """
    xyz = np.asarray(xyz, np.float64)
    T = len(xyz)
    phi = nlms_features(xyz)
    norm = NLMS_EPS + np.einsum("ij,ij->i", phi, phi)
    mu = np.asarray(grid, np.float64)[:, None, None]
    W = np.zeros((len(grid), 3, phi.shape[1]))
    out = np.empty((len(grid), T, 3))
    for t in range(T):
        if t >= h:
            p = phi[t - h]
            err = (xyz[t] - xyz[t - h]) - W @ p                # (G, 3)
            W += (mu / norm[t - h]) * err[:, :, None] * p[None, None, :]
        out[:, t] = xyz[t] + W @ phi[t]
    return out


def nlms_select(xyz, h, grid=NLMS_GRID):
    """Pick mu on the first half only (targets in [T/4, T/2)); returns
    (forecasts with the chosen mu, chosen mu, selection RMSE per mu)."""
    T = len(xyz)
    fc = run_nlms(xyz, h, grid)
    sel = np.arange(max(T // 4, h), T // 2)
    scores = [rmse(fc[g, sel - h], xyz[sel]) for g in range(len(grid))]
    best = int(np.nanargmin(scores))
    return fc[best], float(grid[best]), scores


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

def bench_recording(rtrl_edge, name, horizons, seeds, progress=None):
    from rtrl_edge import data
    rec = data.load_recording(name)
    xyz = np.asarray(rec.xyz, np.float64)
    xyz32 = xyz.astype(np.float32)
    T = len(xyz)
    s = scored_targets(T)
    truth = xyz[s]
    out = dict(name=name, samples=T, scored_samples=int(len(s)),
               mean_spacing_ms=float(np.mean(np.diff(rec.t_ms))), horizons={})
    for h in horizons:
        row = {}
        last = rmse(xyz[s - h], truth)
        row[LAST] = dict(rmse_mm=last, ratio=1.0)
        fc, mu, scores = nlms_select(xyz, h)
        v = rmse(fc[s - h], truth)
        row[NLMS] = dict(rmse_mm=v, ratio=v / last, mu=mu,
                         selection_rmse_mm=dict(zip(map(str, NLMS_GRID), scores)))
        for label, n, lr, kw in LEARNERS:
            per_seed, div = [], []
            for seed in seeds:
                fc, d = run_learner(rtrl_edge, xyz32, h, n, lr, kw, seed)
                if not np.all(np.isfinite(fc[s - h])):
                    raise RuntimeError(f"{label} produced a non-finite forecast on {name} "
                                       f"at h={h}, seed {seed}")
                per_seed.append(rmse(fc[s - h], truth))
                div.append(d)
            per_seed = np.array(per_seed)
            row[label] = dict(rmse_mm=float(per_seed.mean()),
                              ratio=float(np.mean(per_seed / last)),
                              rmse_mm_per_seed=per_seed.tolist(),
                              divergence_recoveries=div)
        out["horizons"][str(h)] = row
        if progress:
            progress(f"{name} h={h}")
    return out


def aggregate(per_recording, horizons):
    """Per horizon and method: RMSE and ratio averaged over recordings (each
    recording's learner numbers being already the mean over seeds)."""
    table = {}
    for h in horizons:
        table[str(h)] = {}
        for m in methods():
            rows = [r["horizons"][str(h)][m] for r in per_recording]
            table[str(h)][m] = dict(rmse_mm=float(np.mean([x["rmse_mm"] for x in rows])),
                                    ratio=float(np.mean([x["ratio"] for x in rows])))
    return table


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def _hlabel(h):
    return f"{h / RATE_HZ:.1f} s (h={h})"


def format_tables(table, horizons):
    ms = methods()
    head = "| horizon | " + " | ".join(ms) + " |"
    sep = "|---|" + "---:|" * len(ms)
    a, b = [head, sep], [head, sep]
    for h in horizons:
        row = table[str(h)]
        best = min(ms, key=lambda m: row[m]["rmse_mm"])
        a.append(f"| {_hlabel(h)} | " + " | ".join(
            (f"**{row[m]['rmse_mm']:.2f}**" if m == best else f"{row[m]['rmse_mm']:.2f}")
            for m in ms) + " |")
        b.append(f"| {_hlabel(h)} | " + " | ".join(
            f"{row[m]['ratio']:.2f}" for m in ms) + " |")
    return ("RMSE in mm (3-D Euclidean, second half of each stream; mean over recordings, "
            "learners also over seeds; best per row in bold):\n\n" + "\n".join(a)
            + "\n\nRatio to repeat-last-value (per recording and seed, averaged; "
            "below 1 is better than repeating the last value):\n\n" + "\n".join(b))


def format_recordings(per_recording, horizons):
    """One line per recording: RMSE of repeat-last-value and of the best method."""
    ms = methods()
    head = "| recording | " + " | ".join(_hlabel(h) for h in horizons) + " |"
    lines = [head, "|---|" + "---|" * len(horizons)]
    for r in per_recording:
        cells = []
        for h in horizons:
            row = r["horizons"][str(h)]
            best = min(ms[1:], key=lambda m: row[m]["rmse_mm"])
            cells.append(f"{row[LAST]['rmse_mm']:.2f} → {row[best]['rmse_mm']:.2f} "
                         f"({best.split()[0]})")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return ("Per recording, RMSE mm of repeat-last-value → the best other method:\n\n"
            + "\n".join(lines))


def format_notes(per_recording, horizons, seeds, elapsed):
    mus = {h: [r["horizons"][str(h)][NLMS]["mu"] for r in per_recording] for h in horizons}
    div = sum(sum(r["horizons"][str(h)][m]["divergence_recoveries"])
              for r in per_recording for h in horizons for m in methods()[2:])
    spread = max(max(r["horizons"][str(h)][m]["rmse_mm_per_seed"])
                 - min(r["horizons"][str(h)][m]["rmse_mm_per_seed"])
                 for r in per_recording for h in horizons for m in methods()[2:])
    edge = sorted({h for h in horizons for m in mus[h] if m in (NLMS_GRID[0], NLMS_GRID[-1])})
    lines = [
        f"Recordings: {', '.join(r['name'] for r in per_recording)} "
        f"({per_recording[0]['samples']} samples each, mean spacing "
        f"{per_recording[0]['mean_spacing_ms']:.1f} ms: horizons in seconds are "
        f"h x 0.1 s, nominal); learners over seeds {', '.join(map(str, seeds))}; "
        f"all sgd, normalize=True, clip=1.0, delta=True.",
        "NLMS step size chosen on the first half only (per recording; recordings in the "
        "order above): " + "; ".join(f"h={h}: " + "/".join(f"{m:g}" for m in mus[h])
                                     for h in horizons) + "." + (
            f" (At the edge of the grid for h = {', '.join(map(str, edge))}.)" if edge
            else " (None at the edge of the grid.)"),
        f"Largest seed-to-seed spread of a learner's RMSE on one recording: {spread:.2f} mm; "
        f"divergence recoveries: {div}. Run time {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


def write_plot(table, horizons, env):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    secs = np.array(horizons, float) / RATE_HZ
    fig, (ax_r, ax_q) = plt.subplots(1, 2, figsize=(11, 4.4))
    for m in methods():
        style = {"last value": "k--", NLMS: "s-"}.get(m, "o-")
        ax_r.plot(secs, [table[str(h)][m]["rmse_mm"] for h in horizons], style, label=m)
        ax_q.plot(secs, [table[str(h)][m]["ratio"] for h in horizons], style, label=m)
    ax_r.set_ylabel("RMSE, mm (3-D; mean over recordings)")
    ax_q.set_ylabel("RMSE / repeat-last-value RMSE")
    for ax in (ax_r, ax_q):
        ax.set_xlabel("forecast horizon, s")
        ax.grid(True, alpha=0.3)
    ax_q.axhline(1.0, color="grey", linewidth=0.8)
    ax_r.legend(fontsize=8)
    fig.suptitle(f"Respiration forecast error against horizon (second half of each "
                 f"stream) — {env['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=110)
    plt.close(fig)
    return PNG_PATH


def write_readme(text):
    intro = textwrap.fill(
        "On each shipped respiration recording (marker xyz, 10 Hz), forecasts 0.1 s "
        "to 2.0 s ahead by every learner (Forecaster, delta=True, sgd), by "
        "repeat-last-value and by a causal NLMS linear forecaster whose step size is "
        "chosen on the first half of each stream; 3-D RMSE over the second half.  "
        "Details in the file's docstring.  Regenerate (about 10 s on a 2-core x86 "
        "VM; writes `results/bench_horizons.json`, `results/bench_horizons.png` if "
        "matplotlib is installed, and the block below):", 79)
    common.write_block(BEGIN, END, text, "## `bench_horizons.py` -- forecast error against "
                       "horizon\n\n" + intro + "\n\n    " + COMMAND + "\n\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--horizons", type=int, nargs="+", default=None, metavar="H",
                   help="horizons in samples at 10 Hz (default: 1 2 3 5 7 10 15 20)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="learner seeds (default 0 1 2)")
    p.add_argument("--recordings", nargs="+", default=None,
                   help="recording names (default: every shipped one)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 recording, 2 horizons, 1 seed")
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON, plot or README block")
    args = p.parse_args(argv)
    rtrl_edge = common.import_library()
    from rtrl_edge import data
    horizons = args.horizons or ([1, 10] if args.quick else list(HORIZONS))
    seeds = args.seeds or ([0] if args.quick else list(SEEDS))
    names = args.recordings or ([data.DEFAULT_RECORDING] if args.quick
                                else data.list_recordings())
    if any(h < 1 for h in horizons):
        p.error("--horizons must be >= 1")
    env = common.environment(rtrl_edge)
    t0 = time.perf_counter()

    def progress(what):
        print(f"  {what}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    per_recording = [bench_recording(rtrl_edge, name, horizons, seeds, progress)
                     for name in names]
    elapsed = time.perf_counter() - t0
    table = aggregate(per_recording, horizons)
    text = "\n\n".join([format_tables(table, horizons),
                        format_recordings(per_recording, horizons),
                        format_notes(per_recording, horizons, seeds, elapsed),
                        "Environment: " + common.format_environment(env)])
    print(text)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_horizons", quick=bool(args.quick),
                  command=" ".join([COMMAND, *given]), environment=env,
                  horizons=horizons, seeds=seeds, rate_hz=RATE_HZ,
                  learners=[dict(label=lb, n_hidden=n, lr=lr, **kw, **COMMON_KW)
                            for lb, n, lr, kw in LEARNERS],
                  nlms=dict(lags=NLMS_LAGS, grid=list(NLMS_GRID), eps=NLMS_EPS,
                            selection="targets in [T/4, T/2): first half only"),
                  elapsed_s=elapsed, table=table, recordings=per_recording)
    if not args.no_write:
        common.publish(result, text, JSON_PATH, write_readme, plot=lambda: write_plot(table, horizons, env),
                       alt="RMSE against forecast horizon")
    return result


if __name__ == "__main__":
    main()
