"""`OnlineRNN`: a recurrent network that learns from every sample as it arrives.

The Python layer validates configuration once, lays out parameters as live
numpy views into the compiled core's arena, and handles persistence.  Every
per-sample call (`step`, `predict`) is one call into compiled code.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np

from . import _kernels, _layout, checkpoint
from ._init import INITS, initialise, seed_words
from ._layout import CELLS, LEARNERS, LOSSES, OPTIMIZERS
from .checkpoint import FORMAT_VERSION, CheckpointError  # noqa: F401  (re-exported)

__all__ = ["OnlineRNN", "CheckpointError", "CELLS", "LEARNERS", "LOSSES", "OPTIMIZERS",
           "INITS"]

_INIT_BEFORE_OPTION = "gaussian"   # what checkpoints written before `init` existed used
_LOSS_BEFORE_OPTION = "mse"        # and before `loss` existed

# Names of the counters that are part of the model's state (saved, restored,
# and compared by `snapshot`).  `rejected_inputs` is kept apart on purpose: a
# rejected input must change nothing but that count.
MAX_THREADS = 64              # bound of `threads` (workers are started at construction)
_EXTRA = checkpoint.EXTRA     # prefix of caller-provided arrays in a checkpoint
_STATE_COUNTERS = ("steps", "updates", "divergence_recoveries", "trace_resets",
                   "optimizer_steps", "traces_stale", "lr_backoff")
_COUNTERS_BEFORE_GUARD = 6   # checkpoints written before lr_backoff existed


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_threads(threads) -> int:
    threads = _check_int("threads", threads, 1)
    if threads > MAX_THREADS:
        raise ValueError(f"threads must be at most {MAX_THREADS}, got {threads}")
    return threads


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
    """A recurrent network trained online, one sample at a time.

    ``cell="elman"`` (DESIGN §3.1), with ``W = [W_rec | W_in | b]``::

        z_t = [h_{t-1}; x_t; 1],   h_t = tanh(W z_t),   yhat_t = W_out h_t + b_out
        L_t = 0.5 * ||yhat_t - y_t||^2,                  h_0 = 0

    ``cell="diag"`` (§3.7): 2x2 rotation-decay blocks; pair p of units
    (2p, 2p+1) evolves as ``h_t = r_p R(angle_p) h_{t-1} + B x_t + b`` with
    ``r_p = sigmoid(decay_p)``, ``R(a) = [[cos a, -sin a], [sin a, cos a]]``,
    and ``yhat_t = W_out tanh(h_t) + b_out``.  Its parameters are ``decay``
    (n/2,), ``angle`` (n/2,), ``B`` (n, m), ``b`` (n,), ``W_out``, ``b_out``;
    exact RTRL for it costs O(n m) per step.

    ``cell="gru"`` (§3.10) is PyTorch's ``nn.GRUCell``, with gate blocks in
    the order r, z, n::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  u = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        c = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - u) * c + u * h

    Parameters ``W_ih`` (3n, m), ``W_hh`` (3n, n), ``b_ih`` (3n,), ``b_hh``
    (3n,), ``W_out``, ``b_out``: PyTorch's arrays as they are
    (`rtrl_edge.interop` moves them).  Every learner trains it, at about
    three times an Elman cell's cost (its sensitivity recursion: README,
    "Gated cells and classification").

    ``loss="softmax"`` (§3.9) makes the n_out outputs class scores: `step`,
    `predict` and `forecast` return ``softmax(yhat)``, and the loss is the
    cross-entropy ``-sum_q y[q] log p[q]`` against a class index or a
    probability row (`step`), or class indices with -1 for "no label" or
    probability rows (`gradient`).

    Learners (how the sensitivities dh/dW are carried; DESIGN §3.2-3.6):

    ========= ==================================================== =============
    rtrl      exact (Williams & Zipser 1989)                       n^4 time, n^3 memory
    snap1     own-row sensitivities only (Menick et al. 2020);     n(n+m) time and memory
              exact when W_rec is diagonal
    snap2     exact RTRL restricted to what a sparse W_rec fills   ~density^2 of rtrl
              in two steps; needs rec_density or rec_mask
    uoro      unbiased rank-one estimate (Tallec & Ollivier 2017)  n(n+m)
    tbptt     truncated BPTT through the last ``window`` steps     window*n(n+m)
    ========= ==================================================== =============

    The diag cell is trained by its exact traces (``learner="rtrl"``).

    Parameters
    ----------
    n_in, n_hidden, n_out : int
        Inputs m, hidden units n, outputs o (all >= 1).
    learner : {"rtrl", "snap1", "snap2", "uoro", "tbptt"}
        How sensitivities are carried (table above).
    cell : {"elman", "diag", "gru"}
        The recurrence; "diag" needs learner="rtrl" and an even n_hidden.
    loss : {"mse", "softmax"}, default "mse"
        Squared error (regression), or softmax cross-entropy over n_out >= 2
        classes.  Saved in checkpoints; files from before the option load as
        "mse".
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
        measured in normalised units.  With ``loss="softmax"`` only the
        inputs are normalised.
    seed : int
        Seed of the weight initialisation.
    init : {"gaussian", "uniform", "orthogonal"}, default "gaussian"
        The weight initialisation (``rtrl_edge.INITS``; m inputs, n hidden
        units, all drawn from ``seed``):

        - "gaussian": W_in uniform on +-1/sqrt(m); W_rec Gaussian with
          variance 0.81/n, a spectral radius of about 0.9; b = 0;
          W_out ~ N(0, 1/n); b_out = 0.
        - "uniform": PyTorch's defaults for ``nn.RNNCell(m, n)`` and
          ``nn.Linear(n, o)``: every weight and bias, readout included,
          uniform on +-1/sqrt(n).  (RNNCell's two biases are one ``b`` here,
          itself uniform on +-1/sqrt(n).)  On the causal respiratory-motion
          forecasts of ``benchmarks/bench_init.py`` it beats "gaussian" for
          every learner and cell (nRMSE 0.597 against 0.628 averaged over
          them at n = 32), and `Forecaster.auto`'s RNN members use it; it is
          not the default because it makes uoro worse than repeating the
          last value on the respiration check of the learning suite and
          destabilises sparse snap2 on the memory task (its sensitivities
          reach 1e19 and the guard has to step in).
        - "orthogonal": W_rec a random orthogonal matrix (Q of the QR
          decomposition of a Gaussian matrix, signs corrected so that it is
          uniformly distributed); everything else as "gaussian", draw for
          draw.

        With a mask (``rec_density``/``rec_mask``) masked weights are zero
        and the kept ones are rescaled for the entries lost: "gaussian" and
        "uniform" divide by sqrt(d), d the fraction kept (the dense draw's
        spectral radius and fan-in), "orthogonal" rescales to the Frobenius
        norm sqrt(n) of an orthogonal matrix.  ``cell="diag"`` has no W_rec
        and keeps its own initialisation, as in LRU (rates r =
        sigmoid(decay) uniform in [0.5, 0.99], angles in [0, pi/4], B
        Gaussian scaled by sqrt((1 - r^2) / m), b = 0): ``init`` sets its
        readout only, "uniform" as ``nn.Linear``, "gaussian" and
        "orthogonal" as "gaussian".  The choice is part of ``config`` and
        of checkpoints; files written before this option load as
        "gaussian", which they used.
    beta1, beta2, adam_eps : float
        Adam's moment decays and epsilon; ``beta1`` is also the momentum.
    norm_window : int
        Effective window of the normaliser once it has seen that many samples.
    window : int
        Truncation of ``learner="tbptt"``: each loss is back-propagated
        through at most this many steps (required for tbptt, else unused).
    rec_density : float in (0, 1]
        Give W_rec a random sparsity mask (drawn from ``seed``) keeping this
        fraction of entries.  Masked weights start at zero and stay exactly
        zero (their gradient is zero).  snap2 uses the mask as its structure.
    rec_mask : bool array (n_hidden, n_hidden)
        An explicit mask instead of ``rec_density`` (True = weight kept).
    threads : int, default 1
        Split exact RTRL's n^4 term (``learner="rtrl"``, Elman and GRU
        cells) across this many cores: the model starts ``threads - 1``
        worker threads once, here, and each step hands them a share of the
        columns of P; deleting the model stops and joins them.  Results are
        bit-identical to ``threads=1`` (each column of P is updated from that
        column alone).  Plain POSIX threads, so ``OMP_NUM_THREADS`` and BLAS
        settings do not change it.  An Elman model of at least 65,536
        parameters also shares its O(n K) passes (forward, SnAp-1 and UORO
        traces, optimiser step) by rows; there only the clip norm's and the
        guard's sums are added in another order, so results agree with one
        thread to float32 rounding.  Smaller models of the other learners,
        and the diag and GRU cells' cheap learners, run in the calling
        thread: a hand-off costs more than such passes
        (``benchmarks/bench_step.py``, ``bench_learners.py``).  A runtime
        setting, not part of the learnt model: checkpoints do not store it
        (``load(threads=...)``).

    Divergence guard
    ----------------
    A blow-up, finite or not, is undone: the last good parameters come back
    bit for bit, state, sensitivities and optimiser moments are reset,
    ``stats["divergence_recoveries"]`` counts it, and the learning rate is
    halved (``stats["lr_scale"]``), so repeated blow-ups settle on a stable
    step.  A blow-up is a non-finite parameter, state or loss; ``||theta||_2``
    above 2**24 after an update; a second non-finite gradient within 64
    updates; or 16 steps in a row on which the recent loss (EMA, weight 1/16)
    is over 30 times both the model's own record and the loss of predicting
    zero -- the running mean, with ``normalize=True`` -- on the same recent
    targets.  The last good parameters are refreshed only after 64 updates in
    a row within 4 times that scale, so they are known to be healthy.  A
    single non-finite gradient only resets state, sensitivities and moments
    (counted, lr kept); a sustained loss blow-up with the parameters still
    at the last good ones (within 1e-3 of their norm: nothing to undo) makes
    the present loss the new reference instead.  One halving comes back
    after 8192 updates without an alarm.
    Healthy runs never trigger it; the rules and constants are documented
    in ``_kernels.pyx`` ("Divergence guard").

    Memory
    ------
    Everything is allocated here, once: a float32 arena and small float64
    and int64 ones; ``memory_layout`` lists every buffer and ``rtrl_edge.plan``
    sizes any configuration without building it.  For ``learner="rtrl"``,
    ``cell="elman"``, no mask, with ``K = n + m + 1``, ``p = n*K + o*n + o`` parameters,
    ``ldp = ceil(n*K / 16) * 16``, ``n4 = ceil(n / 4) * 4``, ``t = threads``
    and ``k`` optimiser moments (0 for sgd, 1 for momentum, 2 for adam)::

        memory_bytes = 4 * (n*ldp            # sensitivities P
                            + 64*n4*t        # product scratch, one per thread
                            + (3 + k)*p      # params, gradient, last good params, moments
                            + 4*n + K + m + 3*o   # h, dphi, c, h copy, z, x, yn, e, y
                            + 16)            # alignment slack
                     + 8 * (2*m + 2*o + 2)   # normaliser means, variances, counts

    For n = 32, m = 8, o = 1 with sgd that is 193,212 bytes,
    of which P is 167,936 (one thread).  The other learners replace ``n*ldp + 64*n4*t`` by
    their own state: snap1 ``n*K`` (J); snap2 ``sum_i |S_i| ld_i`` plus a
    small block of scratch and its int64 index sets (``_layout.snap2_structure``);
    uoro ``n*K + 3*n`` floats and 2 int64; tbptt ``window*(K + n) + 2*n`` floats
    and 2 int64; the diag cell ``n*(2*m + 4)`` trace floats and ``2*n`` of
    scratch (and ``n*(m+2)`` instead of ``n*K`` core parameters).  A mask adds
    ``n*n`` floats.  The GRU has ``N = 3*n*(n+m+2)`` core parameters where
    Elman has ``n*K``, ``11*n`` floats of gate scratch, and rtrl's P is
    ``n * ceil(N/16)*16`` floats plus an ``n*n`` D_t; snap1 and uoro keep
    ``N`` floats of traces, tbptt ``window*(K + 5n)``
    (``_layout.layout`` is the exact account).
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, *, learner: str = "rtrl",
                 optimizer: str = "sgd", lr: float = 1e-3, clip: Optional[float] = None,
                 normalize: bool = False, seed: int = 0, init: str = "gaussian",
                 cell: str = "elman", loss: str = "mse", window: Optional[int] = None,
                 rec_density: Optional[float] = None, rec_mask=None, beta1: float = 0.9,
                 beta2: float = 0.999, adam_eps: float = 1e-8, norm_window: int = 10_000,
                 threads: int = 1):
        n_in = _check_int("n_in", n_in, 1)
        n_hidden = _check_int("n_hidden", n_hidden, 1)
        n_out = _check_int("n_out", n_out, 1)
        if learner not in LEARNERS:
            raise ValueError(f"learner must be one of {', '.join(LEARNERS)}; got {learner!r}")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {cell!r}")
        if cell == "diag":
            if learner != "rtrl":
                raise ValueError(f"cell='diag' is trained by its exact traces: use "
                                 f"learner='rtrl', got learner={learner!r}")
            if n_hidden % 2:
                raise ValueError(f"n_hidden must be even for cell='diag' (2x2 rotation "
                                 f"blocks), got {n_hidden}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        if loss == "softmax" and n_out < 2:
            raise ValueError(f"loss='softmax' needs n_out >= 2 classes, got n_out={n_out}")
        if learner == "tbptt":
            if window is None:
                raise ValueError("learner='tbptt' needs window=k, the truncation length")
            window = _check_int("window", window, 1)
        elif window is not None:
            raise ValueError(f"window applies to learner='tbptt' only, got "
                             f"learner={learner!r} with window={window!r}")
        mask = _check_mask(n_hidden, rec_density, rec_mask, cell, seed)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; "
                             f"got {optimizer!r}")
        lr = _check_float("lr", lr)
        if clip is not None:
            clip = _check_float("clip", clip)
        if not isinstance(normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True or False, got {normalize!r}")
        seed = _check_int("seed", seed, 0)
        if not isinstance(init, str) or init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= _check_float(name, beta, allow_zero=True) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
        adam_eps = _check_float("adam_eps", adam_eps)
        norm_window = _check_int("norm_window", norm_window, 1)
        threads = _check_threads(threads)

        self._config = dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out, learner=learner,
                            optimizer=optimizer, lr=lr, clip=clip,
                            normalize=bool(normalize), seed=seed, init=init, cell=cell,
                            loss=loss, window=window,
                            rec_density=None if rec_density is None else float(rec_density),
                            rec_mask=None if rec_mask is None else mask.copy(),
                            beta1=float(beta1), beta2=float(beta2), adam_eps=adam_eps,
                            norm_window=norm_window, threads=threads)
        self._mask = mask
        self._core = self._make_core(self._config, mask)
        self._params = self._param_views(self._core, self._config)
        initialise(self._params, cell, init, mask, np.random.default_rng(seed))
        self._core.buffers["good"][...] = self._core.buffers["theta"]
        if "rng" in self._core.buffers:
            self._core.buffers["rng"][...] = seed_words(seed)
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
    def _buffers(cfg, mask):
        """The `_layout.Buffer` list of a configuration, and snap2's index sets."""
        n, m = cfg["n_hidden"], cfg["n_in"]
        structure = None
        if cfg["learner"] == "snap2":
            structure = _layout.snap2_structure(
                np.ones((n, n), bool) if mask is None else mask, m, cfg["cell"])
        buffers = _layout.layout(n, m, cfg["n_out"], cell=cfg["cell"],
                                 learner=cfg["learner"], optimizer=cfg["optimizer"],
                                 window=cfg["window"], mask=mask, snap2=structure,
                                 threads=cfg.get("threads", 1))
        return buffers, structure

    @classmethod
    def _make_core(cls, cfg, mask) -> "_kernels.Core":
        buffers, structure = cls._buffers(cfg, mask)
        core = _kernels.Core(cfg, buffers)
        for name, values in (structure or {}).items():
            core.buffers[name][...] = values
        if mask is not None:
            core.buffers["mask"][...] = mask.reshape(-1)
        return core

    @staticmethod
    def _param_views(core, cfg) -> Dict[str, np.ndarray]:
        n, m, o = cfg["n_hidden"], cfg["n_in"], cfg["n_out"]
        theta = core.buffers["theta"]
        if cfg["cell"] == "diag":
            half, core_end = n // 2, n * (m + 2)
            Bb = theta[n:core_end].reshape(n, m + 1)
            views = {"decay": theta[:half], "angle": theta[half:n],
                     "B": Bb[:, :m], "b": Bb[:, m]}
        elif cfg["cell"] == "gru":
            # PyTorch's GRUCell: weight_ih, weight_hh, bias_ih, bias_hh
            a, b, c = 3 * n * m, 3 * n * (m + n), 3 * n * (m + n + 1)
            core_end = 3 * n * (m + n + 2)
            views = {"W_ih": theta[:a].reshape(3 * n, m),
                     "W_hh": theta[a:b].reshape(3 * n, n),
                     "b_ih": theta[b:c], "b_hh": theta[c:core_end]}
        else:
            core_end = n * (n + m + 1)
            W = theta[:core_end].reshape(n, n + m + 1)
            views = {"W_in": W[:, n:n + m], "W_rec": W[:, :n], "b": W[:, n + m]}
        views["W_out"] = theta[core_end:core_end + o * n].reshape(o, n)
        views["b_out"] = theta[core_end + o * n:]
        return views

    # -- properties --------------------------------------------------------

    n_in = property(lambda self: self._config["n_in"], doc="Number of inputs m.")
    n_hidden = property(lambda self: self._config["n_hidden"], doc="Hidden units n.")
    n_out = property(lambda self: self._config["n_out"], doc="Number of outputs o.")
    learner = property(lambda self: self._config["learner"])
    cell = property(lambda self: self._config["cell"])
    loss = property(lambda self: self._config["loss"],
                    doc='The loss: "mse" (regression) or "softmax" (classification).')
    optimizer = property(lambda self: self._config["optimizer"])
    threads = property(lambda self: self._config["threads"],
                       doc="Cores exact RTRL's n^4 term is split across (see the class doc).")

    @property
    def rec_mask(self) -> Optional[np.ndarray]:
        """The sparsity mask of W_rec (a copy), or None if W_rec is dense."""
        return None if self._mask is None else self._mask.copy()

    @property
    def config(self) -> dict:
        """The constructor arguments (a copy): ``OnlineRNN(**net.config)``
        builds the same model, freshly initialised."""
        cfg = dict(self._config)
        if cfg["rec_mask"] is not None:
            cfg["rec_mask"] = cfg["rec_mask"].copy()
        return cfg

    @property
    def params(self) -> Dict[str, np.ndarray]:
        """Live float32 parameters: writing into these arrays changes the model.

        Elman: ``W_in (n, m)``, ``W_rec (n, n)``, ``b (n,)``, ``W_out (o, n)``,
        ``b_out (o,)``; ``W_in``, ``W_rec`` and ``b`` are strided views of one
        ``(n, n + m + 1)`` matrix.  Diag: ``decay (n/2,)``, ``angle (n/2,)``,
        ``B (n, m)``, ``b (n,)``, ``W_out``, ``b_out``.
        """
        return dict(self._params)

    @property
    def memory_bytes(self) -> int:
        """Exact bytes of every preallocated buffer (formula in the class doc)."""
        return self._core.memory_bytes

    @property
    def memory_layout(self) -> Dict[str, int]:
        """Bytes of each buffer, by name (sums to memory_bytes less the slack)."""
        return {name: view.nbytes for name, view in self._core.buffers.items()}

    @property
    def stats(self) -> Dict[str, float]:
        """Counters: ``steps`` (samples seen), ``updates`` (parameter updates
        taken), ``rejected_inputs``, ``divergence_recoveries`` (blow-ups the
        divergence guard undid, see the class doc), ``trace_resets``
        (sensitivities restarted after `predict`); and ``lr_scale``, the
        guard's multiplier of the learning rate (1.0, halved per recovery)."""
        c = self._core.get_counters()
        stats = {k: int(c[k]) for k in ("steps", "updates", "rejected_inputs",
                                        "divergence_recoveries", "trace_resets")}
        stats["lr_scale"] = 0.5 ** int(c["lr_backoff"])
        return stats

    @property
    def last_loss(self) -> float:
        """0.5*||yhat - y||^2 of the latest learning step, in normalised units
        (the cross-entropy in nats with ``loss="softmax"``)."""
        return float(self._core.last_loss)

    # -- per sample --------------------------------------------------------

    def step(self, x, y=None) -> np.ndarray:
        """Predict from ``x`` (shape ``(n_in,)``), then learn from ``y``.

        Returns the prediction ``yhat_t`` (float32, shape ``(n_out,)``, a new
        array) made before learning -- the class probabilities with
        ``loss="softmax"``.  With ``y`` the model takes one online update: a
        target of shape ``(n_out,)``, or for softmax a class index (an integer
        in ``[0, n_out)``, or a float with an integral value) or a probability
        row (non-negative, summing to 1 within 1e-3).  Without it the state
        and the sensitivities still advance, so learning from later targets
        stays exact.

        Raises ValueError, changing nothing, if ``x`` or ``y`` has the wrong
        shape, is not numeric, is not finite, or is not a valid label.
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
        with np.errstate(over="ignore", invalid="ignore"):   # beyond float32: rejected below
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

    def _labels(self, ys):
        """Softmax targets of `gradient`: (probability rows (T, o) float32,
        labelled (T,) uint8).  ``ys`` is class indices (T,) with -1 for "no
        label", or probability rows (T, o)."""
        o = self.n_out
        expected = (f"ys must be class indices of shape (T,) in [0, {o}) with -1 for "
                    f"'no label at this step', or probability rows of shape (T, {o}) "
                    f"(non-negative, each summing to 1)")
        try:
            arr = np.asarray(ys)
        except Exception as exc:
            self._reject()
            raise ValueError(expected) from exc
        if arr.dtype.kind not in "biuf" or arr.dtype.kind == "b" or arr.size == 0 \
                or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != o):
            self._reject()
            raise ValueError(f"{expected}; got dtype {arr.dtype}, shape {arr.shape}")
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) if arr.dtype.kind == "f" else np.zeros(arr.shape, bool)
        if arr.ndim == 1:
            if not bad.any():
                bad = (arr != np.floor(arr)) | (arr < -1) | (arr >= o)
            if bad.any():
                t = int(np.flatnonzero(bad)[0])
                self._reject()
                raise ValueError(f"{expected}; ys[{t}] = {arr[t]} is not a class index "
                                 f"in [-1, {o})")
            labels = arr.astype(np.int64)
            rows = np.zeros((len(arr), o), np.float32)
            labelled = labels >= 0
            rows[np.flatnonzero(labelled), labels[labelled]] = 1.0
            return rows, labelled.astype(np.uint8)
        bad = bad.any(axis=1)
        if not bad.any():
            bad = (arr < 0).any(axis=1) | ~(np.abs(arr.sum(axis=1, dtype=np.float64) - 1.0)
                                            <= 1e-3)
        if bad.any():
            t = int(np.flatnonzero(bad)[0])
            self._reject()
            raise ValueError(f"{expected}; row {t} ({arr[t].tolist()}) is not a probability "
                             f"vector (finite, non-negative, summing to 1 within 1e-3)")
        return np.ascontiguousarray(arr, np.float32), np.ones(len(arr), np.uint8)

    def gradient(self, xs, ys) -> Dict[str, np.ndarray]:
        """Gradient of the summed loss over a whole sequence.

        ``xs`` has shape ``(T, n_in)``.  Squared loss: ``ys`` has shape
        ``(T, n_out)`` and the gradient is that of ``sum_t 0.5*||yhat_t -
        y_t||^2``.  Softmax: ``ys`` is class indices of shape ``(T,)``, -1
        meaning "no label at this step", or probability rows of shape
        ``(T, n_out)``; the gradient is that of the cross-entropy summed over
        the labelled steps (the others only advance state and sensitivities).
        Computed by this model's own learner from a zero state with the
        parameters (and, with ``normalize=True``, the normaliser statistics)
        held fixed.  Parameters, state, sensitivities and optimiser moments
        are left untouched: the work is done in a temporary copy of the
        model's memory.  Bad input raises ValueError and changes nothing but
        ``stats["rejected_inputs"]``.
        """
        xs = self._sequence("xs", xs, self.n_in)
        if self.loss == "softmax":
            ys, labelled = self._labels(ys)
        else:
            ys = self._sequence("ys", ys, self.n_out)
            labelled = np.ones(len(ys), np.uint8)
        if xs.shape[0] != ys.shape[0]:
            self._reject()
            raise ValueError(f"xs and ys must have the same length T, got "
                             f"{xs.shape[0]} and {ys.shape[0]}")
        scratch = self._make_core(self._config, self._mask)
        for name in ("theta", "x_mean", "x_var", "y_mean", "y_var", "counts", "rng"):
            if name in scratch.buffers:
                scratch.buffers[name][...] = self._core.buffers[name]
        flat = scratch.accumulate_gradient(xs, ys, labelled)
        scratch.buffers["theta"][...] = flat
        return {name: np.array(view, dtype=np.float32)
                for name, view in self._param_views(scratch, self._config).items()}

    # -- state, persistence ------------------------------------------------

    def _state_views(self) -> Dict[str, np.ndarray]:
        """Every buffer the model carries between samples, by name; exact
        RTRL's sensitivities as ``P[k, i, j] = dh[k]/dW[i, j]`` (n, n, K) for
        the Elman cell, ``P[k, q] = dh[k]/dtheta[q]`` (n, n_core) for the GRU."""
        views = {name: view for name, view in self._core.buffers.items()
                 if self._core.kinds[name] in ("param", "state")}
        if "P" in views:
            shape = _p_shape(self._config)
            P = views["P"].reshape(self.n_hidden, self._core.ldp)
            views["P"] = P[:, : int(np.prod(shape[1:]))].reshape(shape)
        return views

    def snapshot(self) -> Dict[str, np.ndarray]:
        """Copies of everything mutable: parameters (by their public names and
        as ``theta``), hidden state ``h``, the learner's sensitivities (``P``
        for exact RTRL, ``J`` for snap1, ``P_blocks`` for snap2, ``uoro_h``,
        ``uoro_theta``, ``rng`` for uoro, ``ring_z``, ``ring_d``, ``ring`` for
        tbptt, ``traces`` for the diag cell), optimiser moments, normaliser
        statistics and state counters."""
        snap = {name: np.array(view) for name, view in self._params.items()}
        snap.update((name, np.array(view)) for name, view in self._state_views().items())
        c = self._core.get_counters()
        snap["counters"] = np.array([c[k] for k in _STATE_COUNTERS], dtype=np.int64)
        return snap

    def save(self, path, extra: Optional[Dict[str, np.ndarray]] = None, *,
             key: Optional[bytes] = None) -> None:
        """Write the whole model (configuration, parameters, state,
        sensitivities, optimiser and normaliser) to ``path`` as ``.npz``.

        The file is written to a temporary name in the same directory and
        renamed over ``path``, so an existing checkpoint is replaced whole or
        not at all.  ``extra`` arrays (e.g. a loop's state) are stored beside
        the model under the same checksum; `load_with_extra` returns them.
        With ``key`` (bytes, e.g. `rtrl_edge.checkpoint.read_key`), the file
        also carries an HMAC-SHA-256 under it, and loading with the same key
        refuses any file not written with it (see `rtrl_edge.checkpoint`).
        """
        checkpoint.write(path, self._state_arrays(extra), key=key)

    def _state_arrays(self, extra=None) -> Dict[str, np.ndarray]:
        arrays = {name: np.array(view) for name, view in self._state_views().items()}
        for name, value in (extra or {}).items():
            arrays[_EXTRA + name] = np.asarray(value)
        c = self._core.get_counters()
        arrays["counters"] = np.array([c[k] for k in _STATE_COUNTERS], dtype=np.int64)
        if self._mask is not None:
            arrays["rec_mask"] = self._mask.copy()
        # the mask is an array: stored beside the JSON configuration
        arrays["config"] = np.array(json.dumps(self._saved_config(), sort_keys=True))
        return arrays

    def _saved_config(self) -> dict:
        """The configuration as checkpoints store it: JSON types, the mask as
        a flag (the array is stored beside it), runtime settings left out."""
        config = {k: v for k, v in self._config.items() if k not in _RUNTIME_SETTINGS}
        config["rec_mask"] = self._config["rec_mask"] is not None
        return json.loads(json.dumps(config))

    @classmethod
    def load(cls, path, *, key: Optional[bytes] = None, threads: int = 1) -> "OnlineRNN":
        """Read a model written by `save` (see `load_with_extra`)."""
        return cls.load_with_extra(path, key=key, threads=threads)[0]

    @classmethod
    def load_with_extra(cls, path, *, key: Optional[bytes] = None, threads: int = 1):
        """Read a model written by `save`, and the ``extra`` arrays saved with
        it (a dict, empty if none).  ``threads`` is the loaded model's (the
        file does not store it: see the class doc).

        The file is validated before it is trusted (`rtrl_edge.checkpoint`):
        raises FileNotFoundError if ``path`` does not exist, and
        CheckpointError -- never another exception -- if it is not a regular
        file, truncated, not a checkpoint, modified after writing (checksum),
        not written with ``key`` when one is given (HMAC), of another format
        version, or holds an invalid configuration, wrong shapes, or
        non-finite parameters or state.  Memory stays bounded by the file's
        size: nothing is inflated and every size is checked first.
        """
        threads = _check_threads(threads)       # before the file is read
        path = os.fspath(path)
        where = repr(path)
        found = {}

        def spec(config, file_size, load):
            found["config"], found["mask"], layout_spec = _checkpoint_spec(
                config, file_size, load, where)
            return layout_spec

        arrays = checkpoint.read(path, spec, key=key)
        config, mask = found["config"], found["mask"]
        try:
            net = cls(**dict(config, rec_mask=mask if config["rec_mask"] else None,
                             threads=threads))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{where} holds an invalid configuration: {exc}") from None
        if (mask is None) != (net._mask is None) or (
                mask is not None and not np.array_equal(mask, net._mask)):
            raise CheckpointError(f"{where}: the stored W_rec mask does not match its "
                                  f"configuration")
        _check_values(arrays, config, where)
        net._restore(arrays)
        extra = {k[len(_EXTRA):]: v for k, v in arrays.items() if k.startswith(_EXTRA)}
        return net, extra

    def _restore(self, arrays) -> None:
        """Copy validated arrays (`load_with_extra`) into the model."""
        for name, target in self._state_views().items():
            target[...] = arrays[name]
        self._core.buffers["good"][...] = self._core.buffers["theta"]
        c = self._core.get_counters()
        saved = [int(v) for v in arrays["counters"]]
        saved += [0] * (len(_STATE_COUNTERS) - len(saved))    # older files: no lr_backoff
        c.update(zip(_STATE_COUNTERS, saved))
        self._core.set_counters(c)

    def __repr__(self) -> str:
        cfg = self._config
        return (f"OnlineRNN(n_in={cfg['n_in']}, n_hidden={cfg['n_hidden']}, "
                f"n_out={cfg['n_out']}, learner={cfg['learner']!r}, "
                f"optimizer={cfg['optimizer']!r}, lr={cfg['lr']:g}, "
                f"memory_bytes={self.memory_bytes})")


