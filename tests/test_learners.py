"""The approximate learners (SnAp-1, SnAp-2, UORO, TBPTT) and the diagonal
cell, each against an independent float64 reference (tests/reference.py,
tests/reference_diag.py; DESIGN.md 3.3 - 3.7).

Tolerances (relative error ||g - g_ref|| / ||g_ref|| per parameter array,
float32 model against float64 reference, unless stated):

- the references against each other / finite differences: 1e-10 (float64
  identities) and 1e-6 (central differences, eps = 1e-6);
- gradient() of every learner against its float64 reference: 1e-4;
- online updates (params0 - params1) / lr against the reference: 1e-3 (float32
  rounding of params1 - params0);
- step() predictions of the diag cell: 1e-5;
- UORO: cosine(mean of >= 1000 draws, exact) >= 0.95, median single-draw
  cosine < 0.9;
- "differs": relative error > 1e-2 (the reference cases are chosen so that the
  difference is far above the 1e-4 tolerance, so each check can fail).

rec_mask[k, l] has W_rec's orientation: it says whether the connection
W_rec[k, l] (unit l -> unit k) exists.

Sections: 1. the references prove themselves (float64 identities, finite
differences); 2. SnAp-2 (dense == BPTT == rtrl; sparse == the restricted
recursion; masked weights stay 0; online update); 3. SnAp-1 (== BPTT for a
diagonal W_rec, == its recursion and != BPTT for a dense one; online update);
4. TBPTT(k) (k >= T == BPTT, k < T == truncated sum; online last-step update);
5. the diag cell (== finite differences, forward, online updates, errors);
6. UORO (unbiased over 1000 seeds, noisy per draw, reproducible); 7. masks for
every Elman learner; 8. random shapes (hypothesis); 9. constructor errors.
"""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_diag as rd
import rtrl_edge
from reference import (
    PARAM_NAMES,
    bptt_gradient,
    cosine,
    finite_difference_gradient,
    flatten,
    forward,
    online_rtrl_sgd,
    random_params,
    relative_error,
    snap1_gradient,
    snap2_gradient,
    snap2_keep,
    truncated_bptt_gradient,
    truncated_bptt_step_gradient,
    uoro_gradient,
)

GRAD_REL_TOL = 1e-4
UPDATE_REL_TOL = 1e-3
PRED_REL_TOL = 1e-5
DIFFERS = 1e-2
W_PART = ("W_rec", "W_in", "b")
ELMAN_LEARNERS = ("rtrl", "snap1", "snap2", "uoro", "tbptt")


# ----------------------------------------------------------------- helpers


def make_net(n_in, n_hidden, n_out, learner, **kwargs):
    if learner == "tbptt":
        kwargs.setdefault("window", 4)
    return rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner=learner, **kwargs)


def params64(net, names=PARAM_NAMES):
    return {name: np.array(net.params[name], dtype=np.float64) for name in names}


def set_params(net, params, names=PARAM_NAMES):
    for name in names:
        net.params[name][...] = params[name]


def make_sequence(rng, T, n_in, n_out):
    xs = rng.normal(size=(T, n_in)).astype(np.float32)
    ys = rng.normal(size=(T, n_out)).astype(np.float32)
    return xs, ys


def random_mask(rng, n, density):
    return rng.uniform(size=(n, n)) < density


def masked_params(rng, n_in, n_hidden, n_out, mask, scale=0.9):
    """Random Elman parameters with W_rec zero where mask is False; the
    surviving weights are scaled up so the recurrence is not negligible."""
    p = random_params(rng, n_in, n_hidden, n_out, scale=scale)
    density = max(mask.mean(), 1.0 / n_hidden)
    p["W_rec"] = p["W_rec"] * mask / np.sqrt(density)
    return p


def assert_gradients_close(g, g_ref, tol=GRAD_REL_TOL, names=PARAM_NAMES, what=""):
    assert set(g) >= set(names), sorted(g)
    for name in names:
        assert g[name].shape == np.shape(g_ref[name]), (name, g[name].shape)
        assert g[name].dtype == np.float32, (name, g[name].dtype)
        ref_norm = np.linalg.norm(g_ref[name])
        if ref_norm == 0.0:   # an exactly zero reference (e.g. decay at T = 1)
            assert np.max(np.abs(g[name]), initial=0.0) <= 1e-7, f"{what}{name}: {g[name]}"
            continue
        err = relative_error(g[name], g_ref[name])
        assert err <= tol, f"{what}{name}: relative error {err:.3g} > {tol:g}"


def assert_update_is(p0, p1, lr, g_ref, names=PARAM_NAMES, tol=UPDATE_REL_TOL):
    for name in names:
        update = (p0[name] - p1[name]) / lr
        err = relative_error(update, g_ref[name])
        assert err <= tol, f"{name}: update relative error {err:.3g} > {tol:g}"


def one_hot(T, t):
    """Loss weights selecting step t (1-based) alone."""
    w = np.zeros(T)
    w[t - 1] = 1.0
    return w


def max_rel_err(g, g_ref, names=PARAM_NAMES):
    return max(relative_error(g[name], g_ref[name]) for name in names)


# ====================================================================
# 1. The references prove themselves (float64 only, no rtrl_edge).
# ====================================================================


@pytest.mark.parametrize("k", [12, 13, 40])
def test_ref_truncated_with_long_window_is_full_bptt(rng, k):
    p = random_params(rng, 3, 5, 2, scale=0.9)
    xs, ys = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    assert max_rel_err(truncated_bptt_gradient(p, xs, ys, k), bptt_gradient(p, xs, ys)) <= 1e-10


