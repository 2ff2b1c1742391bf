"""The float64 references for the GRU cell and the softmax loss prove
themselves before they judge any kernel (DESIGN.md 3.9, 3.10).

Nothing here imports rtrl_edge.  Tolerances (all float64):

- against PyTorch (nn.GRUCell + nn.Linear, autograd, float64): relative 1e-12
  for states, outputs, losses and gradients (two float64 implementations of
  the same formulas: only rounding differs);
- against central finite differences (eps = 1e-6): relative error <= 1e-6
  per parameter array (truncation ~eps^2, rounding ~1e-16/eps = 1e-10; the
  observed errors are ~1e-8);
- between exact methods (BPTT, RTRL, dense SnAp-2, SnAp-2 on block-diagonal
  masks, SnAp-1 on diagonal W_hh blocks, TBPTT with k >= T): relative 1e-10;
- "differs": relative error > 1e-2;
- UORO: the mean of 1000 draws has cosine >= 0.95 with the exact gradient,
  the median single draw has cosine < 0.6 (it is an unbiased but noisy estimate);
- online RTRL with lr = 1e-9: (theta_0 - theta_T) / lr == BPTT to 1e-5
  (O(lr) drift and 1e-16 / lr cancellation).

Sizes stay small (n <= 5, T <= 10) so the whole module runs in seconds.
"""

import numpy as np
import pytest

import reference as elman
import reference_diag as diag
import reference_gru as gru
from reference_loss import LOSSES, labels_to_rows, log_softmax, output_error, softmax

FD_TOL = 1e-6
EXACT_TOL = 1e-10
TORCH_TOL = 1e-12
DIFFERS = 1e-2
CORE = gru.CORE_NAMES


# ----------------------------------------------------------------- helpers


def max_rel_err(g, g_ref, names=gru.PARAM_NAMES):
    return max(gru.relative_error(g[name], g_ref[name]) for name in names)


def assert_close(g, g_ref, tol, names=gru.PARAM_NAMES, what=""):
    for name in names:
        assert np.shape(g[name]) == np.shape(g_ref[name]), (what, name)
        err = gru.relative_error(g[name], g_ref[name])
        assert err <= tol, f"{what}{name}: relative error {err:.3g} > {tol:g}"


def targets(rng, T, n_out, loss):
    """Target rows for ``loss``: normal targets for "mse"; for "softmax" a mix
    of one-hot rows, soft probability rows, an unnormalised row and an
    unlabelled (all-zero) row."""
    if loss == "mse":
        return rng.normal(size=(T, n_out))
    rows, _ = labels_to_rows(rng.integers(0, n_out, T), n_out)
    if T >= 3:
        rows[1] = rng.dirichlet(np.ones(n_out))           # a soft row
        rows[2] = 0.6 * rng.dirichlet(np.ones(n_out))     # sum(y) = 0.6
    if T >= 4:
        rows[3] = 0.0                                     # no label
    return rows


def some_zero_weights(T):
    """Weights with unlabelled steps (0), a half weight, and the rest 1."""
    w = np.ones(T)
    w[::3] = 0.0
    if T > 1:
        w[1] = 0.5
    return w


def sequence(rng, T, n_in, n_out, loss):
    return rng.normal(size=(T, n_in)), targets(rng, T, n_out, loss)


def central_differences(f, params, names, eps=1e-6):
    """Central differences of the scalar f(params) w.r.t. params[name], float64."""
    p = {name: np.array(v, dtype=np.float64) for name, v in params.items()}
    grad = {}
    for name in names:
        g = np.zeros_like(p[name])
        flat, flat_g = p[name].reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            plus = f(p)
            flat[i] = saved - eps
            minus = f(p)
            flat[i] = saved
            flat_g[i] = (plus - minus) / (2.0 * eps)
        grad[name] = g
    return grad


# ====================================================================
# 1. The softmax loss (reference_loss.py)
# ====================================================================


