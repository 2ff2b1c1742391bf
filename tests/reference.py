"""Independent float64 reference for the Elman cell trained by RTRL.

Plain numpy, float64, written for readability rather than speed, and importing
nothing from ``rtrl_edge``: this is what the compiled float32 product is checked
against.  The mathematics is DESIGN.md section 3.1 (cell) and 3.2 (exact RTRL)::

    z_t = [h_{t-1}; x_t; 1],     W = [W_rec | W_in | b]
    a_t = W z_t,   h_t = tanh(a_t),   yhat_t = W_out h_t + b_out
    L_t = 0.5 * ||yhat_t - y_t||^2,   h_0 = 0

Every function that involves the loss takes ``loss="mse"`` (the default, the
loss above) or ``loss="softmax"`` (DESIGN 3.9: L_t = -sum_q y_t[q] log
softmax(yhat_t)[q] for a probability row y_t).  Only the output error
e_t = dL_t/dyhat_t changes (tests/reference_loss.py); everything after e_t is
the same.  ``weights`` (T,) multiply L_t and e_t; weight 0 is an unlabelled
step (the net still runs forward through it).

Parameters are a dict with the public names and shapes::

    W_in  (n, m)    W_rec (n, n)    b (n,)    W_out (o, n)    b_out (o,)

Functions
---------
forward(params, xs, h0=None)             -> hs (T, n), yhats (T, o)
total_loss(params, xs, ys, weights=None, h0=None, loss="mse") -> float
bptt_gradient(params, xs, ys, weights=None, h0=None, loss="mse")
                                         full back-propagation through time
finite_difference_gradient(params, xs, ys, eps, weights=None, h0=None, loss="mse")
                                         central differences (small nets)

``h0`` (default 0) is an initial state treated as a constant: the gradient
does not flow into it (what RTRL computes after its sensitivities restart
from zero in the middle of a stream).
online_rtrl_sgd(params, xs, ys, lr, loss="mse")
                                         exact online RTRL with plain SGD, the
                                         update applied after every sample

The approximate learners (DESIGN 3.3 - 3.6), each summing its gradient of L_t
over t with the parameters held fixed: truncated_bptt_step_gradient,
truncated_bptt_gradient, snap1_gradient, snap2_gradient, uoro_gradient (see
the section at the end of this file).  The diagonal cell's reference is
tests/reference_diag.py.
"""

import numpy as np

from reference_loss import output_error

PARAM_NAMES = ("W_in", "W_rec", "b", "W_out", "b_out")


def as_float64(params):
    """Return a dict of float64 copies of the five parameter arrays."""
    return {name: np.array(params[name], dtype=np.float64, copy=True) for name in PARAM_NAMES}


def random_params(rng, n_in, n_hidden, n_out, scale=0.5):
    """Random float64 parameters of a moderate scale (tanh not saturated)."""
    return {
        "W_in": rng.normal(0.0, scale / np.sqrt(n_in), (n_hidden, n_in)),
        "W_rec": rng.normal(0.0, scale / np.sqrt(n_hidden), (n_hidden, n_hidden)),
        "b": rng.normal(0.0, 0.1, n_hidden),
        "W_out": rng.normal(0.0, scale / np.sqrt(n_hidden), (n_out, n_hidden)),
        "b_out": rng.normal(0.0, 0.1, n_out),
    }


def _sequences(params, xs, ys=None):
    n_hidden, n_in = np.shape(params["W_in"])
    n_out = np.shape(params["W_out"])[0]
    xs = np.asarray(xs, dtype=np.float64).reshape(-1, n_in)
    if ys is None:
        return xs
    ys = np.asarray(ys, dtype=np.float64).reshape(-1, n_out)
    assert len(xs) == len(ys)
    return xs, ys


def forward(params, xs, h0=None):
    """Run the cell from h_0 (default 0) over xs (T, n_in).

    Returns hs (T, n_hidden) holding h_1 .. h_T and yhats (T, n_out).
    """
    p = as_float64(params)
    xs = _sequences(p, xs)
    n_hidden = p["W_rec"].shape[0]
    n_out = p["W_out"].shape[0]
    T = len(xs)
    hs = np.zeros((T, n_hidden))
    yhats = np.zeros((T, n_out))
    h = np.zeros(n_hidden) if h0 is None else np.array(h0, dtype=np.float64).reshape(n_hidden)
    for t in range(T):
        a = p["W_rec"] @ h + p["W_in"] @ xs[t] + p["b"]
        h = np.tanh(a)
        hs[t] = h
        yhats[t] = p["W_out"] @ h + p["b_out"]
    return hs, yhats