@pytest.mark.parametrize("t,k", [(1, 1), (5, 1), (5, 3), (9, 4), (9, 9), (9, 20)])
def test_ref_truncated_step_is_bptt_of_the_window_from_a_constant_state(rng, t, k):
    """dL_t through k steps == BPTT of L_t over the last k steps started from
    h_{t-k} held constant (the h0 path of bptt_gradient, which test_reference.py
    proves by finite differences); with k >= t, the exact gradient of L_t."""
    p = random_params(rng, 2, 4, 2, scale=0.9)
    T = 9
    xs, ys = rng.normal(size=(T, 2)), rng.normal(size=(T, 2))
    g = truncated_bptt_step_gradient(p, xs, ys, t, k)
    if k >= t:
        g_ref = bptt_gradient(p, xs, ys, one_hot(T, t))
    else:
        hs, _ = forward(p, xs)
        start = t - k                    # 0-based index of the first step in the window
        h0 = hs[start - 1] if start >= 1 else None
        win = slice(start, t)
        g_ref = bptt_gradient(p, xs[win], ys[win], one_hot(k, k), h0=h0)
        g_fd = finite_difference_gradient(p, xs[win], ys[win], eps=1e-6,
                                          weights=one_hot(k, k), h0=h0)
        assert max_rel_err(g, g_fd) <= 1e-6
        if start >= 1:   # the cut really changes the recurrent gradient
            g_exact = bptt_gradient(p, xs, ys, one_hot(T, t))
            assert relative_error(g["W_rec"], g_exact["W_rec"]) > DIFFERS
    assert max_rel_err(g, g_ref) <= 1e-10


def test_ref_truncated_sum_differs_from_full_bptt_for_short_windows(rng):
    p = random_params(rng, 3, 5, 2, scale=0.9)
    xs, ys = rng.normal(size=(15, 3)), rng.normal(size=(15, 2))
    g_full = bptt_gradient(p, xs, ys)
    g1 = truncated_bptt_gradient(p, xs, ys, 1)
    g3 = truncated_bptt_gradient(p, xs, ys, 3)
    assert relative_error(g1["W_rec"], g_full["W_rec"]) > DIFFERS
    assert relative_error(g3["W_rec"], g_full["W_rec"]) > DIFFERS
    assert relative_error(g1["W_rec"], g3["W_rec"]) > DIFFERS
    for name in ("W_out", "b_out"):    # the readout is exact whatever the window
        assert relative_error(g1[name], g_full[name]) <= 1e-12


def test_ref_snap2_dense_is_bptt_and_snap1_diagonal_is_bptt(rng):
    p = random_params(rng, 3, 5, 2, scale=0.9)
    xs, ys = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    g = bptt_gradient(p, xs, ys)
    assert max_rel_err(snap2_gradient(p, xs, ys), g) <= 1e-10
    assert max_rel_err(snap2_gradient(p, xs, ys, np.ones((5, 5), bool)), g) <= 1e-10
    pd = dict(p, W_rec=np.diag(np.diag(p["W_rec"])))
    assert max_rel_err(snap1_gradient(pd, xs, ys), bptt_gradient(pd, xs, ys)) <= 1e-10
    # dense W_rec: SnAp-1 is an approximation, clearly not the gradient
    assert relative_error(snap1_gradient(p, xs, ys)["W_rec"], g["W_rec"]) > DIFFERS


def test_ref_snap2_with_no_connections_is_snap1(rng):
    """S_i = {i} for an empty mask: SnAp-2 keeps exactly SnAp-1's traces."""
    p = random_params(rng, 3, 6, 2, scale=0.9)
    xs, ys = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    empty = np.zeros((6, 6), bool)
    g2 = snap2_gradient(p, xs, ys, empty)
    g1 = snap1_gradient(p, xs, ys, rec_mask=empty)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-12, atol=1e-14)
    assert not np.any(g2["W_rec"])


def test_ref_snap2_is_exact_for_block_diagonal_masks(rng):
    """Fully connected blocks: h_i only ever reaches its own block, which S_i
    covers, so SnAp-2 drops nothing; a sparse random mask drops a lot."""
    n = 6
    block = np.kron(np.eye(3, dtype=bool), np.ones((2, 2), bool))
    p = masked_params(rng, 2, n, 2, block)
    xs, ys = rng.normal(size=(15, 2)), rng.normal(size=(15, 2))
    g = bptt_gradient(p, xs, ys)
    g["W_rec"] *= block
    assert max_rel_err(snap2_gradient(p, xs, ys, block), g) <= 1e-10

    mask = random_mask(np.random.default_rng(11), n, 0.3)
    p = masked_params(rng, 2, n, 2, mask)
    g = bptt_gradient(p, xs, ys)
    g["W_rec"] *= mask
    g2 = snap2_gradient(p, xs, ys, mask)
    assert relative_error(g2["W_in"], g["W_in"]) > DIFFERS
    assert not np.any(g2["W_rec"][~mask])


def test_ref_snap2_keep_is_i_and_its_targets():
    mask = np.array([[False, True, False],
                     [False, False, False],
                     [True, True, False]])
    # S_0 = {0} u {k: mask[k,0]} = {0, 2}; S_1 = {1, 0, 2}; S_2 = {2}
    expected = np.array([[True, True, False],
                         [False, True, False],
                         [True, True, True]])
    np.testing.assert_array_equal(snap2_keep(mask), expected)


def test_ref_uoro_is_unbiased_and_noisy(rng):
    """The float64 UORO of DESIGN 3.5: 1000 draws average to the gradient."""
    p = random_params(rng, 3, 5, 2, scale=0.9)
    xs, ys = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    g = flatten(bptt_gradient(p, xs, ys), W_PART)
    draw_rng = np.random.default_rng(7)
    draws = np.array([flatten(uoro_gradient(p, xs, ys, draw_rng), W_PART) for _ in range(1000)])
    assert cosine(draws.mean(axis=0), g) >= 0.97
    assert np.median([cosine(d, g) for d in draws]) < 0.5


