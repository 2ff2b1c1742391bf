"""The tools a user would otherwise pick, side by side with rtrl_edge: the
same stream, the same network size, the same protocol, one run.

Stream and protocol (``extmarker.py``, the ExtMarker respiratory-motion
protocol): session "201205181211" (3198 samples at about 10 Hz; 9 coordinates
= 3 markers x xyz, in mm), each coordinate standardised with the mean and
standard deviation of its first 300 samples; input at time t the last L = 12
samples, newest first (``extmarker.windows``: 108 inputs); output 9; horizon
h = 5 samples (0.5 s); n = 32 hidden units (and n = 64).  Learning is CAUSAL
for every contender: the pair (x_{t-h}, z_t) is learnt when z_t arrives, the
state is kept, and the forecast of z_{t+h} is made by running a copy of the
state over the last h inputs; every contender learns the displacement
z_{t+h} - z_t (delta) and forecasts z_t plus it.  sgd, the gradient clipped
to global norm 100 (``extmarker.CLIP``), loss 0.5 ||y^ - y||^2, seed 0.

Contenders:

  rtrl_edge   ``extmarker.make_net(learner, 108, n, lr, 0, init="library")``
              streamed by ``extmarker.rnn(..., causal=True, delta=True)``
              (``rtrl_edge.forecast.Forecaster``): learners rtrl (exact),
              snap1, uoro, tbptt (window k = 16) and cell="diag" (exact).
  auto        ``rtrl_edge.AutoForecaster(9, 9, h, hidden=n)`` (what
              ``Forecaster.auto`` builds, its RNN members at size n): a last
              value, two linear RLS, a seasonal and four RNN members (exact
              RTRL, Adam, their own normalisation) weighted online by their
              recent error.  Nothing to choose: one pass, fed the current
              sample, ``update(z_t, z_t)`` (``extmarker.auto``); its members
              keep their own lags and states.
  PyTorch     ``torch.nn.RNNCell(108, n, nonlinearity="tanh")`` and a
              ``torch.nn.Linear(n, 9)`` readout, PyTorch's default
              initialisation, float32, ``torch.set_num_threads(1)``,
              ``torch.optim.SGD`` with ``clip_grad_norm_``, trained online per
              sample by truncated BPTT over the last k = 16 steps, written the
              way most users would (``TorchTBPTT`` below): the state from k
              steps back (detached) and the last k lagged inputs in a deque;
              each sample re-runs the cell over them with autograd, takes the
              loss on the newest output, backward, clip, step, and advances
              the stored state by one step (detached).  RNNCell has two
              biases (bias_ih, bias_hh) that each get the gradient, so its
              bias learns twice as fast as rtrl_edge's single b: kept, it is
              what users get.  Optional: skipped, with a message, when
              ``import torch`` fails.
  slax        exact RTRL from a packaged library: ``slax.RTRL`` (slax 0.0.1,
              JAX/Flax) wrapped round a Flax Elman cell h = tanh(W_in x + b +
              W_rec h) with Flax's default initialisation, a ``nn.Dense(9)``
              readout, the whole per-sample update (gradient, clipping, sgd,
              forecast) in one ``jax.jit`` function compiled before the stream
              (``SlaxRTRL`` below), XLA on one CPU thread.  slax 0.0.1 calls
              ``jax.tree_map``, which JAX removed in 0.6; the alias is restored
              (to ``jax.tree_util.tree_map``) before slax is imported.  Its
              per-sample cost grows fast with n, so it runs at n = 32 only
              unless ``--slax-sizes`` says otherwise.  Optional, like PyTorch.

Learning rate: for every contender alike, chosen from {0.001, 0.003, 0.01,
0.03} by the validation nRMSE (targets [300, 600)); the chosen run is scored
on the test part (targets [600, 3198)) with ``extmarker.score``: nRMSE, RMSE,
MAE, max and jitter in mm.  Repeat-last-value (``extmarker.last_value``) is
the baseline row.

Latency: every per-sample call (learn from the arrived target + forecast,
input a float32 numpy row, output a numpy array) timed with
``time.perf_counter_ns`` over the whole stream (3193 calls; ``timer=`` of
``extmarker.rnn`` for rtrl_edge, the same loop for the peers); the grid's
passes run in rounds, one learning rate per round, every contender in each
round in rotating order, so that machine noise hits all alike; the median
and p99 of the chosen learning rate's pass are reported, and each peer's
median over the median of rtrl_edge's same learner (tbptt for PyTorch, rtrl
for slax) and over rtrl_edge rtrl and snap1.

Memory: (a) the state a model keeps between samples: rtrl_edge's
``net.memory_bytes``; PyTorch's parameters + gradients + optimiser state +
the TBPTT buffers (k inputs and the stored state); slax's parameters + carry
(state and the RTRL sensitivity matrix).  The h-input forecasting ring, the
same for all, is not counted.  (b) each contender, with its chosen learning
rate, streams the session again in a fresh Python process (subprocess): peak
RSS after numpy and the data, after importing the tool (the import alone),
after constructing the model and after the stream; these processes run after
all timing, two at a time.  Peak RSS is the kernel's high-water mark of the
process's own memory (VmHWM, /proc/self/status): on Linux
``getrusage(RUSAGE_SELF).ru_maxrss`` of a process started by fork and exec
never reads below its parent's peak at the fork (the kernel carries it over
the exec), so here it would only show this benchmark's own size; it is kept
in the JSON (``ru_maxrss_after_stream``) and used where /proc is missing.

    python benchmarks/bench_peers.py                        # full run, writes results
    python benchmarks/bench_peers.py --quick --no-write     # smoke run
    pip install torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
    pip install slax==0.0.1                                 # the optional peers

Writes results/bench_peers.json, results/bench_peers.png (with matplotlib)
and the block between the bench_peers markers in benchmarks/README.md.  This
is a benchmark, not a test: nothing asserts on the numbers.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

import extmarker as em  # noqa: E402

RESULTS_DIR = common.RESULTS_DIR
JSON_PATH = os.path.join(RESULTS_DIR, "bench_peers.json")
PNG_PATH = os.path.join(RESULTS_DIR, "bench_peers.png")
BEGIN, END = "<!-- bench_peers:begin -->", "<!-- bench_peers:end -->"
COMMAND = "python benchmarks/bench_peers.py"

SESSION = "201205181211"
L = 12                       # input window, samples (9 L = 108 inputs)
H = 5                        # horizon, samples (0.5 s)
K = 16                       # TBPTT window (rtrl_edge tbptt and PyTorch)
SIZES = (32, 64)
SLAX_SIZES = (32,)
LR_GRID = (0.001, 0.003, 0.01, 0.03)
QUICK_LR_GRID = (0.003, 0.01)
QUICK_SAMPLES = 700          # --quick: the first 700 samples (test = [600, 700))
QUICK_SIZES = (32,)
SEED = 0
RATE_HZ = 10.0

LIB, TORCH, SLAX = "rtrl_edge", "PyTorch", "slax"
AUTO = "rtrl_edge auto"      # the family of the auto forecaster: no learning rate
NO_LR = "none"               # its only pass, in the per-learning-rate records
TORCH_INSTALL = ("pip install torch==2.13.0 "
                 "--extra-index-url https://download.pytorch.org/whl/cpu")
SLAX_INSTALL = "pip install slax==0.0.1"
#: XLA on one thread, as every other contender (set before jax is imported)
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

#: (key, family, learner, make_net keywords); learner names the rtrl_edge
#: learner a peer is compared with
CONTENDERS = (
    ("rtrl_edge rtrl", LIB, "rtrl", {}),
    ("rtrl_edge snap1", LIB, "snap1", {}),
    ("rtrl_edge uoro", LIB, "uoro", {}),
    (f"rtrl_edge tbptt k={K}", LIB, "tbptt", dict(window=K)),
    ("rtrl_edge diag", LIB, "diag", {}),
    ("rtrl_edge auto (no tuning)", AUTO, "auto", {}),
    (f"PyTorch TBPTT k={K}", TORCH, "tbptt", {}),
    ("slax RTRL", SLAX, "rtrl", {}),
)
BY_KEY = {c[0]: c for c in CONTENDERS}
LIB_BY_LEARNER = {c[2]: c[0] for c in CONTENDERS if c[1] == LIB}
OURS = (LIB, AUTO)
LAST = "repeat last value"
METRICS = ("nrmse", "rmse", "mae", "max", "jitter")


# --------------------------------------------------------------------------
# the optional peers: imports
# --------------------------------------------------------------------------

def import_torch():
    """torch, on one thread; ImportError if it is not installed."""
    import torch
    torch.set_num_threads(1)
    return torch


def import_slax():
    """(jax, jax.numpy, flax.linen, slax); XLA on one thread.  ImportError if
    any is missing."""
    os.environ.setdefault("XLA_FLAGS", XLA_ONE_THREAD)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    if not hasattr(jax, "tree_map"):          # removed in JAX 0.6; slax 0.0.1 calls it
        jax.tree_map = jax.tree_util.tree_map
    import jax.numpy as jnp
    import flax.linen as nn
    import slax
    return jax, jnp, nn, slax


def peer_status():
    """{family: (available, versions or the skip message)}."""
    out = {}
    try:
        torch = import_torch()
        out[TORCH] = (True, dict(torch=torch.__version__, threads=torch.get_num_threads()))
    except ImportError as exc:
        out[TORCH] = (False, f"skipped: PyTorch not installed ({TORCH_INSTALL}) [{exc}]")
    try:
        jax, _, _, _ = import_slax()
        from importlib import metadata
        out[SLAX] = (True, dict(slax=metadata.version("slax"), jax=jax.__version__,
                                flax=metadata.version("flax"),
                                xla_flags=os.environ.get("XLA_FLAGS")))
    except ImportError as exc:
        out[SLAX] = (False, f"skipped: slax (exact RTRL in JAX/Flax) not installed "
                            f"({SLAX_INSTALL}) [{exc}]")
    except Exception as exc:                  # installed but broken
        out[SLAX] = (False, f"skipped: slax failed to import: {type(exc).__name__}: {exc}")
    return out


# --------------------------------------------------------------------------
# the peers: one object per model, update(x_t, z_t) -> forecast of z_{t+h}
# --------------------------------------------------------------------------

class TorchTBPTT:
    """h-step-ahead causal forecasting with a PyTorch RNNCell, trained online
    per sample by truncated BPTT over the last `window` steps.

    The same contract as ``rtrl_edge.forecast.Forecaster(delta=True)``:
    ``update(x_t, y_t)`` learns from the pair (x_{t-h}, y_t - x_{t-h}[:n_out])
    once h inputs have been seen, then returns the forecast of y_{t+h}:
    x_t[:n_out] plus the readout of a no-grad copy of the state run over the
    last h inputs.  x: float32 (n_in,), y: float32 (n_out,); returns float32
    (n_out,).

    Unlike rtrl_edge's tbptt, which back-propagates through the states it
    stored when it computed them, each step re-runs the window with the
    current weights (the usual PyTorch idiom); from the same weights the
    first update is the same but for the bias (two in an RNNCell, each
    given the gradient).
    """

    def __init__(self, n_in, n_hidden, n_out, horizon, *, lr, window=K, clip=em.CLIP,
                 seed=SEED):
        torch = import_torch()
        self.torch = torch
        torch.manual_seed(seed)
        self.cell = torch.nn.RNNCell(n_in, n_hidden, nonlinearity="tanh")
        self.readout = torch.nn.Linear(n_hidden, n_out)
        self.params = [*self.cell.parameters(), *self.readout.parameters()]
        self.opt = torch.optim.SGD(self.params, lr=lr)
        self.horizon, self.window, self.clip, self.n_out = horizon, window, clip, n_out
        self.lagged = deque(maxlen=window)       # x_{t-h-k+1} ... x_{t-h}: the TBPTT window
        self.recent = deque(maxlen=horizon)      # x_{t-h+1} ... x_t: the forecast's inputs
        self.h0 = torch.zeros(n_hidden)          # state before lagged[0] (detached)
        self.state = torch.zeros(n_hidden)       # state after x_{t-h} (detached)

    def update(self, x, y):
        torch = self.torch
        x = torch.tensor(x, dtype=torch.float32)            # copies: the caller may reuse x
        if len(self.recent) == self.horizon:                # x_{t-h} leaves the window
            x_old = self.recent[0]
            target = torch.tensor(y, dtype=torch.float32) - x_old[:self.n_out]
            self.lagged.append(x_old)
            s = self.h0
            for xi in self.lagged:                          # re-run the window with autograd
                s = self.cell(xi, s)
            loss = 0.5 * ((self.readout(s) - target) ** 2).sum()
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.opt.step()
            self.state = s.detach()
            if len(self.lagged) == self.window:             # advance the stored state
                with torch.no_grad():
                    self.h0 = self.cell(self.lagged.popleft(), self.h0)
        self.recent.append(x)
        with torch.no_grad():
            s = self.state
            for xi in self.recent:
                s = self.cell(xi, s)
            return (self.readout(s) + x[:self.n_out]).numpy()

    @property
    def nbytes(self):
        """Parameters + gradients + optimiser state + TBPTT buffers (the
        window's inputs and the stored states), in bytes."""
        torch = self.torch
        tensors = list(self.params)
        tensors += [p.grad if p.grad is not None else p for p in self.params]
        tensors += [v for st in self.opt.state.values() for v in st.values()
                    if isinstance(v, torch.Tensor)]
        tensors += [*self.lagged, self.h0, self.state]
        return int(sum(t.nelement() * t.element_size() for t in tensors))


_SLAX_FNS = {}


def _slax_functions(n_in, n_hidden, n_out, horizon, clip):
    """(model, learn_forecast, forecast): the Flax model and its two jitted
    per-sample functions, compiled once per shape (before any stream)."""
    key = (n_in, n_hidden, n_out, horizon, clip)
    if key in _SLAX_FNS:
        return _SLAX_FNS[key]
    jax, jnp, nn, slax = import_slax()

    class Elman(slax.models.utils.SNNCell):
        """h = tanh(W_in x + b + W_rec h), the state in slax's 'carry'."""
        n: int

        @nn.compact
        def __call__(self, x):
            h = self.variable("carry", "h", jnp.zeros, (self.n,), jnp.float32)
            a = nn.Dense(self.n, name="W_in")(x) + nn.Dense(self.n, use_bias=False,
                                                             name="W_rec")(h.value)
            h.value = jnp.tanh(a)
            return h.value

    model = slax.connect([slax.RTRL([Elman(n_hidden)]), nn.Dense(n_out)])

    def loss(params, carry, x, y):
        out, new = model.apply({"params": params, "carry": carry}, x, mutable="carry")
        return 0.5 * jnp.sum((out - y) ** 2), new["carry"]

    def run(params, carry, window, count):
        """Readout after the last `count` inputs of `window` (h, n_in)."""
        y = None
        for i in range(horizon):
            y_i, new = model.apply({"params": params, "carry": carry}, window[i],
                                   mutable="carry")
            keep = i >= horizon - count
            carry = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b),
                                           new["carry"], carry)
            y = y_i
        return y

    @jax.jit
    def learn_forecast(params, carry, x_old, target, window, lr):
        g, carry = jax.grad(loss, has_aux=True)(params, carry, x_old, target)
        norm = jnp.sqrt(sum(jnp.sum(v * v) for v in jax.tree_util.tree_leaves(g)))
        scale = lr * jnp.where(norm > clip, clip / norm, 1.0)
        params = jax.tree_util.tree_map(lambda p, d: p - scale * d, params, g)
        y = run(params, carry, window, horizon) + window[-1, :n_out]
        return params, carry, y

    @jax.jit
    def forecast(params, carry, window, count):
        return run(params, carry, window, count) + window[-1, :n_out]

    v = model.init(jax.random.PRNGKey(0), jnp.zeros(n_in, jnp.float32))
    w = jnp.zeros((horizon, n_in), jnp.float32)
    jax.block_until_ready(learn_forecast(v["params"], v["carry"], w[0], w[0, :n_out], w, 0.0))
    jax.block_until_ready(forecast(v["params"], v["carry"], w, 1))
    _SLAX_FNS[key] = (model, learn_forecast, forecast)
    return _SLAX_FNS[key]