def fd_of_loss(yhat, y, loss, eps=1e-6):
    g = np.zeros_like(yhat)
    for q in range(len(yhat)):
        d = np.zeros_like(yhat)
        d[q] = eps
        g[q] = (output_error(yhat + d, y, loss)[0] - output_error(yhat - d, y, loss)[0]) / (2 * eps)
    return g


@pytest.mark.parametrize("row", ["one-hot", "soft", "unnormalised"])
@pytest.mark.parametrize("loss", LOSSES)
def test_output_error_is_the_derivative_of_the_loss(rng, loss, row):
    """e of output_error == d L / d yhat by central differences, relative 1e-7."""
    yhat = rng.normal(0.0, 2.0, 5)
    y = {"one-hot": np.eye(5)[2],
         "soft": rng.dirichlet(np.ones(5)),
         "unnormalised": 0.6 * rng.dirichlet(np.ones(5))}[row]
    L, e = output_error(yhat, y, loss)
    assert isinstance(L, float) and e.dtype == np.float64 and e.shape == (5,)
    assert gru.relative_error(e, fd_of_loss(yhat, y, loss)) <= 1e-7


def test_softmax_loss_by_hand():
    """L = -sum y log p, e = p sum(y) - y, written out for three logits."""
    yhat = np.array([1.0, -0.5, 2.0])
    p = np.exp(yhat) / np.sum(np.exp(yhat))
    np.testing.assert_allclose(softmax(yhat), p, rtol=1e-15)
    np.testing.assert_allclose(log_softmax(yhat), np.log(p), rtol=1e-14)
    L, e = output_error(yhat, np.array([0.0, 1.0, 0.0]), "softmax")
    assert L == pytest.approx(-np.log(p[1]), rel=1e-14)
    np.testing.assert_allclose(e, p - [0.0, 1.0, 0.0], rtol=1e-14)
    y = np.array([0.2, 0.1, 0.3])                         # sum 0.6
    L, e = output_error(yhat, y, "softmax")
    assert L == pytest.approx(-np.sum(y * np.log(p)), rel=1e-14)
    np.testing.assert_allclose(e, 0.6 * p - y, rtol=1e-14)
    L, e = output_error(yhat, np.zeros(3), "softmax")     # unlabelled row
    assert L == 0.0 and not np.any(e)


def test_softmax_loss_is_stable_for_huge_logits():
    """Logits of +-1000 overflow exp() unless the max is subtracted."""
    yhat = np.array([1000.0, -1000.0, 0.0])
    L, e = output_error(yhat, np.array([0.0, 1.0, 0.0]), "softmax")
    assert L == pytest.approx(2000.0, rel=1e-12)
    np.testing.assert_allclose(e, [1.0, -1.0, 0.0], atol=1e-300)
    assert np.all(np.isfinite(softmax(yhat))) and softmax(yhat)[0] == 1.0
    assert np.all(np.isfinite(log_softmax(yhat)))


def test_mse_loss_by_hand():
    L, e = output_error(np.array([1.0, 2.0]), np.array([0.5, 4.0]), "mse")
    assert L == 0.5 * (0.25 + 4.0)
    np.testing.assert_array_equal(e, [0.5, -2.0])


