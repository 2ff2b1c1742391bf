"""OnlineRNN.forecast: prediction from a copy of the state advanced over recent
inputs (DESIGN §3.8), checked against the float64 reference forward pass."""
import numpy as np
import pytest

import rtrl_edge
from reference import as_float64, forward


def _warm(net, rng, steps=25):
    for _ in range(steps):
        net.step(rng.normal(size=net.n_in), rng.normal(size=net.n_out))


@pytest.mark.parametrize("n_in,n_hidden,n_out,horizon", [(1, 1, 1, 1), (3, 8, 2, 4), (5, 17, 3, 7)])
def test_forecast_matches_reference_forward_from_current_state(rng, n_in, n_hidden, n_out, horizon):
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, optimizer="adam", lr=1e-2, seed=3)
    _warm(net, rng)
    xs = rng.normal(size=(horizon, n_in))
    h0 = net.snapshot()["h"].astype(np.float64)
    _, yhats = forward(as_float64(net.params), xs, h0=h0)
    got = net.forecast(xs)
    assert got.shape == (n_out,) and got.dtype == np.float32
    # float32 forward over <= 7 steps against float64: 1e-5 relative
    np.testing.assert_allclose(got, yhats[-1], rtol=1e-5, atol=1e-6)


def test_forecast_changes_nothing(rng, tmp_path):
    for normalize in (False, True):
        net = rtrl_edge.OnlineRNN(3, 8, 2, optimizer="adam", normalize=normalize, seed=1)
        _warm(net, rng)
        path = tmp_path / f"before-{normalize}.npz"
        net.save(path)
        before = net.snapshot()
        net.forecast(rng.normal(size=(5, 3)))
        after = net.snapshot()
        assert all(np.array_equal(before[k], after[k]) for k in before), normalize
        # and the next learning step is exactly what it is without the forecast
        untouched = rtrl_edge.OnlineRNN.load(path)
        x, y = rng.normal(size=3), rng.normal(size=2)
        np.testing.assert_array_equal(net.step(x, y), untouched.step(x, y))
        now, ref = net.snapshot(), untouched.snapshot()
        assert all(np.array_equal(now[k], ref[k]) for k in now)


def test_forecast_with_normaliser_is_in_target_units(rng):
    net = rtrl_edge.OnlineRNN(1, 6, 1, optimizer="adam", normalize=True, seed=2)
    for t in range(200):
        net.step([500.0 + np.sin(t / 5)], [500.0 + np.sin((t + 1) / 5)])
    y = net.forecast([[500.0 + np.sin(200 / 5)]])
    assert 495.0 < float(y[0]) < 505.0


def test_forecast_accepts_one_input_row(rng):
    net = rtrl_edge.OnlineRNN(3, 4, 1)
    x = rng.normal(size=3)
    np.testing.assert_array_equal(net.forecast(x), net.forecast(x.reshape(1, 3)))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 4)), r"shape \(T, 3\)"),
    (np.zeros((0, 3)), r"shape \(T, 3\)"),
    ([[1.0, np.nan, 0.0]], "finite"),
    (np.array([[0.0, 1.0, 2.0], [1.0, np.inf, 0.0]]), "finite"),     # compiled fast path
    (np.array([[0.0, 1.0, 2.0]], dtype=np.float32)[:, :2], r"shape \(T, 3\)"),
    ([["a", "b", "c"]], "numeric"),
])
def test_forecast_rejects_bad_input_and_changes_nothing(bad, match):
    net = rtrl_edge.OnlineRNN(3, 4, 1)
    net.step(np.ones(3), [0.5])
    before = net.snapshot()
    rejected = net.stats["rejected_inputs"]
    with pytest.raises(ValueError, match=match):
        net.forecast(bad)
    after = net.snapshot()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert net.stats["rejected_inputs"] == rejected + 1
