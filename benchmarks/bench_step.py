"""Per-step latency and memory of exact RTRL, against references measured in
the same run (DESIGN §4).

For each hidden size n (n_in = 8, n_out = 1) three things are timed, one call
at a time with ``time.perf_counter_ns``, data built outside the timer, after a
warm-up, interleaved in rounds so that machine noise hits all three alike:

(a) ``rtrl_edge.OnlineRNN(8, n, 1, learner="rtrl", optimizer="sgd").step(x, y)``
    -- one full online learning step (forward, sensitivities, gradient, SGD);
(b) ``NumpyRTRL.step(x, y)`` -- the same maths (DESIGN §3.1-3.2) in numpy
    float32, written the way a competent numpy user would: preallocated
    buffers, ``out=`` everywhere, BLAS for the n^4 product and one matmul for
    the gradient contraction.  Before it is timed it is checked against the
    library: same initial parameters, 50 identical steps, predictions within
    rtol 1e-3 (and parameter updates and sensitivities too), else we raise;
(c) the roofline: ``np.matmul(W_rec, P2d, out=out)`` for the same shapes,
    (n x n) @ (n x n*K), K = n + 9, float32, one thread.

BLAS is forced to one thread (single-thread roofline): the variables below
are set before numpy is imported, and recorded in the output.

    python benchmarks/bench_step.py            # full run, writes results
    python benchmarks/bench_step.py --quick --no-write --sizes 4 8

This is a benchmark, not a test: nothing here asserts on timing.  The targets
are reported as met or missed.
"""
import os
import sys

# Must happen before numpy (and its BLAS) is loaded.  Forced, not defaulted:
# the roofline is a single-thread one whatever the caller's environment says.
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_NUMPY_ALREADY_IMPORTED = "numpy" in sys.modules
for _var in _THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
JSON_PATH = os.path.join(RESULTS_DIR, "bench_step.json")
PNG_PATH = os.path.join(RESULTS_DIR, "bench_step.png")
README_PATH = os.path.join(HERE, "README.md")
BEGIN, END = "<!-- bench_step:begin -->", "<!-- bench_step:end -->"

N_IN, N_OUT, LR = 8, 1, 1e-3
DEFAULT_SIZES = (8, 16, 32, 64)
CHECK_STEPS = 50
CHECK_RTOL = 1e-3
# Targets (met / missed), by hidden size.
TARGETS = (
    dict(n=8, metric="speedup_median", threshold=15.0,
         text="n=8: speed-up over numpy >= 15x"),
    dict(n=32, metric="speedup_median", threshold=1.5,
         text="n=32: speed-up over numpy >= 1.5x"),
    dict(n=64, metric="sens_over_matmul", threshold=0.60,
         text="n=64: sensitivity GFLOP/s >= 60% of matmul"),
    dict(n=64, metric="peak_fraction", threshold=0.75,
         text="n=64: the whole step runs the n^4 term's flops at >= 75% of the core's "
              "FMA peak"),
)
THREADS_TARGET = dict(n=64, threads=2, threshold=1.6,
                      text="n=64: threads=2 at least 1.6x faster per step than threads=1")
HANDOFF_N = 2        # a model this small is all hand-off: its threads=k step less
                     # its threads=1 step is what the pool costs per step

README_INTRO = """\
# Benchmarks

Benchmarks sit outside the test run; they build their data outside the timer
and report medians and percentiles, not single runs.

## `bench_step.py` -- per-step latency and memory of exact RTRL

Per hidden size n (n_in = 8, n_out = 1), timed one call at a time with
`time.perf_counter_ns` after a warm-up, the three interleaved in rounds so that
machine noise hits all alike, BLAS forced to one thread:

- **library**: `rtrl_edge.OnlineRNN(8, n, 1, learner="rtrl", optimizer="sgd").step(x, y)`,
  a full online learning step;
- **numpy**: `NumpyRTRL` in the benchmark file, the same maths in numpy float32
  written as a competent numpy user would (preallocated buffers, `out=`, BLAS
  for the n^4 product).  It is checked against the library before it is timed
  (same initial parameters, 50 identical steps, predictions within rtol 1e-3);
- **matmul**: `np.matmul(W_rec, P2d, out=out)`, (n x n) @ (n x n(n+9)), the
  roofline for the n^4 term of the sensitivity update.

Sensitivity GFLOP/s of the library is counted conservatively as 2 n^3 (n+9)
divided by the median time of the *whole* step.  Memory is `net.memory_bytes`
against the sum of the numpy reference's arrays (`nbytes`).  "% of FMA peak"
divides it by the core's peak single-precision multiply-add rate, measured in
the same run by a loop of independent FMA chains on registers alone
(`rtrl_edge._kernels.fma_peak`).

`threads=k`: the same step of models built with `threads=1` and `threads=k`
(k = 2, and the CPU count if larger; `--threads`), fed the same inputs,
interleaved in blocks of consecutive steps as a stream would run them; the
models must end bit-identical.  The pool's hand-off cost is the median step
of an n = 2 model (nothing to split) with k threads less that with one.

Regenerate (seconds on a desktop CPU, a few minutes on a Pi; writes
`results/bench_step.json`, `results/bench_step.png` if matplotlib is installed,
and the block below; `--help` for the options), from the repository root:

    pip install ".[bench]" && python benchmarks/bench_step.py

"""


