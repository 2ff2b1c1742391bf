"""Every learner x cell actually learns: a memory task and a real recording.

The configurations are those of the shared check suite (``test_checks.BASE``:
rtrl, snap1, snap2 with density 0.25 and dense, uoro, tbptt(5) on the Elman
cell and on the GRU, rtrl on the diag cell), each with adam and with sgd, 16
hidden units, clip = 1.0.  Every number is the mean over model seeds 0, 1, 2 (data fixed).
``python benchmarks/bench_learning.py`` runs the same functions and writes the
table to ``benchmarks/learning.md``.

(a) Memory task: y_t = x_{t-3}, x_t iid uniform on [-1, 1], 1 input, 1 output,
5000 online steps (data seed 1234), mean loss 0.5*(yhat - y)^2 over the last
1000 steps.  The target is independent of the current input, so a net without
recurrence can do no better than 0.5*Var(x) = 1/6 ~ 0.167.  Learning rates:
adam 3e-3 (Elman) and 1e-2 (diag: its decay logits and angles move slowly at
3e-3, 0.06-0.08 after 5000 steps for 3 of 4 seeds, 0.002 after 20000);
sgd 3e-2 (Elman) and 1e-1 (diag).  "untrained": the same model run with
predict() only; "frozen": an rtrl Elman net with W_rec written to zero after
every step (no memory at all).

Measured when written (AVX-512 kernels, the default on the development
machine; mean of seeds 0-2; untrained Elman 0.174, diag 0.260,
snap2-d0.25 0.222; frozen 0.166 with adam, 0.170 with sgd):

    ===================  =======  =======
    configuration         adam      sgd
    ===================  =======  =======
    rtrl-elman            0.0038   0.0026
    snap1-elman           0.0042   0.0061
    snap2-elman-d0.25     0.0031   0.0038
    snap2-elman-dense     0.0038   0.0026
    uoro-elman            0.0328   0.0201
    tbptt5-elman          0.0044   0.0028
    rtrl-diag             0.0080   0.0074
    ===================  =======  =======

The kernels picked by RTRL_EDGE_ISA (base, avx2, avx512) agree to float32
rounding only, and 5000 online steps amplify that: with the portable kernels
uoro/adam gives 0.0445 and the diag cell's worst seed 0.0208 (avx2); the
bounds leave room for that.

Asserted: mean loss < 0.5 x the untrained model's on the same stream; for
every seed, loss / frozen net's < 0.1 for the learners that follow the exact
gradient over the task's 3-step memory on the Elman cell (rtrl, dense snap2,
tbptt(5)), < 0.25 for the diag cell, < 0.5 for the approximations (snap1,
sparse snap2, uoro).  Dense snap2 is exact RTRL, so its loss is within 1 % of
rtrl's.

(b) Respiration: the shipped recording (``load_recording()``, marker xyz in
mm at 10 Hz), forecast 2 samples (200 ms) ahead exactly as ``rtrl-edge demo``
does: ``normalize=True``, learn the displacement x_{t} - x_{t-2} from the
lagged input x_{t-2}, forecast by ``net.forecast`` over the last 2 inputs,
only past data in every forecast.  RMSE (3-D, mm) over the second half of the
stream.  adam lr 3e-3, sgd lr 1e-2.  "untrained": the same model with lr 1e-9
(the normaliser still learns, the weights do not move); "baseline": repeat
the last value, 1.709 mm.

Measured when written (AVX-512 kernels; mean of seeds 0-2, mm; the portable
kernels give e.g. rtrl/adam 1.258, uoro/adam 1.369, diag/adam 1.034):

    ===================  =======  =======  =========
    configuration         adam      sgd    untrained
    ===================  =======  =======  =========
    rtrl-elman            1.246    1.005    2.055
    snap1-elman           1.134    1.013    2.055
    snap2-elman-d0.25     1.144    1.085    2.314
    snap2-elman-dense     1.246    1.005    2.055
    uoro-elman            1.344    1.415    2.055
    tbptt5-elman          1.200    0.989    2.055
    rtrl-diag             0.988    0.937    1.852
    ===================  =======  =======  =========

Asserted: mean RMSE < 0.75 x the untrained model's and < 0.9 x the baseline,
and for every seed below both.

GRU (cell="gru", every learner; the same bounds).  Memory task learning
rates adam 3e-3, sgd 2e-1 (its sigmoid gates, slopes <= 1/4, make the plain
gradient small: at sgd 3e-2 rtrl only reaches 0.113, 0.68 x frozen);
respiration as Elman (adam 3e-3, sgd 1e-2).  Measured when written (AVX2
kernels, AMD EPYC; the portable kernels give the same to 3 digits except
uoro; mean of seeds 0-2; untrained GRU 0.193 on the memory task, 1.991 mm on
the respiration, snap2-gru-d0.25 0.191 and 2.017 mm):

    ===================  ================  ================
                          memory task       respiration, mm
    configuration         adam     sgd      adam     sgd
    ===================  =======  =======  =======  =======
    rtrl-gru              0.0026   0.0050   1.040    1.013
    snap1-gru             0.0051  (0.1415)  0.997    1.065
    snap2-gru-d0.25      (0.0073) (0.0666)  0.975    1.093
    snap2-gru-dense       0.0026   0.0050   1.040    1.013
    uoro-gru             (0.1152) (0.2624) (1.703)  (1.476)
    tbptt5-gru            0.0025   0.0051   1.094    1.039
    ===================  =======  =======  =======  =======

In parentheses: not asserted (``NOT_LEARNT``).  The approximations snap1 and
sparse snap2 do not learn the 3-step memory with sgd (0.91 and 0.63 x the
frozen net for their worst seed, bound 0.5); uoro on the GRU (912 core
parameters against Elman's 288, so a noisier rank-one estimate) learns
neither task (memory 0.77 x frozen with adam; respiration with adam
no better than repeating the last value, 1.703 against 1.709 mm, with sgd
1.476, within 1 % of the 0.75 x untrained bound).  snap2-gru-d0.25 with
adam learns the memory task (0.047 x frozen at worst) but not without the
divergence guard: for seed 0 its sensitivities grow from ~1 to 5e19 over
steps 2,300-3,960 (the SnAp-2 recursion restricted to the mask is unstable
for those weights; the float64 reference, tests/reference_gru.py, grows
alike from the same parameters) and one recovery is taken, which
``memory_loss`` does not allow.  The whole file runs in about 15 s.
"""

