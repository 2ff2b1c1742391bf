"""`rtrl-edge run --streams FILE` and `rtrl-edge run --split-channels`: many
streams in one process, one model each (`rtrl_edge.streams.MultiLoop`).

The streams read one source together (a board, a recording, a synthetic
signal, or PREFIX/sample over MQTT), each taking its own channels; or, with
``--source mqtt --streams FILE``, each stream reads a topic of its own,
PREFIX/NAME/sample.  Each stream checkpoints to NAME.npz in the folder
--checkpoint names, with the same rules as one stream: an existing
checkpoint is continued (--resume), kept aside (--fresh), or left alone.
"""
from __future__ import annotations

import argparse
import os

from ..streams import MODEL_KEYS, MultiLoop, load_config
from ._common import num as _num
from ._loop_setup import (Refused, build_forecaster, finish, first_sample,
                          forecast_publisher, open_checkpoint, open_mqtt, open_source,
                          restore, serve, settings_for)


def main(args, out, say, fail, key) -> int:
    for flag, given in (("--actuation-delay", args.actuation_delay), ("--plot", args.plot),
                        ("--target", args.target)):
        if given is not None:
            why = {"--actuation-delay": "delay compensation drives one board's actuator",
                   "--plot": "the plot draws one stream",
                   "--target": "each stream has its own target (a config file's 'target'; "
                               "with --split-channels, its channel)"}[flag]
            return fail(f"{flag} is for one stream: {why}")
    if args.checkpoint:
        problem = _check_folder(args.checkpoint)
        if problem:
            return fail(f"--checkpoint {args.checkpoint}: {problem}")
    try:
        specs = load_config(args.streams) if args.streams else None
    except OSError as exc:
        return fail(f"--streams {args.streams}: {exc.strerror or exc}")
    except ValueError as exc:
        return fail(f"--streams {exc}")
    own_topics = args.source == "mqtt" and specs is not None
    link = mqtt = None
    try:
        if own_topics:
            mqtt, made = open_mqtt(args, say, [(spec["name"], _own_width(spec))
                                               for spec in specs])
            shared = dict(zip((spec["name"] for spec in specs), made))
        else:
            link, shared = open_source(args, say, args.seed or 0)
            mqtt = link if args.source == "mqtt" else open_mqtt(args, say)[0]
            if args.source == "mqtt":
                link = None
                first_sample(shared, say)
            if specs is None:
                specs = [{"name": f"ch{c}", "inputs": [c]} for c in range(shared.channels)]
        if link is not None and link.hello.n_actuators > 0:
            say("rtrl-edge run: many streams forecast only; no command goes to the board's "
                "actuator")
        loops = _build_loops(args, specs, shared, mqtt, key, say)
        return _serve(args, out, say, loops, mqtt)
    except Refused as exc:
        return fail(str(exc), exc.code)
    finally:
        if link is not None:
            link.close()
        if mqtt is not None:
            mqtt.close()


