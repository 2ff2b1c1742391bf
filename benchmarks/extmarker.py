"""The respiratory-motion protocol of Pohl et al. on the ExtMarker recordings:
data, splits, inputs, forecasters and metrics, shared by
``bench_extmarker.py`` (the study's comparison), ``bench_peers.py`` (other
tools on the same stream) and ``bench_auto.py`` (the auto forecaster's
weights over time).

The protocol, as in the authors' public code (Pohl et al., CMPB 2025,
arXiv 2403.01607; CMPB 2022, arXiv 2106.01100):

- 9 sessions, 3 markers each: the stream is the 9 coordinates
  (marker 1 xyz, marker 2 xyz, marker 3 xyz) in mm, one row per recorder
  sample (about 10 Hz; the protocol counts samples, not seconds).
- Each coordinate is standardised with the mean and standard deviation of the
  first ``TRAIN`` = 300 samples (30 s).
- Input at time t: the 9 coordinates of the last L samples (``windows``;
  newest first, zeros before the start) plus a bias; target: the 9
  coordinates h samples ahead.
- Splits by the target's time: samples [0, 300) training, [300, 600)
  validation (hyper-parameters are chosen per session and horizon on it),
  [600, end) test.  Learning is online from the first sample to the last; a
  split only says which forecasts are scored.
- Metrics in mm (``metrics``), with delta = the Euclidean error of one marker
  at one time: MAE = mean delta, RMSE = sqrt(mean delta^2), max delta,
  nRMSE = sqrt(sum delta^2) / sqrt(sum ||p - mu||^2) (mu: each coordinate's
  mean over the scored window), jitter = mean ||p^_{t+1} - p^_t|| over
  consecutive forecasts of one marker.

Two ways of learning (``causal``):

- **causal** (this library's setting, DESIGN §3.8): the forecast of z_{t+h}
  made at t is learnt from when z_{t+h} arrives, h samples later;
  ``rtrl_edge.forecast.Forecaster`` trains on the lagged stream and forecasts
  from a copy of the state.
- **non-causal** (the study's setting): at time t the model predicts z_{t+h}
  and is then updated with z_{t+h} itself, which has not been observed yet.
  Every later forecast benefits from targets up to h - 1 samples in the
  future.  Reported only to compare like for like with the published table.

Every forecaster below returns ``preds``, float32 (T, 9) in standardised
units, ``preds[t]`` the forecast of z_t (made at t - h); rows t < h are zero
and never scored.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA_DIRS = (os.path.join(REPO, "rtrl_edge", "data"),
             os.path.join(HERE, "data", "extmarker"))

TRAIN, VALID = 300, 600          # samples: 30 s and 60 s at 10 Hz
HORIZONS = tuple(range(1, 22))   # 0.1 ... 2.1 s
DIM = 9                          # 3 markers x (x, y, z)
CLIP = 100.0                     # the study's gradient-norm threshold
STUDY_INIT_STD = 0.02            # the study's N(0, 0.02) initial weights

# The study's figures at 10 Hz, averaged over recordings and horizons; per-step
# time in MATLAB on an Intel i7-13700 (Pohl et al. 2025, as quoted in issue 6).
PUBLISHED = {
    "RTRL":   dict(nrmse=0.195, rmse=0.926, mae=0.653, max=5.93, jitter=0.647, ms=10.1),
    "UORO":   dict(nrmse=0.166, rmse=0.755, mae=0.535, max=5.48, jitter=0.655, ms=2.05),
    "SnAp-1": dict(nrmse=0.157, rmse=0.699, mae=0.493, max=5.60, jitter=0.720, ms=1.52),
    "DNI":    dict(nrmse=0.165, rmse=0.752, mae=0.543, max=5.50, jitter=0.844, ms=1.04),
    "LMS":    dict(nrmse=0.314, rmse=1.419, mae=1.028, max=8.58, jitter=1.448, ms=0.014),
}


@dataclass
class Session:
    """One recording session: the 9-coordinate stream in mm."""
    name: str                  # e.g. "201205181211"
    markers: tuple             # the three marker files, in column order
    xyz: np.ndarray            # float64 (T, 9)
    dropped: int               # rows the loader dropped (per marker)

    def __len__(self) -> int:
        return len(self.xyz)


def session_files() -> Dict[str, List[str]]:
    """Session id -> its three marker files (sorted), from both data folders."""
    by_session: Dict[str, List[str]] = {}
    for folder in DATA_DIRS:
        for path in glob.glob(os.path.join(folder, "*.csv")):
            by_session.setdefault(os.path.basename(path)[:12], []).append(path)
    return {k: sorted(v, key=os.path.basename) for k, v in sorted(by_session.items())}


def load_sessions(names: Optional[List[str]] = None) -> List[Session]:
    """The sessions (all 9 by default), with the package's CSV loader.

    The loader drops the recorder's all-zero terminator rows and the rows
    with corrupt timestamps (0 to 6 per session, the same rows in all three
    markers); the study's code keeps those rows and drops each file's last
    row.  We raise if the three markers of a session do not share their
    timestamps after that.
    """
    from rtrl_edge.data import load_extmarker_csv
    files = session_files()
    if names is not None:
        missing = sorted(set(names) - set(files))
        if missing:
            raise ValueError(f"unknown sessions {missing}; have {sorted(files)}")
        files = {k: files[k] for k in names}
    out = []
    for name, paths in files.items():
        if len(paths) != 3:
            raise ValueError(f"session {name}: expected 3 marker files, found {paths}")
        recs = [load_extmarker_csv(p) for p in paths]
        for r in recs[1:]:
            if len(r) != len(recs[0]) or not np.array_equal(r.t_ms, recs[0].t_ms):
                raise ValueError(f"session {name}: markers not sampled together")
        xyz = np.concatenate([r.xyz for r in recs], axis=1)
        if len(xyz) <= VALID + max(HORIZONS):
            raise ValueError(f"session {name}: {len(xyz)} samples, too short")
        out.append(Session(name, tuple(r.name for r in recs), xyz, len(recs[0].dropped)))
    return out


def standardise(xyz: np.ndarray):
    """(z float32, mu, sg): each coordinate standardised with the statistics
    of the first TRAIN samples."""
    mu = xyz[:TRAIN].mean(axis=0)
    sg = xyz[:TRAIN].std(axis=0)
    return ((xyz - mu) / sg).astype(np.float32), mu, sg


def windows(z: np.ndarray, L: int) -> np.ndarray:
    """X float32 (T, DIM*L): X[t] = [z_t, z_{t-1}, ..., z_{t-L+1}], zeros
    before the first sample.  The current sample comes first, so that
    ``Forecaster(delta=True)`` finds it in the first DIM inputs."""
    T, d = z.shape
    X = np.zeros((T, L, d), dtype=np.float32)
    for lag in range(L):
        X[lag:, lag] = z[:T - lag]
    return X.reshape(T, L * d)


def split(phase: str, T: int) -> slice:
    """Target times scored in a phase: 'valid' [300, 600), 'test' [600, T)."""
    if phase == "valid":
        return slice(TRAIN, VALID)
    if phase == "test":
        return slice(VALID, T)
    raise ValueError(f"phase must be 'valid' or 'test', got {phase!r}")


def metrics(pred_mm: np.ndarray, truth_mm: np.ndarray) -> Dict[str, float]:
    """The study's metrics over one scored window; both (N, 9) in mm, rows in
    time order."""
    n = len(truth_mm)
    err = (pred_mm - truth_mm).reshape(n, 3, 3)
    delta = np.sqrt((err ** 2).sum(axis=2))                   # (N, 3 markers)
    spread = truth_mm - truth_mm.mean(axis=0)
    step = np.diff(pred_mm.reshape(n, 3, 3), axis=0)
    with np.errstate(invalid="ignore", over="ignore"):
        return dict(
            mae=float(delta.mean()),
            rmse=float(np.sqrt((delta ** 2).mean())),
            max=float(delta.max()),
            nrmse=float(np.sqrt((delta ** 2).sum()) / np.sqrt((spread ** 2).sum())),
            jitter=float(np.sqrt((step ** 2).sum(axis=2)).mean()),
        )


def score(preds: np.ndarray, session: Session, mu, sg, phase: str) -> Dict[str, float]:
    """Metrics (mm) of standardised forecasts over a phase's target times."""
    s = split(phase, len(session))
    return metrics(preds[s].astype(np.float64) * sg + mu, session.xyz[s])


