"""Many streams in one process: one `OnlineLoop` per stream, one model each,
served by one thread.

A Pi watching a dozen sensors runs one process, not a dozen: `MultiLoop`
reads each source once per round and hands every loop reading it the same
samples (`OnlineLoop.feed`), so a board's channels can be split into one
stream per channel, and streams with sources of their own (an MQTT topic
each) are polled in turn.  When no source has anything, it waits on one that
can wait (`wait(timeout)`) instead of spinning.

Memory is the sum of the streams' models (`memory_bytes`), nothing shared
and nothing per round.  Checkpoints are one file per stream, written together
so that streams reading one replay agree on where it stands.

A configuration file (`load_config`) names the streams::

    {"streams": [
        {"name": "bed", "inputs": [0, 1], "target": 0, "horizon": 10},
        {"name": "hall", "inputs": [2], "learner": "snap1", "hidden": 32, "lr": 0.003}
    ]}

or the same in TOML (``[[streams]]`` tables, Python 3.11 and later).
"""
from __future__ import annotations

import json
import re
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from .loop import LatencyHistogram, OnlineLoop

__all__ = ["MODEL_KEYS", "MultiLoop", "load_config"]

#: per-stream settings a configuration may give (as `rtrl-edge run`'s flags)
MODEL_KEYS = ("horizon", "learner", "cell", "hidden", "window", "rec_density", "optimizer",
              "lr", "seed")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_INT_KEYS = ("horizon", "hidden", "window", "seed")