class SlaxRTRL:
    """h-step-ahead causal forecasting with slax's exact RTRL (``slax.RTRL``
    round a Flax Elman cell, Dense readout); the same contract as
    ``TorchTBPTT``.  The per-sample update is one jitted call, compiled
    (once per shape) when the first such object is built."""

    def __init__(self, n_in, n_hidden, n_out, horizon, *, lr, clip=em.CLIP, seed=SEED):
        jax, jnp, _, _ = import_slax()
        self.jax = jax
        self.model, self._learn_forecast, self._forecast = _slax_functions(
            n_in, n_hidden, n_out, horizon, float(clip))
        v = self.model.init(jax.random.PRNGKey(seed), jnp.zeros(n_in, jnp.float32))
        self.params, self.carry = v["params"], v["carry"]
        self.lr, self.horizon, self.n_out = float(lr), horizon, n_out
        self.recent = np.zeros((horizon, n_in), np.float32)   # oldest first
        self.seen = 0

    def update(self, x, y):
        h = self.horizon
        learn = self.seen == h
        if learn:
            x_old = self.recent[0].copy()
        self.recent[:-1] = self.recent[1:]
        self.recent[-1] = x
        self.seen = min(self.seen + 1, h)
        if learn:
            target = np.asarray(y, np.float32) - x_old[:self.n_out]
            self.params, self.carry, out = self._learn_forecast(
                self.params, self.carry, x_old, target, self.recent, self.lr)
        else:
            out = self._forecast(self.params, self.carry, self.recent, self.seen)
        return np.asarray(out)

    @property
    def nbytes(self):
        """Parameters + carry (the state and RTRL's sensitivity matrix), bytes."""
        leaves = self.jax.tree_util.tree_leaves((self.params, self.carry))
        return int(sum(v.size * v.dtype.itemsize for v in leaves))