def _check_folder(path: str):
    """Why `path` cannot hold the streams' checkpoints (None if it can; a
    missing folder is made, its parent must exist)."""
    if os.path.isdir(path):
        return None if os.access(path, os.W_OK | os.X_OK) else "the folder is not writable"
    if os.path.lexists(path):
        return "with many streams, --checkpoint names a folder (one NAME.npz per stream)"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"the folder {parent} does not exist"
    try:
        os.mkdir(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _own_width(spec) -> int:
    """Values per sample of a stream with a topic of its own."""
    return spec.get("channels") or (max(spec["inputs"]) + 1 if "inputs" in spec else 1)


def _build_loops(args, specs, shared, mqtt, key, say):
    """One `OnlineLoop` per stream, each from its checkpoint or new."""
    from ..loop import OnlineLoop
    positions = set()
    loops = {}
    for spec in specs:
        name = spec["name"]
        ns = argparse.Namespace(**vars(args))
        for k in MODEL_KEYS:
            if k in spec:
                setattr(ns, k, spec[k])
        path = os.path.join(args.checkpoint, name + ".npz") if args.checkpoint else None
        net, extra = open_checkpoint(ns, path, key, say)
        settings = settings_for(ns, net, extra)
        # a topic of its own (a dict of them), or the source all streams share
        source = shared[name] if isinstance(shared, dict) else shared
        inputs = spec.get("inputs") or list(range(source.channels))
        if max(inputs) >= source.channels:
            raise Refused(f"stream {name!r} reads channel {max(inputs)}; the source has "
                          f"{source.channels} channels (0 to {source.channels - 1})")
        target = spec.get("target", inputs[0])
        ordered = [target] + [c for c in inputs if c != target]
        fc = build_forecaster(settings, len(ordered), net, threads=getattr(ns, "threads", 1))
        deadline = args.deadline_ms
        if deadline is None and getattr(source, "rate_hz", None):
            deadline = 1000.0 / source.rate_hz
        loop = OnlineLoop(fc, source, inputs=ordered, targets=(target,), deadline_ms=deadline,
                          checkpoint=path, checkpoint_every=args.checkpoint_every,
                          checkpoint_key=key)
        if mqtt is not None:
            loop.on_forecast = forecast_publisher(mqtt, loop, stream=name)
        if extra is not None and "loop_source_position" in extra and hasattr(source, "seek"):
            positions.add(int(extra["loop_source_position"].reshape(-1)[0]))
        restore(loop, extra, ns, say, what=f"stream {name}: ")
        loops[name] = loop
    if len(positions) > 1:
        raise Refused(f"the streams' checkpoints stand at different samples of the recording "
                      f"({', '.join(map(str, sorted(positions)))}); resume them separately "
                      f"or start over with --fresh")
    return loops


def _serve(args, out, say, loops, mqtt) -> int:
    multi = MultiLoop(loops)
    say(f"rtrl-edge run: {len(loops)} streams, {multi.memory_bytes:,} bytes of models")
    summary = serve(multi, args, out, mqtt, _progress_line)
    _print_summary(summary, say)
    code = finish(args, summary, mqtt, say)
    failed = [name for name, loop in loops.items() if loop.last_checkpoint_error]
    if failed:
        say(f"rtrl-edge run: the last checkpoint of {', '.join(failed)} could not be written")
        code = 1
    return code


def _progress_line(s) -> str:
    lat = s["latency"]
    return (f"{s['n_streams']} streams  samples {s['samples']:9d}  "
            f"{_num(lat['median_us'], '7.1f')} us/sample  beating last value "
            f"{s['streams_beating_last_value']}/{s['n_streams']}  rejected {s['rejected']}")


def _print_summary(s, say) -> None:
    lat = s["latency"]
    say(f"summary: {s['n_streams']} streams, stopped: {s['stop_reason']} after "
        f"{s['elapsed_s']:.1f} s")
    say(f"  {'stream':16s} {'samples':>8s} {'forecast RMSE':>14s} {'last value':>11s} "
        f"{'median us':>10s} {'p99 us':>8s} {'rejected':>8s}")
    for name, one in s["streams"].items():
        la = one["latency"]
        say(f"  {name:16s} {one['samples']:8d} {_num(one['forecast_rmse']):>14s} "
            f"{_num(one['baseline_rmse']):>11s} {_num(la['median_us'], '.1f'):>10s} "
            f"{_num(la['p99_us'], '.1f'):>8s} {one['rejected']:8d}")
    say(f"  all: {s['samples']} samples, latency per sample median "
        f"{_num(lat['median_us'], '.1f')} us, p99 {_num(lat['p99_us'], '.1f')} us; "
        f"deadline misses {s['deadline_misses']}; memory_bytes {s['memory_bytes']:,} "
        f"(the sum of the streams' models)")
    if s["checkpoints"] or s["checkpoint_failures"]:
        say(f"  checkpoints written {s['checkpoints']}, failed {s['checkpoint_failures']}")