# --------------------------------------------------------------------------
# forecasters
# --------------------------------------------------------------------------

def last_value(z: np.ndarray, h: int) -> np.ndarray:
    """Repeat the last sample: the forecast of z_t is z_{t-h}."""
    preds = np.zeros_like(z)
    preds[h:] = z[:-h]
    return preds


def lms(X: np.ndarray, z: np.ndarray, h: int, lr: float, causal: bool) -> np.ndarray:
    """Linear forecaster learnt by least mean squares, as in the study: W
    (9, 9L + 1) from zero, the gradient of 0.5 ||W [x; 1] - y||^2 clipped to
    norm CLIP, W -= lr * g.  Causal: the pair (x_{t-h}, z_t) is learnt when
    z_t arrives, before forecasting from x_t; non-causal: (x_t, z_{t+h}) right
    after forecasting from x_t."""
    T, m = X.shape
    W = np.zeros((z.shape[1], m + 1))
    xb = np.ones(m + 1)
    preds = np.zeros_like(z)

    def learn(x, y):
        xb[:m] = x
        e = W @ xb - y
        # ||e xb^T||_F = ||e|| ||xb||
        g_norm = np.sqrt(e @ e) * np.sqrt(xb @ xb)
        scale = lr * (CLIP / g_norm if g_norm > CLIP else 1.0)
        W[...] -= scale * np.outer(e, xb)

    for t in range(T - h):
        if causal and t >= h:
            learn(X[t - h], z[t])
        xb[:m] = X[t]
        preds[t + h] = W @ xb
        if not causal:
            learn(X[t], z[t + h])
    return preds