def total_loss(params, xs, ys, weights=None, h0=None, loss="mse"):
    """sum_t weights[t] * L_t (weights default to 1); L_t = 0.5 * ||yhat_t - y_t||^2
    for loss="mse", the cross-entropy of softmax(yhat_t) for loss="softmax"."""
    xs, ys = _sequences(params, xs, ys)
    _, yhats = forward(params, xs, h0)
    per_step = np.array([output_error(yhats[t], ys[t], loss)[0] for t in range(len(xs))])
    if weights is not None:
        per_step = per_step * np.asarray(weights, dtype=np.float64)
    return float(np.sum(per_step))


def bptt_gradient(params, xs, ys, weights=None, h0=None, loss="mse"):
    """Gradient of total_loss by back-propagation through time, in float64.

    ``weights`` (T,) optionally weights each step's loss; weight 0 means "no
    target at that step" (the net still runs forward through it).
    Returns a dict with the keys of PARAM_NAMES, float64 arrays.
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    if weights is None:
        weights = np.ones(T)
    weights = np.asarray(weights, dtype=np.float64)
    hs, yhats = forward(p, xs, h0)
    n_hidden = p["W_rec"].shape[0]
    h_start = np.zeros(n_hidden) if h0 is None else np.array(h0, dtype=np.float64).reshape(n_hidden)

    grad = {name: np.zeros_like(p[name]) for name in PARAM_NAMES}
    dh_from_future = np.zeros(n_hidden)  # dLoss / dh_t through h_{t+1}
    for t in reversed(range(T)):
        h_t = hs[t]
        h_prev = hs[t - 1] if t > 0 else h_start
        e = weights[t] * output_error(yhats[t], ys[t], loss)[1]  # dLoss / dyhat_t
        grad["W_out"] += np.outer(e, h_t)
        grad["b_out"] += e
        dh = p["W_out"].T @ e + dh_from_future  # dLoss / dh_t
        da = dh * (1.0 - h_t ** 2)  # dLoss / da_t   (tanh' = 1 - tanh^2)
        grad["W_rec"] += np.outer(da, h_prev)
        grad["W_in"] += np.outer(da, xs[t])
        grad["b"] += da
        dh_from_future = p["W_rec"].T @ da
    return grad


def finite_difference_gradient(params, xs, ys, eps=1e-6, weights=None, h0=None, loss="mse"):
    """Central finite differences of total_loss, one parameter at a time (float64).

    Cost: 2 forward passes per parameter entry, so keep the net small.
    """
    p = as_float64(params)
    grad = {}
    for name in PARAM_NAMES:
        g = np.zeros_like(p[name])
        flat_param = p[name].reshape(-1)  # a view: edits change p[name]
        flat_grad = g.reshape(-1)
        for i in range(flat_param.size):
            saved = flat_param[i]
            flat_param[i] = saved + eps
            loss_plus = total_loss(p, xs, ys, weights, h0, loss)
            flat_param[i] = saved - eps
            loss_minus = total_loss(p, xs, ys, weights, h0, loss)
            flat_param[i] = saved
            flat_grad[i] = (loss_plus - loss_minus) / (2.0 * eps)
        grad[name] = g
    return grad


def online_rtrl_sgd(params, xs, ys, lr, loss="mse"):
    """Exact online RTRL (DESIGN 3.2) with plain SGD, updating after every sample.

    At step t: z_t from h_{t-1} and x_t; a_t, h_t with the current weights;
    P_t[k,i,j] = tanh'(a_t[k]) * (sum_l W_rec[k,l] P_{t-1}[l,i,j] + delta_ki z_t[j])
    with the current W_rec; yhat_t (returned as the prediction of step t);
    gradient of L_t; then theta <- theta - lr * grad.

    Returns (params_after, yhats) with params_after a dict of float64 arrays.
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    n = p["W_rec"].shape[0]
    m = p["W_in"].shape[1]
    h = np.zeros(n)
    P = np.zeros((n, n, n + m + 1))  # P[k, i, j] = dh[k] / dW[i, j]
    yhats = np.zeros((len(xs), p["W_out"].shape[0]))
    for t in range(len(xs)):
        z = np.concatenate([h, xs[t], [1.0]])
        W = np.concatenate([p["W_rec"], p["W_in"], p["b"][:, None]], axis=1)
        a = W @ z
        h = np.tanh(a)
        dphi = 1.0 - h ** 2
        P = np.einsum("kl,lij->kij", p["W_rec"], P)
        P[np.arange(n), np.arange(n), :] += z  # the delta_ki z_t[j] term
        P *= dphi[:, None, None]
        yhat = p["W_out"] @ h + p["b_out"]
        yhats[t] = yhat
        e = output_error(yhat, ys[t], loss)[1]
        c = p["W_out"].T @ e
        gW = np.einsum("k,kij->ij", c, P)
        g = {
            "W_rec": gW[:, :n],
            "W_in": gW[:, n:n + m],
            "b": gW[:, n + m],
            "W_out": np.outer(e, h),
            "b_out": e,
        }
        for name in PARAM_NAMES:
            p[name] = p[name] - lr * g[name]
    return p, yhats


