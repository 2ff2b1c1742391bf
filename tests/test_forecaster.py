"""Forecaster: h-step-ahead forecasting on the lagged stream (DESIGN §3.8).

Independent checks of the semantics: a twin OnlineRNN is stepped by hand on
the pairs (x_{t-h}, y_t) and must end up bit-for-bit in the same state as the
Forecaster's network, and every returned forecast must be the twin's forecast
over the last h inputs.  Causality is checked by perturbing the future, and
the ring buffer by identity and allocation tracking.
"""
import tracemalloc

import numpy as np
import pytest

from rtrl_edge import OnlineRNN
from rtrl_edge.forecast import Forecaster

# every learner and cell (snap2 needs a sparse W_rec, tbptt a window)
KINDS = {
    "rtrl": dict(learner="rtrl"),
    "snap1": dict(learner="snap1"),
    "snap2": dict(learner="snap2", rec_density=0.5),
    "uoro": dict(learner="uoro"),
    "tbptt": dict(learner="tbptt", window=4),
    "diag": dict(cell="diag"),
}

N_IN, N_HID, N_OUT = 3, 6, 2


def make_net(kind="rtrl", normalize=False, **kw):
    cfg = dict(optimizer="sgd", lr=0.05, clip=None, seed=7, normalize=normalize)
    cfg.update(KINDS[kind])
    cfg.update(kw)
    return OnlineRNN(N_IN, N_HID, N_OUT, **cfg)