import functools

import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import data
from test_checks import BASE

SEEDS = (0, 1, 2)
N_HIDDEN = 16
CLIP = 1.0
OPTIMIZERS = ("adam", "sgd")

# (a) memory task
DELAY = 3
STEPS = 5000
WINDOW = 1000
DATA_SEED = 1234
MEMORY_LR = {("adam", "elman"): 3e-3, ("adam", "diag"): 1e-2, ("adam", "gru"): 3e-3,
             ("sgd", "elman"): 3e-2, ("sgd", "diag"): 1e-1, ("sgd", "gru"): 2e-1}
# Per-seed bound on trained / frozen loss.  Learners that follow the exact
# gradient over the task's 3-step memory on the Elman cell reach ~0.03 (0.1
# asserted); the diag cell (exact traces, but a slower cell to train) ~0.05,
# up to 0.13 for one seed with the AVX2 kernels (0.25 asserted); the
# approximations ~0.02-0.33 (uoro with the portable kernels), 0.5 asserted.
VS_FROZEN = {"rtrl-elman": 0.1, "snap2-elman-dense": 0.1, "tbptt5-elman": 0.1,
             "rtrl-diag": 0.25, "rtrl-gru": 0.1, "snap2-gru-dense": 0.1, "tbptt5-gru": 0.1}