def test_labels_to_rows():
    rows, weights = labels_to_rows([2, -1, 0, 2], 3)
    np.testing.assert_array_equal(rows, [[0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(weights, [1, 0, 1, 1])
    assert rows.dtype == np.float64 and weights.dtype == np.float64
    for bad in ([3], [-2], [0, 1, 5]):
        with pytest.raises(ValueError, match="labels"):
            labels_to_rows(bad, 3)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="loss"):
        output_error(np.zeros(2), np.zeros(2), "hinge")


# ====================================================================
# 2. Elman and diagonal references with loss="softmax"
# ====================================================================


@pytest.mark.parametrize("loss", LOSSES)
def test_elman_bptt_matches_finite_differences(rng, loss):
    p = elman.random_params(rng, 2, 4, 3, scale=0.9)
    xs, ys = sequence(rng, 9, 2, 3, loss)
    w = some_zero_weights(9)
    g = elman.bptt_gradient(p, xs, ys, w, loss=loss)
    g_fd = elman.finite_difference_gradient(p, xs, ys, eps=1e-6, weights=w, loss=loss)
    assert_close(g, g_fd, FD_TOL, elman.PARAM_NAMES)


def test_elman_learners_with_softmax_are_exact_where_they_should_be(rng):
    """With loss="softmax" and unlabelled steps: dense SnAp-2, TBPTT(k >= T),
    SnAp-1 on a diagonal W_rec and online RTRL (lr -> 0) all equal BPTT;
    the readout of a UORO draw is exact."""
    loss = "softmax"
    p = elman.random_params(rng, 2, 4, 3, scale=0.9)
    xs, ys = sequence(rng, 10, 2, 3, loss)
    w = some_zero_weights(10)
    g = elman.bptt_gradient(p, xs, ys, w, loss=loss)
    names = elman.PARAM_NAMES
    assert max_rel_err(elman.snap2_gradient(p, xs, ys, None, w, loss=loss), g, names) <= EXACT_TOL
    assert max_rel_err(elman.truncated_bptt_gradient(p, xs, ys, 10, w, loss=loss), g, names) <= EXACT_TOL
    pd = dict(p, W_rec=np.diag(np.diag(p["W_rec"])))
    assert max_rel_err(elman.snap1_gradient(pd, xs, ys, w, loss=loss),
                       elman.bptt_gradient(pd, xs, ys, w, loss=loss), names) <= EXACT_TOL
    g_uoro = elman.uoro_gradient(p, xs, ys, np.random.default_rng(3), weights=w, loss=loss)
    assert_close(g_uoro, g, EXACT_TOL, ("W_out", "b_out"))
    # online RTRL has no weights: unlabelled steps are all-zero rows (e = 0)
    g_rows = elman.bptt_gradient(p, xs, ys * w[:, None], loss=loss)
    lr = 1e-9
    after, _ = elman.online_rtrl_sgd(p, xs, ys * w[:, None], lr, loss=loss)
    update = {name: (p[name] - after[name]) / lr for name in names}
    assert_close(update, g_rows, 1e-5, names)


@pytest.mark.parametrize("loss", LOSSES)
def test_diag_bptt_matches_finite_differences(rng, loss):
    p = diag.random_params(rng, 2, 4, 3)
    xs, ys = sequence(rng, 9, 2, 3, loss)
    w = some_zero_weights(9)
    g = diag.bptt_gradient(p, xs, ys, w, loss=loss)
    g_fd = diag.finite_difference_gradient(p, xs, ys, eps=1e-6, weights=w, loss=loss)
    assert_close(g, g_fd, FD_TOL, diag.PARAM_NAMES)


def test_unlabelled_steps_are_zero_rows_or_zero_weights_alike(rng):
    """A -1 label: weight 0, or an all-zero row with weight 1 - the same loss
    and gradient (softmax: L = 0 and e = 0 for a zero row)."""
    labels = np.array([1, -1, 0, -1, 2, 2])
    rows, w = labels_to_rows(labels, 3)
    p = elman.random_params(rng, 2, 3, 3)
    xs = rng.normal(size=(6, 2))
    a = elman.bptt_gradient(p, xs, rows, w, loss="softmax")
    b = elman.bptt_gradient(p, xs, rows, loss="softmax")
    assert_close(a, b, 1e-15, elman.PARAM_NAMES)
    assert elman.total_loss(p, xs, rows, w, loss="softmax") == pytest.approx(
        elman.total_loss(p, xs, rows, loss="softmax"), rel=1e-15)


# ====================================================================
# 3. GRU: forward and gradients against PyTorch
# ====================================================================


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="PyTorch is the optional outside check of the GRU reference")


def torch_run(torch, params, xs, ys=None, weights=None, loss="mse", labels=None, h0=None):
    """nn.GRUCell + nn.Linear in float64 with the given parameters.

    Returns hs, yhats, total loss and the autograd gradient dict (numpy).
    ``labels`` (class indices, -1 = none) uses cross_entropy(ignore_index=-1)
    instead of probability rows.
    """
    n, m, o = gru.sizes(params)
    f64 = torch.float64
    cell = torch.nn.GRUCell(m, n, dtype=f64)
    readout = torch.nn.Linear(n, o, dtype=f64)
    tensors = {"W_ih": cell.weight_ih, "W_hh": cell.weight_hh, "b_ih": cell.bias_ih,
               "b_hh": cell.bias_hh, "W_out": readout.weight, "b_out": readout.bias}
    with torch.no_grad():
        for name, tensor in tensors.items():
            tensor.copy_(torch.from_numpy(np.asarray(params[name], dtype=np.float64)))
    h = torch.zeros(1, n, dtype=f64) if h0 is None else torch.tensor(h0, dtype=f64)[None]
    hs = []
    for x in np.asarray(xs, dtype=np.float64):
        h = cell(torch.from_numpy(x)[None], h)
        hs.append(h[0])
    hs = torch.stack(hs)
    yhats = readout(hs)
    total = None
    if labels is not None:
        total = torch.nn.functional.cross_entropy(
            yhats, torch.as_tensor(labels), ignore_index=-1, reduction="sum")
    elif ys is not None:
        ys_t = torch.from_numpy(np.asarray(ys, dtype=np.float64))
        if loss == "mse":
            per_step = 0.5 * ((yhats - ys_t) ** 2).sum(dim=1)
        else:
            per_step = torch.nn.functional.cross_entropy(yhats, ys_t, reduction="none")
        w = torch.ones(len(xs), dtype=f64) if weights is None else torch.from_numpy(weights)
        total = (w * per_step).sum()
    grads = None
    if total is not None:
        total.backward()
        grads = {name: tensor.grad.numpy().copy() for name, tensor in tensors.items()}
        total = float(total.detach())
    return hs.detach().numpy(), yhats.detach().numpy(), total, grads


def test_gru_forward_matches_torch(rng, torch):
    p = gru.random_params(rng, 3, 5, 2, scale=1.5)
    xs = rng.normal(size=(10, 3))
    hs, yhats = gru.forward(p, xs)
    hs_t, yhats_t, _, _ = torch_run(torch, p, xs)
    assert gru.relative_error(hs, hs_t) <= TORCH_TOL
    assert gru.relative_error(yhats, yhats_t) <= TORCH_TOL
    h0 = rng.uniform(-0.9, 0.9, 5)
    hs, yhats = gru.forward(p, xs, h0=h0)
    hs_t, yhats_t, _, _ = torch_run(torch, p, xs, h0=h0)
    assert gru.relative_error(hs, hs_t) <= TORCH_TOL
    assert gru.relative_error(yhats, yhats_t) <= TORCH_TOL


@pytest.mark.parametrize("loss", LOSSES)
def test_gru_bptt_matches_torch_autograd(rng, torch, loss):
    """Both losses, with unlabelled (weight 0) and half-weighted steps; softmax
    rows include one-hot, soft, unnormalised and all-zero rows."""
    p = gru.random_params(rng, 3, 4, 3, scale=1.2)
    xs, ys = sequence(rng, 10, 3, 3, loss)
    w = some_zero_weights(10)
    _, _, total_t, g_t = torch_run(torch, p, xs, ys, w, loss)
    assert gru.total_loss(p, xs, ys, w, loss) == pytest.approx(total_t, rel=TORCH_TOL)
    assert_close(gru.bptt_gradient(p, xs, ys, w, loss), g_t, TORCH_TOL)


def test_gru_softmax_with_class_labels_matches_torch_cross_entropy(rng, torch):
    """labels_to_rows + weights == cross_entropy(class indices, ignore_index=-1)."""
    p = gru.random_params(rng, 2, 3, 4, scale=1.2)
    xs = rng.normal(size=(8, 2))
    labels = np.array([3, -1, 0, 1, -1, -1, 2, 0])
    rows, w = labels_to_rows(labels, 4)
    _, _, total_t, g_t = torch_run(torch, p, xs, labels=labels)
    assert gru.total_loss(p, xs, rows, w, "softmax") == pytest.approx(total_t, rel=TORCH_TOL)
    assert_close(gru.bptt_gradient(p, xs, rows, w, "softmax"), g_t, TORCH_TOL)


# ====================================================================
# 4. GRU: the reference proves itself without torch
# ====================================================================


def test_gru_forward_by_hand_for_one_unit():
    """n = m = o = 1, one step written out: checks the r, z, n block order."""
    p = {"W_ih": np.array([[0.5], [-0.4], [0.9]]), "W_hh": np.array([[0.3], [0.2], [-0.7]]),
         "b_ih": np.array([0.1, -0.2, 0.05]), "b_hh": np.array([-0.1, 0.3, 0.2]),
         "W_out": np.array([[2.0]]), "b_out": np.array([-0.5])}
    x, h0 = 1.5, 0.4
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    r = sig(0.5 * x + 0.1 + 0.3 * h0 - 0.1)
    u = sig(-0.4 * x - 0.2 + 0.2 * h0 + 0.3)
    c = np.tanh(0.9 * x + 0.05 + r * (-0.7 * h0 + 0.2))
    h1 = (1 - u) * c + u * h0
    hs, yhats = gru.forward(p, [[x]], h0=[h0])
    assert hs[0, 0] == pytest.approx(h1, rel=1e-15)
    assert yhats[0, 0] == pytest.approx(2.0 * h1 - 0.5, rel=1e-15)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_in,n_hidden,n_out,T", [(1, 1, 2, 1), (2, 3, 2, 6), (3, 5, 3, 10)])
def test_gru_bptt_matches_finite_differences(rng, loss, n_in, n_hidden, n_out, T):
    p = gru.random_params(rng, n_in, n_hidden, n_out, scale=1.2)
    xs, ys = sequence(rng, T, n_in, n_out, loss)
    w = some_zero_weights(T) if T > 1 else None
    g = gru.bptt_gradient(p, xs, ys, w, loss)
    g_fd = gru.finite_difference_gradient(p, xs, ys, eps=1e-6, weights=w, loss=loss)
    for name in gru.PARAM_NAMES:
        assert g[name].shape == np.shape(p[name]) and g[name].dtype == np.float64
        if T == 1 and name == "W_hh":       # h_0 = 0: W_hh has no effect at T = 1
            assert not np.any(g[name]) and np.max(np.abs(g_fd[name])) <= 1e-10
            continue
        assert gru.relative_error(g[name], g_fd[name]) <= FD_TOL, name


def test_gru_jacobians_D_and_M_match_finite_differences(rng):
    """D_t = dh_t/dh_{t-1} and M_t = dh_t/dtheta (the DESIGN 3.10 formulas)
    against central differences of one cell step, relative 1e-8; M_t row k
    is non-zero only on unit k's columns."""
    n, m = 4, 3
    p = gru.random_params(rng, m, n, 2, scale=1.5)
    x, h_prev = rng.normal(size=m), rng.uniform(-0.8, 0.8, n)
    s = gru.cell_step(p, x, h_prev)
    D, M = gru.state_jacobian(p, s), gru.parameter_jacobian(p, s)
    assert D.shape == (n, n) and M.shape == (n, gru.n_core_params(n, m))
    eps = 1e-6
    D_fd = np.zeros((n, n))
    for l in range(n):
        d = np.zeros(n)
        d[l] = eps
        D_fd[:, l] = (gru.cell_step(p, x, h_prev + d)["h"]
                      - gru.cell_step(p, x, h_prev - d)["h"]) / (2 * eps)
    assert gru.relative_error(D, D_fd) <= 1e-8
    theta = gru.flatten_core(p)
    M_fd = np.zeros_like(M)
    for j in range(len(theta)):
        d = np.zeros(len(theta))
        d[j] = eps
        plus = dict(p, **gru.unflatten_core(theta + d, n, m))
        minus = dict(p, **gru.unflatten_core(theta - d, n, m))
        M_fd[:, j] = (gru.cell_step(plus, x, h_prev)["h"]
                      - gru.cell_step(minus, x, h_prev)["h"]) / (2 * eps)
    assert gru.relative_error(M, M_fd) <= 1e-8
    own = gru.column_units(n, m)[None, :] == np.arange(n)[:, None]
    assert not np.any(M[~own])
    assert np.all(own.sum(axis=1) == 3 * (m + n + 2))    # unit k: 3 gate rows of each array


def test_gru_flatten_core_round_trip(rng):
    p = gru.random_params(rng, 2, 3, 1)
    theta = gru.flatten_core(p)
    assert theta.shape == (gru.n_core_params(3, 2),) == (3 * 3 * (2 + 3 + 2),)
    back = gru.unflatten_core(theta, 3, 2)
    for name in CORE:
        np.testing.assert_array_equal(back[name], p[name])
    np.testing.assert_array_equal(theta[:6], p["W_ih"][:3].reshape(-1))   # W_ih first, row-major


@pytest.mark.parametrize("loss", LOSSES)
def test_gru_rtrl_and_dense_snap2_equal_bptt(rng, loss):
    p = gru.random_params(rng, 3, 5, 3, scale=1.2)
    xs, ys = sequence(rng, 10, 3, 3, loss)
    w = some_zero_weights(10)
    g = gru.bptt_gradient(p, xs, ys, w, loss)
    assert max_rel_err(gru.rtrl_gradient(p, xs, ys, w, loss), g) <= EXACT_TOL
    assert max_rel_err(gru.snap2_gradient(p, xs, ys, None, w, loss), g) <= EXACT_TOL
    dense = np.ones((5, 5), dtype=bool)
    assert max_rel_err(gru.snap2_gradient(p, xs, ys, dense, w, loss), g) <= EXACT_TOL


def masked_gru_params(rng, n_in, n_hidden, n_out, mask, scale=1.2):
    """Random GRU parameters with each W_hh block zero where mask is False,
    the survivors scaled up so the recurrence is not negligible."""
    p = gru.random_params(rng, n_in, n_hidden, n_out, scale=scale)
    density = max(mask.mean(), 1.0 / n_hidden)
    p["W_hh"] = p["W_hh"] * np.tile(mask, (3, 1)) / np.sqrt(density)
    return p


@pytest.mark.parametrize("loss", LOSSES)
def test_gru_snap2_is_exact_for_block_diagonal_masks(rng, loss):
    """Two fully connected blocks of 2 units: D_t is block-diagonal, so P[k, unit i]
    is non-zero only for k in i's block, which S_i covers; a sparse random mask
    drops a lot.  Masked W_hh entries get gradient 0 in all three gate blocks."""
    n = 4
    block = np.kron(np.eye(2, dtype=bool), np.ones((2, 2), dtype=bool))
    p = masked_gru_params(rng, 2, n, 3, block)
    xs, ys = sequence(rng, 10, 2, 3, loss)
    w = some_zero_weights(10)
    g = gru.bptt_gradient(p, xs, ys, w, loss)
    g["W_hh"] *= np.tile(block, (3, 1))
    assert max_rel_err(gru.snap2_gradient(p, xs, ys, block, w, loss), g) <= EXACT_TOL

    mask = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)  # a ring
    p = masked_gru_params(rng, 2, n, 3, mask, scale=2.0)
    g = gru.bptt_gradient(p, xs, ys, w, loss)
    g2 = gru.snap2_gradient(p, xs, ys, mask, w, loss)
    assert gru.relative_error(g2["W_ih"], g["W_ih"]) > DIFFERS
    assert not np.any(g2["W_hh"][~np.tile(mask, (3, 1))])
    assert_close(g2, g, EXACT_TOL, ("W_out", "b_out"))


