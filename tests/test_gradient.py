"""Exact RTRL (learner="rtrl") against the independent float64 reference.

Checked here:
- ``gradient(xs, ys)`` == float64 BPTT of sum_t 0.5*||yhat_t - y_t||^2 from h_0 = 0,
  evaluated at the model's own float32 parameters cast to float64;
  tolerance: relative error ||g - g_ref|| / ||g_ref|| <= 1e-4 per parameter.
- the same against float64 central finite differences (small net), <= 1e-4.
- with normalize=True, the gradient of the normalised loss with the model's
  normaliser statistics (read from snapshot()) frozen.
- ``gradient()`` leaves snapshot() bit-identical.
- ``step`` predictions == reference forward (h_0 = 0), relative 1e-5.
- ``step(x, y)`` with SGD: first update == -lr * reference gradient (params
  relative 1e-5, the update itself relative 1e-3), and a run of online steps
  == the float64 online RTRL reference.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rtrl_edge
from reference import (
    PARAM_NAMES,
    bptt_gradient,
    finite_difference_gradient,
    forward,
    online_rtrl_sgd,
    random_params,
    relative_error,
)

GRAD_REL_TOL = 1e-4

# (2, 45, 2): several column blocks of the sensitivity product, the last one partial
SIZES = [(1, 1, 1), (3, 8, 2), (8, 32, 1), (5, 17, 3), (2, 45, 2)]
LENGTHS = [1, 37]


def params64(net):
    """The model's live float32 parameters, copied to float64."""
    return {name: np.array(net.params[name], dtype=np.float64) for name in PARAM_NAMES}


def set_params(net, params):
    """Write float64 parameters into the model's live float32 views."""
    for name in PARAM_NAMES:
        net.params[name][...] = params[name]


def assert_gradients_close(g, g_ref, tol=GRAD_REL_TOL):
    assert set(g) >= set(PARAM_NAMES), sorted(g)
    for name in PARAM_NAMES:
        assert g[name].shape == g_ref[name].shape, (name, g[name].shape, g_ref[name].shape)
        assert g[name].dtype == np.float32, (name, g[name].dtype)
        err = relative_error(g[name], g_ref[name])
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def snapshots_equal(a, b):
    """Keys equal and every array bit-identical (NaN compared as equal)."""
    if set(a) != set(b):
        return False
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            return False
    return True


def make_sequence(rng, T, n_in, n_out):
    xs = rng.normal(size=(T, n_in)).astype(np.float32)
    ys = rng.normal(size=(T, n_out)).astype(np.float32)
    return xs, ys


# ---------------------------------------------------------------- gradient()


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("n_in,n_hidden,n_out", SIZES)
def test_gradient_matches_bptt_default_init(rng, n_in, n_hidden, n_out, T):
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", seed=3)
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    g_ref = bptt_gradient(params64(net), xs, ys)
    assert_gradients_close(g, g_ref)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("n_in,n_hidden,n_out", SIZES)
def test_gradient_matches_bptt_random_params(rng, n_in, n_hidden, n_out, T):
    """Parameters written through the live views, recurrent gain ~0.9.

    A default initialisation may keep W_rec small; these weights make the
    recurrent part of the gradient large enough that any error in it shows.
    """
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", seed=1)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    g_ref = bptt_gradient(params64(net), xs, ys)
    assert_gradients_close(g, g_ref)


