"""Command line: ``rtrl-edge`` and ``python -m rtrl_edge``.

Sub-commands:
  demo   stream a shipped respiration recording through an online learner and
         report forecast error, latency and memory; needs no hardware.
  plan   the largest model of each learner and cell within a memory and/or
         per-step time budget.
  run    the online loop: forecast, learn, control, checkpoint; on a serial
         port, a shipped recording or a synthetic signal.
  sim-board  run the real firmware in the AVR simulator with its UART on a pty.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import numpy as np

from . import __version__, data
from .forecast import Forecaster
from .model import CELLS, LEARNERS, OPTIMIZERS, OnlineRNN


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtrl-edge",
        description="Online training of recurrent networks with Real-Time Recurrent "
                    "Learning, in bounded memory.")
    parser.add_argument("--version", action="version", version=f"rtrl-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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
    demo.add_argument("--horizon", type=_positive_int, default=2, metavar="STEPS",
                      help="forecast this many samples ahead (default: %(default)s, "
                           "i.e. 0.2 s at 10 Hz)")
    demo.add_argument("--hidden", type=_positive_int, default=16,
                      help="hidden units (default: %(default)s)")
    demo.add_argument("--learner", choices=LEARNERS, default="rtrl",
                      help="sensitivity learner (default: %(default)s)")
    demo.add_argument("--cell", choices=CELLS, default="elman",
                      help="recurrent cell; diag needs --learner rtrl and an even "
                           "--hidden (default: %(default)s)")
    demo.add_argument("--window", type=_positive_int, default=16,
                      help="truncation of --learner tbptt (default: %(default)s)")
    demo.add_argument("--rec-density", type=_positive_float, default=None,
                      help="sparse W_rec keeping this fraction (needed to make "
                           "--learner snap2 cheaper than rtrl)")
    demo.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                      help="online optimiser (default: %(default)s)")
    demo.add_argument("--lr", type=_positive_float, default=1e-2,
                      help="learning rate (default: %(default)s)")
    demo.add_argument("--clip", type=_positive_float, default=1.0,
                      help="clip each step's gradient to this norm (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="print the summary only")
    demo.set_defaults(func=run_demo)

    plan = sub.add_parser(
        "plan", help="which learner, cell and size fit a memory and time budget",
        description="For each learner and cell, the largest hidden size whose exact "
                    "memory_bytes and predicted step time fit the budgets. Time is "
                    "predicted by a cost model fitted to a few timed steps on this "
                    "machine (under a second).")
    plan.add_argument("--n-in", type=_positive_int, required=True, help="inputs per sample")
    plan.add_argument("--n-out", type=_positive_int, required=True, help="outputs per sample")
    plan.add_argument("--memory", type=_byte_size, metavar="BYTES",
                      help="memory budget, e.g. 200000, 512KiB, 4MB")
    plan.add_argument("--step-us", type=_positive_float, metavar="US",
                      help="time budget of one learning step, in microseconds")
    plan.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                      help="optimiser (default: %(default)s)")
    plan.add_argument("--window", type=_positive_int, default=16,
                      help="tbptt truncation (default: %(default)s)")
    plan.add_argument("--rec-density", type=_positive_float, default=0.1,
                      help="snap2 density of W_rec (default: %(default)s)")
    plan.set_defaults(func=run_plan)

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
    run.add_argument("--baud", type=_positive_int, default=115200,
                     help="baud rate of a real port (default: %(default)s)")
    run.add_argument("--horizon", type=_positive_int, default=10,
                     help="forecast this many samples ahead (default: %(default)s)")
    run.add_argument("--target", type=int, default=0, metavar="CHANNEL",
                     help="channel to forecast and control (default: 0)")
    run.add_argument("--learner", choices=LEARNERS, default="rtrl")
    run.add_argument("--cell", choices=CELLS, default="elman")
    run.add_argument("--hidden", type=_positive_int, default=32,
                     help="hidden units (default: %(default)s)")
    run.add_argument("--window", type=_positive_int, default=16, help="tbptt truncation")
    run.add_argument("--rec-density", type=_positive_float, default=None,
                     help="sparse W_rec (snap2)")
    run.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    run.add_argument("--lr", type=_positive_float, default=1e-2)
    run.add_argument("--deadline-ms", type=_positive_float, default=None,
                     help="per-sample budget; slower samples are counted as misses "
                          "(default: the device's sample period)")
    run.add_argument("--checkpoint", metavar="PATH", help="periodic atomic checkpoint (.npz)")
    run.add_argument("--checkpoint-every", type=_positive_float, default=60.0, metavar="S",
                     help="seconds between checkpoints (default: %(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue from --checkpoint (a fresh start if it does not exist)")
    run.add_argument("--max-steps", type=_positive_int, metavar="N",
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
    run.set_defaults(func=run_loop)

    sim = sub.add_parser(
        "sim-board", help="run the real firmware in the AVR simulator, on a pty",
        description="Build what is missing (make -C firmware_bridge), run the firmware's "
                    ".elf in simavr with its UART on a pseudo-terminal, print 'PORT <path>' "
                    "as the first line, and run until interrupted. Another terminal can "
                    "then talk to the board through that path, e.g. rtrl-edge run --port "
                    "<path>. Needs avr-gcc, avr-libc and simavr (Debian: apt-get install "
                    "gcc-avr avr-libc simavr libsimavr-dev) and the firmware_bridge/ folder "
                    "of a source checkout.")
    sim.add_argument("--firmware-dir", metavar="DIR",
                     help="the firmware_bridge folder (default: $RTRL_EDGE_FIRMWARE, or "
                          "found from the current folder or the package's checkout)")
    sim.add_argument("--fast", action="store_true",
                     help="run the simulation as fast as it goes instead of in real time")
    sim.add_argument("--seconds", type=_positive_float, metavar="S",
                     help="stop after S seconds of simulated time")
    sim.set_defaults(func=run_sim_board)
    return parser


def _progress_line(summary: dict) -> str:
    lat = summary["latency"]
    src = summary.get("source", {})
    link_errors = sum(src.get(k, 0) for k in ("crc_errors", "cobs_errors", "overflows",
                                             "seq_gaps", "rejected_samples"))
    return (f"samples {summary['samples']:8d}  loss {summary['loss']:9.4g}  forecast RMSE "
            f"{summary['recent_forecast_rmse']:8.4g} (last value {summary['recent_baseline_rmse']:8.4g})"
            f"  {lat['median_us']:7.1f} us/step  misses {summary['deadline_misses']}  "
            f"link errors {link_errors}")


def run_loop(args: argparse.Namespace, out=sys.stdout) -> int:
    """`rtrl-edge run`: the online loop, see OnlineLoop."""
    import json
    import os
    import signal
    from .loop import OnlineLoop, PIController, ReplaySource, SerialSource, SyntheticSource
    from .model import CheckpointError

    def say(*parts):
        print(*parts, file=out, flush=True)

    if args.resume and not args.checkpoint:
        say("rtrl-edge run: --resume needs --checkpoint PATH")
        return 2
    link = None
    try:
        if args.port:
            from .bridge import SerialLink
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
            json.dump(_json_safe(summary), f, indent=2, allow_nan=False)
            f.write("\n")
    if args.plot:
        _plot(loop, args.plot, say)
    return 0


def _json_safe(obj):
    """NaN (nothing scored yet) as null, numpy scalars as numbers."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


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