def test_gru_snap2_with_no_connections_is_snap1(rng):
    """S_i = {i} for an empty mask: SnAp-2 keeps exactly SnAp-1's traces
    (W_hh used as given, dense here); only W_hh's gradient is masked to 0."""
    p = gru.random_params(rng, 2, 4, 2, scale=1.2)
    xs, ys = sequence(rng, 8, 2, 2, "mse")
    g2 = gru.snap2_gradient(p, xs, ys, np.zeros((4, 4), dtype=bool))
    g1 = gru.snap1_gradient(p, xs, ys)
    assert max_rel_err(g2, g1, ("W_ih", "b_ih", "b_hh", "W_out", "b_out")) <= 1e-12
    assert not np.any(g2["W_hh"]) and np.any(g1["W_hh"])


@pytest.mark.parametrize("loss", LOSSES)
def test_gru_snap1_is_exact_only_for_diagonal_W_hh_blocks(rng, loss):
    n = 5
    p = gru.random_params(rng, 3, n, 3, scale=1.2)
    xs, ys = sequence(rng, 10, 3, 3, loss)
    w = some_zero_weights(10)
    p_diag = masked_gru_params(rng, 3, n, 3, np.eye(n, dtype=bool))
    assert max_rel_err(gru.snap1_gradient(p_diag, xs, ys, w, loss),
                       gru.bptt_gradient(p_diag, xs, ys, w, loss)) <= EXACT_TOL
    g = gru.bptt_gradient(p, xs, ys, w, loss)
    g1 = gru.snap1_gradient(p, xs, ys, w, loss)
    for name in CORE:                      # dense W_hh: an approximation
        assert gru.relative_error(g1[name], g[name]) > DIFFERS, name
    assert_close(g1, g, EXACT_TOL, ("W_out", "b_out"))