VS_FROZEN_APPROX = 0.5
VS_UNTRAINED = 0.5

# (b) respiration
HORIZON = 2
RESP_LR = {"adam": 3e-3, "sgd": 1e-2}
UNTRAINED_LR = 1e-9
RESP_VS_UNTRAINED = 0.75
RESP_VS_BASELINE = 0.9

CONFIGS = dict(BASE)

# (task, name, optimizer) left out: the GRU configurations that do not learn
# the task at this budget (measured values in the module docstring, "GRU").
NOT_LEARNT = {("memory", "uoro-gru", "adam"), ("memory", "uoro-gru", "sgd"),
              ("memory", "snap1-gru", "sgd"), ("memory", "snap2-gru-d0.25", "sgd"),
              ("memory", "snap2-gru-d0.25", "adam"),
              ("respiration", "uoro-gru", "adam"), ("respiration", "uoro-gru", "sgd")}


def cases(task):
    """(name, optimizer) of every configuration the task is asserted for."""
    return [pytest.param(name, optimizer, id=f"{name}-{optimizer}")
            for optimizer in OPTIMIZERS for name in CONFIGS
            if (task, name, optimizer) not in NOT_LEARNT]


def _cell(kwargs):
    return kwargs.get("cell", "elman")


# ------------------------------------------------------------ (a) memory task


@functools.lru_cache(maxsize=None)
def _delay_line():
    rng = np.random.default_rng(DATA_SEED)
    x = rng.uniform(-1.0, 1.0, STEPS + DELAY).astype(np.float32)
    x.setflags(write=False)
    return x


@functools.lru_cache(maxsize=None)
def memory_loss(name, optimizer, seed, mode="train"):
    """Mean loss over the last WINDOW steps of the delay-line stream.

    mode: "train" (online learning), "untrained" (predict() only, the
    initial weights) or "frozen" (rtrl Elman, W_rec zeroed after every step;
    `name` is ignored)."""
    kwargs = dict(learner="rtrl", cell="elman") if mode == "frozen" else CONFIGS[name]
    lr = MEMORY_LR[(optimizer, _cell(kwargs))]
    net = rtrl_edge.OnlineRNN(1, N_HIDDEN, 1, optimizer=optimizer, lr=lr, clip=CLIP,
                              seed=seed, **kwargs)
    x = _delay_line()
    freeze = mode == "frozen"
    if freeze:
        net.params["W_rec"][...] = 0
    losses = np.empty(STEPS)
    for t in range(STEPS):
        x_t = x[t + DELAY: t + DELAY + 1]
        y_t = x[t: t + 1]                      # the input seen DELAY steps earlier
        yhat = net.predict(x_t) if mode == "untrained" else net.step(x_t, y_t)
        losses[t] = 0.5 * float(yhat[0] - y_t[0]) ** 2
        if freeze:
            net.params["W_rec"][...] = 0
    assert np.all(np.isfinite(losses)), (name, optimizer, seed, mode)
    if mode != "untrained" and ("memory", name, optimizer) not in NOT_LEARNT:
        assert net.stats["updates"] == STEPS
    return float(losses[-WINDOW:].mean())


def memory_summary(name, optimizer):
    """Per-seed losses of the trained, untrained and frozen models."""
    return {mode: [memory_loss(name, optimizer, s, mode) for s in SEEDS]
            for mode in ("train", "untrained", "frozen")}


@pytest.mark.parametrize("name,optimizer", cases("memory"))
def test_memory_task(name, optimizer):
    r = memory_summary(name, optimizer)
    trained, untrained, frozen = (np.array(r[k]) for k in ("train", "untrained", "frozen"))
    report = (f"{name} {optimizer}: trained {np.round(trained, 4)}, untrained "
              f"{np.round(untrained, 4)}, frozen {np.round(frozen, 4)}")
    # the frozen net really is memoryless: about 0.5 * Var(x) = 1/6
    assert np.all((0.14 < frozen) & (frozen < 0.2)), report
    assert trained.mean() < VS_UNTRAINED * untrained.mean(), report
    bound = VS_FROZEN.get(name, VS_FROZEN_APPROX)
    assert np.all(trained < bound * frozen), report


