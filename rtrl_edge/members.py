"""The forecasters a mixture combines (`rtrl_edge.mixture`), each
forecasting its target h samples ahead at every sample.

All are causal: each learns from the pair (what it saw at t - h, the target
of t) only when that target arrives.

  LastValue      y_t: doing nothing, the floor every forecast is held to.
  Extrapolation  y_t + h (y_t - y_{t-1}): the straight line through the last
                 two samples.
  LinearRLS      recursive least squares on a lag window, predicting the
                 change over the horizon; forgetting with a bounded
                 covariance (plain exponential forgetting blows up when the
                 inputs barely vary).
  Seasonal       y_t plus the average change over the horizon one, two and
                 three periods ago, once a period is detected by
                 autocorrelation of the recent changes (y_t until then).
  RNNMember      an `OnlineRNN` through a `Forecaster` learning the change
                 from a base forecast: the last value, or a linear member's
                 forecast (the RNN then learns what the linear model misses).

All state is preallocated at construction; a step allocates only numpy's
small temporaries.  A member takes ``step(ctx, out)`` (what it sees: the
mixture's `_Context`), lists its live arrays in ``arrays()`` (names starting
with ``_`` are scratch, not saved) and may ``reset()`` at a break in the
stream; only an RNN member has a `state`/`restore` of its own (its
Forecaster's window).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _rls
from .forecast import Forecaster
from .model import OnlineRNN

__all__ = ["LastValue", "Extrapolation", "LinearRLS", "Seasonal", "RNNMember",
           "RunningStats", "rls_update"]


class RunningStats:
    """Per-channel running mean and variance: exact for the first `window`
    samples, exponentially forgetting afterwards (as the model's normaliser)."""

    def __init__(self, width: int, window: int = 10_000):
        self.mean = np.zeros(width)
        self.var = np.zeros(width)
        self.count = np.zeros(1)
        self.window = window

    def update(self, v: np.ndarray) -> None:
        self.count[0] += 1
        a = 1.0 / min(self.count[0], self.window)
        d = v - self.mean
        self.mean += a * d
        self.var *= 1.0 - a
        self.var += (1.0 - a) * a * d * d

    def std(self, floor: float = 1e-12) -> np.ndarray:
        return np.sqrt(self.var + floor)


class LastValue:
    """The forecast of y_{t+h} is y_t."""

    kind = "last value"

    def __init__(self, n_out: int):
        self.n_out = n_out

    def step(self, ctx, out: np.ndarray) -> None:
        out[...] = ctx.y


class Extrapolation:
    """The forecast of y_{t+h} is y_t + h (y_t - y_{t-1}) (y_t until a
    previous sample is known)."""

    kind = "linear extrapolation"

    def __init__(self, n_out: int, horizon: int):
        self.h = horizon
        self.prev = np.zeros(n_out)
        self.has_prev = np.zeros(1)

    def step(self, ctx, out: np.ndarray) -> None:
        out[...] = ctx.y
        if self.has_prev[0]:
            out += self.h * (ctx.y - self.prev)
        self.prev[...] = ctx.y
        self.has_prev[0] = 1.0

    def reset(self) -> None:
        self.has_prev[0] = 0.0

    def arrays(self):
        return {"prev": self.prev, "has_prev": self.has_prev}


def rls_update(P: np.ndarray, W: np.ndarray, phi: np.ndarray, target: np.ndarray,
               lam: float, bound: float, Px: np.ndarray) -> bool:
    """One step of recursive least squares with forgetting factor `lam`,
    in place (float64 arrays): W <- W + gain (target - phi W),
    P <- (P - gain phi^T P) / lam, then P scaled back whenever trace(P)
    exceeds `bound` (so that forgetting cannot make the gain grow without
    limit while the inputs barely vary).  `Px` is scratch of shape (f,).  A
    step whose denominator is not a positive finite number changes nothing
    and returns False.  Compiled (`rtrl_edge._rls`)."""
    return _rls.rls_update(P, W, phi, target, lam, bound, Px)


class LinearRLS:
    """Recursive least squares on the features
    ``[y_t, x_t, x_{t-1}, ..., x_{t-L+1}, 1]`` predicting the change
    ``y_{t+h} - y_t``; by default each feature and the change are
    standardised by running statistics (``standardise=False``: raw values,
    which a controller's state and commands want -- see
    `rtrl_edge.compensator`).

    Forgetting factor `lam` (``LAMBDA``: memory ~1,000 samples) with the
    covariance P bounded: when trace(P) exceeds its initial value F / ridge
    it is scaled back, which keeps the gain finite when the inputs stop
    varying (plain forgetting divides P by lam at every step and blows up
    then)."""

    kind = "linear (RLS)"
    LAMBDA = 0.999
    RIDGE = 1e-2

    def __init__(self, n_in: int, n_out: int, horizon: int, lags: int, *,
                 lam: Optional[float] = None, ridge: Optional[float] = None,
                 standardise: bool = True):
        self.n_in, self.n_out, self.h, self.lags = n_in, n_out, horizon, lags
        self.lam = self.LAMBDA if lam is None else float(lam)
        self.ridge = self.RIDGE if ridge is None else float(ridge)
        self.standardise = bool(standardise)
        f = self.n_features = n_out + n_in * lags + 1
        self.P = np.eye(f) / self.ridge
        self.W = np.zeros((f, n_out))
        self.phi_ring = np.zeros((horizon, f))     # features at t-h ... t-1
        self.lag = np.zeros((lags, n_in))          # (standardised) x_t ... x_{t-L+1}
        self.seen = np.zeros(1)
        self._Px = np.zeros(f)
        self._phi = np.zeros(f)

    @staticmethod
    def bytes_for(n_in, n_out, horizon, lags) -> int:
        f = n_out + n_in * lags + 1
        return 8 * (f * f + f * n_out + horizon * f + lags * n_in + 2 * f + 1)

    def step(self, ctx, out: np.ndarray) -> None:
        """Learn from the pair of t-h (if its target arrived), then forecast."""
        slot = ctx.t % self.h
        phi = self.phi_ring[slot]            # features of t-h, then of now
        no = self.n_out
        if self.standardise:
            sx, sy = ctx.x_stats, ctx.y_stats
            scale = sy.std()
            if ctx.learn:
                rls_update(self.P, self.W, phi, (ctx.y - ctx.y_ago) / scale, self.lam,
                           self.n_features / self.ridge, self._Px)
            self.lag[1:] = self.lag[:-1]
            self.lag[0] = (ctx.x - sx.mean) / sx.std()
            phi[:no] = (ctx.y - sy.mean) / scale
            phi[no:-1] = self.lag.reshape(-1)
        else:
            if ctx.learn:
                rls_update(self.P, self.W, phi, ctx.y - ctx.y_ago, self.lam,
                           self.n_features / self.ridge, self._Px)
            phi[:no] = ctx.y
            if self.lags == 1:
                phi[no:-1] = ctx.x
                self.lag[0] = ctx.x
            else:
                self.lag[1:] = self.lag[:-1]
                self.lag[0] = ctx.x
                phi[no:-1] = self.lag.reshape(-1)
        phi[-1] = 1.0
        self._phi[...] = phi
        np.dot(phi, self.W, out=out)
        if self.standardise:
            out *= scale
        out += ctx.y
        self.seen[0] += 1

    def reset(self) -> None:
        self.lag[...] = 0.0

    def arrays(self):
        return {k: getattr(self, k) for k in
                ("P", "W", "phi_ring", "lag", "seen", "_Px", "_phi")}


class Seasonal:
    """``y_t`` plus the mean change over the horizon one, two and three
    periods ago.  The period is re-detected every ``EVERY`` samples from the
    autocorrelation of the last ``memory`` one-sample changes of the first
    target channel (periods from 2 to memory/4 samples); a peak above
    ``MIN_CORR`` sets it.  Until then (or when none is found) it forecasts
    ``y_t`` like the last value."""

    kind = "seasonal"
    EVERY = 64
    MIN_CORR = 0.5
    REPEATS = 3

    def __init__(self, n_out: int, horizon: int, memory: int = 1024):
        self.n_out, self.h, self.memory = n_out, horizon, memory
        self.ring = np.zeros((memory, n_out))      # y, oldest overwritten
        self.seen = np.zeros(1)
        self.period = np.zeros(1)                  # 0: none detected
        self._acc = np.zeros(n_out)

    @staticmethod
    def bytes_for(n_out, memory=1024, **_) -> int:
        return 8 * (memory * n_out + 2)

    def _y(self, ago: int) -> np.ndarray:
        return self.ring[(int(self.seen[0]) - 1 - ago) % self.memory]

    def step(self, ctx, out: np.ndarray) -> None:
        self.ring[int(self.seen[0]) % self.memory] = ctx.y
        self.seen[0] += 1
        n = int(self.seen[0])
        if n % self.EVERY == 0 and n >= self.memory // 2:
            self._detect(min(n, self.memory))
        out[...] = ctx.y
        p, h, held = int(self.period[0]), self.h, min(n, self.memory)
        if p == 0:
            return
        acc, used = self._acc, 0
        acc[...] = 0.0
        first = max(1, -(-h // p))           # y_{t+h-kP} must be in the past
        for k in range(first, first + self.REPEATS):
            if k * p >= held:
                break
            acc += self._y(k * p - h)
            acc -= self._y(k * p)
            used += 1
        if used:
            acc /= used
            out += acc

    def _detect(self, count: int) -> None:
        start = int(self.seen[0]) - count
        idx = (start + np.arange(count)) % self.memory
        d = self.ring[idx, 0].copy()
        ramp = np.arange(count) - (count - 1) / 2.0      # remove the linear trend
        d -= d.mean() + ramp * (ramp @ d) / (ramp @ ramp)
        denom = d @ d
        if not denom > 0:
            self.period[0] = 0
            return
        max_lag = len(d) // 4
        if max_lag < 3:
            return
        spec = np.fft.rfft(d, 2 * len(d))
        ac = np.fft.irfft(spec * np.conj(spec))[:max_lag + 1] / denom
        # the first peak after the autocorrelation first turns negative
        neg = np.flatnonzero(ac[1:] < 0)
        if len(neg) == 0:
            self.period[0] = 0
            return
        lo = int(neg[0]) + 1
        top = float(ac[lo:].max()) if lo < len(ac) else 0.0
        if not top >= self.MIN_CORR:
            self.period[0] = 0
            return
        # the first peak that comes close to the highest (not a multiple of it)
        i = lo + int(np.flatnonzero(ac[lo:] >= 0.9 * top)[0])
        while i + 1 < len(ac) and ac[i + 1] > ac[i]:
            i += 1
        self.period[0] = i

    def arrays(self):
        return {k: getattr(self, k) for k in ("ring", "seen", "period", "_acc")}


class RNNMember:
    """An `OnlineRNN` behind a `Forecaster` with ``delta=True`` on the input
    ``[base_t, y_t, x_t]``: it learns ``y_{t+h} - base_t`` and forecasts
    ``base_t`` plus it, where ``base_t`` is the last value or another
    member's forecast (`base`: index of that member, None for the last
    value)."""

    kind = "RNN"

    def __init__(self, net: OnlineRNN, horizon: int, base: Optional[int] = None):
        self.net, self.base = net, base
        self.fc = Forecaster(net, horizon, delta=True)
        n_out = net.n_out
        self._u = np.zeros(net.n_in, dtype=np.float64)
        self.n_out = n_out

    def step(self, ctx, out: np.ndarray) -> None:
        no = self.n_out
        u = self._u
        u[:no] = ctx.y if self.base is None else ctx.forecasts[self.base]
        u[no:2 * no] = ctx.y
        u[2 * no:] = ctx.x
        # the Forecaster learns from the target only when one arrived and
        # the caller lets it (ctx.teach)
        out[...] = self.fc.update(u, ctx.y if ctx.has_y and ctx.teach else None)

    def reset(self) -> None:
        self.fc.reset()

    def state(self, prefix):
        return {prefix + k: v for k, v in self.fc.state().items()}

    def restore(self, arrays, prefix):
        self.fc.restore({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
