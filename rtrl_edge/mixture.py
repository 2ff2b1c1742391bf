"""Forecasters combined online (DESIGN §3.11): the machinery that
`Forecaster.auto` (`rtrl_edge.auto`) and `DelayCompensator`
(`rtrl_edge.compensator`) build on.

Every member (`rtrl_edge.members`) forecasts the target h samples ahead at
every sample; when the target of a forecast arrives, each member's loss is
known, and `Hedge` weights the members by their recent losses:

    loss_i,t = sum_c (f_i,c - y_c)^2 / sum_c s_c^2     (s_c^2: running mean of
                                                        the h-sample change^2)
    L_i     <- lam * L_i + loss_i,t                     (lam = 1 - 1/WINDOW)
    w_i      = exp(-ETA * (L_i - min_j L_j)) / sum ...

The loss is normalised by what repeating the last value costs on average, so
that one ETA works in any units; the forgetting factor lets the weights
follow the best member as it changes (a member that learns overtakes the
linear ones; a member that diverges loses its weight within a few dozen
targets).  With lam = 1 the rule has regret O(sqrt(T log K)) to the best
member; here it tracks the best one over roughly the last WINDOW targets.
Per channel (``Mixture.PER_CHANNEL``), each channel c has its own weights
from its own loss (f_i,c - y_c)^2 / s_c^2.  A member may start with a head
start in L (a prior), forgotten like any loss.

`Mixture` holds what every mixture shares: the members' forecasts pending
their targets, the scoring, the weights, the budgets' choice of RNN size,
and one checkpoint for everything.
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

import numpy as np

from . import checkpoint, planning
from .checkpoint import CheckpointError
from .members import RNNMember, RunningStats
from .model import OnlineRNN, _check_values, _checkpoint_spec

__all__ = ["Hedge", "Mixture", "NotThisKind", "check_budgets", "largest_hidden",
           "measure_us", "member_losses", "clip_losses", "rnn_member_net"]

#: hidden sizes tried for the RNN members, largest first, when budgets are given
RNN_SIZES = (32, 24, 16, 12, 8, 4)


class NotThisKind(CheckpointError):
    """A valid checkpoint of another kind (a single model's, or another mixture's)."""

class Hedge:
    """Exponentially weighted average of K forecasts with forgetting (module
    doc).  ``ETA`` and ``WINDOW`` are fixed: nothing to tune per signal.

    With `channels`, each of the forecast's channels has its own weights,
    from its own losses (shape (K, channels)): a member may be the best for
    one state channel and not for another."""

    ETA = 2.0
    WINDOW = 100           # targets, at least; 20 h for a horizon h (see observe)

    def __init__(self, k: int, horizon: int = 1, window: Optional[int] = None,
                 prior: Optional[np.ndarray] = None, channels: Optional[int] = None):
        # The errors of forecasts h steps ahead overlap over h samples, so
        # they carry about 1/h of the evidence each: the window grows with h.
        self.window = max(self.WINDOW, 20 * horizon) if window is None else int(window)
        shape = (k,) if channels is None else (k, channels)
        # `prior`: a head start in loss, per member (forgotten like any loss),
        # for members that are known to be better before any evidence
        self.loss = np.zeros(shape)
        if prior is not None:
            self.loss += np.asarray(prior, dtype=np.float64).reshape((k,) + (1,) * (len(shape) - 1))
        self.recent = np.zeros(shape)    # EMA of the normalised loss (for stats)
        self.weights = np.zeros(shape)
        self._reweigh()
        self.scored = np.zeros(1)

    def _reweigh(self) -> None:
        z = -self.ETA * (self.loss - self.loss.min(axis=0))
        np.exp(z, out=self.weights)
        self.weights /= self.weights.sum(axis=0)

    def observe(self, losses: np.ndarray) -> None:
        lam = 1.0 - 1.0 / self.window
        self.loss *= lam
        self.loss += losses
        a = 1.0 / min(self.scored[0] + 1.0, self.window)
        self.recent += a * (losses - self.recent)
        self.scored[0] += 1
        self._reweigh()

    def combine(self, forecasts: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.weights.ndim == 1:
            np.dot(self.weights, forecasts, out=out)
        else:
            np.einsum("kc,kc->c", self.weights, forecasts, out=out)
        return out


def member_losses(forecasts: np.ndarray, y: np.ndarray, scale2: np.ndarray,
                  out: np.ndarray) -> np.ndarray:
    """Normalised squared error of each member's forecast (rows) of `y`:
    into `out` of shape (K,), sum_c d_c^2 / sum_c scale2_c; into `out` of
    shape (K, channels), each channel's d_c^2 / scale2_c (every channel
    counts alike, whatever its units: a controller's positions and
    velocities)."""
    d = forecasts - y
    if out.ndim == 2:
        np.square(d, out=out)
        out /= scale2
    else:
        np.einsum("kc,kc->k", d, d, out=out)
        out /= max(float(scale2.sum()), 1e-300)
    return out


def clip_losses(losses: np.ndarray, cap: float = 100.0) -> None:
    """A member whose forecast is non-finite or absurd gets the cap: one
    target can cost a member at most 100 times what repeating the last value
    costs on average, so that an early blunder (or a loss scale estimated
    from a handful of changes) is forgotten within the window."""
    bad = ~np.isfinite(losses)
    losses[bad] = cap
    np.minimum(losses, cap, out=losses)


class _Context:
    """What every member sees at one step (no allocation: reused): `learn`
    says whether the target of t - h arrived and may be learnt from, `teach`
    whether the caller lets the members learn from this sample at all."""
    __slots__ = ("t", "x", "y", "y_ago", "has_y", "learn", "teach", "x_stats", "y_stats",
                 "forecasts")


def _check_vector(value, width: int, name: str) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of shape ({width},), got "
                         f"{type(value).__name__}") from None
    if v.ndim == 0 and width == 1:
        v = v.reshape(1)
    if v.shape != (width,):
        raise ValueError(f"{name} must have shape ({width},), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite (no NaN or inf); expected shape ({width},)")
    return v


class Mixture:
    """What every mixture shares: members that forecast h samples ahead at
    every sample, `Hedge` weighting them by their normalised error on the
    targets that have arrived, and one checkpoint holding everything.

    A subclass builds ``self.members`` and ``self.names`` and calls
    `_start`; per sample it calls `_advance(x, y)` after checking its inputs.
    It names its checkpoint kind (``_KIND``) and rebuilds itself from its
    ``_config()`` in ``_from_config``.
    """

    _KIND = ""
    #: weigh the members per channel, each channel's error normalised by its
    #: own scale (see Hedge and member_losses)
    PER_CHANNEL = False
    #: targets the weights remember (None: Hedge's default for the horizon)
    HEDGE_WINDOW: Optional[int] = None
    #: the most one target can cost a member, in units of the last value's
    #: average cost (see clip_losses)
    LOSS_CAP = 100.0

    def _start(self, n_in: int, n_out: int, horizon: int) -> None:
        self.n_in, self.n_out, self.horizon = int(n_in), int(n_out), int(horizon)
        h, no, k = self.horizon, self.n_out, len(self.members)
        self.hedge = Hedge(k, h, self.HEDGE_WINDOW, self._prior(),
                           no if self.PER_CHANNEL else None)
        self.x_stats, self.y_stats = RunningStats(self.n_in), RunningStats(no)
        self.change2 = RunningStats(no)          # of (y_t - y_{t-h})^2: the loss scale
        self._forecasts = np.zeros((k, no))
        self._pending = np.zeros((h, k, no))     # forecasts made at t-h ... t-1
        self._valid = np.zeros(h, dtype=bool)
        self._y_ring = np.zeros((h, no))         # y_{t-h} ... y_{t-1}
        self._y_known = np.zeros(h, dtype=bool)
        self._last_y = np.zeros(no)
        self._losses = np.zeros(self.hedge.loss.shape)
        self._out = np.zeros(no)
        self.counters = dict(samples=0, learned=0, scored=0, nonfinite_members=0,
                             rejected=0)
        self._standardised = any(getattr(m, "standardise", False) for m in self.members)
        self._ctx = _Context()
        self._ctx.x_stats, self._ctx.y_stats = self.x_stats, self.y_stats
        self._ctx.forecasts = self._forecasts

    # -- per sample ----------------------------------------------------------

    def _advance(self, x: np.ndarray, y: Optional[np.ndarray], teach: bool = True
                 ) -> np.ndarray:
        """One checked sample: score the forecasts whose target is `y`, let
        the members learn (unless `teach` is False) and forecast, and return
        the weighted forecast of y_{t+h} (the mixture's own buffer)."""
        t, h = self.counters["samples"], self.horizon
        slot = t % h
        has_y = y is not None
        y_now = y if has_y else self._last_y
        ctx = self._ctx
        ctx.t, ctx.x, ctx.y, ctx.has_y, ctx.teach = t, x, y_now, has_y, bool(teach)
        ctx.y_ago = self._y_ring[slot]
        ctx.learn = has_y and teach and t >= h and bool(self._y_known[slot])
        # score once the loss scale rests on a few changes over the horizon
        if has_y and t >= h and self._valid[slot] and self.change2.count[0] >= 8:
            member_losses(self._pending[slot], y, np.maximum(self.change2.mean, 1e-12),
                          self._losses)
            clip_losses(self._losses, self.LOSS_CAP)
            self.hedge.observe(self._losses)
            self.counters["scored"] += 1
        if has_y and t >= h and self._y_known[slot]:
            d = y - ctx.y_ago
            self.change2.update(d * d)
            if ctx.learn:
                self.counters["learned"] += 1
        if self._standardised:               # only standardising members read them
            self.x_stats.update(x)
            if has_y:
                self.y_stats.update(y)
        F = self._forecasts
        for i, member in enumerate(self.members):
            member.step(ctx, F[i])
        bad = ~np.isfinite(F).all(axis=1)
        if bad.any():                        # a diverging member never reaches the output
            F[bad] = y_now
            self.counters["nonfinite_members"] += int(bad.sum())
        self.hedge.combine(F, self._out)
        self._pending[slot] = F
        self._valid[slot] = True
        self._y_ring[slot] = y_now
        self._y_known[slot] = has_y
        if has_y:
            self._last_y[...] = y
        self.counters["samples"] = t + 1
        return self._out

    def reset(self) -> None:
        """A break in the stream: forget pending forecasts, windows and RNN
        states; what was learnt (weights, statistics) is kept."""
        self._valid[...] = False
        self._y_known[...] = False
        for m in self.members:
            if hasattr(m, "reset"):
                m.reset()

    # -- what OnlineLoop asks of any forecaster -----------------------------------

    @property
    def last_loss(self) -> float:
        """The weighted mean of the members' normalised losses on the latest
        target (1: as bad as the last value on average)."""
        w = self.hedge.weights
        if not self.counters["scored"]:
            return float("nan")
        if w.ndim == 1:
            return float(w @ self._losses)
        return float(np.mean(np.sum(w * self._losses, axis=0)))

    @property
    def divergence_recoveries(self) -> int:
        """Blow-ups the RNN members' divergence guards undid."""
        return sum(m.net.stats["divergence_recoveries"] for m in self.members
                   if isinstance(m, RNNMember))

    # -- reporting -------------------------------------------------------------

    @property
    def weights(self) -> Dict[str, float]:
        """Each member's weight in the forecast, by name (per channel: the
        mean over the channels)."""
        return dict(zip(self.names, (float(np.mean(w)) for w in self.hedge.weights)))

    @property
    def stats(self) -> Dict[str, object]:
        """Counters, and per member its weight and recent normalised error
        (mean squared error over roughly the last 100 targets, divided by
        the mean squared change over the horizon: the last value scores about
        1, lower is better)."""
        out = dict(self.counters)
        out["divergence_recoveries"] = self.divergence_recoveries
        out["members"] = {name: dict(weight=float(np.mean(w)), recent_error=float(np.mean(e)))
                          for name, w, e in zip(self.names, self.hedge.weights,
                                                self.hedge.recent)}
        out["memory_bytes"] = self.memory_bytes
        return out

    @property
    def memory_bytes(self) -> int:
        """Bytes of every preallocated buffer: the RNN members' arenas and
        every array of the mixture and the other members."""
        total = sum(m.net.memory_bytes + m.fc._x.nbytes + m._u.nbytes
                    for m in self.members if isinstance(m, RNNMember))
        total += sum(a.nbytes for a in self._arrays().values())
        return int(total)

    def _arrays(self) -> Dict[str, np.ndarray]:
        """Every array of the mixture and its non-RNN members (live)."""
        arrays = {"pending": self._pending, "valid": self._valid, "y_ring": self._y_ring,
                  "y_known": self._y_known, "last_y": self._last_y,
                  "forecasts": self._forecasts, "losses": self._losses, "out": self._out}
        arrays.update({"hedge_" + k: getattr(self.hedge, k)
                       for k in ("loss", "recent", "weights", "scored")})
        for prefix, st in (("xs_", self.x_stats), ("ys_", self.y_stats),
                           ("ch_", self.change2)):
            arrays.update({prefix + k: getattr(st, k) for k in ("mean", "var", "count")})
        for i, m in enumerate(self.members):
            if hasattr(m, "arrays"):
                arrays.update({f"m{i}_{k}": v for k, v in m.arrays().items()})
        return arrays

    # -- persistence -------------------------------------------------------------

    def state(self) -> Dict[str, np.ndarray]:
        """Copies of everything mutable, as arrays (models excluded: see
        `save`)."""
        arrays = {k: np.array(v) for k, v in self._arrays().items()
                  if not k.startswith("m") or not k.split("_", 1)[1].startswith("_")}
        for k in ("forecasts", "losses", "out"):
            arrays.pop(k)
        arrays["counters"] = np.array([self.counters[k] for k in sorted(self.counters)],
                                      np.int64)
        for i, m in enumerate(self.members):
            if isinstance(m, RNNMember):
                arrays.update({f"r{i}_{k}": v for k, v in m.state("").items()})
        return arrays

    def restore(self, arrays: Dict[str, np.ndarray]) -> None:
        """Continue from `state()` arrays of an identically built mixture.
        Raises ValueError, changing nothing, if any is missing or has another
        shape or dtype."""
        current = self.state()
        what = type(self).__name__
        for k, v in current.items():
            a = arrays.get(k)
            if a is None or np.shape(a) != v.shape or np.asarray(a).dtype != v.dtype:
                raise ValueError(f"the saved {what} does not match this one "
                                 f"({k!r}: {None if a is None else np.shape(a)}, expected "
                                 f"{v.shape})")
            if v.dtype.kind == "f" and not np.isfinite(a).all():
                raise ValueError(f"the saved {what} holds non-finite {k!r}")
        self._check_restorable(arrays)
        live = self._arrays()
        for k in current:
            if k in live:
                live[k][...] = arrays[k]
        self.counters.update(zip(sorted(self.counters), (int(v) for v in arrays["counters"])))
        for i, m in enumerate(self.members):
            if isinstance(m, RNNMember):
                m.restore(arrays, f"r{i}_")

    def _prior(self) -> Optional[np.ndarray]:
        """The members' head start in loss (None: none, uniform weights)."""
        return None

    def _check_restorable(self, arrays: Dict[str, np.ndarray]) -> None:
        """A subclass's own checks of `restore`'s arrays (ValueError)."""

    def _config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def _from_config(cls, config: dict, file_size: int, where: str) -> "Mixture":
        """Build the mixture a checkpoint's configuration describes; raise
        ValueError, KeyError or TypeError for an invalid one, CheckpointError
        for one that claims more memory than the file could fill."""
        raise NotImplementedError

    def save(self, path, extra: Optional[Dict[str, np.ndarray]] = None, *,
             key: Optional[bytes] = None) -> None:
        """The whole mixture -- every member's model and state, the weights,
        windows and pending forecasts -- in one atomic, checksummed
        checkpoint (`rtrl_edge.checkpoint`; with `key`, signed), with `extra`
        arrays beside it (`load_with_extra` returns them)."""
        arrays = {"mix:" + k: v for k, v in self.state().items()}
        arrays.update({checkpoint.EXTRA + k: np.asarray(v) for k, v in (extra or {}).items()})
        for i, m in enumerate(self.members):
            if isinstance(m, RNNMember):
                for k, v in m.net._state_arrays().items():
                    arrays[f"net{i}:{k}"] = v
        arrays["config"] = np.array(json.dumps(self._config(), sort_keys=True))
        checkpoint.write(path, arrays, key=key)

    @classmethod
    def load(cls, path, *, key: Optional[bytes] = None):
        """Read a mixture written by `save`: validated like every checkpoint
        (FileNotFoundError or CheckpointError, never another exception), then
        rebuilt and restored exactly."""
        return cls.load_with_extra(path, key=key)[0]

    @classmethod
    def load_with_extra(cls, path, *, key: Optional[bytes] = None):
        """(mixture, extra arrays) of a checkpoint written by `save`."""
        where = repr(os.fspath(path))
        built = {}

        def spec(config, file_size, load):
            if config.get("kind") != cls._KIND:
                raise NotThisKind(f"{where} is not {'an' if cls.__name__[0] in 'AEIOU' else 'a'}"
                                  f" {cls.__name__} checkpoint")
            try:
                fc = cls._from_config(config, file_size, where)
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, CheckpointError):
                    raise
                raise CheckpointError(f"{where} holds an invalid configuration: {exc}") \
                    from None
            out = {"mix:" + k: (v.dtype.str, v.shape) for k, v in fc.state().items()}
            for i, m in enumerate(fc.members):
                if not isinstance(m, RNNMember):
                    continue
                prefix = f"net{i}:"
                cfg = m.net._saved_config()
                load(prefix + "config", "<U%d" % len(json.dumps(cfg, sort_keys=True)), ())

                def prefixed(name, dtype, shape, max_items=None, _p=prefix):
                    return load(_p + name, dtype, shape, max_items)
                _, _, net_spec = _checkpoint_spec(cfg, file_size, prefixed, where)
                out.update({prefix + k: v for k, v in net_spec.items()})
            built["fc"] = fc
            return out

        arrays = checkpoint.read(path, spec, key=key)
        fc = built["fc"]
        for i, m in enumerate(fc.members):
            if not isinstance(m, RNNMember):
                continue
            prefix = f"net{i}:"
            sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            stored = json.loads(str(sub["config"]))
            if stored != m.net._saved_config():
                raise CheckpointError(f"{where}: member {i}'s model configuration does not "
                                      f"match the mixture's")
            _check_values(sub, m.net.config, where)
            m.net._restore(sub)
        try:
            fc.restore({k[4:]: v for k, v in arrays.items() if k.startswith("mix:")})
        except ValueError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        extra = {k[len(checkpoint.EXTRA):]: v for k, v in arrays.items()
                 if k.startswith(checkpoint.EXTRA)}
        return fc, extra


