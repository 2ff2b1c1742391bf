"""`Forecaster.auto`: a mixture with nothing to tune -- causal, bounded,
unchanged by bad input, saved and loaded mid-stream exactly, and never much
worse than repeating the last value."""
import resource

import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import AutoForecaster, CheckpointError, Forecaster, OnlineRNN
from rtrl_edge.members import LinearRLS, Seasonal, rls_update
from rtrl_edge.mixture import Hedge


def sine_stream(T=1500, seed=0, period=40.0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return np.sin(2 * np.pi * t / period) + 0.1 * rng.standard_normal(T)


def run(fc, ys, xs=None):
    xs = ys if xs is None else xs
    out = np.zeros((len(ys), fc.n_out))
    for t, (x, y) in enumerate(zip(xs, ys)):
        out[t] = fc.update(np.atleast_1d(x), np.atleast_1d(y))
    return out


def full_state(fc):
    """Everything mutable: the mixture's arrays and every RNN member's model
    (the count of rejected inputs apart: counting is all a rejection does)."""
    state = {k: np.array(v) for k, v in fc.state().items() if k != "counters"}
    state["counters"] = np.array([v for k, v in sorted(fc.counters.items())
                                  if k != "rejected"])
    for i, m in enumerate(fc.members):
        if hasattr(m, "net"):
            state.update({f"net{i}:{k}": v for k, v in m.net.snapshot().items()})
    return state


def same_state(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_auto_is_exported_and_has_the_forecaster_api():
    fc = Forecaster.auto(1, 1, 5)
    assert isinstance(fc, AutoForecaster) and rtrl_edge.Forecaster is Forecaster
    f = fc.update([1.0], [1.0])
    assert f.shape == (1,) and f.dtype == np.float64
    assert abs(sum(fc.weights.values()) - 1.0) < 1e-12
    assert set(fc.stats["members"]) == set(fc.names)


def test_every_forecast_is_causal():
    """Perturbing the stream from time t0 on changes no forecast made before t0."""
    h, t0 = 4, 300
    a = sine_stream(600)
    b = a.copy()
    b[t0:] += np.random.default_rng(1).standard_normal(600 - t0) * 5
    fa = run(Forecaster.auto(1, 1, h, seed=3), a)
    fb = run(Forecaster.auto(1, 1, h, seed=3), b)
    np.testing.assert_array_equal(fa[:t0], fb[:t0])
    assert not np.array_equal(fa[t0:], fb[t0:])


def test_multichannel_inputs_and_targets():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((200, 3))
    ys = np.cumsum(rng.standard_normal((200, 2)), axis=0)
    fc = Forecaster.auto(3, 2, 3)
    out = run(fc, ys, xs)
    assert out.shape == (200, 2) and np.isfinite(out).all()


@pytest.mark.parametrize("bad", [
    dict(x=[np.nan], y=[1.0]), dict(x=[1.0], y=[np.inf]), dict(x=[1.0, 2.0], y=[1.0]),
    dict(x=[1.0], y=[1.0, 2.0]), dict(x="a", y=[1.0]), dict(x=[1.0], y=[[1.0]]),
    dict(x=None, y=[1.0]),
])
def test_bad_input_raises_and_changes_nothing(bad):
    fc = Forecaster.auto(1, 1, 3)
    run(fc, sine_stream(200))
    before = full_state(fc)
    rejected = fc.counters["rejected"]
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        fc.update(bad["x"], bad["y"])
    assert same_state(before, full_state(fc))
    assert fc.counters["rejected"] == rejected + 1


def test_save_and_load_mid_stream_gives_identical_forecasts(tmp_path):
    ys = sine_stream(900)
    fc = Forecaster.auto(1, 1, 6, seed=2)
    run(fc, ys[:500])
    fc.save(tmp_path / "auto.npz")
    loaded = AutoForecaster.load(tmp_path / "auto.npz")
    assert same_state(full_state(fc), full_state(loaded))
    np.testing.assert_array_equal(run(fc, ys[500:]), run(loaded, ys[500:]))
    assert loaded.weights == fc.weights


def test_a_signed_auto_checkpoint_and_forgeries(tmp_path):
    key = b"0123456789abcdef0123"
    fc = Forecaster.auto(1, 1, 2)
    run(fc, sine_stream(100))
    path = tmp_path / "a.npz"
    fc.save(path, key=key)
    assert AutoForecaster.load(path, key=key).counters == fc.counters
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        AutoForecaster.load(path, key=key)


def test_a_crafted_auto_configuration_is_refused_before_building(tmp_path):
    import json
    from rtrl_edge import checkpoint
    path = tmp_path / "a.npz"
    Forecaster.auto(1, 1, 2).save(path)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k].copy() for k in f.files}
    for change in (dict(hidden=10 ** 6), dict(horizon=10 ** 12), dict(n_in="3"),
                   dict(hidden=True)):
        cfg = dict(json.loads(str(arrays["config"])), **change)
        forged = dict(arrays, config=np.array(json.dumps(cfg, sort_keys=True)))
        forged.pop("checksum")
        forged.pop("format_version")
        checkpoint.write(path, forged)
        with pytest.raises(CheckpointError):
            AutoForecaster.load(path)