def linear_regression(X: np.ndarray, z: np.ndarray, h: int, fit_end: int) -> np.ndarray:
    """Offline least squares (minimum norm, with bias) on the pairs
    (x_t, z_{t+h}) whose target lies before ``fit_end``; fixed afterwards.
    Uses only the past of every scored forecast (fit_end = the scored
    window's start)."""
    T = len(X)
    A = np.hstack([X[:fit_end - h], np.ones((fit_end - h, 1), np.float32)]).astype(np.float64)
    W, *_ = np.linalg.lstsq(A, z[h:fit_end].astype(np.float64), rcond=None)
    preds = np.zeros_like(z)
    preds[h:] = (np.hstack([X[:T - h], np.ones((T - h, 1), np.float32)]) @ W).astype(np.float32)
    return preds


def ridge_regression(X: np.ndarray, z: np.ndarray, h: int, fit_end: int,
                     alpha: float) -> np.ndarray:
    """Offline ridge regression on the same pairs as ``linear_regression``
    (target before ``fit_end``), fixed afterwards: W minimises
    ||A W - Y||^2 + alpha ||W||^2 over the centred pairs, the bias (the
    mean) not penalised.  Unlike the minimum-norm least squares, its
    forecasts stay bounded when the window has more inputs than there are
    pairs, or nearly collinear ones."""
    T = len(X)
    A = X[:fit_end - h].astype(np.float64)
    Y = z[h:fit_end].astype(np.float64)
    x_mean, y_mean = A.mean(axis=0), Y.mean(axis=0)
    A -= x_mean
    gram = A.T @ A
    gram[np.diag_indices_from(gram)] += alpha
    W = np.linalg.solve(gram, A.T @ (Y - y_mean))
    preds = np.zeros_like(z)
    preds[h:] = ((X[:T - h] - x_mean) @ W + y_mean).astype(np.float32)
    return preds