def stream_peer(model, X, z, h, timer=None):
    """``extmarker.rnn(..., causal=True)`` for a peer: preds[t + h] =
    model.update(X[t], z[t]), each call's ns into ``timer`` if given."""
    return em.stream(model.update, X, z, h, timer)


# --------------------------------------------------------------------------
# one contender: build, stream, state bytes
# --------------------------------------------------------------------------

def build(key, n_in, n, lr):
    _, family, learner, options = BY_KEY[key]
    if family == AUTO:
        from rtrl_edge import AutoForecaster
        return AutoForecaster(em.DIM, em.DIM, H, hidden=n, seed=SEED)
    if family == LIB:
        return em.make_net(learner, n_in, n, lr, SEED, init="library", **options)
    if family == TORCH:
        return TorchTBPTT(n_in, n, em.DIM, H, lr=lr, window=K)
    return SlaxRTRL(n_in, n, em.DIM, H, lr=lr)


def stream(key, model, X, z, timer=None):
    if BY_KEY[key][1] == LIB:
        return em.rnn(model, X, z, H, True, delta=True, timer=timer)
    if BY_KEY[key][1] == AUTO:                # its own lags and states: the current sample
        return em.stream(model.update, z, z, H, timer)
    return stream_peer(model, X, z, H, timer)