@pytest.mark.parametrize("loss", LOSSES)
def test_gru_truncated_bptt_with_a_long_window_is_bptt(rng, loss):
    p = gru.random_params(rng, 2, 4, 3, scale=1.2)
    xs, ys = sequence(rng, 9, 2, 3, loss)
    w = some_zero_weights(9)
    g = gru.bptt_gradient(p, xs, ys, w, loss)
    for k in (9, 10, 30):
        assert max_rel_err(gru.truncated_bptt_gradient(p, xs, ys, k, w, loss), g) <= EXACT_TOL
    one_hot = np.zeros(9)
    one_hot[6] = 1.0
    assert max_rel_err(gru.truncated_bptt_step_gradient(p, xs, ys, 7, 7, loss),
                       gru.bptt_gradient(p, xs, ys, one_hot, loss)) <= EXACT_TOL
    g1 = gru.truncated_bptt_gradient(p, xs, ys, 1, w, loss)
    assert gru.relative_error(g1["W_hh"], g["W_hh"]) > DIFFERS
    assert_close(g1, g, 1e-12, ("W_out", "b_out"))       # the readout is exact for any k


@pytest.mark.parametrize("loss", LOSSES)
def test_gru_truncated_step_is_the_window_gradient_from_a_constant_state(rng, loss):
    """dL_t through k steps == central differences of L_t computed over the
    last k inputs from the state h_{t-k} of the unperturbed net (a constant)."""
    T, t, k = 9, 7, 3
    p = gru.random_params(rng, 2, 3, 3, scale=1.2)
    xs, ys = sequence(rng, T, 2, 3, loss)
    hs, _ = gru.forward(p, xs)
    h_start = hs[t - k - 1]                               # h_{t-k} (hs[0] is h_1)

    def loss_t(q):
        _, yhats = gru.forward(q, xs[t - k:t], h0=h_start)
        return output_error(yhats[-1], ys[t - 1], loss)[0]

    g = gru.truncated_bptt_step_gradient(p, xs, ys, t, k, loss)
    g_fd = central_differences(loss_t, p, gru.PARAM_NAMES)
    assert_close(g, g_fd, FD_TOL)