def auto(z: np.ndarray, h: int, seed: int, *, hidden: Optional[int] = None, timer=None):
    """Stream the standardised session through ``Forecaster.auto(9, 9, h,
    seed=seed)`` (or ``AutoForecaster(9, 9, h, seed=seed, hidden=hidden)``),
    ``update(z_t, z_t)``: its members build their own lags and states from
    the current sample, and nothing is chosen per session or horizon.
    Returns (preds, the forecaster)."""
    from rtrl_edge import AutoForecaster, Forecaster
    fc = (Forecaster.auto(DIM, DIM, h, seed=seed) if hidden is None
          else AutoForecaster(DIM, DIM, h, seed=seed, hidden=hidden))
    return stream(fc.update, z, z, h, timer), fc


def auto_divergences(fc) -> int:
    """Divergence-guard recoveries of an auto forecaster's RNN members, plus
    the member forecasts it set aside as non-finite."""
    nets = [m.net for m in fc.members if hasattr(m, "net")]
    return int(sum(n.stats["divergence_recoveries"] for n in nets)
               + fc.stats["nonfinite_members"])


def make_net(learner: str, n_in: int, n: int, lr: float, seed: int, *, init: str,
             clip: float = CLIP, **options):
    """An OnlineRNN for the protocol: sgd, gradient-norm clipping, no
    normaliser (the stream is standardised already).  ``learner`` is one of
    the library's learners or "diag" (cell="diag", exact traces).
    ``init="study"`` draws every weight from N(0, 0.02) (the study's
    initialisation; b_out starts at 0); "library" keeps the library's
    default; one of ``rtrl_edge.INITS`` ("gaussian", "uniform",
    "orthogonal") is passed to the library as ``OnlineRNN(init=...)``."""
    from rtrl_edge import INITS, OnlineRNN
    if init not in ("study", "library") + INITS:
        raise ValueError(f"init must be 'study', 'library' or one of {', '.join(INITS)}; "
                         f"got {init!r}")
    kw = dict(options)
    if init in INITS:
        kw["init"] = init
    if learner == "diag":
        learner, kw["cell"] = "rtrl", "diag"
    net = OnlineRNN(n_in, n, DIM, learner=learner, optimizer="sgd", lr=lr, clip=clip,
                    seed=seed, **kw)
    if init == "study" and kw.get("cell") != "diag":
        rng = np.random.default_rng(seed)
        mask = net.rec_mask
        for name, view in net.params.items():
            view[...] = 0.0 if name == "b_out" else rng.normal(0.0, STUDY_INIT_STD, view.shape)
        if mask is not None:
            net.params["W_rec"][...] *= mask
    return net


def rnn(net, X: np.ndarray, z: np.ndarray, h: int, causal: bool, *, delta: bool = False,
        timer=None) -> np.ndarray:
    """Stream the session through ``net``.  Non-causal: ``net.step(x_t,
    z_{t+h})`` predicts, then learns from the future target.  Causal:
    ``Forecaster(net, h, delta).update(x_t, z_t)``.  ``timer``, if given, is a
    preallocated int64 array receiving each call's ns."""
    from rtrl_edge.forecast import Forecaster
    if causal:
        call, ys = Forecaster(net, h, delta=delta).update, z
    else:
        call, ys = net.step, z[h:]
    return stream(call, X, ys, h, timer)


def stream(call, X: np.ndarray, ys: np.ndarray, h: int, timer=None) -> np.ndarray:
    """preds[t + h] = call(X[t], ys[t]) for t = 0 ... T-h-1 (zeros before);
    ``timer``, if given, a preallocated int64 array receiving each call's ns."""
    T = len(X)
    preds = np.zeros((T, ys.shape[1]), dtype=np.float32)
    if timer is None:
        for t in range(T - h):
            preds[t + h] = call(X[t], ys[t])
    else:
        from time import perf_counter_ns as now
        for t in range(T - h):
            t0 = now()
            p = call(X[t], ys[t])
            timer[t] = now() - t0
            preds[t + h] = p
    return preds
