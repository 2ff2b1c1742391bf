"""What `rtrl-edge run` does before its loop starts, for one stream or many:
take up (or refuse to touch) a checkpoint, build the forecaster the settings
ask for, and connect to MQTT.  Each refusal is a `Refused` carrying the one
line the user sees and the exit code."""
from __future__ import annotations

import os
import time
from typing import Dict, Optional

from ..auto import AutoForecaster
from ..compensator import DelayCompensator
from ..forecast import Forecaster
from ..model import OnlineRNN
from ._common import json_safe, write_json
from ._preflight import (PLAIN_FLAGS, check_sizes, differing_flags, keep_as_backup,
                         model_settings, wants_auto)


class Refused(Exception):
    """A reason not to start (or go on): the message, and the exit code."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def open_checkpoint(args, path: Optional[str], key, say):
    """(model, loop state) from the checkpoint at `path` when `--resume`
    continues it, else (None, None).  An existing checkpoint is never
    replaced unless --resume continues it or --fresh keeps it aside; flags
    that differ from a resumed checkpoint are refused (all named at once)."""
    from .. import checkpoint as ckpt
    from ..loop import OnlineLoop
    if not path:
        return None, None
    stale = ckpt.remove_stale_temporaries(path)
    if stale:
        say(f"rtrl-edge run: removed {stale} temporary file(s) of {path} left by a run that "
            f"was killed while writing it")
    exists = os.path.lexists(path)
    if exists and not (args.resume or args.fresh):
        try:
            _, held_extra = OnlineLoop.resume_any(path, key=key)
            counters = held_extra.get("loop_counters")
            what = (f"a checkpoint ({int(counters[1]):,} samples learnt)"
                    if counters is not None and len(counters) > 1 else "a checkpoint")
        except (OSError, ckpt.CheckpointError):
            what = "a file that is not a valid checkpoint"
        raise Refused(f"{path} already holds {what}; continue it with --resume, or start "
                      f"over with --fresh (which keeps it as .bak)")
    if not exists:
        if args.resume:
            say(f"rtrl-edge run: no checkpoint at {path} yet: starting afresh")
        return None, None
    if not args.resume:
        return None, None
    try:
        net, extra = OnlineLoop.resume_any(path, key=key, threads=getattr(args, "threads", 1))
    except (OSError, ckpt.CheckpointError) as exc:
        raise Refused(f"cannot resume: {exc}. The checkpoint was left as it is; move it "
                      f"away, or start over with --fresh (which keeps it as .bak)") from None
    differing = differing_flags(args, net, extra)
    if differing:
        raise Refused(f"cannot resume {path}: " + "; ".join(differing)
                      + " (leave a flag out to take the checkpoint's value)")
    return net, extra


def settings_for(args, net, extra) -> Dict[str, object]:
    """The model settings (`model_settings`), refusing combinations that
    cannot be built."""
    settings = model_settings(args, net, extra)
    if settings["hidden"] == 0 and settings["kind"] != "delay":
        raise Refused("--hidden 0: only --actuation-delay's compensator can do without RNN "
                      "members (its linear ones remain); a model needs at least 1 unit")
    if settings["kind"] == "delay" and net is None and not wants_auto(args):
        given = [f"--{k.replace('_', '-')}" for k in PLAIN_FLAGS if getattr(args, k) is not None]
        raise Refused(f"{', '.join(given)}: with --actuation-delay the forecaster is a "
                      f"DelayCompensator (a mixture with nothing to tune; --hidden and --seed "
                      f"set its RNN members); leave {'it' if len(given) == 1 else 'them'} out")
    return settings


def inputs_of(net) -> Optional[int]:
    """The channels a checkpoint's model reads (None without one)."""
    if net is None:
        return None
    return net.n_state if isinstance(net, DelayCompensator) else net.n_in


