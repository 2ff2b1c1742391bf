"""Independent float64 reference for the diagonal (2x2 rotation-decay) cell.

Plain numpy, float64, importing nothing from ``rtrl_edge``.  DESIGN.md 3.7: a
recurrence made of independent 2x2 blocks (the real form of a complex
diagonal, as in the LRU), followed by a non-linear readout.  Pair p holds the
units (2p, 2p+1)::

    r_p = 1 / (1 + exp(-decay_p)),      R(a) = [[cos a, -sin a], [sin a, cos a]]
    h_t[2p:2p+2] = r_p R(angle_p) h_{t-1}[2p:2p+2] + B[2p:2p+2] x_t + b[2p:2p+2]
    yhat_t = W_out tanh(h_t) + b_out,   L_t = 0.5 ||yhat_t - y_t||^2,   h_0 = 0

Every function that involves the loss takes ``loss="mse"`` (the default, the
loss above) or ``loss="softmax"`` (DESIGN 3.9: cross-entropy of
softmax(yhat_t) against a probability row y_t).  Only the output error
e_t = dL_t/dyhat_t changes (tests/reference_loss.py); the readout stays
W_out tanh(h_t) + b_out.  ``weights`` (T,) multiply L_t and e_t (0 = an
unlabelled step; the net still runs forward through it).

Parameters (n even)::

    decay (n/2,)   angle (n/2,)   B (n, m)   b (n,)   W_out (o, n)   b_out (o,)

Functions
---------
random_params(rng, n_in, n_hidden, n_out)          moderate random parameters
forward(params, xs)                      -> hs (T, n) holding h_1 .. h_T, yhats (T, o)
total_loss(params, xs, ys, weights=None, loss="mse") -> sum_t weights[t] * L_t
finite_difference_gradient(params, xs, ys, eps=1e-6, weights=None, loss="mse")
bptt_gradient(params, xs, ys, weights=None, loss="mse")
                                              analytic back-propagation through time
                                              (proved against the finite differences
                                              in tests/test_learners.py)
"""

import numpy as np

from reference_loss import output_error

PARAM_NAMES = ("decay", "angle", "B", "b", "W_out", "b_out")


def as_float64(params):
    """Return a dict of float64 copies of the six parameter arrays."""
    return {name: np.array(params[name], dtype=np.float64, copy=True) for name in PARAM_NAMES}