@pytest.mark.parametrize("cell", ["elman", "gru"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_dense_snap2_learns_like_rtrl(optimizer, cell):
    """SnAp-2 with a dense mask is exact RTRL (DESIGN §3.4): same losses
    within 1 % over 5000 online steps."""
    snap2 = np.array(memory_summary(f"snap2-{cell}-dense", optimizer)["train"])
    rtrl = np.array(memory_summary(f"rtrl-{cell}", optimizer)["train"])
    np.testing.assert_allclose(snap2, rtrl, rtol=0.01)


# -------------------------------------------------------------- (b) respiration


@functools.lru_cache(maxsize=None)
def _recording():
    xyz = data.load_recording().xyz.astype(np.float32)
    xyz.setflags(write=False)
    return xyz


def _rmse(a, b):
    return float(np.sqrt(np.mean(np.sum((np.asarray(a, np.float64) - b) ** 2, axis=1))))


@functools.lru_cache(maxsize=None)
def respiration_rmse(name, optimizer, seed, untrained=False):
    """(RMSE of the forecasts over the second half, RMSE of repeat-last-value
    over the same samples), in mm, forecasting HORIZON samples ahead as
    ``rtrl_edge.cli.demo.main`` does."""
    xyz = _recording()
    h, T = HORIZON, len(xyz)
    lr = UNTRAINED_LR if untrained else RESP_LR[optimizer]
    net = rtrl_edge.OnlineRNN(3, N_HIDDEN, 3, optimizer=optimizer, lr=lr, clip=CLIP,
                              normalize=True, seed=seed, **CONFIGS[name])
    n = T - 2 * h                                  # forecasts with a target to score
    forecast = np.empty((n, 3))
    displacement = xyz[h:] - xyz[:-h]
    for t in range(h, T):
        net.step(xyz[t - h], displacement[t - h])  # the target of the forecast made at t-h
        d_hat = net.forecast(xyz[t - h + 1: t + 1])
        if t - h < n:
            forecast[t - h] = xyz[t] + d_hat       # forecast of x_{t+h}, made at t
    truth = xyz[2 * h:].astype(np.float64)
    last = xyz[h: T - h].astype(np.float64)
    second = slice(n // 2, n)
    assert np.all(np.isfinite(forecast)), (name, optimizer, seed)
    assert net.stats["divergence_recoveries"] == 0, (name, optimizer, seed)
    return _rmse(forecast[second], truth[second]), _rmse(last[second], truth[second])


def respiration_summary(name, optimizer):
    trained = [respiration_rmse(name, optimizer, s) for s in SEEDS]
    untrained = [respiration_rmse(name, optimizer, s, untrained=True)[0] for s in SEEDS]
    return {"train": [r for r, _ in trained], "untrained": untrained,
            "baseline": trained[0][1]}


@pytest.mark.parametrize("name,optimizer", cases("respiration"))
def test_respiration_forecast(name, optimizer):
    r = respiration_summary(name, optimizer)
    trained, untrained, baseline = np.array(r["train"]), np.array(r["untrained"]), r["baseline"]
    report = (f"{name} {optimizer}: RMSE {np.round(trained, 3)} mm, untrained "
              f"{np.round(untrained, 3)}, baseline {baseline:.3f}")
    assert 1.6 < baseline < 1.8, report        # the recording and the scoring are as recorded
    assert trained.mean() < RESP_VS_UNTRAINED * untrained.mean(), report
    assert trained.mean() < RESP_VS_BASELINE * baseline, report
    assert np.all(trained < untrained) and np.all(trained < baseline), report