def build_forecaster(settings, channels: int, net, trace: int = 0, threads: int = 1):
    """The forecaster for a source of `channels` channels: the checkpoint's
    (`net` from `open_checkpoint`), or a new one as `settings` say, its
    model on `threads` cores (exact RTRL's n^4 term)."""
    reads = inputs_of(net)
    if net is not None and reads != channels:
        raise Refused(f"the checkpoint's model takes {reads} inputs; this source has "
                      f"{channels} channels")
    if isinstance(net, (AutoForecaster, DelayCompensator)):
        return net
    if net is None:
        problem = check_sizes(settings, channels, trace)
        if problem:
            raise Refused(problem)
    if net is None and settings["kind"] == "delay":
        return DelayCompensator(channels, 1, settings["actuation_delay"],
                                seed=settings["seed"], hidden=settings["hidden"])
    if net is None and settings["kind"] == "auto":
        return AutoForecaster(channels, 1, settings["horizon"], seed=settings["seed"],
                              hidden=settings["hidden"])
    try:
        if net is None:
            net = OnlineRNN(channels, settings["hidden"], 1, learner=settings["learner"],
                            cell=settings["cell"], optimizer=settings["optimizer"],
                            lr=settings["lr"], clip=1.0, normalize=True, seed=settings["seed"],
                            window=settings["window"] if settings["learner"] == "tbptt"
                            else None, rec_density=settings["rec_density"],
                            threads=threads)
        return Forecaster(net, settings["horizon"], delta=True)
    except ValueError as exc:
        raise Refused(str(exc)) from None


def restore(loop, extra, args, say, what: str = "") -> None:
    """Continue `loop` from its checkpoint's state (if resumed), and keep a
    checkpoint that --fresh starts over from aside."""
    if extra is not None:
        try:
            loop.restore(extra)
        except ValueError as exc:
            raise Refused(f"cannot resume from {loop.checkpoint}: {exc}") from None
        if not hasattr(loop.source, "seek"):
            loop.gap()     # what the model learnt is kept; a live stream has a break
        say(f"rtrl-edge run: {what}resumed from {loop.checkpoint} "
            f"({loop.fc.stats['learned']:,} samples learnt"
            + (f", continuing at sample {loop.source.position:,}"
               if hasattr(loop.source, "position") else "") + ")")
    if args.fresh and loop.checkpoint and os.path.lexists(loop.checkpoint):
        try:
            kept = keep_as_backup(loop.checkpoint)
        except OSError as exc:
            raise Refused(f"--fresh: cannot keep {loop.checkpoint} aside: "
                          f"{exc.strerror or exc}") from None
        say(f"rtrl-edge run: {what}starting afresh; the previous checkpoint is kept as {kept}")


# -- sources -----------------------------------------------------------------

def open_source(args, say, seed, net=None):
    """(board link or MQTT link or None, source) as the flags ask.  An MQTT
    source's width is --channels, else that of the checkpoint's model `net`,
    else the first well-formed sample's (`first_sample`)."""
    from .. import data
    from ..adapters import ReplaySource, SerialSource, SyntheticSource
    if args.source == "mqtt":
        width = args.channels
        if width is None:
            width = inputs_of(net)
        link, (source,) = open_mqtt(args, say, [(None, width)])
        return link, source
    link = None
    try:
        if args.port:
            from ..bridge import SerialLink
            link = SerialLink(args.port, baudrate=args.baud)
            source = SerialSource(link)
            say(f"rtrl-edge run: {args.port}: {source.channels} channels at "
                f"{source.rate_hz:g} Hz, {link.hello.n_actuators} actuator(s)")
        elif args.replay:
            source = ReplaySource(data.load_recording(args.replay).xyz, 10.0,
                                  realtime=args.realtime)
        else:
            source = SyntheticSource(seed=seed, realtime=args.realtime)
    except (TimeoutError, OSError) as exc:
        if link is not None:
            link.close()
        raise Refused(str(exc), 1) from None
    return link, source


def first_sample(source, say) -> None:
    """Wait for the first well-formed sample of an MQTT source whose width
    is not known yet: it fixes the width."""
    if source.channels is None:
        say(f"rtrl-edge run: waiting for the first sample on {source.topic} ...")
        source.wait_for_first()
        say(f"rtrl-edge run: {source.channels} channel(s) per sample")


# -- MQTT ------------------------------------------------------------------

