"""The float64 reference proves itself: BPTT == central finite differences.

Tolerance: relative error ||g_bptt - g_fd|| / ||g_fd|| <= 1e-7 per parameter
(float64, eps = 1e-6: truncation error ~eps^2 = 1e-12, rounding ~1e-16/eps = 1e-10).
"""

import numpy as np
import pytest

from reference import (
    PARAM_NAMES,
    bptt_gradient,
    finite_difference_gradient,
    forward,
    online_rtrl_sgd,
    random_params,
    relative_error,
    total_loss,
)

REL_TOL = 1e-7


@pytest.mark.parametrize(
    "n_in,n_hidden,n_out,T",
    [(1, 1, 1, 1), (1, 1, 1, 7), (3, 4, 2, 1), (3, 4, 2, 12), (2, 5, 3, 20)],
)
def test_bptt_matches_finite_differences(rng, n_in, n_hidden, n_out, T):
    params = random_params(rng, n_in, n_hidden, n_out, scale=0.9)
    xs = rng.normal(size=(T, n_in))
    ys = rng.normal(size=(T, n_out))
    g = bptt_gradient(params, xs, ys)
    g_fd = finite_difference_gradient(params, xs, ys, eps=1e-6)
    for name in PARAM_NAMES:
        assert g[name].shape == np.shape(params[name])
        err = relative_error(g[name], g_fd[name])
        assert err <= REL_TOL, (name, err)


def test_bptt_weighted_loss_matches_finite_differences(rng):
    """weights[t] = 0 drops the loss at t (used for steps without a target)."""
    params = random_params(rng, 2, 4, 2, scale=0.9)
    xs = rng.normal(size=(9, 2))
    ys = rng.normal(size=(9, 2))
    weights = np.zeros(9)
    weights[-1] = 1.0
    weights[3] = 0.5
    g = bptt_gradient(params, xs, ys, weights)
    g_fd = finite_difference_gradient(params, xs, ys, eps=1e-6, weights=weights)
    for name in PARAM_NAMES:
        assert relative_error(g[name], g_fd[name]) <= REL_TOL, name


def test_bptt_from_a_given_initial_state_matches_finite_differences(rng):
    """h0 != 0 is a constant: FD of the loss with h0 fixed."""
    params = random_params(rng, 2, 4, 1, scale=0.9)
    xs = rng.normal(size=(5, 2))
    ys = rng.normal(size=(5, 1))
    h0 = rng.uniform(-0.9, 0.9, 4)
    g = bptt_gradient(params, xs, ys, h0=h0)
    g_fd = finite_difference_gradient(params, xs, ys, eps=1e-6, h0=h0)
    g_zero = bptt_gradient(params, xs, ys)
    for name in PARAM_NAMES:
        assert relative_error(g[name], g_fd[name]) <= REL_TOL, name
    assert relative_error(g["W_rec"], g_zero["W_rec"]) > 1e-3  # h0 really mattered


def test_forward_matches_hand_computation_for_one_unit():
    """n_in = n_hidden = n_out = 1, two steps written out by hand."""
    params = {
        "W_in": np.array([[0.5]]),
        "W_rec": np.array([[-0.3]]),
        "b": np.array([0.1]),
        "W_out": np.array([[2.0]]),
        "b_out": np.array([-0.2]),
    }
    xs = np.array([[1.0], [-2.0]])
    h1 = np.tanh(0.5 * 1.0 + 0.1)
    h2 = np.tanh(-0.3 * h1 + 0.5 * -2.0 + 0.1)
    hs, yhats = forward(params, xs)
    np.testing.assert_allclose(hs[:, 0], [h1, h2], rtol=1e-15)
    np.testing.assert_allclose(yhats[:, 0], [2 * h1 - 0.2, 2 * h2 - 0.2], rtol=1e-15)
    ys = np.array([[0.0], [1.0]])
    expected = 0.5 * (2 * h1 - 0.2) ** 2 + 0.5 * (2 * h2 - 0.2 - 1.0) ** 2
    assert total_loss(params, xs, ys) == pytest.approx(expected, rel=1e-15)


def test_online_rtrl_with_zero_lr_accumulates_the_bptt_gradient(rng):
    """Sum of the per-step RTRL gradients with frozen weights == BPTT (DESIGN 3.2).

    online_rtrl_sgd applies theta -= lr * g_t after every step; with lr = 1e-9
    the weights barely move, so (theta_0 - theta_T) / lr equals sum_t g_t, the
    BPTT gradient, up to O(lr * T * ||g||) drift and 1e-16 / lr cancellation
    (both ~1e-7 relative here).  Tolerance: relative error <= 1e-5.
    """
    params = random_params(rng, 3, 5, 2, scale=0.9)
    xs = rng.normal(size=(15, 3))
    ys = rng.normal(size=(15, 2))
    lr = 1e-9
    after, yhats = online_rtrl_sgd(params, xs, ys, lr)
    g = bptt_gradient(params, xs, ys)
    for name in PARAM_NAMES:
        g_online = (params[name] - after[name]) / lr
        assert relative_error(g_online, g[name]) <= 1e-5, name
    _, yhats_ref = forward(params, xs)
    np.testing.assert_allclose(yhats, yhats_ref, rtol=1e-6, atol=1e-9)