def check_budgets(memory_bytes, step_us) -> None:
    """ValueError unless each budget given is a number > 0."""
    for v, name in ((memory_bytes, "memory_bytes"), (step_us, "step_us")):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                              or not v > 0):
            raise ValueError(f"{name} must be > 0, got {v!r}")


def largest_hidden(base_bytes: int, base_us: float, width: int, n_out: int, horizon: int,
                   members: int, memory_bytes: Optional[int], step_us: Optional[float]
                   ) -> Optional[int]:
    """The largest of `RNN_SIZES` whose `members` RNN members (exact RTRL,
    Adam, on `width` inputs), added to a mixture of `base_bytes` and
    `base_us` without them, fit the budgets; None if none does.  ValueError
    if not even the mixture without them fits."""
    for n in RNN_SIZES:
        mem = base_bytes + members * (
            planning.memory_bytes(width, n, n_out, learner="rtrl", optimizer="adam")
            + 4 * 2 * horizon * width + 8 * width)
        if memory_bytes is not None and mem > memory_bytes:
            continue
        if step_us is not None:
            per = _rnn_step_us(width, n, n_out, horizon)
            if base_us + members * per > step_us:
                continue
        return n
    if (memory_bytes is None or base_bytes <= memory_bytes) and \
            (step_us is None or base_us <= step_us):
        return None
    raise ValueError(f"nothing fits: the mixture without RNN members alone needs "
                     f"{base_bytes:,} bytes and about {base_us:.0f} us per step")


