"""`OnlineRNN`: a recurrent network that learns from every sample as it arrives.

The Python layer validates configuration once, lays out parameters as live
numpy views into the compiled core's arena, and handles persistence.  Every
per-sample call (`step`, `predict`) is one call into compiled code.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Dict, Optional

import numpy as np

from . import _kernels

__all__ = ["OnlineRNN", "CheckpointError", "LEARNERS", "OPTIMIZERS"]

LEARNERS = tuple(_kernels.LEARNERS)
OPTIMIZERS = tuple(_kernels.OPTIMIZERS)
FORMAT_VERSION = 1

# Names of the counters that are part of the model's state (saved, restored,
# and compared by `snapshot`).  `rejected_inputs` is kept apart on purpose: a
# rejected input must change nothing but that count.
_STATE_COUNTERS = ("steps", "updates", "divergence_recoveries", "trace_resets",
                   "optimizer_steps", "traces_stale")


class CheckpointError(ValueError):
    """A checkpoint file is truncated, tampered with, of another format
    version, or does not describe a valid model."""


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name, value, *, positive=True, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


class OnlineRNN:
    """An Elman network (tanh cell, linear readout) trained online.

    Dynamics (DESIGN §3.1), with ``W = [W_rec | W_in | b]``::

        z_t = [h_{t-1}; x_t; 1],   h_t = tanh(W z_t),   yhat_t = W_out h_t + b_out
        L_t = 0.5 * ||yhat_t - y_t||^2,                  h_0 = 0

    ``learner="rtrl"`` carries the exact sensitivities ``P = dh/dW`` forward
    (Williams & Zipser 1989): the gradient of every step's loss is available
    at that step, with no stored history, at O(n^4) time and O(n^3) memory.

    Parameters
    ----------
    n_in, n_hidden, n_out : int
        Inputs m, hidden units n, outputs o (all >= 1).
    learner : {"rtrl"}
        How sensitivities are carried.
    optimizer : {"sgd", "momentum", "adam"}
        Online optimiser; its moments are preallocated.
    lr : float
        Learning rate (> 0).
    clip : float or None
        Clip each step's gradient to this global L2 norm.
    normalize : bool
        Normalise inputs and targets by running mean and variance (exact for
        the first ``norm_window`` samples, exponentially forgetting after);
        predictions are returned in the targets' own units and the loss is
        measured in normalised units.
    seed : int
        Seed of the weight initialisation.
    beta1, beta2, adam_eps : float
        Adam's moment decays and epsilon; ``beta1`` is also the momentum.
    norm_window : int
        Effective window of the normaliser once it has seen that many samples.

    Memory
    ------
    Everything is allocated here, once: a float32 arena and a small float64
    one.  With ``K = n + m + 1``, ``p = n*K + o*n + o`` parameters,
    ``ldp = ceil(n*K / 16) * 16``, ``n4 = ceil(n / 4) * 4``,
    ``nb = min(ldp, ceil(max(8192 // n4, 64) / 16) * 16)`` and ``k`` optimiser
    moments (0 for sgd, 1 for momentum, 2 for adam)::

        memory_bytes = 4 * (n*ldp            # sensitivities P
                            + n4*nb          # product block scratch
                            + (3 + k)*p      # params, gradient, last good params, moments
                            + 4*n + K + m + 3*o   # h, dphi, c, h copy, z, x, yn, e, y
                            + 16)            # alignment slack
                     + 8 * (2*m + 2*o + 2)   # normaliser means, variances, counts

    For n = 32, m = 8, o = 1 with sgd that is 217,788 bytes,
    of which P is 167,936.  ``memory_layout`` lists every buffer.
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, *, learner: str = "rtrl",
                 optimizer: str = "sgd", lr: float = 1e-3, clip: Optional[float] = None,
                 normalize: bool = False, seed: int = 0, beta1: float = 0.9,
                 beta2: float = 0.999, adam_eps: float = 1e-8,
                 norm_window: int = 10_000):
        n_in = _check_int("n_in", n_in, 1)
        n_hidden = _check_int("n_hidden", n_hidden, 1)
        n_out = _check_int("n_out", n_out, 1)
        if learner not in LEARNERS:
            raise ValueError(f"learner must be one of {', '.join(LEARNERS)}; got {learner!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; "
                             f"got {optimizer!r}")
        lr = _check_float("lr", lr)
        if clip is not None:
            clip = _check_float("clip", clip)
        if not isinstance(normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True or False, got {normalize!r}")
        seed = _check_int("seed", seed, 0)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= _check_float(name, beta, allow_zero=True) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
        adam_eps = _check_float("adam_eps", adam_eps)
        norm_window = _check_int("norm_window", norm_window, 1)

        self._config = dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out, learner=learner,
                            optimizer=optimizer, lr=lr, clip=clip,
                            normalize=bool(normalize), seed=seed, beta1=float(beta1),
                            beta2=float(beta2), adam_eps=adam_eps, norm_window=norm_window)
        self._core = self._make_core(self._config)
        self._params = self._param_views(self._core)
        self._initialise(np.random.default_rng(seed))
        self._core.buffers["good"][...] = self._core.buffers["theta"]
        self._bind_per_sample_calls()

    def _bind_per_sample_calls(self):
        # One Python->C call per sample (DESIGN §4): the instance's `step` and
        # `predict` are the compiled core's methods themselves, not Python
        # wrappers around them (that frame would cost ~60 ns, 8 % of a small
        # step).  The methods below document them and behave identically.
        self.step = self._core.step
        self.predict = self._core.predict

    # -- construction ------------------------------------------------------

    @staticmethod
    def _make_core(cfg) -> "_kernels.Core":
        return _kernels.Core(cfg["n_in"], cfg["n_hidden"], cfg["n_out"], cfg["learner"],
                             cfg["optimizer"], cfg["lr"], cfg["beta1"], cfg["beta2"],
                             cfg["adam_eps"], cfg["clip"] or 0.0, cfg["normalize"],
                             float(cfg["norm_window"]))

    @staticmethod
    def _param_views(core) -> Dict[str, np.ndarray]:
        n, m, o = core_sizes(core)
        K = n + m + 1
        theta = core.buffers["theta"]
        W = theta[: n * K].reshape(n, K)
        return {
            "W_in": W[:, n:n + m],
            "W_rec": W[:, :n],
            "b": W[:, n + m],
            "W_out": theta[n * K: n * K + o * n].reshape(o, n),
            "b_out": theta[n * K + o * n:],
        }

    def _initialise(self, rng: np.random.Generator) -> None:
        n, m, _ = self.n_hidden, self.n_in, self.n_out
        p = self._params
        p["W_in"][...] = rng.uniform(-1.0, 1.0, p["W_in"].shape) / np.sqrt(m)
        # Gaussian with spectral radius about 0.9 (circular law): stable, not dead.
        p["W_rec"][...] = rng.standard_normal(p["W_rec"].shape) * (0.9 / np.sqrt(n))
        p["b"][...] = 0.0
        p["W_out"][...] = rng.standard_normal(p["W_out"].shape) / np.sqrt(n)
        p["b_out"][...] = 0.0

    # -- properties --------------------------------------------------------

    n_in = property(lambda self: self._config["n_in"], doc="Number of inputs m.")
    n_hidden = property(lambda self: self._config["n_hidden"], doc="Hidden units n.")
    n_out = property(lambda self: self._config["n_out"], doc="Number of outputs o.")
    learner = property(lambda self: self._config["learner"])
    optimizer = property(lambda self: self._config["optimizer"])

    @property
    def config(self) -> dict:
        """The constructor arguments (a copy)."""
        return dict(self._config)

    @property
    def params(self) -> Dict[str, np.ndarray]:
        """Live float32 parameters: writing into these arrays changes the model.

        ``W_in (n, m)``, ``W_rec (n, n)``, ``b (n,)``, ``W_out (o, n)``,
        ``b_out (o,)``.  ``W_in``, ``W_rec`` and ``b`` are strided views of one
        ``(n, n + m + 1)`` matrix.
        """
        return dict(self._params)

    @property
    def memory_bytes(self) -> int:
        """Exact bytes of every preallocated buffer (formula in the class doc)."""
        return self._core.memory_bytes

    @property
    def memory_layout(self) -> Dict[str, int]:
        """Bytes of each buffer, by name (sums to memory_bytes less the slack)."""
        return {name: size * width for name, (_, size, width) in self._core.layout.items()}

    @property
    def stats(self) -> Dict[str, int]:
        """Counters: ``steps`` (samples seen), ``updates`` (parameter updates
        taken), ``rejected_inputs``, ``divergence_recoveries`` (updates or
        states that went non-finite and were undone), ``trace_resets``
        (sensitivities restarted after `predict`)."""
        c = self._core.get_counters()
        return {k: int(c[k]) for k in ("steps", "updates", "rejected_inputs",
                                       "divergence_recoveries", "trace_resets")}

    @property
    def last_loss(self) -> float:
        """0.5*||yhat - y||^2 of the latest learning step, in normalised units."""
        return float(self._core.last_loss)

    # -- per sample --------------------------------------------------------

    def step(self, x, y=None) -> np.ndarray:
        """Predict from ``x`` (shape ``(n_in,)``), then learn from ``y``.

        Returns the prediction ``yhat_t`` (float32, shape ``(n_out,)``, a new
        array) made before learning.  With ``y`` (shape ``(n_out,)``) the model
        takes one online update; without it the state and the sensitivities
        still advance, so learning from later targets stays exact.

        Raises ValueError, changing nothing, if ``x`` or ``y`` has the wrong
        shape, is not numeric, or is not finite.
        """
        return self._core.step(x, y)

    def predict(self, x) -> np.ndarray:
        """Predict from ``x`` and advance the hidden state; never learns.

        Inference only: neither the parameters nor the normaliser's
        statistics change, and the sensitivities are not advanced, so the next
        learning step restarts them from zero (``stats["trace_resets"]``).
        """
        return self._core.predict(x)

    def forecast(self, xs) -> np.ndarray:
        """Prediction after feeding the inputs ``xs`` (shape ``(T, n_in)``, or
        ``(n_in,)`` for one) to a copy of the hidden state.

        The model is untouched: state, sensitivities, parameters and
        normaliser stay as they are.  This is how a model trained on a lagged
        stream (input x_{t-h}, target y_t) forecasts h steps ahead: advance
        a copy of its state over the last h inputs (DESIGN §3.8).
        """
        if isinstance(xs, np.ndarray) and xs.dtype.kind == "f":   # fast path
            if xs.ndim == 1 and xs.shape[0] == self.n_in:
                xs = xs.reshape(1, -1)
            if xs.ndim == 2 and xs.shape[1] == self.n_in and xs.shape[0] >= 1:
                return self._core.forecast(xs)
        return self._core.forecast(self._sequence("xs", xs, self.n_in, one_row_ok=True))

    def reset_state(self) -> None:
        """Zero the hidden state and the sensitivities (a sequence boundary)."""
        self._core.reset_state()

    # -- whole sequences ---------------------------------------------------

    def _sequence(self, name, value, width, one_row_ok=False):
        try:
            arr = np.asarray(value)
        except Exception as exc:
            self._reject()
            raise ValueError(f"{name} must be a numeric array of shape (T, {width})") from exc
        if arr.dtype.kind not in "biuf":
            self._reject()
            raise ValueError(f"{name} must be a numeric array of shape (T, {width}), "
                             f"got dtype {arr.dtype}")
        if arr.ndim == 1 and width == 1:
            arr = arr.reshape(-1, 1)
        elif arr.ndim == 1 and one_row_ok:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] < 1:
            self._reject()
            raise ValueError(f"{name} must have shape (T, {width}) with T >= 1, "
                             f"got shape {arr.shape}")
        out = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(out).all():
            self._reject()
            raise ValueError(f"{name} must be finite (no NaN or inf, within float32 range); "
                             f"shape (T, {width})")
        return out

    def _reject(self):
        c = self._core.get_counters()
        c["rejected_inputs"] += 1
        self._core.set_counters(c)

    def gradient(self, xs, ys) -> Dict[str, np.ndarray]:
        """Gradient of ``sum_t 0.5*||yhat_t - y_t||^2`` over a whole sequence.

        ``xs`` has shape ``(T, n_in)``, ``ys`` shape ``(T, n_out)``.  Computed by
        this model's own learner from a zero state with the parameters (and, with
        ``normalize=True``, the normaliser statistics) held fixed.  Parameters,
        state, sensitivities and optimiser moments are left untouched: the work
        is done in a temporary copy of the model's memory.
        """
        xs = self._sequence("xs", xs, self.n_in)
        ys = self._sequence("ys", ys, self.n_out)
        if xs.shape[0] != ys.shape[0]:
            self._reject()
            raise ValueError(f"xs and ys must have the same length T, got "
                             f"{xs.shape[0]} and {ys.shape[0]}")
        scratch = self._make_core(self._config)
        for name in ("theta", "x_mean", "x_var", "y_mean", "y_var", "counts"):
            scratch.buffers[name][...] = self._core.buffers[name]
        flat = scratch.accumulate_gradient(xs, ys)
        grads = {}
        views = self._param_views(scratch)
        scratch.buffers["theta"][...] = flat
        for name, view in views.items():
            grads[name] = np.array(view, dtype=np.float32)
        return grads

    # -- state, persistence ------------------------------------------------

    _STATE_BUFFERS = ("theta", "m1", "m2", "h", "x_mean", "x_var", "y_mean", "y_var",
                      "counts")

    def _sensitivities(self) -> np.ndarray:
        n, m = self.n_hidden, self.n_in
        P = self._core.buffers["P"].reshape(n, self._core.ldp)
        return P[:, : n * (n + m + 1)].reshape(n, n, n + m + 1)

    def snapshot(self) -> Dict[str, np.ndarray]:
        """Copies of everything mutable: parameters, hidden state ``h``,
        sensitivities ``P`` (``P[k, i, j] = dh[k]/dW[i, j]``), optimiser
        moments, normaliser statistics and state counters."""
        snap = {name: np.array(view) for name, view in self._params.items()}
        for name in self._STATE_BUFFERS:
            if name in self._core.buffers:
                snap[name] = np.array(self._core.buffers[name])
        snap["P"] = np.array(self._sensitivities())
        c = self._core.get_counters()
        snap["counters"] = np.array([c[k] for k in _STATE_COUNTERS], dtype=np.int64)
        return snap

    def save(self, path) -> None:
        """Write the whole model (configuration, parameters, state,
        sensitivities, optimiser and normaliser) to ``path`` as ``.npz``.

        The file is written to a temporary name in the same directory and
        renamed over ``path``, so an existing checkpoint is replaced whole or
        not at all.
        """
        path = os.fspath(path)
        arrays = self._state_arrays()
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".rtrl-edge-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        try:   # make the rename itself durable
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    def _state_arrays(self) -> Dict[str, np.ndarray]:
        snap = self.snapshot()
        arrays = {"theta": snap["theta"], "h": snap["h"], "P": snap["P"],
                  "counters": snap["counters"]}
        for name in ("m1", "m2", "x_mean", "x_var", "y_mean", "y_var", "counts"):
            if name in snap:
                arrays[name] = snap[name]
        arrays["config"] = np.array(json.dumps(self._config, sort_keys=True))
        arrays["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
        arrays["checksum"] = np.array(_checksum(arrays))
        return arrays

    @classmethod
    def load(cls, path) -> "OnlineRNN":
        """Read a model written by `save`.

        Raises FileNotFoundError if ``path`` does not exist, and
        CheckpointError if it is truncated, not a checkpoint, modified after
        writing (checksum), of another format version, or inconsistent.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint at {path!r}")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            raise CheckpointError(f"{path!r} is not a readable rtrl_edge checkpoint "
                                  f"(truncated or not an .npz file): {exc}") from exc
        for key in ("format_version", "config", "checksum", "theta", "h", "P", "counters"):
            if key not in arrays:
                raise CheckpointError(f"{path!r} is not an rtrl_edge checkpoint: "
                                      f"missing {key!r}")
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path!r} has checkpoint format version {version}; "
                                  f"this rtrl_edge reads version {FORMAT_VERSION}")
        stored = str(arrays.pop("checksum"))
        if _checksum(arrays) != stored:
            raise CheckpointError(f"{path!r} failed its checksum: the file was modified "
                                  f"or corrupted after it was written")
        try:
            config = json.loads(str(arrays["config"]))
            net = cls(**config)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path!r} holds an invalid configuration: {exc}") from exc
        net._restore(arrays, path)
        return net

    def _restore(self, arrays, path) -> None:
        targets = {name: self._core.buffers[name] for name in self._STATE_BUFFERS
                   if name in self._core.buffers}
        targets["P"] = self._sensitivities()
        for name, target in targets.items():
            if name not in arrays:
                raise CheckpointError(f"{path!r} lacks {name!r} for this configuration")
            if arrays[name].shape != target.shape:
                raise CheckpointError(f"{path!r}: {name!r} has shape {arrays[name].shape}, "
                                      f"the configuration needs {target.shape}")
        counters = arrays["counters"]
        if counters.shape != (len(_STATE_COUNTERS),):
            raise CheckpointError(f"{path!r}: counters have shape {counters.shape}")
        for name, target in targets.items():
            target[...] = arrays[name]
        self._core.buffers["good"][...] = self._core.buffers["theta"]
        c = self._core.get_counters()
        c.update(zip(_STATE_COUNTERS, (int(v) for v in counters)))
        self._core.set_counters(c)

    def __repr__(self) -> str:
        cfg = self._config
        return (f"OnlineRNN(n_in={cfg['n_in']}, n_hidden={cfg['n_hidden']}, "
                f"n_out={cfg['n_out']}, learner={cfg['learner']!r}, "
                f"optimizer={cfg['optimizer']!r}, lr={cfg['lr']:g}, "
                f"memory_bytes={self.memory_bytes})")


def core_sizes(core):
    """(n_hidden, n_in, n_out) of a compiled core, from its buffers."""
    return (core.buffers["h"].shape[0], core.buffers["x_in"].shape[0],
            core.buffers["y_in"].shape[0])


def _checksum(arrays: Dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