def state_bytes(key, model):
    return int(model.memory_bytes if BY_KEY[key][1] in OURS else model.nbytes)


def import_tool(family):
    if family in OURS:
        import rtrl_edge  # noqa: F401
        import rtrl_edge.forecast  # noqa: F401
    elif family == TORCH:
        import_torch()
    else:
        import_slax()


# --------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------

def load_data(samples=None):
    """(session, X, z, mu, sg), the session cut to its first `samples`."""
    (s,) = em.load_sessions([SESSION])
    if samples is not None and samples < len(s):
        s = em.Session(s.name, s.markers, s.xyz[:samples], s.dropped)
    z, mu, sg = em.standardise(s.xyz)
    return s, em.windows(z, L), z, mu, sg


def scores(preds, session, mu, sg):
    out = {}
    for phase in ("valid", "test"):
        m = em.score(preds, session, mu, sg, phase)
        out[phase] = {k: (v if np.isfinite(v) else float("inf")) for k, v in m.items()}
    return out


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

def run_grid(keys, n, grid, data, progress):
    """Every contender at every learning rate, timed; rounds = learning
    rates, contenders in rotating order within a round; the auto forecaster,
    which has no learning rate, once, in the first round.  Returns (per_lr,
    failures): a peer that raises is dropped with the reason (an installed
    but broken optional package must not stop the run); rtrl_edge raising
    is a bug and propagates."""
    session, X, z, mu, sg = data
    T = len(X)
    keys = list(keys)
    per_lr = {key: {} for key in keys}
    failures = {}
    for r, lr in enumerate(grid):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for key in order:
            fixed = BY_KEY[key][1] == AUTO
            if fixed and r > 0:
                continue
            timer = np.zeros(T - H, np.int64)
            try:
                model = build(key, X.shape[1], n, lr)
                preds = stream(key, model, X, z, timer)
            except Exception as exc:
                if BY_KEY[key][1] in OURS:
                    raise
                failures[key] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                keys.remove(key)
                del per_lr[key]
                continue
            finite = bool(np.all(np.isfinite(preds[H:])))
            row = dict(scores(preds, session, mu, sg), latency=common.summarize(timer),
                       state_bytes=state_bytes(key, model), finite=finite)
            if BY_KEY[key][1] == LIB:
                row["divergence_recoveries"] = int(model.stats["divergence_recoveries"])
            elif fixed:
                row["divergence_recoveries"] = em.auto_divergences(model)
            per_lr[key][NO_LR if fixed else str(lr)] = row
        progress(f"n={n} lr={lr:g}")
    return per_lr, failures