def stream(T, seed=0):
    """Inputs (T, 3) whose first two channels are the targets (T, 2)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    xs = np.stack([np.sin(0.3 * t), np.cos(0.17 * t), 0.5 * np.sin(0.05 * t)], axis=1)
    xs = xs + 0.05 * rng.standard_normal(xs.shape)
    return xs, xs[:, :N_OUT].copy()


def same_state(a, b):
    """Names of the snapshot arrays that differ (empty: identical state)."""
    sa, sb = a.snapshot(), b.snapshot()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not np.array_equal(sa[k], sb[k])]


# -- the lagged-stream semantics, against a twin stepped by hand ----------------

@pytest.mark.parametrize("delta", [False, True], ids=["level", "delta"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_learns_exactly_the_lagged_pairs_and_forecasts_from_the_last_h_inputs(kind, delta):
    h, T = 4, 40
    xs, ys = stream(T)
    net, twin = make_net(kind, normalize=delta), make_net(kind, normalize=delta)
    assert not same_state(net, twin)
    fc = Forecaster(net, h, delta=delta)
    no_target = {9, 23}                       # samples whose target is not known
    for t in range(T):
        y = None if t in no_target else ys[t]
        got = fc.update(xs[t], y)
        # by hand: at time t the pair (x_{t-h}, y_t) is learnt (t >= h) ...
        if t >= h:
            if y is None:
                twin.step(xs[t - h])
            else:
                # delta: the change over the horizon, in the network's float32
                f32 = np.float32
                twin.step(xs[t - h], y.astype(f32) - xs[t - h][:N_OUT].astype(f32)
                          if delta else y)
        assert same_state(net, twin) == [], (kind, t)
        # ... and the forecast of y_{t+h} runs a copy of the state over x_{t-h+1..t}
        want = twin.forecast(xs[max(0, t - h + 1):t + 1])
        assert got.shape == (N_OUT,)
        if delta:
            # the level is added back as the float32 input the network took
            # (to float32 rounding of x_t)
            np.testing.assert_allclose(got, want + xs[t][:N_OUT], rtol=0, atol=1e-6,
                                       err_msg=f"{kind} t={t}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{kind} t={t}")
    learned = sum(1 for t in range(h, T) if t not in no_target)
    assert net.stats["updates"] == learned
    assert fc.stats == dict(samples=T, learned=learned, resets=0)


def test_the_forecast_and_the_twin_really_learn():
    """The twin check is not vacuous: learning moves the parameters and a
    forecast made from a state run over other inputs differs."""
    xs, ys = stream(60)
    net = make_net()
    before = net.snapshot()["theta"]
    fc = Forecaster(net, 3)
    outs = [fc.update(x, y) for x, y in zip(xs, ys)]
    assert not np.array_equal(before, net.snapshot()["theta"])
    assert not np.array_equal(outs[-1], net.forecast(xs[-2:]))      # h-1 inputs: another value


@pytest.mark.parametrize("kind", ["rtrl", "uoro", "tbptt"])
def test_no_forecast_uses_data_from_after_its_time(kind):
    h, T, k = 5, 60, 37
    xs, ys = stream(T, seed=1)

    def run(xs, ys):
        fc = Forecaster(make_net(kind, normalize=True), h, delta=True)
        return np.array([fc.update(x, y) for x, y in zip(xs, ys)])

    ref = run(xs, ys)
    # the future changes (inputs and targets from time k on) ...
    xs2, ys2 = xs.copy(), ys.copy()
    xs2[k:] += 3.0
    ys2[k:] -= 2.0
    got = run(xs2, ys2)
    # ... the forecasts made before k do not
    np.testing.assert_array_equal(got[:k], ref[:k])
    assert not np.array_equal(got[k], ref[k])        # the one made at k sees x_k
    # a target that arrives at k is learnt at k: earlier forecasts are untouched
    ys3 = ys.copy()
    ys3[k] += 5.0
    got = run(xs, ys3)
    np.testing.assert_array_equal(got[:k], ref[:k])
    assert not np.array_equal(got[k], ref[k])


# -- reset, persistence ----------------------------------------------------------

def test_reset_forgets_the_window_and_state_keeps_the_parameters():
    h = 3
    xs, ys = stream(30)
    net = make_net()
    fc = Forecaster(net, h)
    for t in range(20):
        fc.update(xs[t], ys[t])
    theta = net.snapshot()["theta"].copy()
    updates = net.stats["updates"]
    assert np.any(net.snapshot()["h"] != 0)
    fc.reset()
    assert fc.stats["resets"] == 1
    assert np.array_equal(net.snapshot()["theta"], theta)     # parameters kept
    assert np.all(net.snapshot()["h"] == 0)                    # state forgotten
    # the next h samples start a new window: nothing learnt until h inputs are back
    for i, t in enumerate(range(20, 20 + h)):
        f = fc.update(xs[t], ys[t])
        assert net.stats["updates"] == updates
        # the forecast is made from the zero state over the inputs since the reset only
        assert np.all(net.snapshot()["h"] == 0)
        np.testing.assert_array_equal(f, net.forecast(xs[20:t + 1]))
        assert not np.array_equal(f, net.forecast(xs[t + 1 - h:t + 1])) or i == h - 1
    fc.update(xs[23], ys[23])
    assert net.stats["updates"] == updates + 1


@pytest.mark.parametrize("kind", ["rtrl", "snap2", "tbptt", "diag"])
def test_state_restore_round_trip_gives_identical_forecasts(kind, tmp_path):
    h = 4
    xs, ys = stream(70, seed=2)
    net = make_net(kind, normalize=True)
    fc = Forecaster(net, h, delta=True)
    for t in range(41):                      # the window wraps mid-ring
        fc.update(xs[t], ys[t])
    state = fc.state()
    net.save(tmp_path / "fc.npz", extra=state)
    # the saved arrays are copies: later updates do not change them
    frozen = {k: v.copy() for k, v in state.items()}
    loaded, extra = OnlineRNN.load_with_extra(tmp_path / "fc.npz")
    fc2 = Forecaster(loaded, h, delta=True)
    fc2.restore(extra)
    assert fc2.stats == fc.stats
    for t in range(41, 70):
        np.testing.assert_array_equal(fc2.update(xs[t], ys[t]), fc.update(xs[t], ys[t]))
    assert same_state(fc.net, fc2.net) == []
    assert all(np.array_equal(frozen[k], state[k]) for k in state)
    # a forecaster of another horizon or delta setting refuses the state
    for other in (Forecaster(make_net(kind, normalize=True), h + 1, delta=True),
                  Forecaster(make_net(kind, normalize=True), h, delta=False)):
        with pytest.raises(ValueError, match=r"the saved forecaster has (horizon \d+ \(now "
                                                 r"\d+\)|delta=True \(now False\))"):
            other.restore(extra)


# -- bad input, validation ----------------------------------------------------

@pytest.mark.parametrize("x,y", [
    (np.zeros(2), np.zeros(2)),                        # x too short
    (np.zeros(4), np.zeros(2)),                        # x too long
    (np.array([0.0, np.nan, 1.0]), np.zeros(2)),
    (np.array([0.0, np.inf, 1.0]), np.zeros(2)),
    (np.array([0.0, 1e300, 1.0]), np.zeros(2)),        # beyond float32
    (["a", "b", "c"], np.zeros(2)),
    (np.zeros((1, 3)), np.zeros(2)),
    (np.zeros(3), np.zeros(3)),                        # y of the wrong width
    (np.zeros(3), np.array([np.nan, 0.0])),
    (np.zeros(3), np.array([0.0, -np.inf])),
], ids=["x-short", "x-long", "x-nan", "x-inf", "x-1e300", "x-str", "x-2d", "y-width",
        "y-nan", "y-inf"])
@pytest.mark.parametrize("delta", [False, True], ids=["level", "delta"])
def test_bad_sample_raises_and_changes_nothing(x, y, delta):
    h = 3
    xs, ys = stream(20)
    net = make_net(normalize=True)
    fc = Forecaster(net, h, delta=delta)
    twin_net = make_net(normalize=True)
    twin = Forecaster(twin_net, h, delta=delta)
    for t in range(7):                         # past the warm-up: update() would learn
        fc.update(xs[t], ys[t])
        twin.update(xs[t], ys[t])
    before_state = {k: v.copy() for k, v in fc.state().items()}
    before_stats = dict(fc.stats)
    rejected = net.stats["rejected_inputs"]
    with pytest.raises(ValueError):
        fc.update(x, y)
    assert same_state(net, twin_net) == []
    after = fc.state()
    assert all(np.array_equal(before_state[k], after[k]) for k in after)
    assert fc.stats == before_stats
    assert net.stats["rejected_inputs"] == rejected + 1
    # and the stream goes on exactly as if the bad sample had never come
    for t in range(7, 20):
        np.testing.assert_array_equal(fc.update(xs[t], ys[t]), twin.update(xs[t], ys[t]))


@pytest.mark.parametrize("horizon", [0, -1, 2.5, True, "3", None, np.float64(2.0)])
def test_horizon_must_be_a_positive_integer(horizon):
    with pytest.raises(ValueError, match="horizon"):
        Forecaster(make_net(), horizon)


def test_horizon_accepts_numpy_integers_and_delta_needs_the_target_among_inputs():
    assert Forecaster(make_net(), np.int64(3)).horizon == 3
    net = OnlineRNN(1, 4, 2)
    with pytest.raises(ValueError, match="n_out=2"):
        Forecaster(net, 2, delta=True)
    Forecaster(net, 2, delta=False)


# -- memory ---------------------------------------------------------------------

def test_the_ring_never_reallocates_and_updates_do_not_grow_memory():
    h = 7
    net = OnlineRNN(3, 4, 1, lr=1e-3, clip=1.0)
    fc = Forecaster(net, h, delta=True)
    ring, address = fc._x, fc._x.ctypes.data
    rng = np.random.default_rng(0)
    data = rng.standard_normal((11_000, 3))
    for v in data[:1000]:
        fc.update(v, v[:1])
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak_growth = 0
        for i, v in enumerate(data[1000:]):
            fc.update(v, v[:1])
            if i % 1000 == 999:
                peak_growth = max(peak_growth, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert fc._x is ring and fc._x.ctypes.data == address
    assert fc._x.shape == (2 * h, 3)
    assert fc.stats["samples"] == 11_000
    assert peak_growth < 4096, f"memory grew by {peak_growth} bytes over 10k updates"