def relative_error(g, g_ref):
    """||g - g_ref|| / ||g_ref|| (Frobenius), with ||g_ref|| floored at 1e-30."""
    g = np.asarray(g, dtype=np.float64)
    g_ref = np.asarray(g_ref, dtype=np.float64)
    return float(np.linalg.norm(g - g_ref) / max(np.linalg.norm(g_ref), 1e-30))


# ---------------------------------------------------------------------------
# References for the approximate learners (DESIGN 3.3 - 3.6).
#
# Every function below returns a dict of float64 arrays with the keys of
# PARAM_NAMES, holding sum_t weights[t] * (the learner's gradient of L_t) with
# the parameters held fixed, from h_0 = 0.  The readout parts (W_out, b_out)
# are exact for every learner: sum_t weights[t] * e_t h_t^T and e_t.
#
# truncated_bptt_step_gradient(params, xs, ys, t, k, loss="mse")
#                                      dL_t/dtheta through <= k steps
# truncated_bptt_gradient(params, xs, ys, k, weights=None, loss="mse")
#                                      sum over t of the above
# snap1_gradient(params, xs, ys, weights=None, rec_mask=None, loss="mse")   SnAp-1 (3.3)
# snap2_gradient(params, xs, ys, rec_mask=None, weights=None, loss="mse")   SnAp-2 (3.4)
# uoro_gradient(params, xs, ys, rng, eps=1e-7, weights=None, loss="mse")
#                                      one UORO draw (DESIGN 3.5)
#
# ``loss`` ("mse" or "softmax") only changes e_t (tests/reference_loss.py).
#
# ``rec_mask`` (n, n) bool has W_rec's orientation: rec_mask[k, l] is True when
# W_rec[k, l] (unit l -> unit k) is a trainable, non-zero connection.  The
# gradient of a masked-out W_rec entry is 0.
# ---------------------------------------------------------------------------


def _readout_and_split(p, gW, hs, yhats, ys, weights, loss="mse"):
    """Assemble the gradient dict from the (n, n+m+1) W-part and the exact readout."""
    n = p["W_rec"].shape[0]
    m = p["W_in"].shape[1]
    grad = {
        "W_rec": gW[:, :n].copy(),
        "W_in": gW[:, n:n + m].copy(),
        "b": gW[:, n + m].copy(),
        "W_out": np.zeros_like(p["W_out"]),
        "b_out": np.zeros_like(p["b_out"]),
    }
    for t in range(len(hs)):
        e = weights[t] * output_error(yhats[t], ys[t], loss)[1]
        grad["W_out"] += np.outer(e, hs[t])
        grad["b_out"] += e
    return grad


def _weights_or_ones(weights, T):
    return np.ones(T) if weights is None else np.asarray(weights, dtype=np.float64)