def rnn_member_net(width: int, hidden: int, n_out: int, lr: float, seed: int) -> OnlineRNN:
    """The model of an RNN member: exact RTRL, Adam at `lr`, clipped,
    normalised inputs, uniform initialisation."""
    return OnlineRNN(width, hidden, n_out, learner="rtrl", optimizer="adam", lr=lr, clip=1.0,
                     normalize=True, seed=seed, init="uniform")


def measure_us(step, *inputs) -> float:
    """Median us of ``step(*row)`` over the rows of `inputs` (the first
    third discarded as warm-up), on a scratch object the caller built."""
    times = []
    for row in zip(*inputs):
        t0 = time.perf_counter_ns()
        step(*row)
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times[len(times) // 3:])) / 1e3


def _rnn_step_us(width: int, n: int, n_out: int, horizon: int) -> float:
    """Predicted us of one RNN member per sample: a learning step plus the
    forecast's h forward steps, from `plan`'s cost model on this machine."""
    a, b = planning.calibrate("rtrl", "elman", width, n_out, optimizer="adam")
    step = a + b * planning.work(width, n, n_out, learner="rtrl", cell="elman")
    forward = n * (n + width + 1) * 2e-3 * horizon      # ~0.5 ns per multiply-add
    return step + forward + 15.0                        # + the Python wrapper