def find_firmware_dir(explicit: Optional[str] = None) -> Optional[str]:
    """The firmware_bridge folder: explicit, $RTRL_EDGE_FIRMWARE, the current
    folder or a parent, or beside the installed package's source checkout."""
    import os
    from pathlib import Path
    candidates = [explicit] if explicit else []
    if os.environ.get("RTRL_EDGE_FIRMWARE"):
        candidates.append(os.environ["RTRL_EDGE_FIRMWARE"])
    here = Path.cwd()
    candidates += [str(d / "firmware_bridge") for d in (here, *here.parents)]
    candidates.append(str(Path(__file__).resolve().parents[1] / "firmware_bridge"))
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "Makefile")):
            return os.path.abspath(c)
        if explicit:
            return None
    return None


def run_sim_board(args: argparse.Namespace, out=sys.stdout) -> int:
    import os
    import shutil
    import signal
    import subprocess
    root = find_firmware_dir(args.firmware_dir)
    if root is None:
        where = args.firmware_dir or "the current folder, its parents or the package checkout"
        print(f"rtrl-edge sim-board: no firmware_bridge/Makefile in {where}; run it from a "
              f"source checkout or pass --firmware-dir", file=sys.stderr)
        return 2
    missing = [tool for tool in ("make", "avr-gcc", "cc") if shutil.which(tool) is None]
    if missing:
        print(f"rtrl-edge sim-board: {', '.join(missing)} not found; on Debian: apt-get "
              f"install build-essential gcc-avr avr-libc simavr libsimavr-dev",
              file=sys.stderr)
        return 2
    build = subprocess.run(["make", "-s", "-C", root], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    if build.returncode != 0:
        sys.stderr.write(build.stdout)
        print("rtrl-edge sim-board: building the firmware or the simulator failed (above)",
              file=sys.stderr)
        return 2
    cmd = [os.path.join(root, "build", "simboard"), "--fast" if args.fast else "--realtime"]
    if args.seconds:
        cmd += ["--seconds", str(args.seconds)]
    cmd.append(os.path.join(root, "build", "firmware.elf"))
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def stop(signum, frame):                    # SIGTERM: stop the simulator too
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        first = child.stdout.readline()
        if not first.startswith("PORT "):
            child.wait(timeout=5)
            print(f"rtrl-edge sim-board: the simulator did not report its port "
                  f"(exit {child.returncode})", file=sys.stderr)
            return 1
        print(first.strip(), file=out, flush=True)
        for line in child.stdout:
            print(line.rstrip("\n"), file=out, flush=True)
        return 0 if child.wait() == 0 else 1
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.kill()


_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000 ** 2, "mib": 1024 ** 2,
          "gb": 1000 ** 3, "gib": 1024 ** 3}