def open_mqtt(args, say, sources=()):
    """(the started `MqttLink` of --mqtt, its sources), or (None, []) without
    --mqtt.  `sources`: (stream name or None, channels or None) of each
    sample topic to read, subscribed as the link connects, and acknowledged
    by the broker before this returns, so that no sample sent after the
    run says it is listening is missed."""
    if not args.mqtt:
        return None, []
    from ..adapters import mqtt
    try:
        link = mqtt.MqttLink(args.mqtt, ca_file=args.mqtt_ca,
                             credentials_file=args.mqtt_credentials)
        made = [link.source(stream=name, channels=width) for name, width in sources]
    except (ImportError, RuntimeError) as exc:
        raise Refused(f"--mqtt: {exc}") from None
    except (ValueError, OSError) as exc:
        raise Refused(f"--mqtt: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        link.start()
    except ConnectionError as exc:
        link.close()
        raise Refused(f"--mqtt {args.mqtt}: {exc}", 1) from None
    deadline = time.monotonic() + 10.0
    for src in made:
        if not src.wait_subscribed(max(deadline - time.monotonic(), 0.0)):
            say(f"rtrl-edge run: the broker has not acknowledged the subscription to "
                f"{src.topic} ({src.last_error or 'no answer within 10 s'}); going on")
    say(f"rtrl-edge run: MQTT connected to {link.url.host}:{link.url.port}, topics under "
        f"{link.url.prefix}/")
    return link, made


def forecast_publisher(link, loop, stream: Optional[str] = None):
    """An `OnlineLoop.on_forecast` hook: each forecast as JSON on the
    stream's forecast topic, with ``t`` (the sample's own time if it gave
    one, else Unix seconds), ``forecast`` (the target channel's value
    ``horizon`` samples ahead), ``horizon`` and ``sample`` (its index)."""
    horizon = loop.fc.horizon

    def publish(forecast):
        t = getattr(loop.source, "last_t", None)
        link.publish_forecast({"t": time.time() if t is None else t,
                               "forecast": [float(v) for v in forecast],
                               "horizon": horizon, "sample": loop.counters["samples"]},
                              stream)
    return publish


def status_payload(summary: Dict, link) -> Dict:
    """The retained status: what a dashboard wants to know about the run."""
    keys = ("samples", "learned", "forecasts", "rejected", "gaps", "deadline_misses",
            "recent_forecast_rmse", "recent_baseline_rmse", "memory_bytes", "n_streams")
    out = {k: summary[k] for k in keys if k in summary}
    out["latency_median_us"] = summary["latency"]["median_us"]
    out["latency_p99_us"] = summary["latency"]["p99_us"]
    if "streams" in summary:
        out["streams"] = {name: {k: s[k] for k in keys if k in s}
                          for name, s in summary["streams"].items()}
    out["mqtt"] = link.stats()
    out["t"] = time.time()
    return out


# -- reporting ---------------------------------------------------------------

def reporter(args, out, mqtt, line):
    """The loop's progress hook: the live line on a terminal and, with
    --mqtt, the retained status every --status-every seconds; (hook or
    None, how often to call it)."""
    live = not args.quiet and out.isatty() if hasattr(out, "isatty") else False
    if not live and mqtt is None:
        return None, 0.5
    next_status = [0.0]

    def progress(summary):
        if live:
            print("\r" + line(summary), end="", file=out, flush=True)
        now = time.monotonic()
        if mqtt is not None and now >= next_status[0]:
            mqtt.publish_status(json_safe(status_payload(summary, mqtt)))
            next_status[0] = now + args.status_every
    progress.live = live
    return progress, min(0.5, args.status_every)


def finish(args, summary, mqtt, say) -> int:
    """The closing status over MQTT and --summary-json; 1 if the JSON could
    not be written."""
    if mqtt is not None:
        mqtt.publish_status(json_safe(status_payload(summary, mqtt)))
        summary["mqtt"] = mqtt.stats()
        say("  mqtt: " + ", ".join(f"{k} {v}" for k, v in summary["mqtt"].items()))
    if args.summary_json:
        try:
            write_json(args.summary_json, json_safe(summary))
        except OSError as exc:
            say(f"rtrl-edge run: --summary-json {args.summary_json}: {exc.strerror or exc}")
            return 1
    return 0


def serve(runner, args, out, mqtt, line) -> dict:
    """Run `runner` (an OnlineLoop or a MultiLoop) to its end: SIGINT and
    SIGTERM ask it to stop after the current sample (it then checkpoints),
    progress goes to a terminal and status to MQTT (`reporter`); returns its
    summary."""
    import signal
    handlers = {sig: signal.signal(sig, lambda signum, frame: runner.stop())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    progress, every = reporter(args, out, mqtt, line)
    try:
        summary = runner.run(max_steps=args.max_steps, progress=progress, progress_every=every)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if progress is not None and progress.live:
        print(file=out)
    return summary