def load_config(path: str) -> List[Dict]:
    """The streams of a JSON (or, by its ``.toml`` suffix, TOML) file: a list
    of dicts with ``name``, optional ``inputs`` (list of channels), optional
    ``target`` (a channel; default the first input), optional ``channels``
    (values per sample of a stream read from its own MQTT topic; default
    one more than the largest input) and optional model settings
    (`MODEL_KEYS`).  Raises ValueError naming the file, the stream
    and what is wrong; OSError if it cannot be read."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if str(path).endswith(".toml"):
            try:
                import tomllib
            except ImportError:        # Python < 3.11
                raise ValueError("a TOML configuration needs Python 3.11 or later; "
                                 "write it as JSON") from None
            doc = tomllib.loads(raw.decode("utf-8"))
        else:
            doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    except Exception as exc:       # tomllib.TOMLDecodeError
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list) or not streams:
        raise ValueError(f"{path}: needs a non-empty list 'streams' of streams, each with "
                         f"a 'name'")
    out, seen = [], set()
    for i, spec in enumerate(streams):
        where = f"{path}: stream {i + 1}"
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: must be an object with a 'name'")
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{where}: 'name' must be 1-64 letters, digits, '_', '-' or "
                             f"'.', starting with a letter or digit; got {name!r}")
        where = f"{path}: stream {name!r}"
        if name in seen:
            raise ValueError(f"{where}: the name is used twice")
        seen.add(name)
        unknown = sorted(set(spec) - {"name", "inputs", "target", "channels"}
                         - set(MODEL_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; a stream "
                             f"takes name, inputs, target, channels, {', '.join(MODEL_KEYS)}")
        channels = spec.get("channels")
        if channels is not None and not (_is_int(channels) and channels > 0):
            raise ValueError(f"{where}: 'channels' (values per sample on its own MQTT topic) "
                             f"must be a positive integer; got {channels!r}")
        inputs = spec.get("inputs")
        if inputs is not None and not (isinstance(inputs, list) and inputs and all(
                _is_int(c) and c >= 0 for c in inputs) and len(set(inputs)) == len(inputs)):
            raise ValueError(f"{where}: 'inputs' must be a non-empty list of distinct "
                             f"channel numbers (0, 1, ...); got {inputs!r}")
        target = spec.get("target")
        if target is not None and not (_is_int(target) and target >= 0):
            raise ValueError(f"{where}: 'target' must be a channel number; got {target!r}")
        if target is not None and inputs is not None and target not in inputs:
            raise ValueError(f"{where}: 'target' {target} must be one of its inputs {inputs}")
        for key in MODEL_KEYS:
            if key not in spec:
                continue
            value = spec[key]
            ok = (_is_int(value) and (value >= 0 if key == "seed" else value > 0)
                  if key in _INT_KEYS else
                  isinstance(value, (int, float)) and not isinstance(value, bool)
                  and value > 0 if key in ("lr", "rec_density") else isinstance(value, str))
            if not ok:
                raise ValueError(f"{where}: {key!r} has the wrong type or sign: {value!r}")
        out.append(dict(spec))
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class MultiLoop:
    """Several `OnlineLoop`s, one per stream, run by one thread.

    Parameters
    ----------
    loops : dict name -> OnlineLoop
        Loops that share a source object read it together: each round reads
        it once and every one of them processes the same samples.
    """

    def __init__(self, loops: Dict[str, OnlineLoop]):
        if not loops:
            raise ValueError("MultiLoop needs at least one stream")
        self.loops = dict(loops)
        groups: Dict[int, List] = {}
        for loop in self.loops.values():
            groups.setdefault(id(loop.source), [loop.source, []])[1].append(loop)
        self.groups = [(src, members) for src, members in groups.values()]
        self._waiter = next((src.wait for src, _ in self.groups if hasattr(src, "wait")), None)
        self._stop = False
        self._t0 = time.monotonic()

    @property
    def memory_bytes(self) -> int:
        """The streams' models' bytes, summed (each exact, nothing shared)."""
        return sum(int(loop.fc.memory_bytes) for loop in self.loops.values())

    def stop(self) -> None:
        """Ask `run` to finish after the current round (signal-safe)."""
        self._stop = True

    def save_checkpoints(self) -> int:
        """Checkpoint every stream that has a path; returns how many failed."""
        return sum(not loop.save_checkpoint() for loop in self.loops.values()
                   if loop.checkpoint)

    def run(self, max_steps: Optional[int] = None, progress: Optional[Callable] = None,
            progress_every: float = 0.5) -> Dict:
        """Serve every stream until every source is exhausted, each stream
        has processed `max_steps` samples, or `stop()`; checkpoint at the
        end.  Returns `summary()` with ``stop_reason``."""
        next_progress = time.monotonic() + progress_every
        reason = "source exhausted"
        while True:
            if self._stop:
                reason = "stopped"
                break
            # a source is left unread once every stream on it has max_steps
            active = [(src, members) for src, members in self.groups
                      if max_steps is None
                      or any(loop.counters["samples"] < max_steps for loop in members)]
            if all(getattr(src, "exhausted", False) for src, _ in active):
                if len(active) < len(self.groups):
                    reason = "max steps"
                break
            idle = True
            for source, members in active:
                batch = source.read()
                gap = getattr(source, "gap", False)
                for loop in members:
                    loop.feed(batch, gap, max_steps)
                idle = idle and not batch
            if idle and self._waiter is not None:
                self._waiter(0.05)
            now = time.monotonic()
            # all together: streams on one replay then agree on its position
            if any(loop.checkpoint_due(now) for loop in self.loops.values()):
                self.save_checkpoints()
            if progress is not None and now >= next_progress:
                progress(self.summary())
                next_progress = now + progress_every
        self.save_checkpoints()
        out = self.summary()
        out["stop_reason"] = reason
        return out

    def summary(self) -> Dict:
        """Totals over the streams (samples, misses, rejected, memory, the
        latency of every sample of every stream) and each stream's own
        `OnlineLoop.summary` under ``streams``."""
        per = {name: loop.summary() for name, loop in self.loops.items()}
        hist = LatencyHistogram()
        for loop in self.loops.values():
            hist.counts += loop.hist.counts
            hist.total += loop.hist.total
            hist.max_ns = max(hist.max_ns, loop.hist.max_ns)
        totals = {k: sum(s[k] for s in per.values()) for k in (
            "samples", "learned", "forecasts", "deadline_misses", "dropped_late", "rejected",
            "gaps", "checkpoints", "checkpoint_failures", "nonfinite_forecasts")}
        rmse = np.array([[s["recent_forecast_rmse"], s["recent_baseline_rmse"]]
                         for s in per.values()])
        return dict(totals, n_streams=len(per), memory_bytes=self.memory_bytes,
                    latency=hist.summary_us(), elapsed_s=time.monotonic() - self._t0,
                    streams_beating_last_value=int(np.sum(rmse[:, 0] < rmse[:, 1])),
                    streams=per)