def _check_mask(n, rec_density, rec_mask, cell, seed) -> Optional[np.ndarray]:
    """The boolean (n, n) sparsity mask of W_rec, or None for a dense W_rec."""
    if rec_density is None and rec_mask is None:
        return None
    if cell == "diag":
        raise ValueError("rec_density and rec_mask apply to cell='elman' and cell='gru' "
                         "only (the diag cell has no recurrent weight matrix)")
    if rec_density is not None and rec_mask is not None:
        raise ValueError("give rec_density or rec_mask, not both")
    if rec_mask is not None:
        mask = np.asarray(rec_mask)
        if mask.shape != (n, n) or mask.dtype.kind not in "biu":
            raise ValueError(f"rec_mask must be a boolean array of shape ({n}, {n}), "
                             f"got {mask.dtype} of shape {mask.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("rec_mask must hold only True/False (or 1/0)")
        return mask.astype(bool)
    density = _check_float("rec_density", rec_density)
    if density > 1.0:
        raise ValueError(f"rec_density must be in (0, 1], got {rec_density!r}")
    # its own stream, so that the weights drawn from `seed` do not depend on it
    return np.random.default_rng([seed, 0x6D61736B]).random((n, n)) < density


# -- checkpoint validation ------------------------------------------------------

def _p_shape(cfg) -> tuple:
    """Public shape of exact RTRL's sensitivities (`_state_views`)."""
    n, m = cfg["n_hidden"], cfg["n_in"]
    if cfg["cell"] == "gru":
        return (n, _layout.n_core(n, m, "gru"))
    return (n, n, n + m + 1)


# `threads` is how a model runs, not what it learnt: not stored in checkpoints
_RUNTIME_SETTINGS = ("threads",)

_CONFIG_TYPES = dict(n_in=int, n_hidden=int, n_out=int, learner=str, optimizer=str,
                     lr=float, clip=(float, type(None)), normalize=bool, seed=int, init=str,
                     cell=str, loss=str, window=(int, type(None)), rec_density=(float, type(None)),
                     rec_mask=bool, beta1=float, beta2=float, adam_eps=float,
                     norm_window=int)


def _checkpoint_spec(config: dict, file_size: int, load, where: str):
    """(config, mask, {member: (dtype, shape)}) of a checkpoint's stored
    configuration, checked before any large member is read: known keys and
    types, and a model whose parameters alone fit in the file (so that a
    crafted configuration cannot make the reader allocate more than the
    file's size).  A configuration without ``init`` (written before the
    option existed) is read as the initialisation those models had."""
    if "init" not in config:
        config = dict(config, init=_INIT_BEFORE_OPTION)
    if "loss" not in config:
        config = dict(config, loss=_LOSS_BEFORE_OPTION)
    if set(config) != set(_CONFIG_TYPES):
        odd = sorted(set(config) ^ set(_CONFIG_TYPES))
        raise CheckpointError(f"{where} holds an invalid configuration: unexpected or "
                              f"missing fields {', '.join(map(repr, odd))}")
    for name, kind in _CONFIG_TYPES.items():
        value = config[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = any(isinstance(value, k) and not (k is int and isinstance(value, bool))
                 for k in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise CheckpointError(f"{where} holds an invalid configuration: {name} = "
                                  f"{value!r}")
    n, m, o = config["n_hidden"], config["n_in"], config["n_out"]
    if min(n, m, o) < 1 or config["cell"] not in CELLS or config["learner"] not in LEARNERS \
            or config["optimizer"] not in OPTIMIZERS or config["init"] not in INITS \
            or config["loss"] not in LOSSES:
        raise CheckpointError(f"{where} holds an invalid configuration: n_in={m}, "
                              f"n_hidden={n}, n_out={o}, cell={config['cell']!r}, "
                              f"learner={config['learner']!r}, "
                              f"optimizer={config['optimizer']!r}, init={config['init']!r}, "
                              f"loss={config['loss']!r}")
    params = _layout.n_params(n, m, o, config["cell"])
    per_step = n + m + 1 + (5 * n if config["cell"] == "gru" else n)     # ring_z, ring_d
    ring = (config["window"] or 0) * per_step if config["learner"] == "tbptt" else 0
    if 4 * (params + ring) > file_size:
        raise CheckpointError(f"{where} claims a model of {4 * (params + ring):,} bytes of "
                              f"parameters and state in a {file_size:,}-byte file")
    # an explicit mask is stored; one drawn from rec_density is stored too,
    # and compared with the one the seed draws again
    masked = config["rec_mask"] or config["rec_density"] is not None
    mask = load("rec_mask", "|b1", (n, n)) if masked else None
    cfg = dict(config, rec_mask=mask)
    if config["learner"] == "tbptt" and config["window"] is None:
        raise CheckpointError(f"{where} holds an invalid configuration: tbptt without "
                              f"a window")
    buffers, _ = OnlineRNN._buffers(cfg, mask)
    spec = {}
    for b in buffers:
        if b.kind not in ("param", "state"):
            continue
        shape = _p_shape(config) if b.name == "P" else (b.size,)
        spec[b.name] = ("<" + b.dtype, shape)
    # checkpoints written before the guard's lr_backoff hold one counter fewer
    counters = load("counters", "<i8", None, max_items=len(_STATE_COUNTERS))
    if len(counters) < _COUNTERS_BEFORE_GUARD:
        raise CheckpointError(f"{where}: counters have shape {counters.shape}, expected "
                              f"({len(_STATE_COUNTERS)},)")
    return config, mask, spec


def _check_values(arrays: Dict[str, np.ndarray], config: dict, where: str) -> None:
    """Values a valid model can hold: finite floats, non-negative variances,
    moments and counters, a tbptt ring position inside the configuration's
    window (the kernel indexes the ring with it), a live random state."""
    for name, a in arrays.items():
        if name.startswith(_EXTRA):
            continue
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{where}: {name!r} holds non-finite values (NaN or inf)")
    for name in ("x_var", "y_var", "counts", "m2", "counters"):
        if name in arrays and (arrays[name] < 0).any():
            raise CheckpointError(f"{where}: {name!r} holds negative values")
    counters = arrays["counters"]
    if len(counters) > 6 and counters[6] > _kernels.GUARD["max_backoff"]:
        raise CheckpointError(f"{where}: lr_backoff {int(counters[6])} is beyond the "
                              f"guard's {_kernels.GUARD['max_backoff']} halvings")
    if "ring" in arrays:
        window = config["window"]
        pos, held = (int(v) for v in arrays["ring"])
        if not (0 <= pos < window and 0 <= held <= window):
            raise CheckpointError(f"{where}: the tbptt ring position ({pos}, {held}) is "
                                  f"outside its window of {window}")
    if "rng" in arrays and not arrays["rng"].any():
        raise CheckpointError(f"{where}: the random state is all zero")