@settings(max_examples=30, deadline=None, database=None)
@given(n_in=st.integers(1, 6), n_hidden=st.integers(1, 24), n_out=st.integers(1, 4),
       T=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_gradient_matches_bptt_random_sizes(n_in, n_hidden, n_out, T, seed):
    """Random shapes catch blocking / edge bugs the fixed sizes miss; 1e-4."""
    rng = np.random.default_rng(seed)
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", seed=seed % 1000)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    assert_gradients_close(g, bptt_gradient(params64(net), xs, ys))


def test_gradient_accepts_float64_and_lists(rng):
    """The same numbers as float64 arrays / nested lists give the same gradient."""
    net = rtrl_edge.OnlineRNN(2, 5, 2, learner="rtrl", seed=0)
    xs, ys = make_sequence(rng, 6, 2, 2)
    g32 = net.gradient(xs, ys)
    g64 = net.gradient(xs.astype(np.float64), ys.astype(np.float64))
    glist = net.gradient(xs.tolist(), ys.tolist())
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(g32[name], g64[name])
        np.testing.assert_array_equal(g32[name], glist[name])


def test_gradient_matches_finite_differences(rng):
    """gradient() against float64 central differences of the reference loss.

    Small net (2, 4, 2), T = 9, eps = 1e-6; tolerance relative 1e-4.
    """
    net = rtrl_edge.OnlineRNN(2, 4, 2, learner="rtrl", seed=5)
    set_params(net, random_params(rng, 2, 4, 2, scale=0.9))
    xs, ys = make_sequence(rng, 9, 2, 2)
    g = net.gradient(xs, ys)
    g_fd = finite_difference_gradient(params64(net), xs, ys, eps=1e-6)
    assert_gradients_close(g, g_fd)


def test_gradient_is_nonzero_and_changes_with_the_data(rng):
    """Guards against a gradient() that returns zeros or a cached result."""
    net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", seed=0)
    xs, ys = make_sequence(rng, 10, 3, 2)
    g1 = net.gradient(xs, ys)
    g2 = net.gradient(xs, ys + 1.0)
    for name in PARAM_NAMES:
        assert np.linalg.norm(g1[name]) > 0, name
    assert not np.array_equal(g1["b_out"], g2["b_out"])
    # d/d b_out of sum_t 0.5||yhat - y||^2 is sum_t (yhat_t - y_t): shifting every
    # target by +1 shifts it by -T exactly.
    np.testing.assert_allclose(g2["b_out"], g1["b_out"] - 10.0, rtol=0, atol=1e-4)


def test_gradient_after_online_steps_starts_from_zero_state(rng):
    """gradient() uses h_0 = 0 and the current params, whatever the running state."""
    net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", optimizer="adam", lr=1e-2, seed=2)
    warm_x, warm_y = make_sequence(rng, 50, 3, 2)
    for x, y in zip(warm_x, warm_y):
        net.step(x, y)
    xs, ys = make_sequence(rng, 20, 3, 2)
    g = net.gradient(xs, ys)
    assert_gradients_close(g, bptt_gradient(params64(net), xs, ys))


def test_gradient_leaves_snapshot_bit_identical(rng):
    net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", optimizer="adam", lr=1e-2, seed=2)
    warm_x, warm_y = make_sequence(rng, 30, 3, 2)
    for x, y in zip(warm_x, warm_y):
        net.step(x, y)
    net.step(warm_x[0])  # a step without a target too
    before = net.snapshot()
    assert "h" in before and "P" in before, sorted(before)
    assert np.any(before["h"] != 0) and np.any(before["P"] != 0)
    xs, ys = make_sequence(rng, 25, 3, 2)
    net.gradient(xs, ys)
    after = net.snapshot()
    assert snapshots_equal(before, after)
    # and the next online step is the same as without the gradient() call
    twin = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", optimizer="adam", lr=1e-2, seed=2)
    for x, y in zip(warm_x, warm_y):
        twin.step(x, y)
    twin.step(warm_x[0])
    np.testing.assert_array_equal(net.step(xs[0], ys[0]), twin.step(xs[0], ys[0]))
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(net.params[name], twin.params[name])


# ------------------------------------------------------------- normalize=True


# The normaliser's variance floor: z = (v - mean) / sqrt(var + NORM_EPS).  It is
# the compiled core's ``norm_eps`` (not in snapshot()); with the data below
# (variances >= 1e-4) it moves the result by at most 5e-5 relative.
NORM_EPS = 1e-8


def normaliser_transform(snapshot):
    """Functions xs -> normalised xs and ys -> normalised ys (float64) from the
    statistics in snapshot(): "x_mean", "x_var", "y_mean", "y_var"."""
    x_mean, x_var = snapshot["x_mean"], snapshot["x_var"]
    y_mean, y_var = snapshot["y_mean"], snapshot["y_var"]

    def norm_x(xs):
        return (np.asarray(xs, dtype=np.float64) - x_mean) / np.sqrt(x_var + NORM_EPS)

    def norm_y(ys):
        return (np.asarray(ys, dtype=np.float64) - y_mean) / np.sqrt(y_var + NORM_EPS)

    return norm_x, norm_y


def test_normalized_gradient_matches_reference_on_normalised_data(rng):
    """normalize=True: gradient of the normalised loss, statistics frozen.

    Inputs of scale ~100 offset by -488 and targets of scale ~0.01 make a
    wrong (or missing) normalisation obvious.  Tolerance relative 1e-4.
    """
    n_in, n_hidden, n_out = 3, 8, 2
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", normalize=True,
                              optimizer="sgd", lr=1e-2, seed=4)
    x_scale = np.array([100.0, 1.0, 0.01])
    x_shift = np.array([-488.0, 3.0, 0.0])
    y_scale = np.array([0.01, 50.0])
    for _ in range(200):
        x = rng.normal(size=n_in) * x_scale + x_shift
        y = rng.normal(size=n_out) * y_scale
        net.step(x.astype(np.float32), y.astype(np.float32))
    snap = net.snapshot()
    # the statistics really are the data's (not the identity they start from)
    np.testing.assert_allclose(snap["x_mean"], x_shift, atol=30.0)
    assert snap["x_var"][0] > 1000.0 and snap["y_var"][0] < 1e-3
    norm_x, norm_y = normaliser_transform(snap)
    xs = (rng.normal(size=(15, n_in)) * x_scale + x_shift).astype(np.float32)
    ys = (rng.normal(size=(15, n_out)) * y_scale).astype(np.float32)
    g = net.gradient(xs, ys)
    g_ref = bptt_gradient(params64(net), norm_x(xs), norm_y(ys))
    assert_gradients_close(g, g_ref)
    assert snapshots_equal(snap, net.snapshot())


