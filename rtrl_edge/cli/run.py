"""`rtrl-edge run`: the online loop on a serial port, a recording or a
synthetic signal."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .. import data
from ..forecast import Forecaster
from ..model import CELLS, LEARNERS, OPTIMIZERS, OnlineRNN
from ._common import json_safe, positive_float, positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    run = sub.add_parser(
        "run", help="the online loop on a serial port, a recording or a synthetic signal",
        description="Read samples (from the board on --port, a shipped recording, or a "
                    "synthetic signal), forecast the target channel --horizon samples ahead "
                    "while learning online, and, on a board with an actuator, close the "
                    "loop: a PI controller acts on the forecast and the command goes back "
                    "over the link. Checkpoints atomically; Ctrl-C or SIGTERM stop cleanly "
                    "and checkpoint; --resume continues from the checkpoint.")
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", metavar="URL",
                     help="serial port or pyserial URL: /dev/ttyACM0, a pty from "
                          "'rtrl-edge sim-board', socket://host:port, loop://")
    src.add_argument("--replay", metavar="NAME", choices=data.list_recordings(),
                     help="stream a shipped recording (x, y, z of one marker, 10 Hz)")
    src.add_argument("--synthetic", action="store_true",
                     help="stream a synthetic two-tone signal (100 Hz)")
    run.add_argument("--baud", type=positive_int, default=115200,
                     help="baud rate of a real port (default: %(default)s)")
    run.add_argument("--horizon", type=positive_int, default=10,
                     help="forecast this many samples ahead (default: %(default)s)")
    run.add_argument("--target", type=int, default=0, metavar="CHANNEL",
                     help="channel to forecast and control (default: 0)")
    run.add_argument("--learner", choices=LEARNERS, default="rtrl")
    run.add_argument("--cell", choices=CELLS, default="elman")
    run.add_argument("--hidden", type=positive_int, default=32,
                     help="hidden units (default: %(default)s)")
    run.add_argument("--window", type=positive_int, default=16, help="tbptt truncation")
    run.add_argument("--rec-density", type=positive_float, default=None,
                     help="sparse W_rec (snap2)")
    run.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    run.add_argument("--lr", type=positive_float, default=1e-2)
    run.add_argument("--deadline-ms", type=positive_float, default=None,
                     help="per-sample budget; slower samples are counted as misses "
                          "(default: the device's sample period)")
    run.add_argument("--checkpoint", metavar="PATH", help="periodic atomic checkpoint (.npz)")
    run.add_argument("--checkpoint-every", type=positive_float, default=60.0, metavar="S",
                     help="seconds between checkpoints (default: %(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue from --checkpoint (a fresh start if it does not exist)")
    run.add_argument("--max-steps", type=positive_int, metavar="N",
                     help="stop after N samples in all (with --resume, counting those "
                          "before the checkpoint)")
    run.add_argument("--no-control", action="store_true",
                     help="forecast only; send no commands")
    run.add_argument("--control-on", choices=("forecast", "measurement"), default="forecast",
                     help="what the controller acts on (default: %(default)s; 'measurement' "
                          "is the same loop without forecasting)")
    run.add_argument("--setpoint", type=float, default=0.0,
                     help="controller setpoint for the target channel (default: 0)")
    run.add_argument("--kp", type=float, default=0.8, help="controller gain (default: 0.8)")
    run.add_argument("--ki", type=float, default=0.4,
                     help="controller integral gain, per second (default: 0.4)")
    run.add_argument("--actuation-delay", type=int, default=0, metavar="N",
                     help="hold every command N samples before sending it: the latency of a "
                          "slow actuator or bus, which acting on a forecast compensates "
                          "(default: 0)")
    run.add_argument("--summary-json", metavar="PATH", help="write the closing summary as JSON")
    run.add_argument("--plot", metavar="PNG",
                     help="draw signal, forecast and error (needs matplotlib: "
                          "pip install 'rtrl-edge[plot]')")
    run.add_argument("--quiet", action="store_true", help="no live progress")
    run.add_argument("--seed", type=int, default=0)
    run.set_defaults(func=main)
    return run


def _progress_line(summary: dict) -> str:
    lat = summary["latency"]
    src = summary.get("source", {})
    link_errors = sum(src.get(k, 0) for k in ("crc_errors", "cobs_errors", "overflows",
                                             "seq_gaps", "rejected_samples"))
    return (f"samples {summary['samples']:8d}  loss {summary['loss']:9.4g}  forecast RMSE "
            f"{summary['recent_forecast_rmse']:8.4g} (last value {summary['recent_baseline_rmse']:8.4g})"
            f"  {lat['median_us']:7.1f} us/step  misses {summary['deadline_misses']}  "
            f"link errors {link_errors}")


def main(args: argparse.Namespace, out=sys.stdout) -> int:
    """`rtrl-edge run`: the online loop, see OnlineLoop."""
    import json
    import os
    import signal
    from ..loop import OnlineLoop, PIController, ReplaySource, SerialSource, SyntheticSource
    from ..model import CheckpointError

    def say(*parts):
        print(*parts, file=out, flush=True)

    if args.resume and not args.checkpoint:
        say("rtrl-edge run: --resume needs --checkpoint PATH")
        return 2
    link = None
    try:
        if args.port:
            from ..bridge import SerialLink
            link = SerialLink(args.port, baudrate=args.baud)
            source = SerialSource(link)
            say(f"rtrl-edge run: {args.port}: {source.channels} channels at "
                f"{source.rate_hz:g} Hz, {link.hello.n_actuators} actuator(s)")
        elif args.replay:
            source = ReplaySource(data.load_recording(args.replay).xyz, 10.0)
        else:
            source = SyntheticSource(seed=args.seed)
    except (TimeoutError, OSError) as exc:
        say(f"rtrl-edge run: {exc}")
        return 1
    channels = source.channels
    if not 0 <= args.target < channels:
        say(f"rtrl-edge run: --target {args.target} but the source has {channels} channels")
        return 2
    # the target first: the forecaster learns its change over the horizon
    inputs = [args.target] + [c for c in range(channels) if c != args.target]
    extra = None
    if args.resume and os.path.exists(args.checkpoint):
        try:
            net, extra = OnlineLoop.resume(args.checkpoint)
        except (CheckpointError, OSError) as exc:
            say(f"rtrl-edge run: cannot resume: {exc}. The checkpoint was left as it is; "
                f"move it away to start afresh.")
            return 2
        if net.n_in != channels:
            say(f"rtrl-edge run: the checkpoint's model takes {net.n_in} inputs; this "
                f"source has {channels} channels")
            return 2
        say(f"rtrl-edge run: resumed from {args.checkpoint} ({net.stats['steps']} steps learnt)")
    else:
        try:
            net = OnlineRNN(channels, args.hidden, 1, learner=args.learner, cell=args.cell,
                            optimizer=args.optimizer, lr=args.lr, clip=1.0, normalize=True,
                            seed=args.seed,
                            window=args.window if args.learner == "tbptt" else None,
                            rec_density=args.rec_density)
        except ValueError as exc:
            say(f"rtrl-edge run: {exc}")
            return 2
    try:
        fc = Forecaster(net, args.horizon, delta=True)
    except ValueError as exc:
        say(f"rtrl-edge run: {exc}")
        return 2
    controller = sink = None
    if link is not None and link.hello.n_actuators > 0 and not args.no_control:
        dt = 1.0 / source.rate_hz
        controller = PIController(kp=args.kp, ki=args.ki, setpoint=args.setpoint, dt=dt)
        if args.control_on == "measurement":
            controller = _on_measurement(controller)
        sink = _DelayLine(args.actuation_delay, lambda u: link.command(int(round(u * 1000))))
    deadline = args.deadline_ms
    if deadline is None and getattr(source, "rate_hz", None):
        deadline = 1000.0 / source.rate_hz
    loop = OnlineLoop(fc, source, inputs=inputs, targets=(args.target,),
                      controller=controller, sink=sink, deadline_ms=deadline,
                      checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                      trace=5000 if args.plot else 0)
    if extra is not None:
        try:
            loop.restore(extra)
        except (KeyError, ValueError) as exc:
            say(f"rtrl-edge run: cannot resume from {args.checkpoint}: {exc}")
            return 2
        loop.gap()      # what the model learnt is kept; the stream itself has a break
    if controller is not None and args.control_on == "measurement":
        controller.loop = loop

    def stop(signum, frame):
        loop.stop()
    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    live = not args.quiet and out.isatty() if hasattr(out, "isatty") else False
    progress = (lambda s: print("\r" + _progress_line(s), end="", file=out, flush=True)) \
        if live else None
    try:
        summary = loop.run(max_steps=args.max_steps, progress=progress)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if link is not None:
            link.close()
    if live:
        print(file=out)
    _print_summary(summary, say)
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(json_safe(summary), f, indent=2, allow_nan=False)
            f.write("\n")
    if args.plot:
        _plot(loop, args.plot, say)
    return 0




class _DelayLine:
    """Passes each command on `delay` calls later (a fixed ring, no queue)."""

    def __init__(self, delay: int, send):
        self.ring = [None] * max(int(delay), 0)
        self.i = 0
        self.send = send

    def __call__(self, u):
        if self.ring:
            u, self.ring[self.i] = self.ring[self.i], u
            self.i = (self.i + 1) % len(self.ring)
        if u is not None:
            self.send(u)


class _on_measurement:
    """The same controller fed the measured value instead of the forecast
    (the loop without forecasting, for comparison)."""

    def __init__(self, controller):
        self.controller, self.loop = controller, None
        self.setpoint = controller.setpoint

    def __call__(self, forecast, t):
        y = self.loop._last[self.loop.counters["samples"] % self.loop.fc.horizon][0]
        return self.controller(float(y), t)


def _print_summary(s: dict, say) -> None:
    lat = s["latency"]
    say("summary")
    say(f"  stopped: {s['stop_reason']} after {s['samples']} samples "
        f"({s['elapsed_s']:.1f} s), {s['learned']} learnt, horizon {s['horizon']}")
    say(f"  forecast RMSE {s['forecast_rmse']:.4g} (repeat last value {s['baseline_rmse']:.4g}); "
        f"recent {s['recent_forecast_rmse']:.4g} ({s['recent_baseline_rmse']:.4g})")
    if "tracking_rmse" in s:
        say(f"  tracking RMSE {s['tracking_rmse']:.4g}, recent {s['recent_tracking_rmse']:.4g}; "
            f"{s['commands']} commands")
    say(f"  latency per sample: median {lat['median_us']:.1f} us, p99 {lat['p99_us']:.1f} us, "
        f"max {lat['max_us']:.1f} us; deadline misses {s['deadline_misses']}")
    say(f"  rejected {s['rejected']}, dropped late {s['dropped_late']}, gaps {s['gaps']}, "
        f"divergence recoveries {s['divergence_recoveries']}, non-finite forecasts "
        f"{s['nonfinite_forecasts']}, memory_bytes {s['memory_bytes']:,}")
    src = s.get("source", {})
    if "frames" in src:
        say("  link: " + ", ".join(f"{k} {src[k]}" for k in (
            "frames", "crc_errors", "cobs_errors", "overflows", "seq_gaps", "rejected_samples",
            "disconnects", "reconnects") if k in src))
    if s["checkpoints"] or s["checkpoint_failures"]:
        say(f"  checkpoints written {s['checkpoints']}, failed {s['checkpoint_failures']}")
    if s.get("last_checkpoint_error"):
        say(f"  {s['last_checkpoint_error']}")


def _plot(loop, path: str, say) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("rtrl-edge run: --plot needs matplotlib (pip install 'rtrl-edge[plot]')")
        return
    tr = loop.traced()
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    a.plot(tr[:, 0], label="signal", linewidth=1)
    a.plot(tr[:, 1], label=f"forecast made {loop.fc.horizon} samples earlier", linewidth=1)
    a.legend(fontsize=8)
    b.plot(np.abs(tr[:, 1] - tr[:, 0]), label="|forecast error|", linewidth=0.8)
    b.plot(np.abs(tr[:, 2] - tr[:, 0]), label="|repeat last value error|", linewidth=0.8,
           alpha=0.7)
    b.set_xlabel(f"sample (last {len(tr)})")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    say(f"  plot: {path}")