@pytest.mark.parametrize("n_in,n_hidden,n_out,T", [(1, 2, 1, 1), (1, 2, 1, 9), (3, 6, 2, 15)])
def test_ref_diag_bptt_matches_finite_differences(rng, n_in, n_hidden, n_out, T):
    p = rd.random_params(rng, n_in, n_hidden, n_out)
    xs, ys = rng.normal(size=(T, n_in)), rng.normal(size=(T, n_out))
    g = rd.bptt_gradient(p, xs, ys)
    g_fd = rd.finite_difference_gradient(p, xs, ys, eps=1e-6)
    for name in rd.PARAM_NAMES:
        if T == 1 and name in ("decay", "angle"):    # h_0 = 0: no effect at T = 1
            assert not np.any(g[name]) and not np.any(g_fd[name])
            continue
        assert relative_error(g[name], g_fd[name]) <= 1e-6, name
    w = np.zeros(T)
    w[-1] = 1.0
    g_w = rd.bptt_gradient(p, xs, ys, w)
    g_w_fd = rd.finite_difference_gradient(p, xs, ys, eps=1e-6, weights=w)
    for name in ("B", "W_out"):
        assert relative_error(g_w[name], g_w_fd[name]) <= 1e-6, name


def test_ref_diag_forward_by_hand():
    """One pair, one input: two steps written out."""
    p = {"decay": np.array([0.3]), "angle": np.array([0.7]),
         "B": np.array([[0.5], [-1.0]]), "b": np.array([0.1, 0.2]),
         "W_out": np.array([[2.0, -1.0]]), "b_out": np.array([0.05])}
    xs = np.array([[1.0], [-2.0]])
    r = 1.0 / (1.0 + np.exp(-0.3))
    c, s = np.cos(0.7), np.sin(0.7)
    h1 = np.array([0.5 * 1.0 + 0.1, -1.0 * 1.0 + 0.2])
    h2 = np.array([r * (c * h1[0] - s * h1[1]) + 0.5 * -2.0 + 0.1,
                   r * (s * h1[0] + c * h1[1]) + -1.0 * -2.0 + 0.2])
    hs, yhats = rd.forward(p, xs)
    np.testing.assert_allclose(hs, [h1, h2], rtol=1e-14)
    y = [2.0 * np.tanh(h[0]) - np.tanh(h[1]) + 0.05 for h in (h1, h2)]
    np.testing.assert_allclose(yhats[:, 0], y, rtol=1e-14)


# ====================================================================
# 2. SnAp-2 (DESIGN 3.4)
# ====================================================================


@pytest.mark.parametrize("how", ["rec_density=1.0", "rec_mask=ones", "no mask"])
@pytest.mark.parametrize("n_in,n_hidden,n_out,T", [(1, 1, 1, 1), (3, 8, 2, 30), (2, 13, 1, 17)])
def test_snap2_dense_is_exact_rtrl(rng, how, n_in, n_hidden, n_out, T):
    """Dense mask (or none): gradient() == float64 BPTT (1e-4) and ==
    learner="rtrl" on the same parameters (1e-4)."""
    kw = {"rec_density=1.0": {"rec_density": 1.0},
          "rec_mask=ones": {"rec_mask": np.ones((n_hidden, n_hidden), dtype=bool)},
          "no mask": {}}[how]
    net = make_net(n_in, n_hidden, n_out, "snap2", seed=2, **kw)
    assert np.all(net.params["W_rec"] != 0)     # dense really means dense
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    assert_gradients_close(g, bptt_gradient(params64(net), xs, ys), what="vs BPTT: ")
    exact = make_net(n_in, n_hidden, n_out, "rtrl", seed=2)
    set_params(exact, params64(net))
    g_rtrl = exact.gradient(xs, ys)
    assert_gradients_close(g, {k: v.astype(np.float64) for k, v in g_rtrl.items()},
                           what="vs rtrl: ")


def sparse_case(rng, n_in=3, n_hidden=8, n_out=2, density=0.3, mask_seed=11):
    mask = random_mask(np.random.default_rng(mask_seed), n_hidden, density)
    params = masked_params(rng, n_in, n_hidden, n_out, mask)
    return mask, params


@pytest.mark.parametrize("n_in,n_hidden,n_out,T,density", [
    (3, 8, 2, 25, 0.3), (2, 12, 1, 30, 0.15), (1, 5, 3, 12, 0.5), (4, 40, 2, 40, 0.1)])
def test_snap2_sparse_matches_the_restricted_recursion(rng, n_in, n_hidden, n_out, T, density):
    """Sparse explicit rec_mask: gradient() == float64 SnAp-2 (P[k,i,:] kept only
    for k in S_i) to 1e-4, masked W_rec entries exactly 0 — and the case is one
    where SnAp-2 is far from exact RTRL and from SnAp-1, so neither would pass."""
    mask, p = sparse_case(rng, n_in, n_hidden, n_out, density)
    net = make_net(n_in, n_hidden, n_out, "snap2", rec_mask=mask, seed=4)
    # the mask's orientation: W_rec[k, l] lives exactly where mask[k, l]
    assert np.array_equal(net.params["W_rec"] != 0, mask)
    set_params(net, p)
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    p64 = params64(net)
    g_ref = snap2_gradient(p64, xs, ys, mask)
    assert_gradients_close(g, g_ref)
    assert np.all(g["W_rec"][~mask] == 0.0)
    g_exact = bptt_gradient(p64, xs, ys)
    g_exact["W_rec"] *= mask
    g_snap1 = snap1_gradient(p64, xs, ys, rec_mask=mask)
    assert relative_error(g_ref["W_in"], g_exact["W_in"]) > 10 * GRAD_REL_TOL
    assert relative_error(g_ref["W_in"], g_snap1["W_in"]) > 10 * GRAD_REL_TOL


def test_snap2_block_diagonal_mask_is_exact(rng):
    """Fully connected 2x2 / 3x3 blocks: SnAp-2 drops nothing (reference test
    above), so gradient() == BPTT with the masked entries zeroed (1e-4)."""
    n = 7
    block = np.zeros((n, n), bool)
    block[:2, :2] = block[2:4, 2:4] = block[4:, 4:] = True
    p = masked_params(rng, 2, n, 2, block)
    net = make_net(2, n, 2, "snap2", rec_mask=block, seed=0)
    set_params(net, p)
    xs, ys = make_sequence(rng, 20, 2, 2)
    g_ref = bptt_gradient(params64(net), xs, ys)
    g_ref["W_rec"] *= block
    assert_gradients_close(net.gradient(xs, ys), g_ref)


