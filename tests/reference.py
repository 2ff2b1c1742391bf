"""Independent float64 reference for the Elman cell trained by RTRL.

Plain numpy, float64, written for readability rather than speed, and importing
nothing from ``rtrl_edge``: this is what the compiled float32 product is checked
against.  The mathematics is DESIGN.md section 3.1 (cell) and 3.2 (exact RTRL)::

    z_t = [h_{t-1}; x_t; 1],     W = [W_rec | W_in | b]
    a_t = W z_t,   h_t = tanh(a_t),   yhat_t = W_out h_t + b_out
    L_t = 0.5 * ||yhat_t - y_t||^2,   h_0 = 0

Parameters are a dict with the public names and shapes::

    W_in  (n, m)    W_rec (n, n)    b (n,)    W_out (o, n)    b_out (o,)

Functions
---------
forward(params, xs, h0=None)             -> hs (T, n), yhats (T, o)
total_loss(params, xs, ys, weights=None, h0=None) -> float
bptt_gradient(params, xs, ys, weights=None, h0=None)  full back-propagation through time
finite_difference_gradient(params, xs, ys, eps, weights=None, h0=None)
                                         central differences (small nets)

``h0`` (default 0) is an initial state treated as a constant: the gradient
does not flow into it (what RTRL computes after its sensitivities restart
from zero in the middle of a stream).
online_rtrl_sgd(params, xs, ys, lr)      exact online RTRL with plain SGD, the
                                         update applied after every sample
"""

import numpy as np

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


def total_loss(params, xs, ys, weights=None, h0=None):
    """sum_t weights[t] * 0.5 * ||yhat_t - y_t||^2 (weights default to 1)."""
    xs, ys = _sequences(params, xs, ys)
    _, yhats = forward(params, xs, h0)
    per_step = 0.5 * np.sum((yhats - ys) ** 2, axis=1)
    if weights is not None:
        per_step = per_step * np.asarray(weights, dtype=np.float64)
    return float(np.sum(per_step))


def bptt_gradient(params, xs, ys, weights=None, h0=None):
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
        e = weights[t] * (yhats[t] - ys[t])  # dLoss / dyhat_t
        grad["W_out"] += np.outer(e, h_t)
        grad["b_out"] += e
        dh = p["W_out"].T @ e + dh_from_future  # dLoss / dh_t
        da = dh * (1.0 - h_t ** 2)  # dLoss / da_t   (tanh' = 1 - tanh^2)
        grad["W_rec"] += np.outer(da, h_prev)
        grad["W_in"] += np.outer(da, xs[t])
        grad["b"] += da
        dh_from_future = p["W_rec"].T @ da
    return grad


def finite_difference_gradient(params, xs, ys, eps=1e-6, weights=None, h0=None):
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
            loss_plus = total_loss(p, xs, ys, weights, h0)
            flat_param[i] = saved - eps
            loss_minus = total_loss(p, xs, ys, weights, h0)
            flat_param[i] = saved
            flat_grad[i] = (loss_plus - loss_minus) / (2.0 * eps)
        grad[name] = g
    return grad


def online_rtrl_sgd(params, xs, ys, lr):
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
        e = yhat - ys[t]
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
