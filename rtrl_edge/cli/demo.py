"""`rtrl-edge demo`: stream a shipped respiration recording through an
online learner and report forecast error, latency and memory."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .. import data
from ..auto import AutoForecaster
from ..forecast import Forecaster
from ..model import CELLS, LEARNERS, OPTIMIZERS, OnlineRNN
from . import demo_digits, demo_speech, demo_text
from ._common import positive_float, positive_int
from ._preflight import check_sizes, wants_auto


def add_parser(sub) -> argparse.ArgumentParser:
    demo = sub.add_parser(
        "demo", help="learn to forecast a real respiration recording online (no hardware)",
        description="Stream a shipped respiratory-motion recording (external chest marker, "
                    "3-D position in mm at 10 Hz) through an online learner, one sample at a "
                    "time: each forecast is made before its target is seen, then the model "
                    "learns from it. Reports forecast RMSE against the repeat-the-last-value "
                    "baseline, latency per step and the model's memory.")
    demo.add_argument("--recording", default=data.DEFAULT_RECORDING,
                      choices=data.list_recordings(), metavar="NAME",
                      help="shipped recording to stream (default: %(default)s; choices: "
                           + ", ".join(data.list_recordings()) + ")")
    demo.add_argument("--horizon", type=positive_int, default=2, metavar="STEPS",
                      help="forecast this many samples ahead (default: %(default)s, "
                           "i.e. 0.2 s at 10 Hz)")
    demo.add_argument("--hidden", type=positive_int, default=16,
                      help="hidden units (of each RNN member of the auto mixture, or of the "
                           "one model; default: %(default)s)")
    one = demo.add_argument_group(
        "one model instead of the auto mixture",
        "Without these, the demo runs Forecaster.auto (a mixture with nothing to tune). "
        "Any of them runs one OnlineRNN instead, with the others at their defaults "
        "(rtrl, elman, sgd, lr 0.01).")
    one.add_argument("--learner", choices=LEARNERS, help="sensitivity learner")
    one.add_argument("--cell", choices=CELLS,
                     help="recurrent cell; diag needs --learner rtrl and an even --hidden")
    one.add_argument("--window", type=positive_int,
                     help="truncation of --learner tbptt (default: 16)")
    one.add_argument("--rec-density", type=positive_float,
                     help="sparse W_rec keeping this fraction (needed to make "
                          "--learner snap2 cheaper than rtrl)")
    one.add_argument("--optimizer", choices=OPTIMIZERS, help="online optimiser")
    one.add_argument("--lr", type=positive_float, help="learning rate")
    demo.add_argument("--clip", type=positive_float, default=1.0,
                      help="clip each step's gradient to this norm (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="print the summary only")
    demo.set_defaults(func=main)
    apps = demo.add_subparsers(
        dest="app", metavar="APP",
        title="applications (rtrl-edge demo APP --help)",
        description="Without APP: the respiration forecast above. text: next-character "
                    "prediction on tinyshakespeare, one online pass; speech: spoken digits "
                    "(FSDD) from a streaming log-mel front end; digits: 8x8 handwritten "
                    "digits read row by row.")
    for app in (demo_text, demo_speech, demo_digits):
        app.add_parser(apps)
    return demo


def main(args: argparse.Namespace, out=sys.stdout) -> int:
    """The main job with no hardware: a real recording, learnt online.

    Task: at time t, forecast the marker position at t + h.  The network
    predicts the displacement ``x_{t+h} - x_t`` from normalised inputs
    (``normalize=True``); the forecast is ``x_t`` plus that displacement.  The
    target of a forecast arrives h samples after it is made, so the network
    learns on the lagged stream (input x_{t-h}, target x_t - x_{t-h}) and
    forecasts by running a copy of its state over the last h inputs
    (DESIGN §3.8).  Every forecast uses only samples up to the time it is made.
    """
    def say(*parts):
        print(*parts, file=out, flush=True)

    rec = data.load_recording(args.recording)
    h = args.horizon
    xyz = rec.xyz.astype(np.float32)
    T = len(rec)
    if T <= h + 1:
        say(f"rtrl-edge demo: recording {rec.name} has {T} samples; horizon {h} needs more")
        return 2
    say(f"rtrl-edge demo: {rec.name}, {T} samples at {rec.sample_rate_hz:.1f} Hz, "
        f"3 channels (marker x, y, z in mm)")
    for note in rec.dropped:
        say(f"  loader dropped {note}")
    auto = wants_auto(args)
    settings = dict(kind="auto" if auto else "plain", hidden=args.hidden, horizon=h,
                    learner=args.learner or "rtrl", cell=args.cell or "elman",
                    window=args.window or 16, optimizer=args.optimizer or "sgd",
                    rec_density=args.rec_density)
    problem = check_sizes(settings, 3, n_out=3)
    if problem:
        say(f"rtrl-edge demo: {problem}")
        return 2
    # At time t the target of the forecast made at t - h arrives: the
    # forecaster learns from it, then forecasts x_{t+h} (everything it uses
    # is known at t).
    if auto:
        fc = Forecaster.auto(3, 3, h, seed=args.seed) if args.hidden == 16 else \
            AutoForecaster(3, 3, h, seed=args.seed, hidden=args.hidden)
        say(f"  model: Forecaster.auto, a mixture of {len(fc.members)} forecasters (last "
            f"value, linear, seasonal, RNNs of {fc.hidden} units), nothing to tune; "
            f"memory_bytes={fc.memory_bytes:,}")
    else:
        try:
            net = OnlineRNN(3, args.hidden, 3, learner=settings["learner"],
                            cell=settings["cell"], optimizer=settings["optimizer"],
                            lr=args.lr or 1e-2, clip=args.clip, normalize=True,
                            seed=args.seed,
                            window=settings["window"] if settings["learner"] == "tbptt"
                            else None, rec_density=args.rec_density)
        except ValueError as exc:
            say(f"rtrl-edge demo: {exc}")
            return 2
        # the lagged stream, and a copy of the state run over the last h inputs
        fc = Forecaster(net, h, delta=True)
        say(f"  model: {net.learner} learner, {net.cell} cell, {args.hidden} hidden units, "
            f"{settings['optimizer']} lr={args.lr or 1e-2:g}, memory_bytes={net.memory_bytes:,}")
    say(f"  task: forecast {h} sample(s) = {1000 * h / rec.sample_rate_hz:.0f} ms ahead; "
        f"every forecast is made before its target is seen")
    n = T - 2 * h                                    # forecasts with a target to score
    forecast = np.empty((n, 3), dtype=np.float64)    # forecast[i]: of x_{i+2h}, made at i+h
    latency_ns = np.empty(T - h, dtype=np.int64)
    clock = time.perf_counter_ns
    report_every = max(n // 10, 1)
    lo = 0                                           # first forecast since the last report
    for t in range(T):
        t0 = clock()
        f = fc.update(xyz[t], xyz[t])
        if t < h:
            continue
        latency_ns[t - h] = clock() - t0
        i = t - h
        if i >= n:
            continue
        forecast[i] = f
        if not args.quiet and (i + 1 - lo == report_every or i + 1 == n):
            err = _rmse(forecast[lo:i + 1], xyz[lo + 2 * h:i + 1 + 2 * h])
            base = _rmse(xyz[lo + h:i + 1 + h], xyz[lo + 2 * h:i + 1 + 2 * h])
            say(f"  forecast {i + 1:5d}/{n}  RMSE(last {i + 1 - lo}) {err:6.3f} mm  "
                f"baseline {base:6.3f} mm  {np.median(latency_ns[lo:i + 1]) / 1e3:6.1f} us/step")
            lo = i + 1

    truth = xyz[2 * h:].astype(np.float64)
    last = xyz[h:T - h].astype(np.float64)
    half = n // 2
    rows = [("whole stream", slice(0, n)), ("second half", slice(half, n))]
    say("")
    say("summary")
    say(f"  {'':14s} {'RMSE (mm)':>10s} {'baseline (mm)':>14s} {'ratio':>7s}")
    for label, sl in rows:
        err = _rmse(forecast[sl], truth[sl])
        base = _rmse(last[sl], truth[sl])
        say(f"  {label:14s} {err:10.3f} {base:14.3f} {err / base:7.2f}")
    say("  (baseline: repeat the last value; ratio < 1 means the learner forecasts better)")
    say(f"  latency per sample: median {np.median(latency_ns) / 1e3:.1f} us, "
        f"p99 {np.percentile(latency_ns, 99) / 1e3:.1f} us over {len(latency_ns)} samples "
        f"(learn from the arrived target + forecast)")
    say(f"  memory_bytes: {fc.memory_bytes:,} (all buffers, allocated once)")
    if auto:
        say("  members at the end: weight, recent error relative to the last value's")
        for name, m in fc.stats["members"].items():
            say(f"    {name:38s} {m['weight']:5.2f}  {m['recent_error']:6.3f}")
        say(f"  divergence recoveries {fc.divergence_recoveries}")
    else:
        stats = fc.net.stats
        say(f"  updates {stats['updates']}, divergence recoveries "
            f"{stats['divergence_recoveries']}, rejected inputs {stats['rejected_inputs']}")
    say("  data: ExtMarker respiratory-motion recordings, Krilavicius et al. (2013), "
        "CC BY 4.0 (see rtrl_edge/data/README.md)")
    return 0


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean square of the 3-D position error, in the inputs' units."""
    return float(np.sqrt(np.mean(np.sum((np.asarray(a, np.float64) - b) ** 2, axis=1))))