def choose(per_lr):
    """The learning rate with the lowest finite validation nRMSE."""
    best = min(per_lr, key=lambda lr: (per_lr[lr]["valid"]["nrmse"], float(lr)))
    return best


def summarise_size(per_lr, grid):
    rows = {}
    for key, by_lr in per_lr.items():
        fixed = BY_KEY[key][1] == AUTO           # no learning rate: nothing chosen
        lr = NO_LR if fixed else choose(by_lr)
        row = by_lr[lr]
        rows[key] = dict(family=BY_KEY[key][1], learner=BY_KEY[key][2],
                         lr=None if fixed else float(lr),
                         lr_at_grid_edge=(not fixed and float(lr) in (grid[0], grid[-1])
                                          and len(grid) > 2),
                         test=row["test"], valid=row["valid"], latency=row["latency"],
                         state_bytes=row["state_bytes"], finite=row["finite"],
                         valid_nrmse_by_lr=({} if fixed else
                                            {k: v["valid"]["nrmse"] for k, v in by_lr.items()}),
                         **({"divergence_recoveries": row["divergence_recoveries"]}
                            if "divergence_recoveries" in row else {}))
    for key, row in rows.items():
        if row["family"] in OURS:
            continue
        med = row["latency"]["median_us"]
        same = LIB_BY_LEARNER[row["learner"]]
        ratios = {lk: med / rows[lk]["latency"]["median_us"]
                  for lk in dict.fromkeys([same, LIB_BY_LEARNER["rtrl"],
                                           LIB_BY_LEARNER["snap1"]]) if lk in rows}
        row["same_learner"] = same
        row["median_ratio_to"] = ratios
    return rows


CHILD = ("import sys, json; sys.path.insert(0, {here!r}); import bench_peers; "
         "bench_peers.rss_child(json.loads(sys.argv[1]))")


