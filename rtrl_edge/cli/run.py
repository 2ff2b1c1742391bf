"""`rtrl-edge run`: the online loop on a serial port, a recording or a
synthetic signal."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .. import data
from ..model import CELLS, LEARNERS, OPTIMIZERS
from ._common import non_negative_int, num as _num, positive_float, positive_int
from ._loop_setup import (Refused, build_forecaster, finish, first_sample,
                          forecast_publisher, open_checkpoint, open_mqtt, open_source,
                          restore, serve, settings_for)
from ._preflight import DEFAULTS, check_output_path


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
    src.add_argument("--source", choices=("mqtt",),
                     help="'mqtt': read samples (JSON) from PREFIX/sample of --mqtt's broker "
                          "(with --streams, each stream from PREFIX/NAME/sample)")
    run.add_argument("--baud", type=positive_int, default=115200,
                     help="baud rate of a real port (default: %(default)s)")
    run.add_argument("--realtime", action="store_true",
                     help="pace --replay (10 Hz) or --synthetic (100 Hz) at its own rate, as "
                          "the live sensor would deliver it (default: as fast as possible)")
    net = run.add_argument_group(
        "MQTT", "publish forecasts and status to a broker (needs pip install "
                "'rtrl-edge[mqtt]'), and with --source mqtt read samples from it")
    net.add_argument("--mqtt", metavar="URL",
                     help="mqtt://HOST[:PORT]/PREFIX or mqtts://HOST[:PORT]/PREFIX: each "
                          "forecast goes to PREFIX/forecast as JSON ({\"t\", \"forecast\", "
                          "...}), a retained status to PREFIX/status (offline as last will); "
                          "reconnects with back-off and keeps learning meanwhile")
    net.add_argument("--mqtt-ca", metavar="FILE",
                     help="CA certificate(s) that sign the broker's (mqtts://)")
    net.add_argument("--mqtt-credentials", metavar="FILE",
                     help="a file holding USERNAME:PASSWORD on its first line")
    net.add_argument("--status-every", type=positive_float, default=10.0, metavar="S",
                     help="seconds between status messages (default: %(default)s)")
    net.add_argument("--channels", type=positive_int, metavar="N",
                     help="values per sample of --source mqtt (default: the first "
                          "well-formed sample's, or the checkpoint's)")
    many = run.add_argument_group(
        "many streams", "one model per stream, one process, one checkpoint per stream "
                        "in the folder --checkpoint names")
    which = many.add_mutually_exclusive_group()
    which.add_argument("--streams", metavar="FILE",
                       help="the streams, in JSON (or TOML): {\"streams\": [{\"name\": ..., "
                            "\"inputs\": [channels], \"target\": channel, model settings}, "
                            "...]}; the command line's model flags are the defaults")
    which.add_argument("--split-channels", action="store_true",
                       help="one stream per channel of the source, named ch0, ch1, ...: "
                            "each forecasts its channel from itself")
    # Model flags default to None so that --resume can tell the ones given
    # (checked against the checkpoint) from the ones left out (taken from it).
    model = run.add_argument_group(
        "model", "fixed when the model is created; with --resume, a flag given must "
                 "match the checkpoint and one left out is taken from it")
    model.add_argument("--horizon", type=positive_int,
                       help=f"forecast this many samples ahead (default: {DEFAULTS['horizon']})")
    model.add_argument("--target", type=int, metavar="CHANNEL",
                       help="channel to forecast and control (default: 0)")
    model.add_argument("--learner", choices=LEARNERS,
                       help=f"default: {DEFAULTS['learner']}")
    model.add_argument("--cell", choices=CELLS, help=f"default: {DEFAULTS['cell']}")
    model.add_argument("--hidden", type=non_negative_int,
                       help=f"hidden units (default: {DEFAULTS['hidden']}; of each RNN member "
                            f"of a mixture: 16; 0 leaves them out of --actuation-delay's "
                            f"compensator)")
    model.add_argument("--window", type=positive_int,
                       help=f"tbptt truncation (default: {DEFAULTS['window']})")
    model.add_argument("--rec-density", type=positive_float,
                       help="sparse W_rec keeping this fraction (snap2)")
    model.add_argument("--optimizer", choices=OPTIMIZERS,
                       help=f"default: {DEFAULTS['optimizer']}")
    model.add_argument("--lr", type=positive_float,
                       help=f"learning rate (default: {DEFAULTS['lr']})")
    model.add_argument("--seed", type=int, help="initialisation seed (default: 0)")
    run.add_argument("--threads", type=positive_int, default=1, metavar="K",
                     help="split exact RTRL's n^4 term (--learner rtrl) across K cores; how "
                          "the model runs, not stored in checkpoints: a resumed one may use "
                          "another K (default: 1)")
    run.add_argument("--deadline-ms", type=positive_float, default=None,
                     help="per-sample budget; slower samples are counted as misses "
                          "(default: the device's sample period)")
    run.add_argument("--checkpoint", metavar="PATH",
                     help="periodic atomic checkpoint (.npz); an existing one is never "
                          "replaced unless --resume continues it or --fresh keeps it as .bak")
    run.add_argument("--checkpoint-every", type=positive_float, default=60.0, metavar="S",
                     help="seconds between checkpoints (default: %(default)s)")
    how = run.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true",
                     help="continue from --checkpoint (a fresh start if it does not exist "
                          "yet); a replay continues after the last sample learnt")
    how.add_argument("--fresh", action="store_true",
                     help="start a new model even though --checkpoint exists; the old file "
                          "is kept as PATH.bak (PATH.bak2, ... if that is taken)")
    run.add_argument("--checkpoint-key", metavar="FILE",
                     help="sign checkpoints with HMAC-SHA-256 under the key in FILE (at "
                          "least 16 bytes, e.g. head -c 32 /dev/urandom > FILE) and refuse "
                          "to resume from one not signed with it")
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
    run.add_argument("--actuation-delay", type=non_negative_int, default=None, metavar="N",
                     help="hold every command N samples before sending it: the latency of a "
                          "slow actuator or bus. With N > 0 the forecaster is a "
                          "DelayCompensator: it predicts every channel N samples ahead from "
                          "the channels and the commands in flight, and the controller acts "
                          "on that (default: 0, or the checkpoint's with --resume)")
    run.add_argument("--summary-json", metavar="PATH", help="write the closing summary as JSON")
    run.add_argument("--plot", metavar="PNG",
                     help="draw signal, forecast and error (needs matplotlib: "
                          "pip install 'rtrl-edge[plot]')")
    run.add_argument("--quiet", action="store_true", help="no live progress")
    run.set_defaults(func=main)
    return run


def _progress_line(summary: dict) -> str:
    lat = summary["latency"]
    src = summary.get("source", {})
    link_errors = sum(src.get(k, 0) for k in ("crc_errors", "cobs_errors", "overflows",
                                             "seq_gaps", "rejected_samples", "bad_hello",
                                             "old_frames"))
    return (f"samples {summary['samples']:8d}  loss {_num(summary['loss'], '9.4g')}  "
            f"forecast RMSE {_num(summary['recent_forecast_rmse'], '8.4g')} (last value "
            f"{_num(summary['recent_baseline_rmse'], '8.4g')})  "
            f"{_num(lat['median_us'], '7.1f')} us/step  misses {summary['deadline_misses']}  "
            f"link errors {link_errors}")


def main(args: argparse.Namespace, out=sys.stdout) -> int:
    """`rtrl-edge run`: the online loop, see OnlineLoop.

    Everything a user can get wrong is checked before the run starts and
    reported in one line (exit 2): output paths, the key, sizes that would
    not fit in memory, a checkpoint that would be replaced, flags that differ
    from the checkpoint being resumed.  Exit 1 when the source or the broker
    cannot be reached or the last checkpoint write failed.
    """
    from .. import checkpoint as ckpt

    def say(*parts):
        print(*parts, file=out, flush=True)

    def fail(message, code=2):
        say(f"rtrl-edge run: {message}")
        return code

    if args.resume and not args.checkpoint:
        return fail("--resume needs --checkpoint PATH")
    if args.fresh and not args.checkpoint:
        return fail("--fresh needs --checkpoint PATH")
    if args.source == "mqtt" and not args.mqtt:
        return fail("--source mqtt needs --mqtt mqtt://HOST:PORT/PREFIX (the broker to read "
                    "PREFIX/sample from)")
    for flag, value in (("--mqtt-ca", args.mqtt_ca), ("--mqtt-credentials",
                                                      args.mqtt_credentials),
                        ("--channels", args.channels)):
        if value is not None and not args.mqtt:
            return fail(f"{flag} goes with --mqtt")
    if args.channels is not None and args.source != "mqtt":
        return fail("--channels is for --source mqtt; the other sources know their channels")
    if args.realtime and not (args.replay or args.synthetic):
        return fail("--realtime paces --replay or --synthetic; a live source has its own pace")
    many = bool(args.streams or args.split_channels)
    outputs = (("--summary-json", args.summary_json), ("--plot", args.plot)) + (
        () if many else (("--checkpoint", args.checkpoint),))
    for flag, path in outputs:
        problem = check_output_path(path)
        if problem:
            return fail(f"{flag} {path}: {problem}")
    key = None
    if args.checkpoint_key:
        try:
            key = ckpt.read_key(args.checkpoint_key)
        except (OSError, ckpt.CheckpointError) as exc:
            return fail(f"--checkpoint-key: {getattr(exc, 'strerror', None) or exc}")
    if many:
        from . import run_streams
        return run_streams.main(args, out, say, fail, key)
    link = mqtt = None
    try:
        net, extra = open_checkpoint(args, args.checkpoint, key, say)
        settings = settings_for(args, net, extra)
        link, source = open_source(args, say, settings["seed"], net)
        mqtt = open_mqtt(args, say)[0] if args.source != "mqtt" else link
        if args.source == "mqtt":
            link = None                   # not a board: nothing to command
            first_sample(source, say)
        return _run(args, out, say, fail, source, link, net, extra, settings, key, mqtt)
    except Refused as exc:
        return fail(str(exc), exc.code)
    finally:
        if link is not None:
            link.close()
        if mqtt is not None:
            mqtt.close()


def _run(args, out, say, fail, source, link, net, extra, settings, key, mqtt) -> int:
    from ..loop import OnlineLoop, PIController

    channels, target = source.channels, settings["target"]
    if not 0 <= target < channels:
        return fail(f"--target {target} but the source has {channels} channels")
    delay = settings["actuation_delay"]
    has_actuator = link is not None and link.hello.n_actuators > 0 and not args.no_control
    if delay and not has_actuator:
        return fail("--actuation-delay delays the commands sent to a board's actuator: it "
                    "needs --port with a board that has one (and no --no-control)")
    if settings["kind"] == "delay" and settings["horizon"] != delay:
        return fail(f"--horizon {settings['horizon']}: with --actuation-delay {delay} the "
                    f"forecast is of the state when a command sent now lands, {delay} samples "
                    f"ahead; leave --horizon out")
    # the target first: the forecaster learns its change over the horizon
    inputs = [target] + [c for c in range(channels) if c != target]
    trace = 5000 if args.plot else 0
    fc = build_forecaster(settings, channels, net, trace, threads=args.threads)
    controller = sink = None
    if has_actuator:
        dt = 1.0 / source.rate_hz
        controller = PIController(kp=args.kp, ki=args.ki, setpoint=args.setpoint, dt=dt)
        if args.control_on == "measurement":
            controller = _on_measurement(controller)
        sink = _DelayLine(delay, lambda u: link.command(int(round(u * 1000))))
    deadline = args.deadline_ms
    if deadline is None and getattr(source, "rate_hz", None):
        deadline = 1000.0 / source.rate_hz
    loop = OnlineLoop(fc, source, inputs=inputs, targets=(target,),
                      controller=controller, sink=sink, deadline_ms=deadline,
                      checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                      checkpoint_key=key, trace=trace)
    if mqtt is not None:
        loop.on_forecast = forecast_publisher(mqtt, loop)
    restore(loop, extra, args, say)
    if controller is not None and args.control_on == "measurement":
        controller.loop = loop

    start = loop.counters["samples"]
    summary = serve(loop, args, out, mqtt, _progress_line)
    _print_summary(summary, say)
    if summary["samples"] == start and getattr(source, "exhausted", False):
        say("  nothing left to do: the checkpoint had already learnt the whole recording")
    code = finish(args, summary, mqtt, say)
    if args.plot:
        _plot(loop, args.plot, say)
    if args.checkpoint and loop.last_checkpoint_error:
        say(f"rtrl-edge run: the last checkpoint could not be written; what was learnt "
            f"since {'the previous one' if summary['checkpoints'] else 'the start'} is lost")
        code = 1
    return code


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
    say(f"  forecast RMSE {_num(s['forecast_rmse'])} (repeat last value "
        f"{_num(s['baseline_rmse'])}); recent {_num(s['recent_forecast_rmse'])} "
        f"({_num(s['recent_baseline_rmse'])})")
    if "tracking_rmse" in s:
        say(f"  tracking RMSE {_num(s['tracking_rmse'])}, recent "
            f"{_num(s['recent_tracking_rmse'])}; {s['commands']} commands")
    if lat["samples"]:
        say(f"  latency per sample: median {lat['median_us']:.1f} us, p99 {lat['p99_us']:.1f} "
            f"us, max {lat['max_us']:.1f} us; deadline misses {s['deadline_misses']}")
    else:
        say("  latency per sample: no sample processed")
    say(f"  rejected {s['rejected']}, dropped late {s['dropped_late']}, gaps {s['gaps']}, "
        f"divergence recoveries {s['divergence_recoveries']}, non-finite forecasts "
        f"{s['nonfinite_forecasts']}, memory_bytes {s['memory_bytes']:,}")
    src = s.get("source", {})
    if "frames" in src:
        say("  link: " + ", ".join(f"{k} {src[k]}" for k in (
            "frames", "crc_errors", "cobs_errors", "overflows", "seq_gaps", "rejected_samples",
            "bad_hello", "old_frames",
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