@pytest.mark.parametrize("loss,weighted", [("mse", False), ("softmax", True)])
def test_gru_uoro_is_unbiased_and_noisy(rng, loss, weighted):
    p = gru.random_params(rng, 3, 4, 3, scale=1.2)
    xs, ys = sequence(rng, 8, 3, 3, loss)
    w = some_zero_weights(8) if weighted else None
    g = gru.flatten(gru.bptt_gradient(p, xs, ys, w, loss), CORE)
    draw_rng = np.random.default_rng(7)
    draws = np.array([gru.flatten(gru.uoro_gradient(p, xs, ys, draw_rng, weights=w, loss=loss), CORE)
                      for _ in range(1000)])
    assert gru.cosine(draws.mean(axis=0), g) >= 0.95
    assert np.median([gru.cosine(d, g) for d in draws]) < 0.6


def test_gru_uoro_weights_and_readout(rng):
    """weights=None is weights=1 (same draws); the readout of a draw is exact."""
    p = gru.random_params(rng, 2, 3, 2)
    xs, ys = sequence(rng, 6, 2, 2, "mse")
    a = gru.uoro_gradient(p, xs, ys, np.random.default_rng(5))
    b = gru.uoro_gradient(p, xs, ys, np.random.default_rng(5), weights=np.ones(6))
    for name in gru.PARAM_NAMES:
        np.testing.assert_array_equal(a[name], b[name])
    w = some_zero_weights(6)
    c = gru.uoro_gradient(p, xs, ys, np.random.default_rng(5), weights=w)
    assert_close(c, gru.bptt_gradient(p, xs, ys, w), 1e-12, ("W_out", "b_out"))