def _peak_rss_bytes():
    """This process's peak RSS, bytes.  On Linux the kernel's high-water mark
    of this process's own memory (VmHWM in /proc/self/status): getrusage's
    ru_maxrss also counts the parent's peak when it was started by fork (or
    vfork) and exec, as every subprocess is, so in a child started from a
    300 MiB parent it never reads below 300 MiB.  Elsewhere ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _ru_maxrss_bytes()


def _ru_maxrss_bytes():
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)   # Linux: KiB


def rss_child(spec):
    """In a fresh process: load the data, import the tool, build, stream;
    print the peak RSS after each as JSON."""
    d = np.load(spec["data"])
    X, z = d["X"], d["z"]
    out = dict(before_import=_peak_rss_bytes())
    import_tool(BY_KEY[spec["key"]][1])
    out["after_import"] = _peak_rss_bytes()
    model = build(spec["key"], X.shape[1], spec["n"], spec["lr"])
    out["after_construction"] = _peak_rss_bytes()
    preds = stream(spec["key"], model, X, z)
    out["after_stream"] = _peak_rss_bytes()
    out["finite"] = bool(np.all(np.isfinite(preds[H:])))
    out["ru_maxrss_after_stream"] = _ru_maxrss_bytes()
    print(json.dumps(out))


def measure_rss(jobs, X, z):
    """jobs: [(key, n, lr)] -> {(key, n): peak RSS dict}, each in a fresh
    subprocess, two at a time."""
    import rtrl_edge
    env = dict(os.environ)
    paths = [HERE, os.path.dirname(os.path.dirname(os.path.abspath(rtrl_edge.__file__)))]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stream.npz")
        np.savez(path, X=X, z=z)

        def one(job):
            key, n, lr = job
            spec = dict(key=key, n=n, lr=lr, data=path)
            # cwd: not the repository, whose uncompiled sources would shadow
            # an installed package
            r = subprocess.run([sys.executable, "-c", CHILD.format(here=HERE),
                                json.dumps(spec)], env=env, cwd=tmp, capture_output=True,
                               text=True, timeout=600)
            if r.returncode != 0:
                return job, dict(error=(r.stderr.strip().splitlines() or ["?"])[-1])
            m = json.loads(r.stdout.strip().splitlines()[-1])
            m.update(import_bytes=m["after_import"] - m["before_import"],
                     construction_bytes=m["after_construction"] - m["after_import"],
                     stream_bytes=m["after_stream"] - m["after_construction"])
            return job, m

        with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
            return {(key, n): m for (key, n, _), m in pool.map(one, jobs)}


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def _short(key):
    return key.replace("rtrl_edge ", "")


def _mib(b):
    return f"{b / 2**20:.1f}"


def _kib(b):
    return f"{b / 1024:,.1f}"


def format_size(n, rows, baseline, grid):
    head = ("| contender | lr | test nRMSE | RMSE mm | MAE mm | max mm | jitter mm "
            "| µs per sample, median / p99 | median / rtrl_edge same learner | state KiB |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {LAST} | — | " + " | ".join(f"{baseline[m]:.3f}" for m in METRICS)
             + " | — | — | — |"]
    for key, r in rows.items():
        t = r["test"]
        ratio = ("—" if r["family"] in OURS
                 else f"{r['median_ratio_to'][r['same_learner']]:.3g}x "
                      f"(vs {_short(r['same_learner'])})")
        lat = r["latency"]
        lr = ("— (none)" if r["lr"] is None
              else f"{r['lr']:g}{' (edge)' if r['lr_at_grid_edge'] else ''}")
        lines.append(f"| {key} | {lr} | "
                     + " | ".join(f"{t[m]:.3f}" for m in METRICS)
                     + f" | {lat['median_us']:.3g} / {lat['p99_us']:.3g} | {ratio} "
                     f"| {_kib(r['state_bytes'])} |")
    return f"n = {n} hidden units:\n\n" + "\n".join(lines)


def format_ratios(sizes, results):
    out = []
    for n in sizes:
        rows = results[str(n)]["rows"]
        for key, r in rows.items():
            if r["family"] in OURS:
                continue
            out.append(f"n={n}, {key}: " + ", ".join(
                f"{v:.3g}x {_short(lk)}" for lk, v in r["median_ratio_to"].items()))
    return ("Median per-sample time of each peer over that of rtrl_edge's learners: "
            + "; ".join(out) + "." if out else "")


def format_memory(sizes, results):
    head = ("| n | contender | state KiB | RSS before import MiB | import MiB "
            "| construction MiB | stream MiB | peak RSS MiB |")
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        for key, r in results[str(n)]["rows"].items():
            m = r.get("rss")
            if m is None or "error" in m:
                cells = ["—"] * 5 if m is None else [f"failed: {m['error']}"] + ["—"] * 4
            else:
                cells = [_mib(m["before_import"]), "+" + _mib(m["import_bytes"]),
                         "+" + _mib(m["construction_bytes"]), "+" + _mib(m["stream_bytes"]),
                         _mib(m["after_stream"])]
            lines.append(f"| {n} | {key} | {_kib(r['state_bytes'])} | " + " | ".join(cells)
                         + " |")
    return ("Memory: state kept between samples, and peak RSS of a fresh process "
            "(numpy and the data loaded, then + importing the tool, + constructing the "
            "model, + streaming the session):\n\n" + "\n".join(lines))


def format_valid(sizes, results, grid):
    head = "| n | contender | " + " | ".join(f"lr {g:g}" for g in grid) + " |"
    lines = [head, "|---:|---|" + "---:|" * len(grid)]
    for n in sizes:
        for key, r in results[str(n)]["rows"].items():
            if r["lr"] is None:
                continue
            cells = []
            for g in grid:
                v = r["valid_nrmse_by_lr"][str(g)]
                s = "diverged" if not np.isfinite(v) else f"{v:.3f}"
                cells.append(f"**{s}**" if g == r["lr"] else s)
            lines.append(f"| {n} | {key} | " + " | ".join(cells) + " |")
    fixed = [f"n={n}: {r['valid']['nrmse']:.3f}" for n in sizes
             for r in results[str(n)]["rows"].values() if r["lr"] is None]
    return ("Validation nRMSE (targets [300, 600)) by learning rate; the chosen one in "
            "bold:\n\n" + "\n".join(lines)
            + (f"\n\nThe auto forecaster has no learning rate and chooses nothing on "
               f"validation (its validation nRMSE: {', '.join(fixed)})." if fixed else ""))


def format_checks(sizes, results, baseline):
    out = []
    for n in sizes:
        for key, r in results[str(n)]["rows"].items():
            if r["family"] == TORCH:
                beat = r["test"]["nrmse"] < baseline["nrmse"]
                out.append(f"n={n}: {key} {'learns' if beat else 'does NOT learn'}: test "
                           f"nRMSE {r['test']['nrmse']:.3f} against {baseline['nrmse']:.3f} "
                           f"for {LAST}.")
            if not r["finite"]:
                out.append(f"n={n}: {key} produced non-finite forecasts at its chosen lr.")
    recov = sum(r.get("divergence_recoveries", 0) for n in sizes
                for r in results[str(n)]["rows"].values())
    out.append(f"rtrl_edge divergence recoveries at the chosen learning rates: {recov}.")
    return " ".join(out)


def format_targets(sizes, results):
    """Auto at or below PyTorch TBPTT's test nRMSE at every size run."""
    auto_key = next(c[0] for c in CONTENDERS if c[1] == AUTO)
    torch_key = next(c[0] for c in CONTENDERS if c[1] == TORCH)
    out = []
    for n in sizes:
        rows = results[str(n)]["rows"]
        if auto_key not in rows:
            continue
        a = rows[auto_key]["test"]["nrmse"]
        if torch_key not in rows:
            out.append(f"- n={n}: {auto_key} at or below {torch_key}'s test nRMSE: "
                       f"{a:.3f}, {torch_key} not run -- **not measured**")
            continue
        t = rows[torch_key]["test"]["nrmse"]
        status = "met" if a <= t else f"MISSED by {a - t:.3f}"
        out.append(f"- n={n}: {auto_key} (RNN members of {n} units, nothing tuned) at or "
                   f"below {torch_key}'s test nRMSE (its learning rate chosen on "
                   f"validation): {a:.3f} against {t:.3f} -- **{status}**")
    return "Targets:\n" + "\n".join(out) if out else ""