def _byte_size(text: str) -> int:
    """'512KiB' -> 524288; plain numbers are bytes."""
    t = text.strip().lower().replace(" ", "")
    number = t.rstrip("kmgib")
    unit = t[len(number):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"expected a size like 200000, 512KiB or 4MB, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(value)


def run_plan(args: argparse.Namespace, out=sys.stdout) -> int:
    from .planning import format_plan, plan
    if args.memory is None and args.step_us is None:
        print("rtrl-edge plan: give --memory and/or --step-us", file=sys.stderr)
        return 2
    if args.rec_density > 1:
        print("rtrl-edge plan: --rec-density must be in (0, 1]", file=sys.stderr)
        return 2
    options = plan(args.n_in, args.n_out, memory_bytes=args.memory, step_us=args.step_us,
                   optimizer=args.optimizer, window=args.window,
                   rec_density=args.rec_density)
    budget = " and ".join(part for part in (
        f"{args.memory:,} bytes" if args.memory else "",
        f"{args.step_us:g} us per step" if args.step_us else "") if part)
    print(f"largest model of each kind within {budget} "
          f"(n_in={args.n_in}, n_out={args.n_out}, {args.optimizer}):", file=out)
    print(format_plan(options) if options else "  nothing fits", file=out)
    if args.step_us:
        print("step times: a cost model fitted on this machine just now; medians, "
              "within about 15 % while the model fits in cache", file=out)
    return 0


def run_demo(args: argparse.Namespace, out=sys.stdout) -> int:
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
    try:
        net = OnlineRNN(3, args.hidden, 3, learner=args.learner, cell=args.cell,
                        optimizer=args.optimizer, lr=args.lr, clip=args.clip,
                        normalize=True, seed=args.seed,
                        window=args.window if args.learner == "tbptt" else None,
                        rec_density=args.rec_density)
    except ValueError as exc:
        say(f"rtrl-edge demo: {exc}")
        return 2
    say(f"  model: {net.learner} learner, {net.cell} cell, {args.hidden} hidden units, "
        f"{args.optimizer} lr={args.lr:g}, memory_bytes={net.memory_bytes:,}")
    say(f"  task: forecast {h} sample(s) = {1000 * h / rec.sample_rate_hz:.0f} ms ahead; "
        f"every forecast is made before its target is seen")

    # At time t the target of the forecast made at t - h arrives: the
    # Forecaster learns from it, then forecasts x_{t+h} from a copy of the
    # lagged state run over the last h inputs (everything used is known at t).
    fc = Forecaster(net, h, delta=True)
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
    say(f"  memory_bytes: {net.memory_bytes:,} (all buffers, allocated once)")
    stats = net.stats
    say(f"  updates {stats['updates']}, divergence recoveries "
        f"{stats['divergence_recoveries']}, rejected inputs {stats['rejected_inputs']}")
    say("  data: ExtMarker respiratory-motion recordings, Krilavicius et al. (2013), "
        "CC BY 4.0 (see rtrl_edge/data/README.md)")
    return 0


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean square of the 3-D position error, in the inputs' units."""
    return float(np.sqrt(np.mean(np.sum((np.asarray(a, np.float64) - b) ** 2, axis=1))))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