def test_a_model_checkpoint_is_not_an_auto_one_and_back(tmp_path):
    OnlineRNN(2, 4, 1).save(tmp_path / "net.npz")
    with pytest.raises(CheckpointError, match="not an AutoForecaster"):
        AutoForecaster.load(tmp_path / "net.npz")
    Forecaster.auto(1, 1, 2).save(tmp_path / "auto.npz")
    with pytest.raises(CheckpointError):
        OnlineRNN.load(tmp_path / "auto.npz")


def test_learns_a_periodic_signal_far_better_than_the_last_value():
    h, T = 8, 3000
    ys = sine_stream(T)
    fc = Forecaster.auto(1, 1, h)
    out = run(fc, ys)
    s = slice(T // 2, T - h)
    err = np.sqrt(np.mean((out[s, 0] - ys[h:][s]) ** 2))
    last = np.sqrt(np.mean((ys[s] - ys[h:][s]) ** 2))
    # recorded: about 0.2 of the last value's error
    assert err < 0.5 * last


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_a_random_walk_it_stays_close_to_the_last_value(seed):
    """Nothing to learn: the best forecast is the last value, and the
    mixture's weights must not make it much worse (recorded 1.00-1.04)."""
    h, T = 6, 3000
    ys = np.cumsum(np.random.default_rng(seed).standard_normal(T))
    out = run(Forecaster.auto(1, 1, h), ys)
    s = slice(T // 2, T - h)
    err = np.sqrt(np.mean((out[s, 0] - ys[h:][s]) ** 2))
    last = np.sqrt(np.mean((ys[s] - ys[h:][s]) ** 2))
    assert err < 1.08 * last


def test_memory_is_fixed_and_bounded():
    fc = Forecaster.auto(2, 1, 5)
    before_bytes = fc.memory_bytes
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((30000, 2))
    run(fc, xs[:5000, :1], xs[:5000])                  # warm up
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(fc, xs[5000:, :1], xs[5000:])
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    assert fc.memory_bytes == before_bytes
    assert grown_kib < 1024


def test_budgets_choose_the_rnn_size_and_refuse_the_impossible():
    big = Forecaster.auto(1, 1, 5)
    small = Forecaster.auto(1, 1, 5, memory_bytes=big.memory_bytes // 3)
    assert small.memory_bytes <= big.memory_bytes // 3
    assert small.hidden < big.hidden or not small.rnn
    linear_only = Forecaster.auto(1, 1, 5, memory_bytes=AutoForecaster(
        1, 1, 5, rnn=False).memory_bytes)
    assert not linear_only.rnn
    with pytest.raises(ValueError, match="nothing fits"):
        Forecaster.auto(1, 1, 5, memory_bytes=1000)
    with pytest.raises(ValueError, match="memory_bytes must be > 0"):
        Forecaster.auto(1, 1, 5, memory_bytes=0)


def test_a_missing_target_still_forecasts_and_learns_nothing():
    fc = Forecaster.auto(1, 1, 2)
    run(fc, sine_stream(50))
    learned = fc.counters["learned"]
    f = fc.update([0.3], None)
    assert np.isfinite(f).all() and fc.counters["learned"] == learned


def test_hedge_moves_weight_to_the_better_member():
    hedge = Hedge(2)
    for _ in range(200):
        hedge.observe(np.array([1.0, 0.5]))
    assert hedge.weights[1] > 0.99


def test_rls_bounded_covariance_when_inputs_stop_varying():
    """Plain RLS with forgetting divides P by lambda every step: with a
    constant input its covariance grows without bound."""
    m = LinearRLS(1, 1, 1, 2)
    phi = np.array([1.0, 1.0, 1.0, 1.0])
    bound = m.n_features / m.RIDGE
    for _ in range(50000):
        rls_update(m.P, m.W, phi, np.array([0.5]), m.lam, bound, m._Px)
    assert np.isfinite(m.P).all() and np.trace(m.P) <= bound * (1 + 1e-9)
    assert abs(phi @ m.W[:, 0] - 0.5) < 1e-6


def test_seasonal_member_detects_a_period():
    s = Seasonal(1, 3, memory=512)

    class Ctx:
        pass
    ctx = Ctx()
    out = np.zeros(1)
    for t in range(600):
        ctx.y = np.array([np.sin(2 * np.pi * t / 24.0)])
        s.step(ctx, out)
    assert s.period[0] == 24


def test_a_time_budget_picks_by_the_cost_model():
    """Extremes only (timings are noisy here): a generous budget gets the
    largest RNN members, an impossible one is refused."""
    assert Forecaster.auto(1, 1, 3, step_us=1e7).hidden == 32
    with pytest.raises(ValueError, match="nothing fits"):
        Forecaster.auto(1, 1, 3, step_us=1.0)
