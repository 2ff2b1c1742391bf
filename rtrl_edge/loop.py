"""The online loop: source -> forecast and learn -> controller -> sink, one
sample at a time, within a deadline, with checkpoints.

Per sample (`OnlineLoop.process`):

1. the sample's input channels and target channels are checked (wrong width
   or non-finite values: rejected, counted, the loop goes on);
2. `Forecaster.update` learns from the target that has just arrived (the
   one the forecast made h samples ago was for) and forecasts h ahead;
3. the controller turns the forecast into a command, the sink sends it;
4. the time taken is recorded in a preallocated histogram; more than the
   deadline is a miss.

Late samples: a source returns everything that has arrived since the last
call.  All of it is learnt from (the model must see every sample to stay in
step), but only the newest sample is acted on; a backlog longer than
``max_backlog`` is cut to its newest samples (the dropped ones counted in
``dropped_late``) and the forecaster restarts its window, as after any gap
in the stream.  No queue grows without bound.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .compensator import DelayCompensator
from .forecast import Forecaster
from .model import CheckpointError, OnlineRNN

__all__ = ["LatencyHistogram", "OnlineLoop", "PIController"]


class LatencyHistogram:
    """Durations in a fixed array of log-spaced bins (48 per decade from
    100 ns to 100 s, a 5 % resolution): constant memory for any run length."""

    PER_DECADE = 48
    LO_NS = 100.0

    def __init__(self):
        self.counts = np.zeros(9 * self.PER_DECADE + 2, dtype=np.int64)
        self.max_ns = 0
        self.total = 0

    def record(self, ns: int) -> None:
        b = 0 if ns <= self.LO_NS else 1 + int(math.log10(ns / self.LO_NS) * self.PER_DECADE)
        self.counts[min(b, len(self.counts) - 1)] += 1
        self.max_ns = max(self.max_ns, ns)
        self.total += 1

    def quantile(self, q: float) -> float:
        """Upper edge of the bin holding quantile q, in ns (nan if empty)."""
        if self.total == 0:
            return float("nan")
        b = int(np.searchsorted(np.cumsum(self.counts), q * self.total))
        return min(self.LO_NS * 10 ** (b / self.PER_DECADE), float(self.max_ns))

    def summary_us(self) -> Dict[str, float]:
        return dict(median_us=self.quantile(0.5) / 1e3, p99_us=self.quantile(0.99) / 1e3,
                    max_us=self.max_ns / 1e3, samples=int(self.total))


# -- control -----------------------------------------------------------------

class PIController:
    """u = kp * (setpoint - y) + ki * sum(setpoint - y) * dt, clipped to
    [-limit, limit] (with anti-windup), on the *forecast* of y when there is
    one: acting on where the plant will be after the loop's latency rather
    than where it was (latency compensation)."""

    def __init__(self, kp: float = 0.8, ki: float = 0.4, setpoint=0.0, dt: float = 0.01,
                 limit: float = 1.0):
        self.kp, self.ki, self.dt, self.limit = kp, ki, dt, limit
        self.setpoint = setpoint if callable(setpoint) else (lambda t, s=setpoint: s)
        self._i = 0.0

    def __call__(self, y: float, t: float) -> float:
        err = self.setpoint(t) - y
        u = self.kp * err + self.ki * self._i
        if abs(u) < self.limit:             # integrate only while not saturated
            self._i += err * self.dt
        return max(-self.limit, min(self.limit, float(u)))


# -- the loop ----------------------------------------------------------------

class _Compensated:
    """A `DelayCompensator` as OnlineLoop's forecaster: the loop's input
    channels are the state, its forecast is the predicted state's target
    channels at t + delay, and every command the loop sends is recorded as
    sent (`command`)."""

    def __init__(self, comp: DelayCompensator, positions: np.ndarray):
        self.comp, self.positions = comp, positions
        self.n_in, self.n_out, self.horizon = comp.n_state, len(positions), comp.delay

    def update(self, x, y):
        return self.comp.update(x)[self.positions]

    def command(self, u: float) -> None:
        self.comp.command(np.full(self.comp.n_command, u))

    def reset(self) -> None:
        # a break in the stream: the commands already sent are still in flight
        self.comp.reset(in_flight=self.comp.in_flight)

    def save(self, path, extra=None, *, key=None) -> None:
        self.comp.save(path, extra, key=key)

    stats = property(lambda self: self.comp.stats)
    last_loss = property(lambda self: self.comp.last_loss)
    divergence_recoveries = property(lambda self: self.comp.divergence_recoveries)
    memory_bytes = property(lambda self: self.comp.memory_bytes)


_COUNTERS = ("samples", "learned", "forecasts", "commands", "deadline_misses",
             "dropped_late", "rejected", "gaps", "checkpoints", "checkpoint_failures",
             "nonfinite_forecasts")


class OnlineLoop:
    """source -> `Forecaster` -> controller -> sink, per sample.

    Parameters
    ----------
    forecaster : Forecaster, AutoForecaster or DelayCompensator
        A `DelayCompensator` predicts its state -- the input channels -- at
        the time a command sent now lands; the controller acts on the
        prediction of the target channels, and every command sent is
        recorded in it.
    source : a source of `rtrl_edge.adapters` (``read()``, ``exhausted``, ...)
    inputs, targets : sequence of int
        Channels fed to the network and channels forecast (default: all in,
        channel 0 out).
    controller : callable(forecast_of_target0, t_seconds) -> command, optional
    sink : callable(command), optional
        E.g. ``lambda u: link.command(int(u * 1000))``.
    deadline_ms : float, optional
        Per-sample budget; longer is a ``deadline_misses``.
    max_backlog : int, optional
        Most samples processed per read (older ones dropped, counted);
        default: the source's ``max_backlog``, else 10.
    checkpoint : str, optional
        Path of the periodic, atomic checkpoint (model, normaliser,
        forecaster window, loop counters).
    checkpoint_every : float
        Seconds of wall time between checkpoints.
    checkpoint_key : bytes, optional
        Sign each checkpoint with HMAC-SHA-256 under this key
        (`rtrl_edge.checkpoint`).
    on_forecast : callable(forecast), optional
        Called with each finite forecast (of the target channels) as soon as
        it is made, e.g. to publish it; the array is the forecaster's own
        buffer, valid until the next sample.
    """

    def __init__(self, forecaster: Forecaster, source, *, inputs: Optional[Sequence[int]] = None,
                 targets: Sequence[int] = (0,), controller: Optional[Callable] = None,
                 sink: Optional[Callable] = None, deadline_ms: Optional[float] = None,
                 max_backlog: Optional[int] = None, checkpoint: Optional[str] = None,
                 checkpoint_every: float = 60.0, checkpoint_key: Optional[bytes] = None,
                 error_window: int = 1000, trace: int = 0,
                 on_forecast: Optional[Callable] = None):
        self.net = getattr(forecaster, "net", None)     # the model, for a plain Forecaster
        self.source = source
        n_ch = self.channels = getattr(source, "channels", None)
        self.inputs = np.asarray(list(range(n_ch)) if inputs is None else inputs, dtype=np.intp)
        self.targets = np.asarray(targets, dtype=np.intp)
        if isinstance(forecaster, DelayCompensator):
            # the state is the input channels; the targets must be among them
            where = {int(c): i for i, c in enumerate(self.inputs)}
            if any(int(c) not in where for c in self.targets):
                raise ValueError(f"a DelayCompensator predicts its state, the input channels "
                                 f"{self.inputs.tolist()}; the targets "
                                 f"{self.targets.tolist()} must be among them")
            forecaster = _Compensated(forecaster, np.array([where[int(c)] for c in
                                                            self.targets], dtype=np.intp))
        self.fc = forecaster
        if len(self.inputs) != forecaster.n_in or len(self.targets) != forecaster.n_out:
            raise ValueError(f"the network takes {forecaster.n_in} inputs and "
                             f"{forecaster.n_out} "
                             f"outputs; the loop feeds {len(self.inputs)} and "
                             f"{len(self.targets)}")
        if n_ch is not None and max(self.inputs.max(), self.targets.max()) >= n_ch:
            raise ValueError(f"channel index out of range: the source has {n_ch} channels")
        self.controller = controller
        self.sink = sink
        self.on_forecast = on_forecast
        self.deadline_ns = None if deadline_ms is None else int(deadline_ms * 1e6)
        if max_backlog is None:
            max_backlog = getattr(source, "max_backlog", 10)
        self.max_backlog = int(max_backlog)
        self.checkpoint = checkpoint
        self.checkpoint_every = float(checkpoint_every)
        self.checkpoint_key = checkpoint_key
        self.hist = LatencyHistogram()
        self.counters: Dict[str, int] = {k: 0 for k in _COUNTERS}
        h, o = forecaster.horizon, forecaster.n_out
        # forecasts waiting for their target, and a window of scored errors
        self._pending = np.full((h, o), np.nan)
        self._last = np.full((h, o), np.nan)           # the value when each was made
        self._err = np.zeros((error_window, 3))        # forecast, last value, tracking
        self._n_err = 0
        self._sum_sq = np.zeros(3)
        self._n_scored = 0
        # the last `trace` scored samples of target 0: value, forecast, last value
        self.trace = np.full((int(trace), 3), np.nan)
        self._n_trace = 0
        self._t0 = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self.last_command = None
        self.last_checkpoint_error: Optional[str] = None
        self._stop = False

    # -- per sample ------------------------------------------------------

    def process(self, values: np.ndarray, act: bool = True):
        """One sample; returns the forecast (or None if rejected)."""
        t_start = time.perf_counter_ns()
        try:
            values = np.asarray(values, dtype=np.float64)
            if values.ndim != 1 or (self.channels is not None
                                    and values.shape[0] != self.channels):
                raise IndexError
            x, y = values[self.inputs], values[self.targets]
            # the forecaster checks x and y (finite, shape) before it changes anything
            forecast = self.fc.update(x, y)
        except (IndexError, ValueError, TypeError):
            self.counters["rejected"] += 1
            return None
        except FloatingPointError:
            # the sample drove the state non-finite even with the last good
            # parameters; the guard has reset the state: a break in the stream
            self.counters["rejected"] += 1
            self.gap()
            return None
        self._score(y)
        self.counters["samples"] += 1
        self.counters["learned"] = self.fc.stats["learned"]
        slot = self.counters["samples"] % self.fc.horizon
        self._last[slot] = y
        if not np.isfinite(forecast).all():
            # parameters that are finite but huge (a diverging model the guard
            # has not caught yet) can forecast inf: nothing to act on
            self._pending[slot] = np.nan
            self.counters["nonfinite_forecasts"] += 1
            act = False
        else:
            self._pending[slot] = forecast
            self.counters["forecasts"] += 1
            if self.on_forecast is not None:
                self.on_forecast(forecast)
        if act and self.controller is not None:
            t = time.monotonic() - self._t0
            u = self.controller(float(forecast[0]), t)
            self.last_command = u
            if self.sink is not None:
                self.sink(u)
            if hasattr(self.fc, "command"):       # a DelayCompensator: the command sent
                self.fc.command(u)
            self.counters["commands"] += 1
        elif hasattr(self.fc, "command") and self.sink is not None \
                and self.last_command is not None:
            # not acted on (a backlog's older sample): the compensator holds the
            # last command for this step, so the sink sends it again -- a delay
            # line behind the sink then advances in step with the compensator
            self.sink(self.last_command)
        elapsed = time.perf_counter_ns() - t_start
        self.hist.record(elapsed)
        if self.deadline_ns is not None and elapsed > self.deadline_ns:
            self.counters["deadline_misses"] += 1
        return forecast

    def _score(self, y: np.ndarray) -> None:
        """Errors of the forecast made h samples ago (for now) and of the
        repeat-last-value baseline made then."""
        slot = (self.counters["samples"] + 1) % self.fc.horizon
        f, last = self._pending[slot], self._last[slot]
        if math.isnan(f[0]):
            return
        track = 0.0
        if self.controller is not None and hasattr(self.controller, "setpoint"):
            track = float(self.controller.setpoint(time.monotonic() - self._t0) - y[0])
        df, dl = f - y, last - y
        e = self._err[self._n_err % len(self._err)]
        e[0], e[1], e[2] = df @ df, dl @ dl, track * track
        self._n_err += 1
        if len(self.trace):
            self.trace[self._n_trace % len(self.trace)] = (y[0], f[0], last[0])
            self._n_trace += 1
        self._sum_sq += e
        self._n_scored += 1

    def gap(self) -> None:
        """A hole in the stream: restart the window (and forget pending forecasts)."""
        self.fc.reset()
        self._pending[...] = np.nan
        self.counters["gaps"] += 1

    # -- running ---------------------------------------------------------

    def stop(self) -> None:
        """Ask `run` to finish after the current sample (signal-safe)."""
        self._stop = True

    def feed(self, batch: List[np.ndarray], gap: bool = False,
             max_steps: Optional[int] = None) -> int:
        """Process one read's samples (`run` reads them; a caller serving
        several loops from one source hands each loop the same batch).  `gap`:
        samples may have been lost before this batch.  All of a backlog is
        learnt, the newest sample alone is acted on, and a backlog longer than
        ``max_backlog`` is cut (see the module doc).  Returns the number of
        samples processed."""
        if gap:
            self.gap()
        if len(batch) > self.max_backlog:
            self.counters["dropped_late"] += len(batch) - self.max_backlog
            batch = batch[-self.max_backlog:]
            self.gap()
        if max_steps is not None:
            batch = batch[:max(max_steps - self.counters["samples"], 0)]
        for i, values in enumerate(batch):
            self.process(values, act=i == len(batch) - 1)
        return len(batch)

    def checkpoint_due(self, now: Optional[float] = None) -> bool:
        """True when `checkpoint_every` seconds have passed since the last one."""
        now = time.monotonic() if now is None else now
        return bool(self.checkpoint) and now - self._last_checkpoint >= self.checkpoint_every

    def run(self, max_steps: Optional[int] = None, progress: Optional[Callable] = None,
            progress_every: float = 0.5) -> Dict:
        """Process samples until the source is exhausted, `max_steps`
        samples have been processed, or `stop()`; checkpoint at the end.
        `progress(summary)` is called every `progress_every` seconds."""
        next_progress = time.monotonic() + progress_every
        wait = getattr(self.source, "wait", None)
        reason = "source exhausted"
        while True:
            if self._stop:
                reason = "stopped"
                break
            if max_steps is not None and self.counters["samples"] >= max_steps:
                reason = "max steps"
                break
            batch = self.source.read()
            self.feed(batch, getattr(self.source, "gap", False), max_steps)
            if not batch:
                if getattr(self.source, "exhausted", False):
                    break
                if wait is not None:        # a source whose read returns at once
                    wait(0.05)
            now = time.monotonic()
            if self.checkpoint_due(now):
                self.save_checkpoint()
            if progress is not None and now >= next_progress:
                progress(self.summary())
                next_progress = now + progress_every
        if self.checkpoint:
            self.save_checkpoint()
        out = self.summary()
        out["stop_reason"] = reason
        return out

    # -- durability --------------------------------------------------------

    def _loop_state(self) -> Dict[str, np.ndarray]:
        """The loop's own state (counters, histogram, scores, channels, the
        source's position), saved beside the forecaster's by `fc.save`."""
        state = {}
        state["loop_counters"] = np.array([self.counters[k] for k in _COUNTERS], np.int64)
        state["loop_hist"] = self.hist.counts.copy()
        state["loop_scores"] = np.concatenate([self._sum_sq, [self._n_scored]])
        state["loop_channels"] = np.concatenate([[len(self.inputs)], self.inputs,
                                                 self.targets]).astype(np.int64)
        if hasattr(self.source, "position"):
            state["loop_source_position"] = np.array([self.source.position], np.int64)
        return state

    def save_checkpoint(self) -> bool:
        """Write the checkpoint atomically; on failure (disk full, read-only)
        keep running, count it and keep the message -- the previous
        checkpoint is untouched (written to a temporary file, then renamed)."""
        self._last_checkpoint = time.monotonic()
        self.counters["checkpoints"] += 1          # counted in the file it is written to
        try:
            self.fc.save(self.checkpoint, extra=self._loop_state(), key=self.checkpoint_key)
        except OSError as exc:
            self.counters["checkpoints"] -= 1
            self.counters["checkpoint_failures"] += 1
            self.last_checkpoint_error = (f"checkpoint to {self.checkpoint!r} failed: "
                                          f"{exc.strerror or exc}; the previous one is intact")
            return False
        self.last_checkpoint_error = None
        return True

    def restore(self, extra: Dict[str, np.ndarray]) -> None:
        """Continue from a checkpoint's loop state (see `resume`): the
        forecaster's window, the counters, the latency histogram, the scores
        and, for a source that can `seek` (a replay), the position after the
        last sample learnt.  Raises ValueError, changing nothing, if the state
        is malformed or was saved for other channels, another horizon or
        width, or a longer source (the message names what differs)."""
        n = len(_COUNTERS)
        counters = np.asarray(extra.get("loop_counters", np.zeros(0)))
        hist = np.asarray(extra.get("loop_hist", np.zeros(0)))
        scores = np.asarray(extra.get("loop_scores", np.zeros(0)))
        if counters.shape != (n,) or counters.dtype.kind != "i" or (counters < 0).any():
            raise ValueError(f"the saved loop counters are malformed (shape {counters.shape})")
        if hist.shape != self.hist.counts.shape or hist.dtype.kind != "i" or (hist < 0).any():
            raise ValueError(f"the saved latency histogram is malformed (shape {hist.shape})")
        if scores.shape != (4,) or not np.isfinite(scores).all() or (scores < 0).any():
            raise ValueError(f"the saved scores are malformed (shape {scores.shape})")
        if "loop_channels" in extra:
            ch = np.asarray(extra["loop_channels"])
            if ch.ndim != 1 or ch.dtype.kind != "i" or len(ch) < 1:
                raise ValueError("the saved loop channels are malformed")
            inputs, targets = ch[1:1 + int(ch[0])], ch[1 + int(ch[0]):]
            if not (np.array_equal(inputs, self.inputs) and np.array_equal(targets, self.targets)):
                raise ValueError(f"the checkpoint's loop read channels {inputs.tolist()} and "
                                 f"forecast {targets.tolist()}; this one reads "
                                 f"{self.inputs.tolist()} and forecasts {self.targets.tolist()}")
        position = None
        if "loop_source_position" in extra and hasattr(self.source, "seek"):
            position = int(np.asarray(extra["loop_source_position"]).reshape(-1)[0])
            length = len(getattr(self.source, "values", ()))
            if not 0 <= position <= length:
                raise ValueError(f"the checkpoint had read {position} samples of its source; "
                                 f"this one has {length}")
        if "forecast_x" in extra:    # a single model's Forecaster (an auto one comes whole)
            self.fc.restore(extra)                   # checks, then changes
        if position is not None:
            self.source.seek(position)
        self.counters.update(zip(_COUNTERS, (int(v) for v in counters)))
        self.hist.counts[...] = hist
        self.hist.total = int(hist.sum())
        if self.hist.total:       # the maximum is not saved: the top bin's upper edge
            top = int(np.flatnonzero(hist)[-1])
            self.hist.max_ns = int(LatencyHistogram.LO_NS * 10 ** (top / LatencyHistogram.PER_DECADE))
        self._sum_sq[...] = scores[:3]
        self._n_scored = int(scores[3])

    @staticmethod
    def buffer_bytes(horizon: int, n_out: int, *, error_window: int = 1000,
                     trace: int = 0) -> int:
        """Bytes of the loop's own arrays (pending forecasts, error window,
        trace, histogram), without building it."""
        return (8 * (2 * horizon * n_out + 3 * error_window + 3 * trace)
                + 8 * (9 * LatencyHistogram.PER_DECADE + 2))

    @staticmethod
    def resume_any(path: str, *, key: Optional[bytes] = None, threads: int = 1):
        """(forecaster source, extra) from a checkpoint of any kind: an
        `AutoForecaster` or a `DelayCompensator` (restored whole), or an
        `OnlineRNN` whose Forecaster the caller rebuilds (see `resume`; it
        runs on `threads` cores).  Raises FileNotFoundError or
        CheckpointError."""
        from .auto import AutoForecaster
        from .mixture import NotThisKind
        try:
            fc, extra = AutoForecaster.load_with_extra(path, key=key)
        except NotThisKind:
            try:
                fc, extra = DelayCompensator.load_with_extra(path, key=key)
            except NotThisKind:
                return OnlineLoop.resume(path, key=key, threads=threads)
        if "loop_counters" not in extra:
            raise CheckpointError(f"{path!r} holds a forecaster but no loop state: not a "
                                  f"checkpoint of rtrl-edge run")
        return fc, extra

    @staticmethod
    def resume(path: str, *, key: Optional[bytes] = None, threads: int = 1):
        """(net, extra) from a checkpoint, the model on `threads` cores;
        raises FileNotFoundError or CheckpointError with what is wrong -- a
        corrupt checkpoint is reported, never silently replaced."""
        net, extra = OnlineRNN.load_with_extra(path, key=key, threads=threads)
        for key in ("forecast_x", "forecast_pos", "loop_counters"):
            if key not in extra:
                raise CheckpointError(f"{path!r} holds a model but no loop state "
                                      f"(missing {key!r}): not a checkpoint of rtrl-edge run")
        return net, extra

    # -- reporting ---------------------------------------------------------

    def traced(self) -> np.ndarray:
        """The traced samples (value, forecast, last value), oldest first."""
        n, cap = self._n_trace, len(self.trace)
        if n <= cap:
            return self.trace[:n].copy()
        k = n % cap
        return np.concatenate([self.trace[k:], self.trace[:k]])

    def summary(self) -> Dict:
        n = min(self._n_err, len(self._err))
        recent = self._err[:n].mean(axis=0) if n else np.full(3, np.nan)
        overall = self._sum_sq / self._n_scored if self._n_scored else np.full(3, np.nan)
        out = dict(self.counters)
        out.update(
            horizon=self.fc.horizon,
            forecast_rmse=float(np.sqrt(overall[0])),
            baseline_rmse=float(np.sqrt(overall[1])),
            recent_forecast_rmse=float(np.sqrt(recent[0])),
            recent_baseline_rmse=float(np.sqrt(recent[1])),
            loss=self.fc.last_loss,
            latency=self.hist.summary_us(),
            divergence_recoveries=self.fc.divergence_recoveries,
            memory_bytes=self.fc.memory_bytes,
            elapsed_s=time.monotonic() - self._t0)
        if self.controller is not None:
            out.update(tracking_rmse=float(np.sqrt(overall[2])),
                       recent_tracking_rmse=float(np.sqrt(recent[2])))
        if hasattr(self.source, "stats"):
            out["source"] = self.source.stats()
        if self.last_checkpoint_error:
            out["last_checkpoint_error"] = self.last_checkpoint_error
        return out