def test_snap2_online_update_after_steps_without_targets(rng):
    """Sparse mask, SGD: T-1 step(x), then step(x_T, y_T): the update is
    lr * (SnAp-2 gradient of L_T alone); tolerance 1e-3."""
    lr, T = 0.05, 10
    mask, p = sparse_case(rng)
    net = make_net(3, 8, 2, "snap2", rec_mask=mask, optimizer="sgd", lr=lr, seed=1)
    set_params(net, p)
    p0 = params64(net)
    xs, ys = make_sequence(rng, T, 3, 2)
    for x in xs[:-1]:
        net.step(x)
    net.step(xs[-1], ys[-1])
    g_ref = snap2_gradient(p0, xs, ys, mask, weights=one_hot(T, T))
    assert np.linalg.norm(g_ref["W_rec"]) > 1e-3
    assert_update_is(p0, params64(net), lr, g_ref)
    assert np.all(net.params["W_rec"][~mask] == 0.0)


def test_snap2_masked_weights_stay_zero_through_200_adam_steps(rng):
    """200 online Adam steps (and clipping) on a sparse mask: masked W_rec
    entries exactly 0 the whole time, the unmasked ones moved."""
    mask, p = sparse_case(rng, n_hidden=10, density=0.25)
    net = make_net(3, 10, 2, "snap2", rec_mask=mask, optimizer="adam", lr=1e-2, clip=1.0,
                   seed=5)
    set_params(net, p)
    w0 = np.array(net.params["W_rec"])
    xs, ys = make_sequence(rng, 200, 3, 2)
    for i, (x, y) in enumerate(zip(xs, ys)):
        net.step(x, y)
        if i % 50 == 0:
            assert np.all(net.params["W_rec"][~mask] == 0.0), i
    w1 = net.params["W_rec"]
    assert np.all(w1[~mask] == 0.0)
    assert np.all(w1[mask] != w0[mask]), "some unmasked weights never moved"
    assert net.stats["updates"] == 200


def test_snap2_rec_density_draws_a_seeded_mask():
    """rec_density=d: about d*n^2 connections (the zeros of W_rec), the same
    mask for the same seed, another mask for another seed."""
    n = 40
    a = make_net(2, n, 1, "snap2", rec_density=0.2, seed=3)
    b = make_net(2, n, 1, "snap2", rec_density=0.2, seed=3)
    c = make_net(2, n, 1, "snap2", rec_density=0.2, seed=4)
    mask_a = a.params["W_rec"] != 0
    assert 0.12 <= mask_a.mean() <= 0.28, mask_a.mean()
    np.testing.assert_array_equal(a.rec_mask, mask_a)     # the documented property
    np.testing.assert_array_equal(mask_a, b.params["W_rec"] != 0)
    assert not np.array_equal(mask_a, c.params["W_rec"] != 0)


def test_snap2_dense_online_run_is_online_rtrl(rng):
    """No mask: 25 online SGD steps == the float64 online RTRL reference
    (current W_rec in the recursion); params and predictions relative 1e-4."""
    lr = 0.02
    net = make_net(3, 8, 2, "snap2", optimizer="sgd", lr=lr, seed=13)
    set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, 25, 3, 2)
    preds = np.array([net.step(x, y) for x, y in zip(xs, ys)])
    p_ref, yhats_ref = online_rtrl_sgd(p0, xs, ys, lr)
    assert relative_error(preds, yhats_ref) <= 1e-4
    p1 = params64(net)
    for name in PARAM_NAMES:
        assert relative_error(p1[name], p_ref[name]) <= 1e-4, name


# ====================================================================
# 3. SnAp-1 (DESIGN 3.3)
# ====================================================================


@pytest.mark.parametrize("n_in,n_hidden,n_out,T", [(1, 1, 1, 1), (3, 8, 2, 30), (2, 17, 1, 20)])
def test_snap1_is_exact_for_diagonal_recurrence(rng, n_in, n_hidden, n_out, T):
    """W_rec diagonal (written through the live view): gradient() == float64 BPTT, 1e-4."""
    net = make_net(n_in, n_hidden, n_out, "snap1", seed=3)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    net.params["W_rec"][...] = np.diag(rng.uniform(-0.95, 0.95, n_hidden))
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    assert_gradients_close(g, bptt_gradient(params64(net), xs, ys))


@pytest.mark.parametrize("n_in,n_hidden,n_out,T", [(3, 8, 2, 30), (2, 17, 1, 20), (1, 3, 2, 6)])
def test_snap1_dense_matches_its_recursion_not_bptt(rng, n_in, n_hidden, n_out, T):
    """Dense W_rec: gradient() == float64 SnAp-1 recursion (1e-4) and differs
    from BPTT (W_rec part relative error > 1e-2); readout exact (1e-4)."""
    net = make_net(n_in, n_hidden, n_out, "snap1", seed=3)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    p = params64(net)
    assert_gradients_close(g, snap1_gradient(p, xs, ys))
    g_bptt = bptt_gradient(p, xs, ys)
    assert relative_error(g["W_rec"], g_bptt["W_rec"]) > DIFFERS
    assert_gradients_close(g, g_bptt, names=("W_out", "b_out"))


def test_snap1_online_update_after_steps_without_targets(rng):
    """SGD: T-1 step(x), then step(x_T, y_T): update == lr * SnAp-1 gradient of
    L_T alone (its traces carried through the target-less steps); 1e-3."""
    lr, T = 0.05, 10
    net = make_net(3, 8, 2, "snap1", optimizer="sgd", lr=lr, seed=1)
    set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, T, 3, 2)
    for x in xs[:-1]:
        net.step(x)
    net.step(xs[-1], ys[-1])
    g_ref = snap1_gradient(p0, xs, ys, weights=one_hot(T, T))
    assert_update_is(p0, params64(net), lr, g_ref)
    # and it is not the one-step (k = 1) gradient: the traces carried history
    g_k1 = truncated_bptt_step_gradient(p0, xs, ys, T, 1)
    assert relative_error(g_ref["W_in"], g_k1["W_in"]) > DIFFERS


