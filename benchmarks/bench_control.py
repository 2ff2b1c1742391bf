"""Delay compensation on standard robot simulators: MuJoCo's
InvertedPendulum, Reacher and Pusher through gymnasium (and the Reacher
measured by its joint angles alone), commands that reach the plant 2, 4 or
6 steps late, a fixed linear controller tuned at zero delay acting on each
predictor's estimate of the state when its command lands (issue 17).

Plants, controllers and predictors: ``control_plants.py``.  Every
contender sees the same episodes (the same seeds: initial states, targets),
200 of them in a row from a cold start; the learning predictors keep what
they learnt across episodes (``reset()`` at each start).  Reported per plant
and delay: the fraction of successful episodes and the mean tracking error
over episodes 1-20 (cold start) and 181-200, the predictor's time per step
(update + command; median and p99), and the learning curve as a plot.

Targets (on the three standard plants; the angles-only Reacher is reported
against the same bars): over episodes 1-20, DelayCompensator never worse
than the best linear predictor (extrapolation, RLS 0.99, RLS 0.999: success
no lower, error no higher); over episodes 181-200, its error within 10 % of
the oracle's.  Run: ``python benchmarks/bench_control.py`` (about 7 minutes on
one core; ``--quick``: a smoke run of a few episodes).  Needs
``pip install '.[control]'`` (gymnasium and MuJoCo).
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import control_plants as cp  # noqa: E402

RESULTS_DIR = common.RESULTS_DIR
JSON_PATH = os.path.join(RESULTS_DIR, "bench_control.json")
PNG_PATH = os.path.join(RESULTS_DIR, "bench_control.png")
BEGIN, END = "<!-- bench_control:begin -->", "<!-- bench_control:end -->"
SECTION = ("## Delay compensation on robot simulators (`bench_control.py`)\n\n"
           "MuJoCo plants through gymnasium, commands landing 2-6 steps late, a fixed "
           "linear controller acting on each predictor's estimate of the state when its "
           "command lands; see the script's docstring for the protocol.\n\n")
DELAYS = (2, 4, 6)
EPISODES = 200
WINDOW = 20                      # episodes: cold start 1-20, end 181-200


def run(envs, delays, episodes, seed, progress):
    results = {}
    for env in envs:
        plant = cp.PLANTS[env]()
        for delay in delays:
            key = f"{env} d={delay}"
            rows = {}
            for name, make in cp.CONTENDERS.items():
                timer = []
                t0 = time.perf_counter()
                predictor = make(plant, delay)
                eps = cp.run_episodes(plant, predictor, delay, episodes, seed, timer)
                ns = np.asarray(timer, dtype=float)
                rows[name] = dict(success=[e[0] for e in eps], error=[e[1] for e in eps],
                                  us_median=float(np.median(ns)) / 1e3,
                                  us_p99=float(np.percentile(ns, 99)) / 1e3,
                                  steps=len(timer), seconds=time.perf_counter() - t0)
                if hasattr(predictor, "weights"):
                    rows[name]["final_weights"] = predictor.weights
                progress(f"{key}: {name}")
            results[key] = dict(env=env, delay=delay, rows=rows)
    return results


def summarise(results, episodes):
    """Per plant and delay, per contender: success and error over the first
    and the last WINDOW episodes; the targets."""
    w = min(WINDOW, episodes)
    out = {}
    for key, r in results.items():
        rows = {}
        for name, row in r["rows"].items():
            s, e = np.asarray(row["success"], float), np.asarray(row["error"])
            rows[name] = dict(first_success=s[:w].mean(), first_error=e[:w].mean(),
                              last_success=s[-w:].mean(), last_error=e[-w:].mean(),
                              us_median=row["us_median"], us_p99=row["us_p99"])
        comp, oracle = rows["DelayCompensator"], rows["oracle"]
        best = min(cp.LINEAR, key=lambda n: (-rows[n]["first_success"], rows[n]["first_error"]))
        lin = rows[best]
        cold = (comp["first_success"] >= lin["first_success"]
                and comp["first_error"] <= lin["first_error"])
        end_ratio = comp["last_error"] / oracle["last_error"]
        out[key] = dict(rows=rows, best_linear=best, target_plant=r["env"] in cp.STANDARD,
                        cold_start_error_ratio=comp["first_error"] / lin["first_error"],
                        cold_start_met=bool(cold), end_error_ratio=end_ratio,
                        end_met=bool(end_ratio <= 1.10))
    return out


def format_table(summary, episodes):
    w = min(WINDOW, episodes)
    last = f"{episodes - w + 1}-{episodes}"
    lines = [f"| plant, delay | predictor | success 1-{w} | error 1-{w} | success {last} | "
             f"error {last} | µs/step median (p99) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, s in summary.items():
        for name, r in s["rows"].items():
            bold = "**" if name == "DelayCompensator" else ""
            lines.append(f"| {key} | {bold}{name}{bold} | {r['first_success']:.0%} | "
                         f"{r['first_error']:.4g} | {r['last_success']:.0%} | "
                         f"{r['last_error']:.4g} | {r['us_median']:.1f} ({r['us_p99']:.1f}) |")
    return "\n".join(lines)


def format_compact(summary, episodes):
    """The README's table: per plant and delay, the best linear predictor,
    DelayCompensator and the oracle."""
    w = min(WINDOW, episodes)
    last = f"{episodes - w + 1}-{episodes}"
    lines = [f"| plant, delay | best linear predictor: success / error 1-{w}, error {last} | "
             f"DelayCompensator | oracle |", "| --- | --- | --- | --- |"]
    for key, s in summary.items():
        cells = []
        for name in (s["best_linear"], "DelayCompensator", "oracle"):
            r = s["rows"][name]
            cells.append(f"{r['first_success']:.0%} / {r['first_error']:.4g}, "
                         f"{r['last_error']:.4g}")
        lines.append(f"| {key} | {s['best_linear']}: {cells[0]} | **{cells[1]}** | "
                     f"{cells[2]} |")
    return "\n".join(lines)


def format_targets(summary, episodes):
    w = min(WINDOW, episodes)
    lines = [f"| plant, delay | episodes 1-{w}: DelayCompensator error / best linear's "
             f"(which) | met | episodes {episodes - w + 1}-{episodes}: error / oracle's | "
             f"met (≤ 1.10) |", "| --- | --- | --- | ---: | --- |"]
    for key, s in summary.items():
        key = key if s["target_plant"] else f"{key} (not one of the issue's plants)"
        lines.append(f"| {key} | {s['cold_start_error_ratio']:.3f} ({s['best_linear']}) | "
                     f"{'yes' if s['cold_start_met'] else '**no**'} | "
                     f"{s['end_error_ratio']:.3f} | {'yes' if s['end_met'] else '**no**'} |")
    return "\n".join(lines)


def write_plot(results, episodes):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    envs = list(dict.fromkeys(r["env"] for r in results.values()))
    delays = sorted({r["delay"] for r in results.values()})
    fig, axes = plt.subplots(len(envs), len(delays), figsize=(4.2 * len(delays),
                             3.0 * len(envs)), squeeze=False)
    k = max(1, min(5, episodes // 10))
    for r in results.values():
        ax = axes[envs.index(r["env"])][delays.index(r["delay"])]
        oracle = np.asarray(r["rows"]["oracle"]["error"])
        for name, row in r["rows"].items():
            if name == "oracle":
                continue
            ratio = np.asarray(row["error"]) / oracle       # the same episode's
            smooth = np.convolve(ratio, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(len(smooth)) + k, smooth, label=name,
                    linewidth=2 if name == "DelayCompensator" else 1)
        ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8, label="oracle")
        ax.axhline(1.1, color="grey", linestyle=":", linewidth=0.8, label="oracle + 10 %")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{r['env']}, delay {r['delay']}", fontsize=9)
        ax.set_xlabel("episode", fontsize=8)
        ax.set_ylabel(f"error / oracle's ({k}-episode mean)", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=100)
    plt.close(fig)
    return PNG_PATH


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", choices=cp.ENVS, default=list(cp.ENVS))
    p.add_argument("--delays", nargs="+", type=int, default=list(DELAYS))
    p.add_argument("--episodes", type=int, default=None,
                   help=f"episodes per plant, delay and predictor (default {EPISODES}; "
                        f"4 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 episodes, delay 2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON, plot or README block")
    args = p.parse_args(argv)
    if args.quick:
        args.delays = [2] if args.delays == list(DELAYS) else args.delays
    episodes = args.episodes or (4 if args.quick else EPISODES)
    if episodes < 1 or any(d < 1 for d in args.delays):
        p.error("--episodes and --delays must be >= 1")
    gym, mujoco = cp.require_gymnasium()
    rtrl_edge = common.import_library()
    env = common.environment(rtrl_edge)
    env.update(gymnasium=gym.__version__, mujoco=mujoco.__version__)
    t0 = time.perf_counter()

    def progress(what):
        print(f"  {what}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    results = run(args.envs, args.delays, episodes, args.seed, progress)
    summary = summarise(results, episodes)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_control", quick=bool(args.quick),
                  command=" ".join(["python benchmarks/bench_control.py", *given]),
                  environment=env, episodes=episodes, results=results, summary=summary,
                  elapsed_s=time.perf_counter() - t0)
    text = "\n\n".join([
        f"{common.format_environment(env)}; gymnasium {gym.__version__}, MuJoCo "
        f"{mujoco.__version__}; {episodes} episodes per row, seed {args.seed}.",
        format_table(summary, episodes), "Targets:", format_targets(summary, episodes)])
    print(text)
    if not args.no_write:
        common.publish(result, text, JSON_PATH,
                       lambda t: common.write_block(BEGIN, END, t, SECTION),
                       plot=lambda: write_plot(results, episodes), compact=True,
                       alt="tracking error per episode over the oracle's, every predictor, "
                           "plant and delay")
    return result


if __name__ == "__main__":
    main()