def test_normalized_predictions_come_back_in_original_units(rng):
    """normalize=True: step(x) returns y_mean + sqrt(y_var + eps) * yhat_n where
    yhat_n is the reference cell's output on the normalised input, using the
    statistics after the step (x statistics include the current x; step(x)
    without a target leaves the y statistics alone).  Targets around 1000
    with spread 50.  Tolerance: relative 1e-5."""
    net = rtrl_edge.OnlineRNN(2, 6, 1, learner="rtrl", normalize=True, optimizer="adam",
                              lr=1e-2, seed=19)
    for _ in range(100):
        x = rng.normal(size=2) * [10.0, 0.1] + [-488.0, 1.0]
        net.step(x, [1000.0 + 50.0 * rng.normal()])
    p = params64(net)
    for _ in range(5):
        x = rng.normal(size=2) * [10.0, 0.1] + [-488.0, 1.0]
        h_before = net.snapshot()["h"]
        yhat = net.step(x)
        snap = net.snapshot()
        norm_x, _ = normaliser_transform(snap)
        hs, yn = forward(p, norm_x(x[None, :]), h0=h_before)
        expected = snap["y_mean"] + np.sqrt(snap["y_var"] + NORM_EPS) * yn[0]
        assert abs(snap["y_mean"][0] - 1000.0) < 20.0
        assert relative_error(yhat, expected) <= 1e-5


# ------------------------------------------------------------ step() forward


@pytest.mark.parametrize("n_in,n_hidden,n_out", SIZES)
def test_step_predictions_match_reference_forward(rng, n_in, n_hidden, n_out):
    """step(x) without y from a fresh net == reference forward; relative 1e-5."""
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", seed=7)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    xs, _ = make_sequence(rng, 30, n_in, n_out)
    p = params64(net)
    preds = np.array([net.step(x) for x in xs])
    assert preds.dtype == np.float32 and preds.shape == (30, n_out)
    _, yhats = forward(p, xs)
    assert relative_error(preds, yhats) <= 1e-5
    hs, _ = forward(p, xs)
    snap = net.snapshot()
    np.testing.assert_allclose(snap["h"].reshape(-1), hs[-1], rtol=0, atol=1e-5)
    for name in PARAM_NAMES:  # step without a target never learns
        np.testing.assert_array_equal(net.params[name], p[name].astype(np.float32))


def test_predict_matches_reference_forward_and_never_learns(rng):
    net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", seed=7)
    set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
    p = params64(net)
    xs, _ = make_sequence(rng, 20, 3, 2)
    preds = np.array([net.predict(x) for x in xs])
    _, yhats = forward(p, xs)
    assert relative_error(preds, yhats) <= 1e-5
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(net.params[name], p[name].astype(np.float32))


def test_step_returns_a_fresh_array(rng):
    net = rtrl_edge.OnlineRNN(2, 4, 2, learner="rtrl", seed=0)
    xs, ys = make_sequence(rng, 2, 2, 2)
    y1 = net.step(xs[0], ys[0])
    kept = y1.copy()
    y2 = net.step(xs[1], ys[1])
    assert y1 is not y2
    np.testing.assert_array_equal(y1, kept)  # not overwritten by the next step