def test_snap1_with_a_sparse_mask(rng):
    mask, p = sparse_case(rng)
    net = make_net(3, 8, 2, "snap1", rec_mask=mask, seed=1)
    assert np.array_equal(net.params["W_rec"] != 0, mask)
    set_params(net, p)
    xs, ys = make_sequence(rng, 20, 3, 2)
    g = net.gradient(xs, ys)
    assert np.all(g["W_rec"][~mask] == 0.0)
    assert_gradients_close(g, snap1_gradient(params64(net), xs, ys, rec_mask=mask))


# ====================================================================
# 4. TBPTT(k) (DESIGN 3.6)
# ====================================================================


@pytest.mark.parametrize("k", [12, 13, 50])
def test_tbptt_long_window_is_full_bptt(rng, k):
    """window >= T: gradient() == float64 BPTT (1e-4)."""
    T = 12
    net = make_net(3, 8, 2, "tbptt", window=k, seed=3)
    set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
    xs, ys = make_sequence(rng, T, 3, 2)
    assert_gradients_close(net.gradient(xs, ys), bptt_gradient(params64(net), xs, ys))


@pytest.mark.parametrize("n_in,n_hidden,n_out,T,k", [
    (3, 8, 2, 20, 1), (3, 8, 2, 20, 3), (3, 8, 2, 20, 7), (1, 1, 1, 9, 2), (2, 17, 3, 33, 5),
    (2, 5, 1, 11, 6), (2, 5, 1, 11, 10)])
def test_tbptt_short_window_is_the_truncated_gradient(rng, n_in, n_hidden, n_out, T, k):
    """window k < T: gradient() == sum_t of dL_t through <= k steps (float64
    reference, 1e-4), which differs from full BPTT."""
    net = make_net(n_in, n_hidden, n_out, "tbptt", window=k, seed=3)
    set_params(net, random_params(rng, n_in, n_hidden, n_out, scale=0.9))
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    p = params64(net)
    g_ref = truncated_bptt_gradient(p, xs, ys, k)
    assert_gradients_close(g, g_ref)
    g_full = bptt_gradient(p, xs, ys)
    if k < T - 1:   # (k = T-1 cuts only h_1's dependence on W_in, b: ~1e-6 here)
        assert max_rel_err(g_ref, g_full, W_PART) > 10 * GRAD_REL_TOL


@pytest.mark.parametrize("k", [1, 3, 9, 10, 25])
def test_tbptt_online_update_is_the_truncated_last_step_gradient(rng, k):
    """Fresh net, SGD: T-1 step(x) without target, then step(x_T, y_T).
    The update == lr * dL_T/dtheta through min(k, T) steps: for k >= T that is
    BPTT of the last step's loss; for k < T the truncated one.  Tolerance 1e-3."""
    lr, T = 0.05, 10
    net = make_net(3, 8, 2, "tbptt", window=k, optimizer="sgd", lr=lr, seed=1)
    set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
    p0 = params64(net)
    xs, ys = make_sequence(rng, T, 3, 2)
    for x in xs[:-1]:
        net.step(x)
    net.step(xs[-1], ys[-1])
    g_ref = truncated_bptt_step_gradient(p0, xs, ys, T, k)
    assert_update_is(p0, params64(net), lr, g_ref)
    g_exact = bptt_gradient(p0, xs, ys, one_hot(T, T))
    if k >= T:
        assert max_rel_err(g_ref, g_exact) <= 1e-10
    elif k <= 3:
        assert relative_error(g_ref["W_rec"], g_exact["W_rec"]) > DIFFERS
    assert net.stats["updates"] == 1 and net.stats["steps"] == T


def test_tbptt_online_first_step(rng):
    """One step(x, y) on a fresh net, any window: update == lr * dL_1 (exact)."""
    lr = 0.05
    for k in (1, 4):
        net = make_net(3, 8, 2, "tbptt", window=k, optimizer="sgd", lr=lr, seed=1)
        set_params(net, random_params(rng, 3, 8, 2, scale=0.9))
        p0 = params64(net)
        xs, ys = make_sequence(rng, 1, 3, 2)
        net.step(xs[0], ys[0])
        assert_update_is(p0, params64(net), lr, bptt_gradient(p0, xs, ys))


# ====================================================================
# 5. The diagonal (rotation-decay) cell (DESIGN 3.7)
# ====================================================================

DIAG_SIZES = [(1, 2, 1, 1), (1, 2, 1, 40), (3, 6, 2, 1), (3, 6, 2, 40), (2, 16, 3, 37),
              (4, 10, 1, 13)]


def diag_net(n_in, n_hidden, n_out, **kwargs):
    return rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", cell="diag", **kwargs)


def diag_params64(net):
    return {name: np.array(net.params[name], dtype=np.float64) for name in rd.PARAM_NAMES}


def test_diag_parameter_views(rng):
    net = diag_net(3, 6, 2, seed=0)
    shapes = {name: np.shape(v) for name, v in net.params.items()}
    assert shapes == {"decay": (3,), "angle": (3,), "B": (6, 3), "b": (6,),
                      "W_out": (2, 6), "b_out": (2,)}, shapes
    for v in net.params.values():
        assert v.dtype == np.float32 and np.all(np.isfinite(v))


@pytest.mark.parametrize("n_in,n_hidden,n_out,T", DIAG_SIZES)
def test_diag_gradient_matches_finite_differences(rng, n_in, n_hidden, n_out, T):
    """gradient() == float64 central differences of the reference forward
    (eps = 1e-6), relative 1e-4 per parameter; once with random parameters
    written through the live views, once with the model's own initialisation."""
    xs, ys = make_sequence(rng, T, n_in, n_out)
    for own_init in (False, True):
        net = diag_net(n_in, n_hidden, n_out, seed=6)
        if not own_init:
            set_params(net, rd.random_params(rng, n_in, n_hidden, n_out), rd.PARAM_NAMES)
        p = diag_params64(net)
        g = net.gradient(xs, ys)
        g_fd = rd.finite_difference_gradient(p, xs, ys, eps=1e-6)
        assert_gradients_close(g, g_fd, names=rd.PARAM_NAMES,
                               what=f"own_init={own_init}: ")
        if T > 1:
            assert np.linalg.norm(g_fd["decay"]) > 1e-6 and np.linalg.norm(g_fd["angle"]) > 1e-6