def format_setting(session, grid, elapsed):
    T = len(session)
    return (f"Session {SESSION} ({T} samples, 3 markers x xyz), input window L = {L} "
            f"({em.DIM * L} inputs), horizon h = {H} ({H / RATE_HZ:.1f} s), causal "
            f"learning, delta, sgd, clip {em.CLIP:g}, seed {SEED}; learning rate per "
            f"contender from {{{', '.join(f'{g:g}' for g in grid)}}} by validation "
            f"nRMSE; scored on test targets [{em.VALID}, {T}) in mm.  Latency: each "
            f"per-sample call (learn + forecast), {T - H} calls of the chosen learning "
            f"rate's pass; passes interleaved in rounds.  The auto forecaster "
            f"(`AutoForecaster(9, 9, {H}, hidden=n)`: last value, linear, seasonal and four "
            f"RNN members of n units -- exact RTRL, Adam at fixed learning rates, its own "
            f"normalisation -- weighted online) has no learning rate to choose: one pass, "
            f"in the first round, fed the current sample z_t (its members keep their own "
            f"lags and states) instead of the {em.DIM * L}-input window.  "
            f"Run time {elapsed:.0f} s.")


def format_environment(env, peers):
    parts = []
    for fam in (TORCH, SLAX):
        ok, info = peers[fam]
        if ok:
            parts.append(", ".join(f"{k} {v}" for k, v in info.items()))
    return common.format_environment(env) + ("; " + "; ".join(parts) if parts else "")