def random_params(rng, n_in, n_hidden, n_out):
    """Random float64 parameters: r_p mostly in (0.6, 0.95), any angle, inputs
    small enough that tanh(h) is not saturated."""
    assert n_hidden % 2 == 0
    half = n_hidden // 2
    return {
        "decay": rng.normal(1.5, 0.7, half),
        "angle": rng.uniform(-np.pi, np.pi, half),
        "B": rng.normal(0.0, 0.4 / np.sqrt(n_in), (n_hidden, n_in)),
        "b": rng.normal(0.0, 0.1, n_hidden),
        "W_out": rng.normal(0.0, 0.8 / np.sqrt(n_hidden), (n_out, n_hidden)),
        "b_out": rng.normal(0.0, 0.1, n_out),
    }


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rotation(angle):
    """R(angle) = [[cos, -sin], [sin, cos]]."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _sequences(p, xs, ys=None):
    n_in = p["B"].shape[1]
    n_out = p["W_out"].shape[0]
    xs = np.asarray(xs, dtype=np.float64).reshape(-1, n_in)
    if ys is None:
        return xs
    ys = np.asarray(ys, dtype=np.float64).reshape(-1, n_out)
    assert len(xs) == len(ys)
    return xs, ys


def forward(params, xs):
    """Run the cell from h_0 = 0 over xs (T, n_in).

    Returns hs (T, n) holding h_1 .. h_T (the linear state, before tanh) and
    yhats (T, n_out).
    """
    p = as_float64(params)
    xs = _sequences(p, xs)
    n = p["B"].shape[0]
    T = len(xs)
    hs = np.zeros((T, n))
    yhats = np.zeros((T, p["W_out"].shape[0]))
    h = np.zeros(n)
    for t in range(T):
        h_new = p["B"] @ xs[t] + p["b"]
        for q in range(n // 2):
            block = sigmoid(p["decay"][q]) * rotation(p["angle"][q])
            h_new[2 * q:2 * q + 2] += block @ h[2 * q:2 * q + 2]
        h = h_new
        hs[t] = h
        yhats[t] = p["W_out"] @ np.tanh(h) + p["b_out"]
    return hs, yhats


def total_loss(params, xs, ys, weights=None, loss="mse"):
    """sum_t weights[t] * L_t (weights default to 1); L_t = 0.5 * ||yhat_t - y_t||^2
    for loss="mse", the cross-entropy of softmax(yhat_t) for loss="softmax"."""
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    _, yhats = forward(p, xs)
    per_step = np.array([output_error(yhats[t], ys[t], loss)[0] for t in range(len(xs))])
    if weights is not None:
        per_step = per_step * np.asarray(weights, dtype=np.float64)
    return float(np.sum(per_step))


def finite_difference_gradient(params, xs, ys, eps=1e-6, weights=None, loss="mse"):
    """Central finite differences of total_loss, one entry at a time (float64)."""
    p = as_float64(params)
    grad = {}
    for name in PARAM_NAMES:
        g = np.zeros_like(p[name])
        flat_param = p[name].reshape(-1)  # a view: edits change p[name]
        flat_grad = g.reshape(-1)
        for i in range(flat_param.size):
            saved = flat_param[i]
            flat_param[i] = saved + eps
            loss_plus = total_loss(p, xs, ys, weights, loss)
            flat_param[i] = saved - eps
            loss_minus = total_loss(p, xs, ys, weights, loss)
            flat_param[i] = saved
            flat_grad[i] = (loss_plus - loss_minus) / (2.0 * eps)
        grad[name] = g
    return grad


def bptt_gradient(params, xs, ys, weights=None, loss="mse"):
    """Gradient of total_loss by back-propagation through time (float64).

    With A_p = r_p R(angle_p): dA_p/dr_p = R(angle_p), dr_p/ddecay_p =
    r_p (1 - r_p), dA_p/dangle_p = r_p R'(angle_p), R'(a) = [[-sin a, -cos a],
    [cos a, -sin a]].
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    weights = np.ones(T) if weights is None else np.asarray(weights, dtype=np.float64)
    n = p["B"].shape[0]
    hs, yhats = forward(p, xs)
    grad = {name: np.zeros_like(p[name]) for name in PARAM_NAMES}
    r = sigmoid(p["decay"])
    dh_from_future = np.zeros(n)           # dLoss/dh_t through h_{t+1}
    for t in reversed(range(T)):
        h_t = hs[t]
        h_prev = hs[t - 1] if t > 0 else np.zeros(n)
        y_t = np.tanh(h_t)
        e = weights[t] * output_error(yhats[t], ys[t], loss)[1]
        grad["W_out"] += np.outer(e, y_t)
        grad["b_out"] += e
        dh = (p["W_out"].T @ e) * (1.0 - y_t ** 2) + dh_from_future
        grad["B"] += np.outer(dh, xs[t])
        grad["b"] += dh
        dh_from_future = np.zeros(n)
        for q in range(n // 2):
            sl = slice(2 * q, 2 * q + 2)
            a = p["angle"][q]
            R = rotation(a)
            dR = np.array([[-np.sin(a), -np.cos(a)], [np.cos(a), -np.sin(a)]])
            G = np.outer(dh[sl], h_prev[sl])       # dLoss/dA_q from this step
            grad["decay"][q] += np.sum(G * R) * r[q] * (1.0 - r[q])
            grad["angle"][q] += np.sum(G * dR) * r[q]
            dh_from_future[sl] = (r[q] * R).T @ dh[sl]
    return grad