@pytest.mark.parametrize("loss", LOSSES)
def test_gru_online_rtrl_with_tiny_lr_accumulates_the_bptt_gradient(rng, loss):
    p = gru.random_params(rng, 3, 4, 3, scale=1.2)
    xs, ys = sequence(rng, 10, 3, 3, loss)
    lr = 1e-9
    after, yhats = gru.online_rtrl_sgd(p, xs, ys, lr, loss)
    g = gru.bptt_gradient(p, xs, ys, loss=loss)
    update = {name: (p[name] - after[name]) / lr for name in gru.PARAM_NAMES}
    assert_close(update, g, 1e-5)
    _, yhats_ref = gru.forward(p, xs)
    np.testing.assert_allclose(yhats, yhats_ref, rtol=1e-6, atol=1e-9)


def test_gru_online_rtrl_first_step_is_one_sgd_step(rng):
    """With a real lr: the first prediction is the forward pass, and after one
    sample the parameters moved by exactly -lr * dL_1/dtheta."""
    p = gru.random_params(rng, 2, 3, 2)
    xs, ys = sequence(rng, 1, 2, 2, "mse")
    after, yhats = gru.online_rtrl_sgd(p, xs, ys, 0.1)
    np.testing.assert_allclose(yhats, gru.forward(p, xs)[1], rtol=1e-15)
    g = gru.bptt_gradient(p, xs, ys)
    for name in gru.PARAM_NAMES:
        np.testing.assert_allclose(after[name], p[name] - 0.1 * g[name], rtol=1e-13, atol=1e-16)