def finite_json(obj):
    """Non-finite floats (a diverged run's scores) as null: strict JSON."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_plot(results, sizes, baseline, env):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    colors = {}
    for n, marker in zip(sizes, "osD^"):
        for key, r in results[str(n)]["rows"].items():
            c = colors.setdefault(key, f"C{len(colors)}")
            ax.scatter(r["latency"]["median_us"], r["test"]["nrmse"], color=c, marker=marker,
                       label=key if n == sizes[0] else None, s=40)
            ax.annotate(f"n={n}", (r["latency"]["median_us"], r["test"]["nrmse"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(baseline["nrmse"], color="grey", linestyle="--", linewidth=1, label=LAST)
    ax.set_xscale("log")
    ax.set_xlabel("µs per sample (learn + forecast), median")
    ax.set_ylabel("test nRMSE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"Same stream, same network: session {SESSION}, h = {H / RATE_HZ:.1f} s "
                 f"— {env['date'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=110)
    plt.close(fig)
    return PNG_PATH


def write_readme(text):
    common.write_block(
        BEGIN, END, text,
        "## `bench_peers.py` -- PyTorch and other peers on the same stream\n\n"
        "ExtMarker session 201205181211 forecast 0.5 s ahead (L = 12 samples in, 9 out), "
        "learnt causally, by rtrl_edge's learners, a PyTorch `RNNCell` trained online by "
        "per-sample truncated BPTT (k = 16) and slax's exact RTRL (JAX): same n (32 and "
        "64), sgd with clipping, each one's learning rate chosen on validation; test error "
        "in mm against repeat-last-value, per-sample latency (one process, interleaved), "
        "state bytes and peak RSS of a fresh process per contender.  The peers are "
        "optional (skipped with a message when missing).  Regenerate (about 100 s on 2 "
        "cores; `--quick` about 10 s):\n\n"
        f"    {TORCH_INSTALL}\n    {SLAX_INSTALL}\n    {COMMAND}\n\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, metavar="N",
                   help="hidden sizes (default 32 64)")
    p.add_argument("--slax-sizes", type=int, nargs="*", default=None, metavar="N",
                   help="hidden sizes at which slax runs (default 32; it is slow)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: the first {QUICK_SAMPLES} samples, n = 32, "
                        f"lr {' '.join(map(str, QUICK_LR_GRID))}")
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON, plot or README block")
    args = p.parse_args(argv)
    rtrl_edge = common.import_library()
    sizes = args.sizes or list(QUICK_SIZES if args.quick else SIZES)
    slax_sizes = list(SLAX_SIZES) if args.slax_sizes is None else args.slax_sizes
    grid = list(QUICK_LR_GRID if args.quick else LR_GRID)
    env = common.environment(rtrl_edge)
    peers = peer_status()
    t0 = time.perf_counter()

    def progress(what):
        print(f"  {what}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    data = load_data(QUICK_SAMPLES if args.quick else None)
    session, X, z, mu, sg = data
    baseline = em.score(em.last_value(z, H), session, mu, sg, "test")
    skipped = [info for fam in (TORCH, SLAX) for ok, info in [peers[fam]] if not ok]
    results, jobs = {}, []
    for n in sizes:
        keys = [c[0] for c in CONTENDERS if c[1] in OURS or peers[c[1]][0]]
        if peers[SLAX][0] and n not in slax_sizes:
            keys.remove("slax RTRL")
            skipped.append(f"skipped: slax RTRL at n={n} (its per-sample cost grows fast "
                           f"with n; --slax-sizes {n} runs it)")
        per_lr, failures = run_grid(keys, n, grid, data, progress)
        skipped += [f"skipped: {key} at n={n}: failed while streaming ({why})"
                    for key, why in failures.items()]
        rows = summarise_size(per_lr, grid)
        results[str(n)] = dict(rows=rows, per_lr=per_lr)
        jobs += [(key, n, r["lr"]) for key, r in rows.items()]
    rss = measure_rss(jobs, X, z)
    for (key, n), m in rss.items():
        results[str(n)]["rows"][key]["rss"] = m
    progress("RSS subprocesses")
    elapsed = time.perf_counter() - t0
    quick_note = ([f"Quick run (`--quick`): the first {QUICK_SAMPLES} samples, learning rates "
                   f"{{{', '.join(f'{g:g}' for g in grid)}}}, n = "
                   f"{', '.join(map(str, sizes))}; indicative numbers only."]
                  if args.quick else [])
    text = "\n\n".join(part for part in
        quick_note + [format_setting(session, grid, elapsed)]
        + [format_size(n, results[str(n)]["rows"], baseline, grid) for n in sizes]
        + [format_targets(sizes, results),
           format_ratios(sizes, results), format_checks(sizes, results, baseline),
           format_memory(sizes, results), format_valid(sizes, results, grid)]
        + (["\n".join(skipped)] if skipped else [])
        + ["Environment: " + format_environment(env, peers)] if part)
    print(text)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_peers", quick=bool(args.quick),
                  command=" ".join([COMMAND, *given]), environment=env,
                  peers={fam: (info if ok else dict(skipped=info))
                         for fam, (ok, info) in peers.items()},
                  setting=dict(session=SESSION, samples=len(session), L=L, n_in=em.DIM * L,
                               n_out=em.DIM, horizon=H, tbptt_window=K, causal=True,
                               delta=True, optimizer="sgd", clip=em.CLIP, seed=SEED,
                               lr_grid=grid, selection="validation nRMSE, targets [300, 600)",
                               test_targets=[em.VALID, len(session)]),
                  baseline={LAST: baseline}, sizes=sizes, results=results, skipped=skipped,
                  elapsed_s=elapsed)
    if not args.no_write:
        common.publish(finite_json(common.to_json(result)), text, JSON_PATH, write_readme,
                       plot=lambda: write_plot(results, sizes, baseline, env),
                       alt="test nRMSE against per-sample latency")
    return result


if __name__ == "__main__":
    main()