def truncated_bptt_step_gradient(params, xs, ys, t, k, loss="mse"):
    """Gradient of L_t alone, back-propagated through at most k steps (DESIGN 3.6).

    ``t`` is 1-based: t = 1 is the first step (h_1 from h_0 = 0 and x_1 = xs[0]),
    t = T the last.  The error of L_t flows back through steps t, t-1, ...,
    max(1, t-k+1); the state h_{t-k} entering the oldest step counts as a
    constant (its own dependence on the weights is cut).  The forward pass runs
    over the whole sequence from h_0 = 0.  With k >= t this is the exact
    gradient of L_t.
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    assert 1 <= t <= T and k >= 1
    n = p["W_rec"].shape[0]
    hs, yhats = forward(p, xs)
    grad = {name: np.zeros_like(p[name]) for name in PARAM_NAMES}
    e = output_error(yhats[t - 1], ys[t - 1], loss)[1]
    grad["W_out"] += np.outer(e, hs[t - 1])
    grad["b_out"] += e
    dh = p["W_out"].T @ e                       # dL_t / dh_s, starting at s = t
    oldest = max(1, t - k + 1)
    for s in range(t, oldest - 1, -1):          # s = t, t-1, ..., oldest (1-based)
        h_s = hs[s - 1]
        h_prev = hs[s - 2] if s >= 2 else np.zeros(n)
        da = dh * (1.0 - h_s ** 2)
        grad["W_rec"] += np.outer(da, h_prev)
        grad["W_in"] += np.outer(da, xs[s - 1])
        grad["b"] += da
        dh = p["W_rec"].T @ da                  # on to h_{s-1}
    return grad


def truncated_bptt_gradient(params, xs, ys, k, weights=None, loss="mse"):
    """sum_t weights[t] * truncated_bptt_step_gradient(params, xs, ys, t, k)."""
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    weights = _weights_or_ones(weights, len(xs))
    total = {name: np.zeros_like(p[name]) for name in PARAM_NAMES}
    for t in range(1, len(xs) + 1):
        if weights[t - 1] == 0.0:
            continue
        g = truncated_bptt_step_gradient(p, xs, ys, t, k, loss)
        for name in PARAM_NAMES:
            total[name] += weights[t - 1] * g[name]
    return total


def snap1_gradient(params, xs, ys, weights=None, rec_mask=None, loss="mse"):
    """SnAp-1 (DESIGN 3.3): each unit keeps only the trace of its own incoming
    weights, J_t[k, j] ~ dh_t[k]/dW[k, j]::

        J_t[k, j] = tanh'(a_t[k]) * (W_rec[k, k] * J_{t-1}[k, j] + z_t[j]),  J_0 = 0
        dL_t/dW[k, j] ~ c_t[k] * J_t[k, j],   c_t = W_out^T e_t

    Exact when W_rec is diagonal.
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    weights = _weights_or_ones(weights, T)
    n = p["W_rec"].shape[0]
    m = p["W_in"].shape[1]
    W = np.concatenate([p["W_rec"], p["W_in"], p["b"][:, None]], axis=1)
    self_weight = np.diag(p["W_rec"])
    h = np.zeros(n)
    J = np.zeros((n, n + m + 1))
    gW = np.zeros((n, n + m + 1))
    hs = np.zeros((T, n))
    yhats = np.zeros((T, p["W_out"].shape[0]))
    for t in range(T):
        z = np.concatenate([h, xs[t], [1.0]])
        h = np.tanh(W @ z)
        dphi = 1.0 - h ** 2
        J = dphi[:, None] * (self_weight[:, None] * J + z[None, :])
        yhats[t] = p["W_out"] @ h + p["b_out"]
        hs[t] = h
        c = p["W_out"].T @ (weights[t] * output_error(yhats[t], ys[t], loss)[1])
        gW += c[:, None] * J
    grad = _readout_and_split(p, gW, hs, yhats, ys, weights, loss)
    if rec_mask is not None:
        grad["W_rec"] *= np.asarray(rec_mask, dtype=bool)
    return grad


def snap2_keep(rec_mask):
    """keep[k, i] is True when SnAp-2 keeps P[k, i, :]: k in S_i = {i} u {k : rec_mask[k, i]}."""
    rec_mask = np.asarray(rec_mask, dtype=bool)
    return rec_mask | np.eye(rec_mask.shape[0], dtype=bool)