# -------------------------------------------------------- step(x, y) updates


@pytest.mark.parametrize("n_in,n_hidden,n_out", SIZES)
def test_first_sgd_step_is_minus_lr_times_the_gradient(rng, n_in, n_hidden, n_out):
    """Fresh net, one step(x, y), SGD: params == params0 - lr * grad(L_1).

    Tolerances: new params relative 1e-5 (per parameter array), the update
    (params0 - params1) / lr against the reference gradient relative 1e-3
    (float32 rounding of params1 - params0 limits this).
    """
    lr = 0.05
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", optimizer="sgd",
                              lr=lr, seed=11)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, 1, n_in, n_out)
    yhat = net.step(xs[0], ys[0])
    _, yhats_ref = forward(p0, xs)
    assert relative_error(yhat, yhats_ref[0]) <= 1e-5  # prediction made before learning
    g = bptt_gradient(p0, xs, ys)
    p1 = params64(net)
    for name in PARAM_NAMES:
        expected = p0[name] - lr * g[name]
        assert relative_error(p1[name], expected) <= 1e-5, name
        assert relative_error((p0[name] - p1[name]) / lr, g[name]) <= 1e-3, name


def test_step_without_target_keeps_sensitivities_exact(rng):
    """step(x) for t < T, then step(x_T, y_T): update == -lr * d L_T / d theta,
    where L_T depends on all parameters through the whole sequence (BPTT of the
    last step's loss only).  Tolerance: update relative 1e-3."""
    lr = 0.05
    n_in, n_hidden, n_out = 3, 8, 2
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", optimizer="sgd",
                              lr=lr, seed=12)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, 12, n_in, n_out)
    for x in xs[:-1]:
        net.step(x)
    net.step(xs[-1], ys[-1])
    weights = np.zeros(len(xs))
    weights[-1] = 1.0
    g = bptt_gradient(p0, xs, ys, weights)
    p1 = params64(net)
    for name in PARAM_NAMES:
        assert relative_error((p0[name] - p1[name]) / lr, g[name]) <= 1e-3, name
    assert np.linalg.norm(g["W_rec"]) > 1e-3  # the recurrent part really was exercised
    assert net.stats["trace_resets"] == 0
    assert net.stats["updates"] == 1 and net.stats["steps"] == len(xs)


def test_learning_after_predict_restarts_the_sensitivities(rng):
    """predict() x3 then step(x4, y4): the sensitivities restart from zero, so
    the update is -lr * dL_4/dtheta with h_3 held constant (BPTT of one step
    from h0 = h_3), and stats["trace_resets"] == 1.  Tolerance: update
    relative 1e-3."""
    lr = 0.05
    net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", optimizer="sgd", lr=lr, seed=16)
    set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, 4, 3, 2)
    for x in xs[:3]:
        net.predict(x)
    hs, _ = forward(p0, xs)
    np.testing.assert_allclose(net.snapshot()["h"], hs[2], rtol=0, atol=1e-5)
    assert net.stats["trace_resets"] == 0
    net.step(xs[3], ys[3])
    assert net.stats["trace_resets"] == 1
    g = bptt_gradient(p0, xs[3:], ys[3:], h0=hs[2])
    p1 = params64(net)
    for name in PARAM_NAMES:
        assert relative_error((p0[name] - p1[name]) / lr, g[name]) <= 1e-3, name
    # ... which differs from the untruncated gradient of L_4
    weights = np.array([0.0, 0.0, 0.0, 1.0])
    g_full = bptt_gradient(p0, xs, ys, weights)
    assert relative_error(g["W_rec"], g_full["W_rec"]) > 1e-2


def test_predict_advances_only_the_hidden_state(rng):
    """Contract: predict() "advances the hidden state only (inference), never
    learns".  Everything in snapshot() but h (and the counters, which may
    count the sample and mark the sensitivities stale) is bit-identical, also
    with normalize=True (the normaliser's statistics are learned state)."""
    for normalize in (False, True):
        net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", optimizer="adam", lr=1e-2,
                                  normalize=normalize, seed=17)
        warm_x, warm_y = make_sequence(rng, 20, 3, 2)
        for x, y in zip(warm_x, warm_y):
            net.step(x * 5 + 2, y)
        before = net.snapshot()
        net.predict(np.array([40.0, -30.0, 7.0]))
        after = net.snapshot()
        changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
        assert "h" in changed
        assert set(changed) <= {"h", "counters"}, (normalize, changed)