def test_diag_gradient_long_sequence_against_analytic_bptt(rng):
    """n_hidden = 64, T = 200, r close to 1 (long memory): gradient() == the
    float64 analytic BPTT (itself proved by finite differences), 1e-4."""
    n_in, n_hidden, n_out, T = 3, 64, 2, 200
    p = rd.random_params(rng, n_in, n_hidden, n_out)
    p["decay"] = rng.uniform(2.0, 4.0, n_hidden // 2)       # r in (0.88, 0.98)
    net = diag_net(n_in, n_hidden, n_out, seed=1)
    set_params(net, p, rd.PARAM_NAMES)
    xs, ys = make_sequence(rng, T, n_in, n_out)
    xs *= 0.3
    assert_gradients_close(net.gradient(xs, ys), rd.bptt_gradient(diag_params64(net), xs, ys),
                           names=rd.PARAM_NAMES)


@pytest.mark.parametrize("n_in,n_hidden,n_out", [(1, 2, 1), (3, 6, 2), (2, 16, 3)])
def test_diag_step_and_predict_match_reference_forward(rng, n_in, n_hidden, n_out):
    """step(x) without target and predict(x) from a fresh net == reference
    forward, relative 1e-5; neither changes the parameters."""
    for method in ("step", "predict"):
        net = diag_net(n_in, n_hidden, n_out, seed=7)
        set_params(net, rd.random_params(rng, n_in, n_hidden, n_out), rd.PARAM_NAMES)
        p = diag_params64(net)
        xs, _ = make_sequence(rng, 30, n_in, n_out)
        preds = np.array([getattr(net, method)(x) for x in xs])
        assert preds.dtype == np.float32 and preds.shape == (30, n_out)
        _, yhats = rd.forward(p, xs)
        assert relative_error(preds, yhats) <= PRED_REL_TOL, method
        for name in rd.PARAM_NAMES:
            np.testing.assert_array_equal(net.params[name], p[name].astype(np.float32))


def test_diag_online_sgd_updates(rng):
    """SGD: the first step(x, y) moves the params by -lr * dL_1; after T-1
    target-less steps, step(x_T, y_T) moves them by -lr * dL_T/dtheta through
    the whole sequence (exact RTRL of the diag cell).  Tolerance 1e-3."""
    lr, T = 0.05, 12
    net = diag_net(2, 8, 2, optimizer="sgd", lr=lr, seed=2)
    set_params(net, rd.random_params(rng, 2, 8, 2), rd.PARAM_NAMES)
    p0 = diag_params64(net)
    xs, ys = make_sequence(rng, T, 2, 2)
    net.step(xs[0], ys[0])
    g1 = rd.bptt_gradient(p0, xs[:1], ys[:1])
    assert_update_is(p0, diag_params64(net), lr, {k: g1[k] for k in ("B", "b", "W_out", "b_out")},
                     names=("B", "b", "W_out", "b_out"))
    for name in ("decay", "angle"):   # no effect at t = 1 (h_0 = 0)
        np.testing.assert_array_equal(net.params[name], p0[name].astype(np.float32))

    net = diag_net(2, 8, 2, optimizer="sgd", lr=lr, seed=2)
    set_params(net, p0, rd.PARAM_NAMES)
    for x in xs[:-1]:
        net.step(x)
    net.step(xs[-1], ys[-1])
    g_ref = rd.bptt_gradient(p0, xs, ys, one_hot(T, T))
    assert np.linalg.norm(g_ref["decay"]) > 1e-3 and np.linalg.norm(g_ref["angle"]) > 1e-3
    assert_update_is(p0, diag_params64(net), lr, g_ref, names=rd.PARAM_NAMES)


def test_diag_gradient_leaves_the_model_untouched(rng):
    net = diag_net(2, 6, 1, optimizer="adam", lr=1e-2, seed=3)
    xs, ys = make_sequence(rng, 20, 2, 1)
    for x, y in zip(xs, ys):
        net.step(x, y)
    before = net.snapshot()
    net.gradient(xs, ys)
    after = net.snapshot()
    assert set(before) == set(after)
    for key in before:
        assert np.array_equal(before[key], after[key]), key


@pytest.mark.parametrize("n_hidden", [1, 3, 7])
def test_diag_odd_hidden_size_is_rejected(n_hidden):
    with pytest.raises(ValueError, match="n_hidden"):
        diag_net(2, n_hidden, 1)


@pytest.mark.parametrize("learner", ["snap1", "snap2", "uoro", "tbptt"])
def test_diag_needs_the_rtrl_learner(learner):
    kwargs = {"window": 3} if learner == "tbptt" else {}
    with pytest.raises(ValueError, match="learner"):
        rtrl_edge.OnlineRNN(2, 4, 1, learner=learner, cell="diag", **kwargs)


# ====================================================================
# 6. UORO (DESIGN 3.5)
# ====================================================================

UORO_SIZE = (3, 5, 2)
UORO_T = 8
UORO_DRAWS = 1000


def test_uoro_is_unbiased_over_seeds_and_noisy_per_draw(rng):
    """1000 models, seeds 0..999, identical parameters copied in through
    net.params: cosine(mean of their gradient(), exact BPTT) >= 0.95 over all
    parameters and over the W part (W_rec, W_in, b) alone; the median
    single-draw cosine < 0.9 (all) and < 0.6 (W part); the readout of every
    draw is exact (1e-4).  (The float64 reference UORO gives 0.998 / 0.988 for
    the mean and 0.46 / 0.15 for the median single draw at this size.)"""
    n_in, n_hidden, n_out = UORO_SIZE
    p = random_params(rng, n_in, n_hidden, n_out, scale=0.9)
    xs, ys = make_sequence(rng, UORO_T, n_in, n_out)
    start = time.perf_counter()
    draws, draws_w = [], []
    p32 = None
    for seed in range(UORO_DRAWS):
        net = make_net(n_in, n_hidden, n_out, "uoro", seed=seed)
        set_params(net, p)
        if p32 is None:
            p32 = params64(net)
            g_exact = bptt_gradient(p32, xs, ys)
        g = net.gradient(xs, ys)
        if seed < 20:
            assert_gradients_close(g, g_exact, names=("W_out", "b_out"))
        draws.append(flatten(g))
        draws_w.append(flatten(g, W_PART))
    elapsed = time.perf_counter() - start
    draws, draws_w = np.array(draws), np.array(draws_w)
    assert np.all(np.isfinite(draws))
    exact, exact_w = flatten(g_exact), flatten(g_exact, W_PART)
    cos_mean = cosine(draws.mean(axis=0), exact)
    cos_mean_w = cosine(draws_w.mean(axis=0), exact_w)
    med = np.median([cosine(d, exact) for d in draws])
    med_w = np.median([cosine(d, exact_w) for d in draws_w])
    assert cos_mean >= 0.95, (cos_mean, med)
    assert cos_mean_w >= 0.95, (cos_mean_w, med_w)
    assert med < 0.9, med
    assert med_w < 0.6, med_w
    # the draws really are different (seeds change the signs)
    assert len({d.tobytes() for d in draws_w[:50]}) == 50
    assert elapsed < 15.0, elapsed


def test_uoro_gradient_is_reproducible(rng):
    """Same model twice, and two models with the same seed: bit-identical;
    another seed: a different estimate of the W part, the same readout."""
    n_in, n_hidden, n_out = UORO_SIZE
    p = random_params(rng, n_in, n_hidden, n_out, scale=0.9)
    xs, ys = make_sequence(rng, UORO_T, n_in, n_out)
    a = make_net(n_in, n_hidden, n_out, "uoro", seed=21)
    b = make_net(n_in, n_hidden, n_out, "uoro", seed=21)
    c = make_net(n_in, n_hidden, n_out, "uoro", seed=22)
    for net in (a, b, c):
        set_params(net, p)
    ga1, ga2, gb, gc = a.gradient(xs, ys), a.gradient(xs, ys), b.gradient(xs, ys), c.gradient(xs, ys)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(ga1[name], ga2[name])
        np.testing.assert_array_equal(ga1[name], gb[name])
    assert not np.array_equal(ga1["W_in"], gc["W_in"])
    np.testing.assert_allclose(ga1["W_out"], gc["W_out"], rtol=1e-6, atol=1e-7)


# ====================================================================
# 7. Sparse W_rec for every Elman learner
# ====================================================================


@pytest.mark.parametrize("learner", ELMAN_LEARNERS)
def test_masked_weights_start_zero_get_zero_gradient_and_stay_zero(rng, learner):
    """rec_mask: W_rec is 0 exactly off the mask at construction, gradient()
    is 0 there, and 200 online Adam steps leave it 0 while the rest moves."""
    mask = random_mask(np.random.default_rng(8), 8, 0.3)
    net = make_net(3, 8, 2, learner, rec_mask=mask, optimizer="adam", lr=1e-2, seed=9)
    w = net.params["W_rec"]
    assert np.array_equal(w != 0, mask)
    np.testing.assert_array_equal(net.rec_mask, mask)
    xs, ys = make_sequence(rng, 200, 3, 2)
    g = net.gradient(xs[:20], ys[:20])
    assert np.all(g["W_rec"][~mask] == 0.0)
    assert np.any(g["W_rec"][mask] != 0.0)
    w0 = np.array(w)
    for x, y in zip(xs, ys):
        net.step(x, y)
    assert np.all(net.params["W_rec"][~mask] == 0.0)
    assert np.any(net.params["W_rec"][mask] != w0[mask])


def test_rtrl_with_a_mask_is_the_masked_bptt_gradient(rng):
    """Exact RTRL on a sparse net: gradient() == BPTT with the masked entries
    zeroed (1e-4)."""
    mask, p = sparse_case(rng)
    net = make_net(3, 8, 2, "rtrl", rec_mask=mask, seed=1)
    set_params(net, p)
    xs, ys = make_sequence(rng, 20, 3, 2)
    g_ref = bptt_gradient(params64(net), xs, ys)
    assert np.any(g_ref["W_rec"][~mask] != 0)
    g_ref["W_rec"] *= mask
    assert_gradients_close(net.gradient(xs, ys), g_ref)


# ====================================================================
# 8. Random shapes, masks and windows, after online warm-up
# ====================================================================


@settings(max_examples=40, deadline=None, database=None)
@given(learner=st.sampled_from(["snap1", "snap2", "tbptt"]), n_in=st.integers(1, 5),
       n_hidden=st.integers(1, 20), n_out=st.integers(1, 3), T=st.integers(1, 30),
       density=st.sampled_from([None, 0.1, 0.3, 0.7, 1.0]), window=st.integers(1, 12),
       warm=st.integers(0, 20), seed=st.integers(0, 2**32 - 1))
def test_random_sizes_against_the_references(learner, n_in, n_hidden, n_out, T, density,
                                             window, warm, seed):
    """Any shape (blocking and index-set edge cases), any mask, any window; the
    model first takes `warm` online Adam steps (gradient() must still start
    from h_0 = 0 with the current parameters).  Reference: SnAp-1 / SnAp-2 /
    truncated BPTT in float64, relative 1e-4."""
    rng = np.random.default_rng(seed)
    mask = None if density is None else random_mask(rng, n_hidden, density)
    kw = {} if mask is None else {"rec_mask": mask}
    if learner == "tbptt":
        kw["window"] = window
    net = make_net(n_in, n_hidden, n_out, learner, optimizer="adam", lr=1e-2,
                   seed=seed % 1000, **kw)
    p = random_params(rng, n_in, n_hidden, n_out, scale=0.9)
    if mask is not None:
        p["W_rec"] = p["W_rec"] * mask
    set_params(net, p)
    for x, y in zip(*make_sequence(rng, warm, n_in, n_out)):
        net.step(x, y)
    xs, ys = make_sequence(rng, T, n_in, n_out)
    g = net.gradient(xs, ys)
    p64 = params64(net)
    if learner == "snap1":
        g_ref = snap1_gradient(p64, xs, ys, rec_mask=mask)
    elif learner == "snap2":
        g_ref = snap2_gradient(p64, xs, ys, mask)
    else:
        g_ref = truncated_bptt_gradient(p64, xs, ys, window)
        if mask is not None:
            g_ref["W_rec"] *= mask
    assert_gradients_close(g, g_ref)
    if mask is not None:
        assert np.all(g["W_rec"][~mask] == 0.0)
        assert np.all(net.params["W_rec"][~mask] == 0.0)


@settings(max_examples=25, deadline=None, database=None)
@given(n_in=st.integers(1, 4), half=st.integers(1, 12), n_out=st.integers(1, 3),
       T=st.integers(1, 40), warm=st.integers(0, 20), seed=st.integers(0, 2**32 - 1))
def test_diag_random_sizes_against_bptt(n_in, half, n_out, T, warm, seed):
    """diag cell, any even size, after `warm` online Adam steps: gradient() ==
    the float64 analytic BPTT (proved by finite differences above), 1e-4."""
    rng = np.random.default_rng(seed)
    net = diag_net(n_in, 2 * half, n_out, optimizer="adam", lr=1e-2, seed=seed % 1000)
    for x, y in zip(*make_sequence(rng, warm, n_in, n_out)):
        net.step(x, y)
    xs, ys = make_sequence(rng, T, n_in, n_out)
    assert_gradients_close(net.gradient(xs, ys), rd.bptt_gradient(diag_params64(net), xs, ys),
                           names=rd.PARAM_NAMES)


# ====================================================================
# 9. Constructor errors for the new arguments (ValueError naming the argument)
# ====================================================================


@pytest.mark.parametrize("kwargs,name", [
    ({"learner": "tbptt"}, "window"),
    ({"learner": "tbptt", "window": 0}, "window"),
    ({"learner": "tbptt", "window": -2}, "window"),
    ({"learner": "tbptt", "window": 2.5}, "window"),
    ({"learner": "rtrl", "cell": "lstm"}, "cell"),
    ({"learner": "snap2", "rec_density": 0.0}, "rec_density"),
    ({"learner": "snap2", "rec_density": 1.5}, "rec_density"),
    ({"learner": "snap2", "rec_density": float("nan")}, "rec_density"),
    ({"learner": "snap2", "rec_mask": np.ones((4, 3), bool)}, "rec_mask"),
    ({"learner": "snap2", "rec_mask": np.ones(16, bool)}, "rec_mask"),
])
def test_constructor_rejects_bad_new_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        rtrl_edge.OnlineRNN(2, 4, 1, **kwargs)


@pytest.mark.parametrize("learner", ["snap1", "snap2", "uoro", "tbptt"])
def test_every_new_learner_builds_and_learns(learner):
    """Smoke: the learner name is accepted, step(x, y) updates, the predictions
    stay finite."""
    net = make_net(2, 6, 1, learner, optimizer="sgd", lr=1e-2, seed=0)
    assert net.learner == learner
    rng = np.random.default_rng(0)
    for _ in range(20):
        yhat = net.step(rng.normal(size=2), rng.normal(size=1))
        assert np.all(np.isfinite(yhat))
    assert net.stats["updates"] == 20


CELL_LEARNERS = ([("elman", l) for l in ELMAN_LEARNERS] + [("diag", "rtrl")]
                 + [("gru", l) for l in ELMAN_LEARNERS])


@pytest.mark.parametrize("isa", [None, "base"])
@pytest.mark.parametrize("cell,learner", CELL_LEARNERS)
@pytest.mark.parametrize("clip", [None, 1e-3])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_first_update_is_the_clipped_gradient_step(cell, learner, clip, optimizer, isa,
                                                   monkeypatch):
    """The fused passes (a SnAp-1 or UORO gradient summed as it is written;
    the optimiser's step and its check in one pass; the packed sensitivity
    product) change nothing of the maths: from a fresh model, one step moves
    the parameters by -lr * min(1, clip / |g|) * g, g being `gradient` of that
    one sample (computed apart, in float64 here), clip on and off, every cell
    and learner.  Momentum's first step is sgd's; Adam's is
    -lr * m / (sqrt(v) + eps) with the bias-corrected m = s g, v = (s g)^2.
    Run with the widest kernels this CPU has and with the portable 4-wide
    ones (RTRL_EDGE_ISA=base, what a NEON build runs)."""
    if isa:
        monkeypatch.setenv("RTRL_EDGE_ISA", isa)
    rng = np.random.default_rng(3)
    net = make_net(3, 6, 2, learner, cell=cell, optimizer=optimizer, lr=0.05, clip=clip,
                   seed=4, normalize=False)
    x, y = rng.normal(size=3), rng.normal(size=2)
    before = {k: np.array(v, dtype=np.float64) for k, v in net.params.items()}
    g = {k: np.asarray(v, dtype=np.float64) for k, v in net.gradient([x], [y]).items()}
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
    scale = min(1.0, clip / norm) if clip else 1.0
    if clip:
        assert scale < 1.0, "the test must clip"
    net.step(x, y)
    for k in before:
        moved = np.asarray(net.params[k], dtype=np.float64) - before[k]
        sg = scale * g[k]
        want = -0.05 * (sg / (np.abs(sg) + 1e-8) if optimizer == "adam" else sg)
        np.testing.assert_allclose(moved, want, rtol=1e-3,
                                   atol=1e-6 * max(1.0, float(np.abs(before[k]).max())),
                                   err_msg=f"{cell} {learner} {optimizer} clip={clip} {k}")