def snap2_gradient(params, xs, ys, rec_mask=None, weights=None, loss="mse"):
    """SnAp-2 (DESIGN 3.4): the exact RTRL recursion of DESIGN 3.2 restricted to
    the entries P[k, i, :] with k in S_i = {i} u {k : rec_mask[k, i]}::

        P_t[k,i,j] = tanh'(a_t[k]) * (sum_l W_rec[k,l] P_{t-1}[l,i,j] + delta_ki z_t[j])
                     for k in S_i,   P_t[k,i,:] = 0 otherwise

    rec_mask None means dense: then this is exact RTRL.  The gradient of masked
    W_rec entries is 0.  W_rec is used as given (it should be 0 where masked).
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    weights = _weights_or_ones(weights, T)
    n = p["W_rec"].shape[0]
    m = p["W_in"].shape[1]
    if rec_mask is None:
        rec_mask = np.ones((n, n), dtype=bool)
    rec_mask = np.asarray(rec_mask, dtype=bool)
    keep = snap2_keep(rec_mask)                 # keep[k, i]
    W = np.concatenate([p["W_rec"], p["W_in"], p["b"][:, None]], axis=1)
    h = np.zeros(n)
    P = np.zeros((n, n, n + m + 1))             # P[k, i, j] ~ dh[k] / dW[i, j]
    gW = np.zeros((n, n + m + 1))
    hs = np.zeros((T, n))
    yhats = np.zeros((T, p["W_out"].shape[0]))
    for t in range(T):
        z = np.concatenate([h, xs[t], [1.0]])
        h = np.tanh(W @ z)
        dphi = 1.0 - h ** 2
        new_P = np.zeros_like(P)
        for i in range(n):
            for k in range(n):
                if not keep[k, i]:
                    continue
                acc = p["W_rec"][k, :] @ P[:, i, :]   # sum_l W_rec[k,l] P[l,i,:]
                if k == i:
                    acc = acc + z
                new_P[k, i, :] = dphi[k] * acc
        P = new_P
        yhats[t] = p["W_out"] @ h + p["b_out"]
        hs[t] = h
        c = p["W_out"].T @ (weights[t] * output_error(yhats[t], ys[t], loss)[1])
        gW += np.einsum("k,kij->ij", c, P)
    grad = _readout_and_split(p, gW, hs, yhats, ys, weights, loss)
    grad["W_rec"] *= rec_mask
    return grad


def uoro_gradient(params, xs, ys, rng, eps=1e-7, weights=None, loss="mse"):
    """One draw of the UORO estimate (DESIGN 3.5), summed over t, float64.

    rank-one P_t ~ htilde_t thetatilde_t^T, fresh signs nu in {-1, +1}^n each step::

        D = diag(tanh'(a_t)) W_rec,    u[i, j] = nu_i tanh'(a_t[i]) z_t[j]
        rho0 = sqrt((||thetatilde|| + eps) / (||D htilde|| + eps)),
        rho1 = sqrt((||u|| + eps) / (||nu|| + eps))
        htilde <- rho0 D htilde + rho1 nu,   thetatilde <- thetatilde / rho0 + u / rho1
        g_t = (c_t . htilde) thetatilde

    ``rng`` is a numpy Generator; the estimate is unbiased over its draws.
    ``weights`` (T,) multiply e_t (default 1); the signs are drawn at every
    step whatever the weight, so the draws do not depend on the weights.
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    weights = _weights_or_ones(weights, T)
    n = p["W_rec"].shape[0]
    m = p["W_in"].shape[1]
    W = np.concatenate([p["W_rec"], p["W_in"], p["b"][:, None]], axis=1)
    h = np.zeros(n)
    h_tilde = np.zeros(n)
    theta_tilde = np.zeros((n, n + m + 1))
    gW = np.zeros((n, n + m + 1))
    hs = np.zeros((T, n))
    yhats = np.zeros((T, p["W_out"].shape[0]))
    for t in range(T):
        z = np.concatenate([h, xs[t], [1.0]])
        h = np.tanh(W @ z)
        dphi = 1.0 - h ** 2
        nu = rng.choice([-1.0, 1.0], size=n)
        Dh = dphi * (p["W_rec"] @ h_tilde)
        u = (nu * dphi)[:, None] * z[None, :]
        rho0 = np.sqrt((np.linalg.norm(theta_tilde) + eps) / (np.linalg.norm(Dh) + eps))
        rho1 = np.sqrt((np.linalg.norm(u) + eps) / (np.linalg.norm(nu) + eps))
        h_tilde = rho0 * Dh + rho1 * nu
        theta_tilde = theta_tilde / rho0 + u / rho1
        yhats[t] = p["W_out"] @ h + p["b_out"]
        hs[t] = h
        c = p["W_out"].T @ (weights[t] * output_error(yhats[t], ys[t], loss)[1])
        gW += (c @ h_tilde) * theta_tilde
    return _readout_and_split(p, gW, hs, yhats, ys, weights, loss)


def flatten(grad, names=PARAM_NAMES):
    """Concatenate the arrays of ``grad`` (in ``names`` order) into one float64 vector."""
    return np.concatenate([np.asarray(grad[name], dtype=np.float64).reshape(-1)
                           for name in names])


def cosine(a, b):
    """Cosine similarity of two vectors (float64)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))