def test_reset_state_zeroes_h_and_P_and_restarts_from_zero_state(rng):
    net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", optimizer="sgd", lr=1e-2, seed=18)
    warm_x, warm_y = make_sequence(rng, 10, 3, 2)
    for x, y in zip(warm_x, warm_y):
        net.step(x, y)
    before = net.snapshot()
    assert np.any(before["h"]) and np.any(before["P"])
    net.reset_state()
    after = net.snapshot()
    assert not np.any(after["h"]) and not np.any(after["P"])
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(after[name], before[name])
    xs, _ = make_sequence(rng, 5, 3, 2)
    _, yhats = forward(params64(net), xs)
    preds = np.array([net.step(x) for x in xs])
    assert relative_error(preds, yhats) <= 1e-5


def test_seed_makes_initialisation_reproducible():
    a = rtrl_edge.OnlineRNN(3, 8, 2, seed=5)
    b = rtrl_edge.OnlineRNN(3, 8, 2, seed=5)
    c = rtrl_edge.OnlineRNN(3, 8, 2, seed=6)
    for name in PARAM_NAMES:
        assert a.params[name].dtype == np.float32
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["W_rec"], c.params["W_rec"])
    assert np.all(np.isfinite(a.params["W_rec"])) and np.any(a.params["W_rec"])


def test_online_sgd_run_matches_online_rtrl_reference(rng):
    """25 online SGD steps == float64 online RTRL (DESIGN 3.2, current W_rec in the
    recursion, update after each prediction).  Tolerance: params relative 1e-4,
    predictions relative 1e-4."""
    lr = 0.02
    n_in, n_hidden, n_out = 3, 8, 2
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", optimizer="sgd",
                              lr=lr, seed=13)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, 25, n_in, n_out)
    preds = np.array([net.step(x, y) for x, y in zip(xs, ys)])
    p_ref, yhats_ref = online_rtrl_sgd(p0, xs, ys, lr)
    assert relative_error(preds, yhats_ref) <= 1e-4
    p1 = params64(net)
    for name in PARAM_NAMES:
        assert relative_error(p1[name], p_ref[name]) <= 1e-4, name
        # and the weights did move by a clearly measurable amount
        assert np.linalg.norm(p1[name] - p0[name]) > 1e-3 * np.linalg.norm(p0[name]), name


def test_first_step_with_clipping_scales_the_global_norm(rng):
    """clip=c: the first SGD update is -lr * g * min(1, c / ||g||_global)."""
    lr, clip = 0.05, 0.1
    net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", optimizer="sgd", lr=lr,
                              clip=clip, seed=14)
    set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, 1, 3, 2)
    ys = ys + 3.0  # large error: the global norm is well above the clip
    net.step(xs[0], ys[0])
    g = bptt_gradient(p0, xs, ys)
    gnorm = np.sqrt(sum(np.sum(g[name] ** 2) for name in PARAM_NAMES))
    assert gnorm > 2 * clip
    scale = min(1.0, clip / gnorm)
    p1 = params64(net)
    for name in PARAM_NAMES:
        assert relative_error((p0[name] - p1[name]) / lr, scale * g[name]) <= 1e-3, name


def test_first_adam_step_moves_each_weight_by_lr_in_the_gradient_sign(rng):
    """Adam with bias correction: the first update is -lr * g / (|g| + eps),
    i.e. -lr * sign(g) wherever |g| >> eps.  Checked on entries with
    |g| > 1e-3: |update / lr - sign(g)| <= 1e-3."""
    lr = 0.01
    net = rtrl_edge.OnlineRNN(3, 8, 2, learner="rtrl", optimizer="adam", lr=lr, seed=15)
    set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, 1, 3, 2)
    net.step(xs[0], ys[0])
    g = bptt_gradient(p0, xs, ys)
    p1 = params64(net)
    checked = 0
    for name in PARAM_NAMES:
        big = np.abs(g[name]) > 1e-3
        step = (p0[name] - p1[name]) / lr
        np.testing.assert_allclose(step[big], np.sign(g[name][big]), rtol=0, atol=1e-3)
        checked += int(big.sum())
    assert checked > 10
