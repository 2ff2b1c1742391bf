"""Forecasting h steps ahead when the target of a forecast arrives h steps
later (DESIGN §3.8).

The network is trained on the *lagged* stream -- input x_{t-h}, target y_t,
both known at time t -- and forecasts y_{t+h} by running a copy of its state
over the last h inputs (h cheap forward steps).  Every forecast uses only
what was observed up to the time it is made.  The inputs of the last h steps
live in a preallocated ring; nothing is allocated per step but the returned
forecast.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .model import OnlineRNN


class Forecaster:
    """h-step-ahead online forecasting with any `OnlineRNN`.

    Parameters
    ----------
    net : OnlineRNN
        The model; its n_in is the input width, n_out the target width.
    horizon : int
        h >= 1: forecast the target h samples ahead.
    delta : bool
        Learn the change of the target over the horizon, ``y_{t+h} - y_t``,
        and forecast ``y_t`` plus it (needs n_in >= n_out with the target's
        current value in the first n_out inputs, e.g. predicting a sensor from
        itself).  Often much easier to learn than the level itself.

    Call `update(x_t, y_t)` once per sample, in order: it learns from the
    target that has just arrived and returns the forecast of y_{t+h}.
    """

    def __init__(self, net: OnlineRNN, horizon: int, *, delta: bool = False):
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) \
                or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if delta and net.loss != "mse":
            raise ValueError(f"delta=True forecasts a change of the target's value: it "
                             f"needs loss='mse', got loss={net.loss!r}")
        if delta and net.n_in < net.n_out:
            raise ValueError(f"delta=True reads the target's current value from the first "
                             f"n_out={net.n_out} inputs, but n_in={net.n_in}")
        self.net = net
        self.horizon = int(horizon)
        self.delta = bool(delta)
        h, m = self.horizon, net.n_in
        # twice the horizon: the last h inputs are always one contiguous slice
        self._x = np.zeros((2 * h, m), dtype=np.float32)
        self._pos = 0            # next slot
        self._seen = 0           # samples since the last reset, up to h
        self._target = np.zeros(net.n_out, dtype=np.float32)
        self.stats: Dict[str, int] = dict(samples=0, learned=0, resets=0)

    def reset(self) -> None:
        """A sequence boundary (a gap in the stream): forget the window and
        the network's state; parameters are kept."""
        self._pos = 0
        self._seen = 0
        self.net.reset_state()
        self.stats["resets"] += 1

    def _window(self) -> np.ndarray:
        """The last min(seen, h) inputs, oldest first (a view)."""
        h = self.horizon
        return self._x[self._pos + h - self._seen:self._pos + h]

    def update(self, x, y=None) -> np.ndarray:
        """Take the sample of time t: input `x` (n_in,) and, if known, the
        target `y` (n_out,) of time t.  Learns from the pair (x_{t-h}, y_t)
        once h inputs have been seen, then returns the forecast of y_{t+h}.

        Raises ValueError (changing nothing) for a bad x or y.
        """
        h = self.horizon
        x = self._check(x, self.net.n_in, "x")
        if y is not None:
            y = self._check(y, self.net.n_out, "y")
        if self._seen == h:                         # x_{t-h} is the oldest in the window
            x_old = self._window()[0]
            if y is None:
                self.net.step(x_old)
            else:
                target = y - x_old[:self.net.n_out] if self.delta else y
                self.net.step(x_old, target)
                self.stats["learned"] += 1
        # push x_t
        slot = self._pos
        self._x[slot] = x
        self._x[slot + h] = x
        self._pos = (slot + 1) % h                  # the window now ends at x_t
        self._seen = min(self._seen + 1, h)
        self.stats["samples"] += 1
        forecast = self.net.forecast(self._window())
        if self.delta:
            forecast = forecast + x[:self.net.n_out]
        return forecast

    # -- what OnlineLoop asks of any forecaster -------------------------------

    n_in = property(lambda self: self.net.n_in, doc="Input width.")
    n_out = property(lambda self: self.net.n_out, doc="Target width.")
    memory_bytes = property(lambda self: self.net.memory_bytes + self._x.nbytes
                            + self._target.nbytes, doc="Bytes of the model and the window.")
    last_loss = property(lambda self: self.net.last_loss, doc="The model's latest loss.")
    divergence_recoveries = property(
        lambda self: self.net.stats["divergence_recoveries"],
        doc="Blow-ups the model's divergence guard undid.")

    def save(self, path, extra: Optional[Dict[str, np.ndarray]] = None, *,
             key: Optional[bytes] = None) -> None:
        """The model and the window in one checkpoint (`OnlineRNN.save`),
        with `extra` arrays beside them; `OnlineRNN.load_with_extra` reads it
        back and `restore` continues from its arrays."""
        self.net.save(path, extra=dict(self.state(), **(extra or {})), key=key)

    def _check(self, v, width, name):
        # the compiled boundary's checks (shape, numeric, finite), into a copy
        return self.net._core.validated(v, width, name)

    # -- persistence -----------------------------------------------------

    def state(self) -> Dict[str, np.ndarray]:
        """The window and counters, as arrays (for a checkpoint)."""
        return {"forecast_x": self._x.copy(),
                "forecast_pos": np.array([self._pos, self._seen, self.horizon,
                                          int(self.delta)], dtype=np.int64),
                "forecast_stats": np.array([self.stats[k] for k in
                                            ("samples", "learned", "resets")], dtype=np.int64)}

    def restore(self, arrays: Dict[str, np.ndarray]) -> None:
        """Continue from `state()` arrays (e.g. a checkpoint's extras).

        Raises ValueError, changing nothing, if they are missing, malformed,
        or saved with another horizon, input width or delta setting (the
        message names each difference with both values).
        """
        try:
            x, pos, stats = (np.asarray(arrays[k]) for k in
                             ("forecast_x", "forecast_pos", "forecast_stats"))
        except KeyError as exc:
            raise ValueError(f"no forecaster state (missing {exc.args[0]!r})") from None
        if pos.shape != (4,) or pos.dtype.kind != "i" or stats.shape != (3,) \
                or stats.dtype.kind != "i" or x.ndim != 2 or x.dtype != np.float32:
            raise ValueError("the saved forecaster state is malformed")
        h = int(pos[2])
        differences = []
        if h != self.horizon:
            differences.append(f"horizon {h} (now {self.horizon})")
        if x.shape[1] != self._x.shape[1]:
            differences.append(f"{x.shape[1]} inputs (now {self._x.shape[1]})")
        if bool(pos[3]) != self.delta:
            differences.append(f"delta={bool(pos[3])} (now {self.delta})")
        if differences:
            raise ValueError("the saved forecaster has " + ", ".join(differences))
        if x.shape != self._x.shape or not np.isfinite(x).all():
            raise ValueError(f"the saved forecaster window has shape {x.shape}, expected "
                             f"{self._x.shape}, finite")
        if not (0 <= pos[0] < h and 0 <= pos[1] <= h) or (stats < 0).any():
            raise ValueError(f"the saved forecaster position ({int(pos[0])}, {int(pos[1])}) "
                             f"or counters are out of range for horizon {h}")
        self._x[...] = x
        self._pos, self._seen = int(pos[0]), int(pos[1])
        self.stats.update(zip(("samples", "learned", "resets"), (int(v) for v in stats)))

    @staticmethod
    def auto(n_in: int, n_out: int, horizon: int, *, seed: int = 0,
             memory_bytes: Optional[int] = None, step_us: Optional[float] = None):
        """A forecaster with no hyper-parameters to tune: a mixture of a last
        value, linear (RLS), seasonal and RNN members weighted online by
        their recent error (`rtrl_edge.auto.AutoForecaster`), with the same
        ``update(x, y=None)`` API.  With `memory_bytes` and/or `step_us` its
        RNN members are the largest that fit (`plan`'s formulas and cost
        model on this machine).  For a single sensor pass ``x = y = [value]``.
        """
        from .auto import build
        return build(n_in, n_out, horizon, seed=seed, memory_bytes=memory_bytes,
                     step_us=step_us)

    @staticmethod
    def buffer_bytes(n_in: int, n_out: int, horizon: int) -> int:
        """Bytes of the forecaster's own buffers (the input ring and the
        target), without building it."""
        return 4 * (2 * horizon * n_in + n_out)
