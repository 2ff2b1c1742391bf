"""`AutoForecaster` (``rtrl_edge.Forecaster.auto``): h-step forecasts with
nothing to tune.

Several forecasters run side by side on the same stream and `Hedge` weights
them by their recent error on the targets that have already arrived
(`rtrl_edge.mixture`, members from `rtrl_edge.members`):

  ====================  ======================================================
  last value            y_t (the floor: doing nothing)
  linear, short/long    RLS on 4 and 16 lags of the inputs, predicting the
                        change over the horizon
  seasonal              the change one to three detected periods ago
  RNN x 3               OnlineRNN (exact RTRL, Adam) at learning rates spanning
                        30x, learning the change over the horizon
  RNN on the residual   the same, learning what the short linear member misses
  ====================  ======================================================

Inputs and targets are standardised by running statistics inside each
member, so the caller passes raw values: ``update(x_t, y_t)``, with
``x_t = y_t = [value]`` for a single sensor.  Everything is causal: a member
learns from the pair (what it saw at t - h, y_t) when y_t arrives, and the
weights use only forecasts whose targets have arrived.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from . import planning
from .checkpoint import CheckpointError
from .members import LastValue, LinearRLS, RNNMember, Seasonal
from .mixture import (Mixture, NotThisKind, _check_vector, check_budgets, largest_hidden,
                      measure_us, rnn_member_net)
from .model import OnlineRNN

__all__ = ["AutoForecaster", "NotThisKind", "build", "estimate_bytes"]


DEFAULT_HIDDEN = 16
RNN_LRS = (3e-4, 1e-3, 3e-3)          # a 10x span
LAGS = (4, 16)
_KIND = "rtrl_edge.AutoForecaster"


class AutoForecaster(Mixture):
    """A mixture of forecasters with no hyper-parameters to tune (module doc).

    Build it with `rtrl_edge.Forecaster.auto`; call `update(x_t, y_t)` once
    per sample, in order, to get the forecast of y_{t+h}.

    Parameters
    ----------
    n_in, n_out, horizon : int
        Input width, target width, forecast horizon h >= 1 (samples).
    seed : int
        Seed of the RNN members' initialisation.
    hidden : int
        Hidden units of each RNN member (`Forecaster.auto` picks it from the
        budgets).
    """

    _KIND = _KIND

    def __init__(self, n_in: int, n_out: int, horizon: int, *, seed: int = 0,
                 hidden: int = DEFAULT_HIDDEN, rnn: bool = True):
        for name, v in (("n_in", n_in), ("n_out", n_out), ("horizon", horizon),
                        ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed, self.hidden, self.rnn = int(seed), int(hidden), bool(rnn)
        h, no = int(horizon), int(n_out)
        self.n_in, self.n_out = int(n_in), no
        self.members: List = [LastValue(no)]
        self.names: List[str] = ["last value"]
        for lags in LAGS:
            self.members.append(LinearRLS(self.n_in, no, h, lags))
            self.names.append(f"linear RLS, {lags} lags")
        self.members.append(Seasonal(no, h))
        self.names.append("seasonal")
        linear = 1                               # the short linear member
        if self.rnn:
            width = 2 * no + self.n_in           # [base, y, x]
            for i, lr in enumerate(RNN_LRS):
                self.members.append(RNNMember(self._net(width, lr, i), h))
                self.names.append(f"RNN {self.hidden}, lr {lr:g}")
            self.members.append(RNNMember(self._net(width, RNN_LRS[1], len(RNN_LRS)), h,
                                              base=linear))
            self.names.append(f"RNN {self.hidden} on the linear residual, lr {RNN_LRS[1]:g}")
        self._start(n_in, n_out, horizon)

    def _net(self, width: int, lr: float, index: int) -> OnlineRNN:
        return rnn_member_net(width, self.hidden, self.n_out, lr, self.seed * 16 + index)

    def update(self, x, y=None) -> np.ndarray:
        """Take the sample of time t -- inputs `x` (n_in,) and, if known, the
        target `y` (n_out,) -- learn from what has arrived, and return the
        forecast of y_{t+h} (a new float64 array).

        Raises ValueError, changing nothing, for a bad x or y."""
        try:
            x = _check_vector(x, self.n_in, "x")
            if y is not None:
                y = _check_vector(y, self.n_out, "y")
        except ValueError:
            self.counters["rejected"] += 1
            raise
        return self._advance(x, y).copy()

    def _config(self) -> dict:
        return dict(kind=_KIND, n_in=self.n_in, n_out=self.n_out, horizon=self.horizon,
                    seed=self.seed, hidden=self.hidden, rnn=self.rnn)

    @classmethod
    def _from_config(cls, config, file_size, where):
        sizes = [config[k] for k in ("n_in", "n_out", "horizon", "hidden")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
            raise ValueError(f"n_in, n_out, horizon, hidden = {sizes}")
        # what it would allocate, from the formulas, before building it
        if estimate_bytes(*sizes) > 4 * file_size + (1 << 20):
            raise CheckpointError(f"{where} claims a forecaster larger than the file")
        return cls(*sizes[:3], seed=config["seed"], hidden=sizes[3], rnn=config["rnn"])

    def __repr__(self) -> str:
        return (f"AutoForecaster(n_in={self.n_in}, n_out={self.n_out}, "
                f"horizon={self.horizon}, members={len(self.members)}, "
                f"memory_bytes={self.memory_bytes:,})")


def build(n_in: int, n_out: int, horizon: int, *, seed: int = 0,
          memory_bytes: Optional[int] = None, step_us: Optional[float] = None
          ) -> AutoForecaster:
    """`Forecaster.auto`: the largest RNN members that fit the budgets (the
    mixture without RNN members if none fits; ValueError if not even that)."""
    if memory_bytes is None and step_us is None:
        return AutoForecaster(n_in, n_out, horizon, seed=seed)
    check_budgets(memory_bytes, step_us)
    base = AutoForecaster(n_in, n_out, horizon, seed=seed, rnn=False)
    base_us = 0.0
    if step_us is not None:
        scratch = AutoForecaster(n_in, n_out, horizon, seed=seed, rnn=False)
        rng = np.random.default_rng(0)
        base_us = measure_us(scratch.update, rng.standard_normal((60, n_in)),
                             rng.standard_normal((60, n_out)))
    hidden = largest_hidden(base.memory_bytes, base_us, 2 * n_out + n_in, n_out, horizon,
                            len(RNN_LRS) + 1, memory_bytes, step_us)
    if hidden is not None:
        return AutoForecaster(n_in, n_out, horizon, seed=seed, hidden=hidden)
    return base


def estimate_bytes(n_in: int, n_out: int, horizon: int, hidden: int = DEFAULT_HIDDEN) -> int:
    """Bytes an AutoForecaster of this shape allocates, computed without
    building it (`plan`'s formulas for the RNN members; within a few hundred
    bytes of `memory_bytes`)."""
    width = 2 * n_out + n_in
    rnn = (len(RNN_LRS) + 1) * (
        planning.memory_bytes(width, hidden, n_out, learner="rtrl", optimizer="adam")
        + 4 * (2 * horizon * width + n_out) + 8 * width)
    linear = sum(LinearRLS.bytes_for(n_in, n_out, horizon, lags) for lags in LAGS)
    k = 4 + len(RNN_LRS) + 1
    mixture = 8 * (horizon * k * n_out + 2 * horizon * n_out + 4 * k + 6 * (n_in + n_out))
    return rnn + linear + Seasonal.bytes_for(n_out) + mixture