# --------------------------------------------------------------------------
# the numpy reference
# --------------------------------------------------------------------------

class NumpyRTRL:
    """Exact RTRL for the Elman cell in numpy float32, with online SGD.

    The same maths as ``OnlineRNN(learner="rtrl", optimizer="sgd")``
    (DESIGN §3.1-3.2; Williams & Zipser 1989), with ``W = [W_rec | W_in | b]``
    of shape (n, K), K = n + m + 1::

        z = [h; x; 1],  a = W z,  h = tanh(a),  yhat = W_out h + b_out
        e = yhat - y,   c = W_out^T e
        P_new[k,i,j] = (1 - h[k]^2) (sum_l W_rec[k,l] P[l,i,j] + delta_ki z[j])
        grad_W[i,j] = sum_k c[k] P_new[k,i,j],  grad_W_out = e h^T,  grad_b_out = e
        theta -= lr * grad

    P is held as a 2-D (n, n*K) array so that the recursion is one BLAS call;
    since matmul cannot work in place there are two of them, swapped each
    step.  Every buffer is allocated here; ``step`` allocates only the
    returned prediction (as the library does).
    """

    def __init__(self, n_in, n_hidden, n_out, lr=LR):
        n, m, o = n_hidden, n_in, n_out
        K = n + m + 1
        f32 = np.float32
        self.n, self.m, self.o, self.K, self.lr = n, m, o, K, float(lr)
        self.W = np.zeros((n, K), f32)            # [W_rec | W_in | b]
        self.W_out = np.zeros((o, n), f32)
        self.b_out = np.zeros(o, f32)
        self.z = np.zeros(K, f32)
        self.z[-1] = 1.0
        self.a = np.zeros(n, f32)
        self.h = np.zeros(n, f32)
        self.dphi = np.zeros(n, f32)
        self.c = np.zeros(n, f32)
        self.yhat = np.zeros(o, f32)
        self.e = np.zeros(o, f32)
        self.P = np.zeros((n, n * K), f32)        # P[k, i*K + j] = dh[k]/dW[i, j]
        self.P_next = np.zeros((n, n * K), f32)
        self.gW = np.zeros((n, K), f32)
        self.gW_out = np.zeros((o, n), f32)
        self.gb_out = np.zeros(o, f32)
        self._owned = [v for v in vars(self).values() if isinstance(v, np.ndarray)]
        # views, made once
        self.W_rec = self.W[:, :n]                # strided; BLAS takes it as is
        self.z_h = self.z[:n]
        self.z_x = self.z[n:n + m]
        self.dphi_col = self.dphi[:, None]
        self.e_col = self.e[:, None]
        self.gW_flat = self.gW.reshape(-1)
        # the delta_ki z[j] term: elements P[k, k*K + j], a strided (n, K) view
        self.diag = self._diagonal(self.P)
        self.diag_next = self._diagonal(self.P_next)

    def _diagonal(self, P2d):
        n, K = self.n, self.K
        step = P2d.strides[0] + K * P2d.itemsize
        return np.lib.stride_tricks.as_strided(P2d, shape=(n, K),
                                               strides=(step, P2d.itemsize))

    @classmethod
    def from_params(cls, params, lr=LR):
        """A reference starting from a copy of ``OnlineRNN.params``."""
        n, m = params["W_in"].shape
        o = params["W_out"].shape[0]
        ref = cls(m, n, o, lr)
        ref.W[:, :n] = params["W_rec"]
        ref.W[:, n:n + m] = params["W_in"]
        ref.W[:, n + m] = params["b"]
        ref.W_out[...] = params["W_out"]
        ref.b_out[...] = params["b_out"]
        return ref

    def params(self):
        """Copies of the parameters, float64, named as in ``OnlineRNN.params``."""
        n, m = self.n, self.m
        views = dict(W_in=self.W[:, n:n + m], W_rec=self.W[:, :n], b=self.W[:, n + m],
                     W_out=self.W_out, b_out=self.b_out)
        return {k: v.astype(np.float64) for k, v in views.items()}

    @property
    def nbytes(self):
        """Bytes of every array this reference owns (views not counted twice)."""
        return int(sum(a.nbytes for a in self._owned))

    @property
    def sensitivities(self):
        """P as (n, n, K): P[k, i, j] = dh[k]/dW[i, j]."""
        return self.P.reshape(self.n, self.n, self.K)

    def step(self, x, y):
        """Predict from x (float32, (m,)), learn from y (float32, (o,)).
        Returns the prediction made before learning, a new array."""
        np.copyto(self.z_h, self.h)
        np.copyto(self.z_x, x)
        np.matmul(self.W, self.z, out=self.a)
        np.tanh(self.a, out=self.h)
        np.matmul(self.W_out, self.h, out=self.yhat)
        np.add(self.yhat, self.b_out, out=self.yhat)
        pred = self.yhat.copy()
        np.subtract(self.yhat, y, out=self.e)
        np.matmul(self.e, self.W_out, out=self.c)            # c = W_out^T e
        np.multiply(self.h, self.h, out=self.dphi)
        np.subtract(1.0, self.dphi, out=self.dphi)           # tanh' = 1 - h^2
        # sensitivities: P_next = dphi * (W_rec @ P + delta z)
        np.matmul(self.W_rec, self.P, out=self.P_next)
        np.add(self.diag_next, self.z, out=self.diag_next)
        np.multiply(self.P_next, self.dphi_col, out=self.P_next)
        np.matmul(self.c, self.P_next, out=self.gW_flat)     # grad W = c^T P
        self.P, self.P_next = self.P_next, self.P
        self.diag, self.diag_next = self.diag_next, self.diag
        np.multiply(self.e_col, self.h, out=self.gW_out)     # grad W_out = e h^T
        # SGD (grad b_out = e)
        np.multiply(self.gW, self.lr, out=self.gW)
        np.subtract(self.W, self.gW, out=self.W)
        np.multiply(self.gW_out, self.lr, out=self.gW_out)
        np.subtract(self.W_out, self.gW_out, out=self.W_out)
        np.multiply(self.e, self.lr, out=self.gb_out)
        np.subtract(self.b_out, self.gb_out, out=self.b_out)
        return pred


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def make_data(steps, seed):
    """Inputs and targets, built outside the timer: lists of row views."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((steps, N_IN)).astype(np.float32)
    t = np.arange(steps, dtype=np.float64)
    ys = (0.5 * np.sin(0.07 * t) + 0.1 * rng.standard_normal(steps))
    ys = ys.astype(np.float32).reshape(steps, N_OUT)
    return list(xs), list(ys)


def check_reference(rtrl_edge, n, seed):
    """Run the library and NumpyRTRL side by side from the same parameters.

    Raises RuntimeError unless the predictions agree to rtol 1e-3 (atol 1e-6)
    over CHECK_STEPS steps.  The parameter updates and the sensitivities are
    compared too, since predictions alone barely see a gradient at lr = 1e-3.
    """
    net = rtrl_edge.OnlineRNN(N_IN, n, N_OUT, learner="rtrl", optimizer="sgd",
                              lr=LR, seed=seed)
    ref = NumpyRTRL.from_params(net.params, LR)
    start = {k: np.array(v, dtype=np.float64) for k, v in net.params.items()}
    xs, ys = make_data(CHECK_STEPS, seed + 1000)
    lib_pred = np.array([net.step(x, y) for x, y in zip(xs, ys)], dtype=np.float64)
    ref_pred = np.array([ref.step(x, y) for x, y in zip(xs, ys)], dtype=np.float64)
    pred_err = np.abs(lib_pred - ref_pred) / (np.abs(lib_pred) + 1e-3)
    pred_ok = bool(np.allclose(ref_pred, lib_pred, rtol=CHECK_RTOL, atol=1e-6))

    ref_params = ref.params()
    upd_err = 0.0
    for k, v in net.params.items():
        d_lib = np.asarray(v, np.float64) - start[k]
        d_ref = ref_params[k] - start[k]
        scale = max(np.abs(d_lib).max(), 1e-30)
        upd_err = max(upd_err, float(np.abs(d_lib - d_ref).max() / scale))
    P_lib = np.asarray(net.snapshot()["P"], np.float64)
    P_ref = ref.sensitivities.astype(np.float64)
    P_err = float(np.abs(P_lib - P_ref).max() / max(np.abs(P_lib).max(), 1e-30))
    result = dict(steps=CHECK_STEPS, rtol=CHECK_RTOL,
                  max_rel_pred_err=float(pred_err.max()),
                  max_rel_update_err=upd_err, max_rel_P_err=P_err,
                  passed=bool(pred_ok and upd_err < 1e-2 and P_err < 1e-3))
    if not result["passed"]:
        raise RuntimeError(
            f"NumpyRTRL does not compute what OnlineRNN computes at n={n}: "
            f"prediction rel. error {result['max_rel_pred_err']:.2e} (rtol {CHECK_RTOL}), "
            f"update rel. error {upd_err:.2e} (< 1e-2), P rel. error {P_err:.2e} (< 1e-3)")
    return result


def time_calls(fn, args_a, args_b, start, count, out, pos):
    """Time fn(args_a[i], args_b[i]) for i in [start, start+count), one call
    at a time; write the ns into out[pos:pos+count]."""
    pc = time.perf_counter_ns
    for i in range(start, start + count):
        a = args_a[i]
        b = args_b[i]
        t0 = pc()
        fn(a, b)
        t1 = pc()
        out[pos] = t1 - t0
        pos += 1
    return pos


def timer_overhead_ns(samples=20000):
    pc = time.perf_counter_ns
    d = np.empty(samples, np.int64)
    for i in range(samples):
        t0 = pc()
        t1 = pc()
        d[i] = t1 - t0
    return float(np.median(d))


def summarize(ns):
    us = np.asarray(ns, np.float64) / 1e3
    p = np.percentile(us, [1, 10, 50, 90, 99])
    return dict(samples=int(us.size), min_us=float(us.min()), p1_us=float(p[0]),
                p10_us=float(p[1]), median_us=float(p[2]), p90_us=float(p[3]),
                p99_us=float(p[4]), max_us=float(us.max()), mean_us=float(us.mean()))


def default_reps(n, quick):
    """Timed calls per method: 20,000 at n = 8 down to 2,500 at n = 64 (so that
    p99 rests on at least 25 samples above it), 200 with --quick."""
    if quick:
        return 200
    return int(min(20000, max(1000, 160000 // max(n, 1))))


def bench_size(rtrl_edge, n, *, quick, rounds, seed, reps=None):
    """Measure (a), (b), (c) at one hidden size; returns a row dict."""
    K = n + N_IN + 1
    reps = reps or default_reps(n, quick)
    block = int(math.ceil(reps / rounds))
    reps = block * rounds
    warm = 20 if quick else max(50, reps // 10)

    check = check_reference(rtrl_edge, n, seed)

    net = rtrl_edge.OnlineRNN(N_IN, n, N_OUT, learner="rtrl", optimizer="sgd",
                              lr=LR, seed=seed)
    ref = NumpyRTRL.from_params(net.params, LR)
    rng = np.random.default_rng(seed + 1)
    W_rec = np.ascontiguousarray(net.params["W_rec"], dtype=np.float32)
    P2d = (0.1 * rng.standard_normal((n, n * K))).astype(np.float32)
    mm_out = np.empty_like(P2d)
    xs, ys = make_data(warm + reps, seed + 2)

    def matmul_call(w, p, _out=mm_out, _mm=np.matmul):
        _mm(w, p, out=_out)

    mm_w = [W_rec] * (warm + reps)
    mm_p = [P2d] * (warm + reps)
    methods = {
        "library": (net.step, xs, ys),
        "numpy": (ref.step, xs, ys),
        "matmul": (matmul_call, mm_w, mm_p),
    }
    names = list(methods)
    samples = {k: np.zeros(reps, np.int64) for k in names}
    pos = {k: 0 for k in names}
    next_input = {k: 0 for k in names}

    for k in names:                                   # warm-up
        fn, a, b = methods[k]
        time_calls(fn, a, b, 0, warm, np.zeros(warm, np.int64), 0)
        next_input[k] = warm

    round_medians = {k: [] for k in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % 3:] + names[:r % 3]     # rotate who goes first
            for k in order:
                fn, a, b = methods[k]
                p0 = pos[k]
                pos[k] = time_calls(fn, a, b, next_input[k], block, samples[k], p0)
                next_input[k] += block
                round_medians[k].append(float(np.median(samples[k][p0:pos[k]])) / 1e3)
    finally:
        if gc_was_enabled:
            gc.enable()

    stats = {k: summarize(samples[k]) for k in names}
    flops = 2.0 * n * n * n * K
    lib_med = stats["library"]["median_us"]
    np_med = stats["numpy"]["median_us"]
    mm_med = stats["matmul"]["median_us"]
    mm_gflops = flops / (mm_med * 1e3)
    sens_gflops = flops / (lib_med * 1e3)
    round_speedups = [b / a for a, b in zip(round_medians["library"], round_medians["numpy"])]
    tiny = np.finfo(np.float32).tiny
    P = ref.P
    denormals = int(np.count_nonzero((P != 0) & (np.abs(P) < tiny)))
    return dict(
        n_hidden=n, n_in=N_IN, n_out=N_OUT, K=K, steps_per_method=reps,
        warmup_steps=warm, rounds=rounds, flops_per_step_sensitivity=flops,
        library=stats["library"], numpy=stats["numpy"], matmul=stats["matmul"],
        round_medians_us=round_medians,
        speedup_median=np_med / lib_med,
        speedup_per_round_min=min(round_speedups),
        speedup_per_round_max=max(round_speedups),
        matmul_gflops=mm_gflops,
        library_sensitivity_gflops=sens_gflops,
        sens_over_matmul=sens_gflops / mm_gflops,
        numpy_over_matmul_gflops=(flops / (np_med * 1e3)) / mm_gflops,
        library_memory_bytes=int(net.memory_bytes),
        numpy_memory_bytes=ref.nbytes,
        library_stats=net.stats,
        numpy_P_denormals=denormals,
        reference_check=check,
    )


def measure_peak(rtrl_edge, isas, *, quick, repeats=7):
    """The core's peak multiply-add rate per instruction set, GFLOP/s:
    `_kernels.fma_peak`'s register-only chains (no memory traffic), each
    run about 50 ms (5 with --quick), the median of `repeats` interleaved
    runs.  Measured in the same run as the steps it is compared with."""
    rounds = 200_000 if quick else 2_000_000
    got = {isa: [] for isa in isas}
    for r in range(repeats):
        for isa in isas[r % len(isas):] + isas[:r % len(isas)]:
            flops, seconds, _ = rtrl_edge._kernels.fma_peak(isa, rounds)
            got[isa].append(flops / seconds / 1e9)
    return {isa: float(np.median(v)) for isa, v in got.items()}


def available_isas(rtrl_edge):
    """Instruction sets of the sensitivity product this CPU and build offer."""
    found = []
    saved = os.environ.get("RTRL_EDGE_ISA")
    try:
        for isa in ("base", "avx2", "avx512"):
            os.environ["RTRL_EDGE_ISA"] = isa
            try:
                rtrl_edge.OnlineRNN(1, 1, 1)
            except ValueError:
                continue
            found.append(isa)
    finally:
        if saved is None:
            os.environ.pop("RTRL_EDGE_ISA", None)
        else:
            os.environ["RTRL_EDGE_ISA"] = saved
    return found


def bench_isa(rtrl_edge, sizes, *, quick, rounds, seed):
    """Before and after vectorising the product: the same library step with
    the portable 4-wide product ("base", what an SSE2 or NEON build runs) and
    with each wider one this CPU has, interleaved in rounds."""
    isas = available_isas(rtrl_edge)
    rows = []
    for n in sizes:
        reps = 50 if quick else int(min(4000, max(300, 40000 // n)))
        block = int(math.ceil(reps / rounds))
        xs, ys = make_data(block * rounds + 20, seed + 3)
        nets = {}
        for isa in isas:
            os.environ["RTRL_EDGE_ISA"] = isa
            try:
                nets[isa] = rtrl_edge.OnlineRNN(N_IN, n, N_OUT, optimizer="sgd", lr=LR,
                                                seed=seed)
            finally:
                os.environ.pop("RTRL_EDGE_ISA", None)
            time_calls(nets[isa].step, xs, ys, 0, 20, np.zeros(20, np.int64), 0)
        samples = {isa: np.zeros(block * rounds, np.int64) for isa in isas}
        for r in range(rounds):
            for isa in isas[r % len(isas):] + isas[:r % len(isas)]:
                time_calls(nets[isa].step, xs, ys, 20 + r * block, block, samples[isa],
                           r * block)
        flops = 2.0 * n ** 3 * (n + N_IN + 1)
        med = {isa: float(np.median(samples[isa])) / 1e3 for isa in isas}
        rows.append(dict(n_hidden=n, median_us=med,
                         p99_us={isa: float(np.percentile(samples[isa], 99)) / 1e3
                                 for isa in isas},
                         gflops={isa: flops / (med[isa] * 1e3) for isa in isas}))
    return dict(isas=isas, rows=rows)


def bench_threads(rtrl_edge, sizes, counts, *, quick, rounds, seed):
    """The same exact-RTRL step with threads=1 and each k in `counts`,
    interleaved in rounds (blocks of consecutive steps, as a stream runs
    them), fed the same inputs; the models must end bit-identical.  A model
    of n = HANDOFF_N measures what the pool's hand-off costs per step."""
    counts = sorted(set([1, *counts]))
    rows = []
    for n in [HANDOFF_N, *sizes]:
        reps = 60 if quick else int(min(6000, max(400, 80000 // n)))
        block = int(math.ceil(reps / rounds))
        warm = 20
        xs, ys = make_data(warm + block * rounds, seed + 4)
        nets = {k: rtrl_edge.OnlineRNN(N_IN, n, N_OUT, optimizer="sgd", lr=LR, seed=seed,
                                       threads=k) for k in counts}
        for k in counts:
            time_calls(nets[k].step, xs, ys, 0, warm, np.zeros(warm, np.int64), 0)
        samples = {k: np.zeros(block * rounds, np.int64) for k in counts}
        for r in range(rounds):
            for k in counts[r % len(counts):] + counts[:r % len(counts)]:
                time_calls(nets[k].step, xs, ys, warm + r * block, block, samples[k],
                           r * block)
        same = all(np.array_equal(nets[k].params[name], nets[1].params[name])
                   for k in counts for name in nets[1].params)
        med = {k: float(np.median(samples[k])) / 1e3 for k in counts}
        rows.append(dict(n_hidden=n, median_us=med,
                         p99_us={k: float(np.percentile(samples[k], 99)) / 1e3
                                 for k in counts},
                         speedup={k: med[1] / med[k] for k in counts},
                         identical_to_one_thread=bool(same)))
    handoff = {k: rows[0]["median_us"][k] - rows[0]["median_us"][1] for k in counts if k > 1}
    by_n = {r["n_hidden"]: r for r in rows[1:]}
    t = THREADS_TARGET
    row = by_n.get(t["n"])
    value = None if row is None or t["threads"] not in row["speedup"] else \
        row["speedup"][t["threads"]]
    status = "not measured" if value is None else "met" if value >= t["threshold"] \
        else "missed"
    return dict(counts=counts, rows=rows[1:], handoff_us=handoff, handoff_n=HANDOFF_N,
                target=dict(t, value=value, status=status))


def format_threads(res):
    counts = res["counts"]
    head = ("| n | " + " | ".join(f"threads={k} median / p99 µs" for k in counts)
            + " | " + " | ".join(f"speed-up x{k}" for k in counts if k > 1)
            + " | bit-identical |")
    lines = [head, "|" + "---|" * (2 * len(counts) + 1)]
    for r in res["rows"]:
        lines.append(
            f"| {r['n_hidden']} | "
            + " | ".join(f"{r['median_us'][k]:.1f} / {r['p99_us'][k]:.1f}" for k in counts)
            + " | " + " | ".join(f"{r['speedup'][k]:.2f}x" for k in counts if k > 1)
            + f" | {'yes' if r['identical_to_one_thread'] else 'NO'} |")
    t = res["target"]
    shown = "not measured" if t["value"] is None else f"{t['value']:.2f}x"
    mark = {"met": "met", "missed": "MISSED"}.get(t["status"], t["status"])
    lines += ["", f"- {t['text']}: {shown} -- **{mark}**",
              "- the pool's hand-off, per step (median step of an n = "
              f"{res['handoff_n']} model with threads=k less with threads=1): "
              + ", ".join(f"k={k}: {v:.1f} µs" for k, v in res["handoff_us"].items())]
    return "\n".join(lines)


def format_isa(isa_result, peak=None):
    isas = isa_result["isas"]
    peak = peak or {}
    head = ("| n | " + " | ".join(f"{i} median µs (GFLOP/s{', % of peak' if i in peak else ''})"
                                  for i in isas) + " | widest / base |")
    lines = [head, "|" + "---|" * (len(isas) + 2)]
    for r in isa_result["rows"]:
        cells = [f"{r['median_us'][i]:.2f} ({r['gflops'][i]:.0f}"
                 + (f", {100 * r['gflops'][i] / peak[i]:.0f} %" if i in peak else "") + ")"
                 for i in isas]
        ratio = r["median_us"][isas[0]] / r["median_us"][isas[-1]]
        lines.append(f"| {r['n_hidden']} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def blas_info():
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return {k: blas.get(k) for k in ("name", "version", "openblas configuration")
                if blas.get(k) is not None}
    except Exception as exc:  # numpy < 1.26 or an unusual build
        return {"name": None, "error": f"{type(exc).__name__}: {exc}"}


def threadpool_info():
    try:
        from threadpoolctl import threadpool_info as info
    except ImportError:
        return "threadpoolctl not installed"
    return [{k: d.get(k) for k in ("internal_api", "version", "num_threads",
                                   "architecture", "threading_layer")} for d in info()]


def git_revision():
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--",
                                "rtrl_edge", "setup.py"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else None
    except Exception:
        return None


def kernels_build(rtrl_edge):
    """File name and sha256 prefix of the compiled kernels that were measured."""
    path = getattr(rtrl_edge._kernels, "__file__", None)
    try:
        import hashlib
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        return f"{os.path.basename(path)} sha256:{digest}"
    except (OSError, TypeError):
        return path


def environment(rtrl_edge):
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cpu_model=cpu_model(), cpu_count=os.cpu_count(),
        platform=platform.platform(), machine=platform.machine(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        numpy=np.__version__, blas=blas_info(), threadpools=threadpool_info(),
        thread_env={v: os.environ.get(v) for v in _THREAD_VARS},
        numpy_imported_before_thread_env=_NUMPY_ALREADY_IMPORTED,
        openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"),
        openblas_l2_size=os.environ.get("OPENBLAS_L2_SIZE"),
        rtrl_edge=getattr(rtrl_edge, "__version__", None),
        git=git_revision(), kernels_build=kernels_build(rtrl_edge),
        product_isa=rtrl_edge._kernels.product_isa(),
        timer_resolution_ns=time.get_clock_info("perf_counter").resolution * 1e9,
        timer_overhead_ns_median=timer_overhead_ns(),
    )


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def evaluate_targets(rows):
    by_n = {r["n_hidden"]: r for r in rows}
    out = []
    for t in TARGETS:
        row = by_n.get(t["n"])
        value = None if row is None else float(row[t["metric"]])
        status = ("not measured" if value is None
                  else "met" if value >= t["threshold"] else "missed")
        out.append(dict(t, value=value, status=status))
    return out


def format_table(rows):
    head = ("| n | library median / p99 µs | numpy median / p99 µs | speed-up | "
            "matmul median µs | matmul GFLOP/s | library sens. GFLOP/s | "
            "sens. / matmul | % of FMA peak (median / p1) | library memory | numpy memory |")
    sep = "|" + "---|" * 11
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r['n_hidden']} "
            f"| {r['library']['median_us']:.2f} / {r['library']['p99_us']:.2f} "
            f"| {r['numpy']['median_us']:.2f} / {r['numpy']['p99_us']:.2f} "
            f"| {r['speedup_median']:.2f}x "
            f"| {r['matmul']['median_us']:.2f} "
            f"| {r['matmul_gflops']:.1f} "
            f"| {r['library_sensitivity_gflops']:.1f} "
            f"| {100 * r['sens_over_matmul']:.0f} % "
            f"| {100 * r['peak_fraction']:.0f} % / {100 * r['peak_fraction_p1']:.0f} % "
            f"| {r['library_memory_bytes'] / 1024:.1f} KiB "
            f"| {r['numpy_memory_bytes'] / 1024:.1f} KiB |")
    return "\n".join(lines)


def format_targets(targets):
    lines = []
    for t in targets:
        if t["value"] is None:
            shown = "not measured"
        elif t["metric"] == "speedup_median":
            shown = f"{t['value']:.2f}x"
        else:
            shown = f"{100 * t['value']:.0f} %"
        mark = {"met": "met", "missed": "MISSED"}.get(t["status"], t["status"])
        lines.append(f"- {t['text']}: {shown} -- **{mark}**")
    return "\n".join(lines)


def format_environment(env):
    tp = env["threadpools"]
    tp_s = (", ".join(f"{d['internal_api']} {d['architecture']} x{d['num_threads']}"
                      for d in tp) if isinstance(tp, list) else tp)
    return (f"{env['date']}; {env['cpu_model']} ({env['cpu_count']} CPUs); "
            f"{env['platform']}; {env['python']}; numpy {env['numpy']} with "
            f"{env['blas'].get('name')} {env['blas'].get('version', '')} "
            f"(runtime: {tp_s}); rtrl_edge {env['rtrl_edge']} ({env['git']}), "
            f"sensitivity product: {env['product_isa']}; "
            + ", ".join(f"{k}={v}" for k, v in env["thread_env"].items()))


def readout(result):
    rows = result["rows"]
    spread = ", ".join(
        f"n={r['n_hidden']}: {r['speedup_per_round_min']:.2f}-{r['speedup_per_round_max']:.2f}x"
        for r in rows)
    return "\n".join([
        format_table(rows), "",
        "Targets:", format_targets(result["targets"]), "",
        f"Speed-up = median(numpy) / median(library); per-round spread of that "
        f"ratio within this run: {spread}.",
        "Reference check (50 identical steps from the same parameters, max rel. "
        "error of predictions / updates / P): " + ", ".join(
            f"n={r['n_hidden']}: {r['reference_check']['max_rel_pred_err']:.1e} / "
            f"{r['reference_check']['max_rel_update_err']:.1e} / "
            f"{r['reference_check']['max_rel_P_err']:.1e}" for r in rows) + ".",
        "",
        "% of FMA peak: the n^4 term's flops per second over the step's median (and, "
        "after the slash, over its 1st percentile: the step when the machine leaves it "
        "alone; the target is on the median), against "
        "the core's peak multiply-add rate at the same vector width, measured in this "
        "run by a register-only loop of independent FMA chains (`_kernels.fma_peak`): "
        + ", ".join(f"{isa} {g:.1f} GFLOP/s" for isa, g in result["fma_peak_gflops"].items())
        + ". The matmul column is OpenBLAS's product of the same shapes.",
        "",
        "Before and after vectorising the n^4 product: the library's full step with "
        "the portable 4-wide product (`base`, what an SSE2 or NEON build runs) against "
        "the wider versions this CPU offers (chosen at run time; forced here with "
        "`RTRL_EDGE_ISA`), interleaved in one run; GFLOP/s counted as above:",
        "",
        format_isa(result["product_by_isa"], result["fma_peak_gflops"]),
        "",
        "`threads=k`: the same step with the n^4 term split over k cores by the "
        "model's pool (each k its own model, same inputs, interleaved in blocks of "
        "consecutive steps; the models end bit-identical):",
        "",
        format_threads(result["threads"]),
        "", "Environment: " + format_environment(result["environment"]),
    ])


def write_block(begin, end, text, section=""):
    """Replace the text between the `begin` and `end` markers of
    benchmarks/README.md with `text`; if the markers are not there yet,
    append `section` (a heading and intro) and the marked block."""
    block = f"{begin}\n{text}\n{end}"
    if os.path.exists(README_PATH):
        with open(README_PATH, encoding="utf-8") as f:
            doc = f.read()
    else:
        doc = README_INTRO
    b, e = doc.find(begin), doc.find(end)
    if b != -1 and e > b:
        doc = doc[:b] + block + doc[e + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + block + "\n"
    with open(README_PATH, "w", encoding="utf-8") as f:
        f.write(doc)


def write_readme(text):
    write_block(BEGIN, END, text)


def write_plot(result):
    """µs/step against n_hidden, log-log; returns the path or a note."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = result["rows"]
    ns = np.array([r["n_hidden"] for r in rows], float)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for key, label, style in (("library", "rtrl_edge step (full learning step)", "o-"),
                              ("numpy", "numpy float32 RTRL step (same maths)", "s-"),
                              ("matmul", "np.matmul W_rec @ P only (roofline)", "^--")):
        med = np.array([r[key]["median_us"] for r in rows])
        p99 = np.array([r[key]["p99_us"] for r in rows])
        line, = ax.plot(ns, med, style, label=label)
        ax.fill_between(ns, med, p99, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(int(v)) for v in ns])
    ax.set_xlabel("n_hidden (n_in = 8, n_out = 1)")
    ax.set_ylabel("µs per step (median; band up to p99)")
    env = result["environment"]
    ax.set_title(f"Exact RTRL per-step latency, one thread\n{env['cpu_model']}, "
                 f"{env['date'][:10]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=120)
    plt.close(fig)
    return PNG_PATH


def to_json(obj):
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def import_library():
    """The rtrl_edge package, or exit saying how to build it."""
    try:
        import rtrl_edge
    except ImportError as exc:
        raise SystemExit(f"cannot import rtrl_edge ({exc}); build it in place with "
                         "`python setup.py build_ext --inplace` and set PYTHONPATH")
    return rtrl_edge


def plot_note(png, alt):
    """The README line for a benchmark's plot: the image, or why there is none."""
    if png:
        return f"![{alt}](results/{os.path.basename(png)})"
    return "(No plot: matplotlib is not installed; `pip install matplotlib` and rerun.)"


def publish(result, text, json_path, write_readme, *, plot=None, alt="", compact=False,
            numbers="All numbers"):
    """Write `result` to `json_path` (indented, or `compact`), then the plot
    (`plot()` returns its path, or None without matplotlib), then the README
    block through `write_readme`: the command, `text`, the plot or why there is
    none, and where the numbers are."""
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(to_json(result), f,
                  **(dict(separators=(",", ":")) if compact else dict(indent=2)))
        f.write("\n")
    parts = [f"Latest run: `{result['command']}`", text]
    if plot is not None:
        parts.append(plot_note(plot(), alt))
    write_readme("\n\n".join(parts + [f"{numbers}: `results/{os.path.basename(json_path)}`."]))
    print(f"wrote {json_path} and {README_PATH}", file=sys.stderr)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                   metavar="N", help="hidden sizes (default: 8 16 32 64)")
    p.add_argument("--quick", action="store_true",
                   help="few repetitions: a smoke run, numbers not meaningful")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds (default 5, 2 with --quick)")
    p.add_argument("--reps", type=int, default=None,
                   help="timed calls per method and size (default: 20000 at n=8 "
                        "down to 2500 at n=64; 200 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, nargs="+", default=None, metavar="K",
                   help="thread counts to compare with threads=1 (default: 2, and the "
                        "number of CPUs if more)")
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON, README block or plot")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.sizes):
        p.error("--sizes must be positive integers")
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be >= 1")
    if args.threads is None:
        args.threads = sorted({2, os.cpu_count() or 1} - {1})
    if any(not 1 <= k <= 64 for k in args.threads):
        p.error("--threads must be between 1 and 64")
    return args


def main(argv=None):
    """Run the benchmark; returns the result dict (rows, targets, environment)."""
    args = parse_args(argv)
    rtrl_edge = import_library()
    env = environment(rtrl_edge)
    if _NUMPY_ALREADY_IMPORTED:
        print("note: numpy was imported before this module set the thread variables; "
              "BLAS may not be single-threaded", file=sys.stderr)
    isas = available_isas(rtrl_edge)
    peak = measure_peak(rtrl_edge, isas, quick=args.quick)
    rows = []
    for n in args.sizes:
        t0 = time.perf_counter()
        rows.append(bench_size(rtrl_edge, n, quick=args.quick, rounds=args.rounds,
                               seed=args.seed, reps=args.reps))
        print(f"  n={n}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    # the peak again after the steps, so that a change of clock during the
    # run shows; the higher median of the two is the reference
    after = measure_peak(rtrl_edge, isas, quick=args.quick)
    peak = {isa: max(peak[isa], after[isa]) for isa in isas}
    for row in rows:
        row["peak_fraction"] = row["library_sensitivity_gflops"] / peak[env["product_isa"]]
        # the same at the step's 1st percentile: what the kernel does when the
        # shared machine leaves it alone (the target is on the median)
        row["peak_fraction_p1"] = (row["flops_per_step_sensitivity"]
                                   / (row["library"]["p1_us"] * 1e3)
                                   / peak[env["product_isa"]])
    t0 = time.perf_counter()
    isa = bench_isa(rtrl_edge, [n for n in args.sizes if n >= 16] or args.sizes,
                    quick=args.quick, rounds=args.rounds, seed=args.seed)
    print(f"  product by instruction set: done in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    t0 = time.perf_counter()
    threads = bench_threads(rtrl_edge, [n for n in args.sizes if n >= 16] or args.sizes,
                            args.threads, quick=args.quick, rounds=args.rounds,
                            seed=args.seed)
    print(f"  threads: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_step", quick=bool(args.quick),
                  command=" ".join(["python benchmarks/bench_step.py", *given]),
                  environment=env, rows=rows, targets=evaluate_targets(rows),
                  product_by_isa=isa, fma_peak_gflops=peak, threads=threads)
    text = readout(result)
    print(text)
    if not args.no_write:
        publish(result, text, JSON_PATH, write_readme, plot=lambda: write_plot(result),
                alt="µs per step against n_hidden")
    return result


if __name__ == "__main__":
    main()
