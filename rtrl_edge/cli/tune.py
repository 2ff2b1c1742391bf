"""`rtrl-edge tune`: the learner, size and learning rate that forecast the
user's recordings best within the budgets (`rtrl_edge.tuning`), on every
core or on a Dask cluster."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ._common import byte_size, json_safe, positive_float, positive_int, write_json
from ._preflight import check_output_path

NAME = "rtrl-edge tune"


def add_parser(sub) -> argparse.ArgumentParser:
    tune = sub.add_parser(
        "tune", help="the learner, size and learning rate that forecast your recordings best",
        description="Evaluate a grid of learners, hidden sizes and learning rates causally "
                    "on your recordings (the forecast made at t is learnt from at t+H), "
                    "every channel in turn as the target, and print the best within the "
                    "budgets and the flags that give it to `rtrl-edge run`. Score: RMSE of "
                    "the forecast / RMSE of repeating the last value, after the first 20 % "
                    "of each recording, averaged over channels and recordings. Candidates "
                    "outside --memory (exact) or --step-us (a cost model fitted on this "
                    "machine first) are skipped before anything runs.")
    from .. import data
    tune.add_argument("recordings", nargs="+", metavar="RECORDING",
                      help="a shipped recording (" + ", ".join(data.list_recordings())
                           + ") or the path of an ExtMarker CSV file")
    tune.add_argument("--horizon", type=positive_int, required=True, metavar="H",
                      help="forecast this many samples ahead")
    tune.add_argument("--memory", type=byte_size, metavar="B",
                      help="memory budget of the model and its forecast window, e.g. "
                           "65536, 64KiB, 1MB")
    tune.add_argument("--step-us", type=positive_float, metavar="T",
                      help="time budget of one learning step in microseconds, as "
                           "`rtrl-edge plan` predicts it here")
    tune.add_argument("--summary-json", metavar="PATH",
                      help="write the chosen configuration, its score, every candidate's "
                           "score, the budgets and the references as JSON")
    where = tune.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=positive_int, metavar="N",
                       help="worker processes on this machine (default: every core)")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run the grid on this Dask scheduler's workers instead (pip "
                            "install 'rtrl-edge[dask]'); the scheduler and the workers "
                            "need the same rtrl_edge, the recordings travel with the tasks")
    tune.add_argument("--quick", action="store_true",
                      help="a small grid (the two smallest sizes of each learner, lr 0.01): "
                           "seconds, indicative")
    tune.add_argument("--quiet", action="store_true",
                      help="no progress; print the choice and the references only")
    tune.set_defaults(func=main)
    return tune


def load(spec: str):
    """A shipped recording by name, else an ExtMarker CSV file by path;
    ValueError with a one-line reason."""
    from .. import data
    names = data.list_recordings()
    if spec in names or (spec.endswith(".csv") and spec[:-4] in names):
        return data.load_recording(spec)
    if not os.path.exists(spec):
        raise ValueError(f"{spec}: neither a shipped recording ({', '.join(names)}) nor a "
                         f"file")
    try:
        return data.load_extmarker_csv(spec)
    except OSError as exc:
        raise ValueError(f"{spec}: {exc.strerror or exc}") from None


def run_flags(chosen: dict, horizon: int) -> str:
    """The `rtrl-edge run` flags that build the chosen model."""
    flags = f"--learner {chosen['learner']}"
    if chosen["cell"] != "elman":
        flags += f" --cell {chosen['cell']}"
    return flags + f" --hidden {chosen['hidden']} --lr {chosen['lr']:g} --horizon {horizon}"


def _progress(stream, every_s: float = 2.0):
    """A `progress(done, total)` printing 'rtrl-edge tune: done/total tasks, N s'
    to `stream` at most every `every_s` seconds, and at the end."""
    t0 = last = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= every_s:
            last = now
            print(f"{NAME}: {done}/{total} tasks, {now - t0:.0f} s", file=stream, flush=True)
    return progress


def _score(value) -> str:
    return "diverged" if value is None or value == float("inf") else f"{value:.3f}"


def main(args: argparse.Namespace, out=None) -> int:
    """Check everything a user can get wrong first (one line on stderr, exit
    2), connect to the scheduler if one is given (exit 1 if it cannot be
    reached), run the grid, print the ranking and the choice to `out`
    (default: sys.stdout at the time of the call)."""
    from .. import tuning
    out = sys.stdout if out is None else out

    def say(*parts):
        print(*parts, file=out, flush=True)

    def fail(message, code=2):
        print(f"{NAME}: {message}", file=sys.stderr, flush=True)
        return code

    if args.scheduler:
        try:
            tuning.check_scheduler_url(args.scheduler)
        except ValueError as exc:
            return fail(f"--scheduler: {exc}")
    problem = check_output_path(args.summary_json)
    if problem:
        return fail(f"--summary-json {args.summary_json}: {problem}")
    recordings = {}
    try:
        for spec in args.recordings:
            rec = load(spec)
            if rec.name in recordings:
                return fail(f"{spec}: a recording named {rec.name} is given twice")
            recordings[rec.name] = rec.xyz
        data = tuning.check_recordings(recordings, args.horizon)
        n_in = next(iter(data.values()))[0].shape[1]
        candidates = tuning.grid(quick=args.quick)
        sized = tuning.check_budgets(candidates, n_in, args.horizon, memory_bytes=args.memory,
                                     step_us=args.step_us)
    except ValueError as exc:              # NothingFits too
        return fail(str(exc))
    try:
        ex = tuning.executor(jobs=args.jobs, scheduler=args.scheduler)
    except ImportError as exc:
        return fail(str(exc))
    except tuning.SchedulerError as exc:
        return fail(str(exc), 1)
    within = sum(not s.skipped for s in sized)
    backend = ex.describe()
    if not args.quiet:
        print(f"{NAME}: {within} of {len(sized)} candidates within the budgets, on "
              f"{len(recordings)} recording(s); running on {backend}",
              file=sys.stderr, flush=True)
    progress = None if args.quiet else _progress(sys.stderr)
    with ex:
        result = tuning.tune(recordings, args.horizon, memory_bytes=args.memory,
                             step_us=args.step_us, candidates=candidates, executor=ex,
                             progress=progress)
    return _report(args, result, within, say, fail, backend)


def _report(args, result, within, say, fail, backend) -> int:
    budget = " and ".join(part for part in (
        f"{args.memory:,} bytes" if args.memory else "",
        f"{args.step_us:g} us per step" if args.step_us else "") if part) or "no budget"
    say(f"forecast {args.horizon} samples ahead on {', '.join(r['name'] for r in result.recordings)}"
        f" ({budget})")
    say("score: RMSE of the forecast / RMSE of repeating the last value, after the first "
        "20 % of each recording, mean over channels and recordings (lower is better)")
    if not args.quiet:
        say(f"{'rank':>4s}  {'learner':8s} {'cell':6s} {'hidden':>6s} {'lr':>6s} "
            f"{'score':>8s} {'memory_bytes':>12s} {'step (us)':>9s}")
        for i, r in enumerate(result.rows[:within], 1):
            us = "-" if r["step_us"] is None else f"{r['step_us']:.1f}"
            say(f"{i:4d}  {r['learner']:8s} {r['cell']:6s} {r['hidden']:6d} {r['lr']:6g} "
                f"{_score(r['score']):>8s} {r['memory_bytes']:12,d} {us:>9s}")
        skipped = result.rows[within:]
        if skipped:
            say(f"skipped before evaluation, outside the budgets ({len(skipped)}):")
            groups = {}
            for r in skipped:
                figures = ([f"{r['memory_bytes']:,} bytes"] if "memory" in r["skipped"]
                           else []) + ([f"{r['step_us']:.1f} us"] if "time" in r["skipped"]
                                       else [])
                groups.setdefault((r["learner"], r["cell"], r["skipped"]), {})[r["hidden"]] = \
                    ", ".join(figures)
            for (learner, cell, why), sizes in groups.items():
                what = ", ".join(f"{n} ({figures})" for n, figures in sorted(sizes.items()))
                say(f"  {learner}/{cell} hidden {what}: over the {why} budget")
    auto = result.references["auto"]
    say(f"references: repeating the last value 1.000; Forecaster.auto (the untuned mixture "
        f"`rtrl-edge run` uses without model flags) {_score(auto['score'])}, "
        f"{auto['memory_bytes']:,} bytes"
        + ("" if auto["within_memory"] else " (over the memory budget)"))
    chosen = result.chosen
    flags = chosen and run_flags(chosen, args.horizon)
    if chosen:
        within_what = " within the budgets" if args.memory or args.step_us else ""
        say(f"best{within_what}: {chosen['learner']}/{chosen['cell']}, hidden "
            f"{chosen['hidden']}, lr {chosen['lr']:g}: score {_score(chosen['score'])}, "
            f"{chosen['memory_bytes']:,} bytes")
        say(f"pass to rtrl-edge run: {flags}")
    if args.summary_json:
        summary = dict(result.to_dict(), run_flags=flags, executor=backend,
                       grid="quick" if args.quick else "full")
        try:
            write_json(args.summary_json, json_safe(summary))
        except OSError as exc:
            return fail(f"--summary-json {args.summary_json}: {exc.strerror or exc}", 1)
    if chosen is None:
        return fail("every candidate within the budgets diverged (non-finite forecasts)", 1)
    return 0
