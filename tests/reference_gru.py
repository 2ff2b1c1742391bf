"""Independent float64 reference for the GRU cell trained by RTRL and its
approximations.

Plain numpy, float64, written for readability rather than speed, and importing
nothing from ``rtrl_edge``: this is what the compiled float32 GRU kernels are
checked against.  The cell is PyTorch's ``nn.GRUCell`` (same formulas, same
parameter layout), followed by a linear readout (DESIGN.md 3.10)::

    g_i = W_ih x_t + b_ih,   g_h = W_hh h_{t-1} + b_hh      (3n each)
    gate blocks, in this order: rows [0, n) r,  [n, 2n) z,  [2n, 3n) n
    r = sigmoid(g_i^r + g_h^r),   u = sigmoid(g_i^z + g_h^z)   (u is PyTorch's z)
    c = tanh(g_i^n + r * g_h^n)
    h_t = (1 - u) * c + u * h_{t-1},   yhat_t = W_out h_t + b_out,   h_0 = 0

Parameters are a dict with the names of PARAM_NAMES and the shapes::

    W_ih (3n, m)   W_hh (3n, n)   b_ih (3n,)   b_hh (3n,)   W_out (o, n)   b_out (o,)

The loss is ``loss="mse"`` (L_t = 0.5 ||yhat_t - y_t||^2) or ``loss="softmax"``
(cross-entropy of softmax(yhat_t) against a probability row y_t, DESIGN 3.9);
only e_t = dL_t/dyhat_t depends on it (tests/reference_loss.py).  ``ys`` are
(T, o) rows: targets for "mse", probability rows for "softmax" (see
reference_loss.labels_to_rows for class labels).  ``weights`` (T,) multiply
L_t and e_t, default 1; 0 marks an unlabelled step (the net still runs
forward through it).

Sensitivities (DESIGN 3.10).  The core parameters theta = (W_ih, W_hh, b_ih,
b_hh) are flattened, each row-major, in that order, into N = 3n(m + n + 2)
columns.  P_t = dh_t/dtheta (n, N), P_0 = 0, obeys P_t = D_t P_{t-1} + M_t with
D_t = dh_t/dh_{t-1} (state_jacobian) and M_t = dh_t/dtheta at fixed h_{t-1}
(parameter_jacobian).  With c' = 1 - c^2, r' = r(1-r), u' = u(1-u)::

    a_n  = (1 - u) c'            a_nh = a_n r
    a_r  = a_n g_h^n r'          a_z  = (h_{t-1} - c) u'
    D_t  = diag(u) + diag(a_nh) W_hh^n + diag(a_r) W_hh^r + diag(a_z) W_hh^z
    M_t  row k: non-zero only on unit k's gate rows (rows k, n+k, 2n+k):
         W_ih row of gate r, z, n:  a_r[k] x_t,  a_z[k] x_t,  a_n[k]  x_t
         b_ih entry of gate r, z, n:  a_r[k],    a_z[k],      a_n[k]
         W_hh row of gate r, z, n:  a_r[k] h_{t-1}, a_z[k] h_{t-1}, a_nh[k] h_{t-1}
         b_hh entry of gate r, z, n:  a_r[k],    a_z[k],      a_nh[k]

and dL_t/dtheta = c_t^T P_t with c_t = W_out^T e_t; the readout gradients
dL_t/dW_out = e_t h_t^T, dL_t/db_out = e_t are exact for every learner.

Functions (every gradient is a dict keyed by PARAM_NAMES holding
sum_t weights[t] * dL_t/dtheta with the parameters fixed, from h_0 = 0)
---------------------------------------------------------------------------
as_float64(params), random_params(rng, n_in, n_hidden, n_out, scale=0.5)
forward(params, xs, h0=None)                  -> hs (T, n), yhats (T, o)
total_loss(params, xs, ys, weights=None, loss="mse") -> float
bptt_gradient(params, xs, ys, weights=None, loss="mse")       exact, backward
finite_difference_gradient(params, xs, ys, eps=1e-6, weights=None, loss="mse")
rtrl_gradient(params, xs, ys, weights=None, loss="mse")       exact, forward (3.2)
snap1_gradient(params, xs, ys, weights=None, loss="mse")      SnAp-1 (3.3)
snap2_gradient(params, xs, ys, rec_mask=None, weights=None, loss="mse")  SnAp-2 (3.4)
truncated_bptt_step_gradient(params, xs, ys, t, k, loss="mse")           TBPTT (3.6)
truncated_bptt_gradient(params, xs, ys, k, weights=None, loss="mse")
uoro_gradient(params, xs, ys, rng, eps=1e-7, weights=None, loss="mse")   UORO (3.5)
online_rtrl_sgd(params, xs, ys, lr, loss="mse") -> (params_after, yhats)
state_jacobian, parameter_jacobian, flatten_core, unflatten_core, column_units
relative_error, flatten, cosine, snap2_keep   (shared with tests/reference.py)
"""

import numpy as np

from reference import cosine, flatten, relative_error, snap2_keep
from reference_loss import output_error

__all__ = [
    "PARAM_NAMES", "CORE_NAMES", "GATES",
    "as_float64", "sizes", "random_params", "gate_rows", "sigmoid", "cell_step",
    "forward", "total_loss", "bptt_gradient", "finite_difference_gradient",
    "n_core_params", "flatten_core", "unflatten_core", "column_units",
    "state_jacobian", "parameter_jacobian",
    "rtrl_gradient", "snap1_gradient", "snap2_gradient",
    "truncated_bptt_step_gradient", "truncated_bptt_gradient", "uoro_gradient",
    "online_rtrl_sgd",
    "relative_error", "flatten", "cosine", "snap2_keep",   # from tests/reference.py
]

PARAM_NAMES = ("W_ih", "W_hh", "b_ih", "b_hh", "W_out", "b_out")
CORE_NAMES = ("W_ih", "W_hh", "b_ih", "b_hh")   # the parameters P_t tracks, in column order
GATES = ("r", "z", "n")                          # gate block order in W_ih, W_hh, b_ih, b_hh


# ---------------------------------------------------------------- basics


def as_float64(params):
    """Return a dict of float64 copies of the six parameter arrays."""
    return {name: np.array(params[name], dtype=np.float64, copy=True) for name in PARAM_NAMES}


def sizes(params):
    """(n_hidden, n_in, n_out) of a parameter dict."""
    n_hidden = np.shape(params["W_hh"])[1]
    n_in = np.shape(params["W_ih"])[1]
    n_out = np.shape(params["W_out"])[0]
    return n_hidden, n_in, n_out


def random_params(rng, n_in, n_hidden, n_out, scale=0.5):
    """Random float64 parameters of a moderate scale (no gate saturated)."""
    n = n_hidden
    return {
        "W_ih": rng.normal(0.0, scale / np.sqrt(n_in), (3 * n, n_in)),
        "W_hh": rng.normal(0.0, scale / np.sqrt(n), (3 * n, n)),
        "b_ih": rng.normal(0.0, 0.1, 3 * n),
        "b_hh": rng.normal(0.0, 0.1, 3 * n),
        "W_out": rng.normal(0.0, scale / np.sqrt(n), (n_out, n)),
        "b_out": rng.normal(0.0, 0.1, n_out),
    }


def gate_rows(n, gate):
    """The rows of gate ``gate`` ("r", "z" or "n") in W_ih, W_hh, b_ih, b_hh."""
    g = GATES.index(gate)
    return slice(g * n, (g + 1) * n)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _sequences(p, xs, ys=None):
    _, n_in, n_out = sizes(p)
    xs = np.asarray(xs, dtype=np.float64).reshape(-1, n_in)
    if ys is None:
        return xs
    ys = np.asarray(ys, dtype=np.float64).reshape(-1, n_out)
    assert len(xs) == len(ys)
    return xs, ys


def _weights_or_ones(weights, T):
    return np.ones(T) if weights is None else np.asarray(weights, dtype=np.float64).reshape(T)


def cell_step(p, x, h_prev):
    """One GRU step.  Returns a dict with everything the gradients need:
    x, h_prev, g_i (3n,), g_h (3n,), r, u, c, h (n each)."""
    n = len(h_prev)
    R, Z, N = gate_rows(n, "r"), gate_rows(n, "z"), gate_rows(n, "n")
    g_i = p["W_ih"] @ x + p["b_ih"]
    g_h = p["W_hh"] @ h_prev + p["b_hh"]
    r = sigmoid(g_i[R] + g_h[R])
    u = sigmoid(g_i[Z] + g_h[Z])
    c = np.tanh(g_i[N] + r * g_h[N])
    h = (1.0 - u) * c + u * h_prev
    return {"x": x, "h_prev": h_prev, "g_i": g_i, "g_h": g_h, "r": r, "u": u, "c": c, "h": h}


def _run(p, xs, h0=None):
    """The list of cell_step dicts of steps 1 .. T from h0 (default 0)."""
    n = sizes(p)[0]
    h = np.zeros(n) if h0 is None else np.array(h0, dtype=np.float64).reshape(n)
    steps = []
    for x in xs:
        s = cell_step(p, x, h)
        steps.append(s)
        h = s["h"]
    return steps


def forward(params, xs, h0=None):
    """Run the cell from h_0 (default 0) over xs (T, n_in).

    Returns hs (T, n_hidden) holding h_1 .. h_T and yhats (T, n_out).
    """
    p = as_float64(params)
    xs = _sequences(p, xs)
    n, _, n_out = sizes(p)
    hs = np.zeros((len(xs), n))
    yhats = np.zeros((len(xs), n_out))
    for t, s in enumerate(_run(p, xs, h0)):
        hs[t] = s["h"]
        yhats[t] = p["W_out"] @ s["h"] + p["b_out"]
    return hs, yhats


def total_loss(params, xs, ys, weights=None, loss="mse"):
    """sum_t weights[t] * L_t (weights default to 1), from h_0 = 0."""
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    weights = _weights_or_ones(weights, len(xs))
    _, yhats = forward(p, xs)
    return float(sum(weights[t] * output_error(yhats[t], ys[t], loss)[0] for t in range(len(xs))))


def _zero_grad(p):
    return {name: np.zeros_like(p[name]) for name in PARAM_NAMES}


# ------------------------------------------------- back-propagation through time


def _backward_step(p, s, dh, grad):
    """Back-propagate dLoss/dh_t = dh through the step s (a cell_step dict).

    Adds the step's contribution to the core parameters of ``grad`` and returns
    dLoss/dh_{t-1} through this step.
    """
    n = len(dh)
    R, Z, N = gate_rows(n, "r"), gate_rows(n, "z"), gate_rows(n, "n")
    r, u, c, h_prev, g_h = s["r"], s["u"], s["c"], s["h_prev"], s["g_h"]
    dc = dh * (1.0 - u)
    du = dh * (h_prev - c)
    da_n = dc * (1.0 - c ** 2)          # d/d(g_i^n + r g_h^n)
    da_r = da_n * g_h[N] * r * (1.0 - r)  # d/d(g_i^r + g_h^r)
    da_z = du * u * (1.0 - u)           # d/d(g_i^z + g_h^z)
    dg_i = np.zeros(3 * n)
    dg_h = np.zeros(3 * n)
    dg_i[R], dg_i[Z], dg_i[N] = da_r, da_z, da_n
    dg_h[R], dg_h[Z], dg_h[N] = da_r, da_z, da_n * r
    grad["W_ih"] += np.outer(dg_i, s["x"])
    grad["b_ih"] += dg_i
    grad["W_hh"] += np.outer(dg_h, h_prev)
    grad["b_hh"] += dg_h
    return dh * u + p["W_hh"].T @ dg_h


def bptt_gradient(params, xs, ys, weights=None, loss="mse"):
    """Gradient of total_loss by back-propagation through time (float64)."""
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    weights = _weights_or_ones(weights, T)
    steps = _run(p, xs)
    grad = _zero_grad(p)
    dh_from_future = np.zeros(sizes(p)[0])   # dLoss/dh_t through h_{t+1}
    for t in reversed(range(T)):
        h_t = steps[t]["h"]
        yhat = p["W_out"] @ h_t + p["b_out"]
        e = weights[t] * output_error(yhat, ys[t], loss)[1]
        grad["W_out"] += np.outer(e, h_t)
        grad["b_out"] += e
        dh = p["W_out"].T @ e + dh_from_future
        dh_from_future = _backward_step(p, steps[t], dh, grad)
    return grad


def finite_difference_gradient(params, xs, ys, eps=1e-6, weights=None, loss="mse"):
    """Central finite differences of total_loss, one entry at a time (float64).

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
            loss_plus = total_loss(p, xs, ys, weights, loss)
            flat_param[i] = saved - eps
            loss_minus = total_loss(p, xs, ys, weights, loss)
            flat_param[i] = saved
            flat_grad[i] = (loss_plus - loss_minus) / (2.0 * eps)
        grad[name] = g
    return grad


# ------------------------------------------------- sensitivities (DESIGN 3.10)


def n_core_params(n_hidden, n_in):
    """N = 3n m + 3n n + 3n + 3n, the number of columns of P_t."""
    return 3 * n_hidden * (n_in + n_hidden + 2)


def _core_shapes(n, m):
    return {"W_ih": (3 * n, m), "W_hh": (3 * n, n), "b_ih": (3 * n,), "b_hh": (3 * n,)}


def flatten_core(arrays):
    """Concatenate the four core arrays into P's column layout.

    ``arrays[name]`` has shape lead + shape(name) for one common ``lead``
    (() for a gradient, (n,) for the rows of P); the result has shape
    lead + (N,): columns W_ih, W_hh, b_ih, b_hh, each row-major.
    """
    lead = np.shape(arrays["W_ih"])[:-2]
    return np.concatenate([np.reshape(arrays[name], lead + (-1,)) for name in CORE_NAMES],
                          axis=-1)


def unflatten_core(vec, n, m):
    """Inverse of flatten_core for a length-N vector: a dict of the four core arrays."""
    vec = np.asarray(vec, dtype=np.float64)
    assert vec.shape == (n_core_params(n, m),)
    out, start = {}, 0
    for name, shape in _core_shapes(n, m).items():
        size = int(np.prod(shape))
        out[name] = vec[start:start + size].reshape(shape).copy()
        start += size
    return out


def column_units(n, m):
    """(N,) ints: the unit k whose gate rows column j of P belongs to
    (parameter row rho of any core array belongs to unit rho mod n)."""
    per_param = {
        "W_ih": np.repeat(np.arange(3 * n) % n, m),
        "W_hh": np.repeat(np.arange(3 * n) % n, n),
        "b_ih": np.arange(3 * n) % n,
        "b_hh": np.arange(3 * n) % n,
    }
    return np.concatenate([per_param[name] for name in CORE_NAMES])


def _coefficients(s):
    """a_n, a_nh, a_r, a_z of the module docstring, for the step s."""
    n = len(s["h"])
    r, u, c = s["r"], s["u"], s["c"]
    a_n = (1.0 - u) * (1.0 - c ** 2)
    a_nh = a_n * r
    a_r = a_n * s["g_h"][gate_rows(n, "n")] * r * (1.0 - r)
    a_z = (s["h_prev"] - c) * u * (1.0 - u)
    return a_n, a_nh, a_r, a_z


def state_jacobian(p, s):
    """D_t = dh_t/dh_{t-1} (n, n) for the step s:
    diag(u) + diag(a_nh) W_hh^n + diag(a_r) W_hh^r + diag(a_z) W_hh^z."""
    n = len(s["h"])
    a_n, a_nh, a_r, a_z = _coefficients(s)
    W_hh = p["W_hh"]
    return (np.diag(s["u"])
            + a_nh[:, None] * W_hh[gate_rows(n, "n")]
            + a_r[:, None] * W_hh[gate_rows(n, "r")]
            + a_z[:, None] * W_hh[gate_rows(n, "z")])


def parameter_jacobian(p, s):
    """M_t = dh_t/dtheta at fixed h_{t-1}, (n, N) in the column order of
    flatten_core.  Row k is non-zero only on unit k's own gate rows."""
    n, m, _ = sizes(p)
    a_n, a_nh, a_r, a_z = _coefficients(s)
    ih_coefficient = {"r": a_r, "z": a_z, "n": a_n}
    hh_coefficient = {"r": a_r, "z": a_z, "n": a_nh}
    M = {name: np.zeros((n,) + shape) for name, shape in _core_shapes(n, m).items()}
    k = np.arange(n)                                   # unit k ...
    for gate in GATES:
        row = GATES.index(gate) * n + k                # ... and its row in this gate block
        M["W_ih"][k, row, :] = ih_coefficient[gate][:, None] * s["x"][None, :]
        M["b_ih"][k, row] = ih_coefficient[gate]
        M["W_hh"][k, row, :] = hh_coefficient[gate][:, None] * s["h_prev"][None, :]
        M["b_hh"][k, row] = hh_coefficient[gate]
    return flatten_core(M)


def _assemble(p, core_grad, steps, ys, weights, loss):
    """Gradient dict from the flat (N,) core part and the exact readout."""
    n, m, _ = sizes(p)
    grad = _zero_grad(p)
    grad.update(unflatten_core(core_grad, n, m))
    for t, s in enumerate(steps):
        yhat = p["W_out"] @ s["h"] + p["b_out"]
        e = weights[t] * output_error(yhat, ys[t], loss)[1]
        grad["W_out"] += np.outer(e, s["h"])
        grad["b_out"] += e
    return grad


def _forward_mode(params, xs, ys, weights, loss, keep=None, diagonal_only=False):
    """Shared loop of rtrl/snap1/snap2:  P_t = D P_{t-1} + M_t, then P_t *= keep.

    diagonal_only uses diag(D_t) in place of D_t (SnAp-1).  keep (n, N) bool,
    if given, zeroes the entries that are not tracked (SnAp-2).
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    weights = _weights_or_ones(weights, T)
    n, m, _ = sizes(p)
    P = np.zeros((n, n_core_params(n, m)))
    core_grad = np.zeros(n_core_params(n, m))
    steps = _run(p, xs)
    for t, s in enumerate(steps):
        D = state_jacobian(p, s)
        M = parameter_jacobian(p, s)
        if diagonal_only:
            P = np.diag(D)[:, None] * P + M
        else:
            P = D @ P + M
        if keep is not None:
            P = P * keep
        yhat = p["W_out"] @ s["h"] + p["b_out"]
        c = p["W_out"].T @ (weights[t] * output_error(yhat, ys[t], loss)[1])
        core_grad += c @ P
    return _assemble(p, core_grad, steps, ys, weights, loss)


def rtrl_gradient(params, xs, ys, weights=None, loss="mse"):
    """Exact RTRL: P_t = D_t P_{t-1} + M_t (full (n, N) sensitivity),
    dL_t/dtheta = c_t^T P_t.  Equals bptt_gradient."""
    return _forward_mode(params, xs, ys, weights, loss)


def snap1_gradient(params, xs, ys, weights=None, loss="mse"):
    """SnAp-1: unit k keeps only the trace of its own parameters (its three gate
    rows of W_ih, W_hh, b_ih, b_hh), J_t = D_t[k, k] J_{t-1} + M_t[k, own].

    Written on the full (n, N) array: P_t = diag(D_t) * P_{t-1} + M_t, which
    never leaves the own-parameter entries since M_t does not.  Exact when the
    three W_hh blocks are diagonal (then D_t is diagonal).
    """
    return _forward_mode(params, xs, ys, weights, loss, diagonal_only=True)


def snap2_gradient(params, xs, ys, rec_mask=None, weights=None, loss="mse"):
    """SnAp-2: the exact recursion restricted to P[k, params of unit i] for
    k in S_i = {i} u {k : rec_mask[k, i]}, the other entries held at 0.

    rec_mask (n, n) bool applies to each of the three W_hh blocks:
    rec_mask[k, l] True keeps W_hh^g[k, l] for g = r, z, n.  None means dense
    (then this is exact RTRL).  The gradient of masked W_hh entries is 0 in all
    three blocks; W_hh is used as given (it should be 0 where masked).
    """
    n, m, _ = sizes(params)
    if rec_mask is None:
        rec_mask = np.ones((n, n), dtype=bool)
    rec_mask = np.asarray(rec_mask, dtype=bool)
    assert rec_mask.shape == (n, n)
    keep = snap2_keep(rec_mask)[:, column_units(n, m)]   # keep[k, j]: unit of column j
    grad = _forward_mode(params, xs, ys, weights, loss, keep=keep)
    grad["W_hh"] *= np.tile(rec_mask, (3, 1))
    return grad


# ------------------------------------------------- truncated BPTT (DESIGN 3.6)


def truncated_bptt_step_gradient(params, xs, ys, t, k, loss="mse"):
    """Gradient of L_t alone, back-propagated through at most k steps.

    ``t`` is 1-based (t = 1: h_1 from h_0 = 0 and xs[0]).  The error of L_t
    flows back through steps t, t-1, ..., max(1, t-k+1); the state h_{t-k}
    entering the oldest step is a constant.  The forward pass runs over the
    whole sequence from h_0 = 0.  With k >= t this is the exact gradient of L_t.
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    assert 1 <= t <= T and k >= 1
    steps = _run(p, xs)
    grad = _zero_grad(p)
    h_t = steps[t - 1]["h"]
    e = output_error(p["W_out"] @ h_t + p["b_out"], ys[t - 1], loss)[1]
    grad["W_out"] += np.outer(e, h_t)
    grad["b_out"] += e
    dh = p["W_out"].T @ e                       # dL_t/dh_s, starting at s = t
    for s in range(t, max(1, t - k + 1) - 1, -1):
        dh = _backward_step(p, steps[s - 1], dh, grad)
    return grad


def truncated_bptt_gradient(params, xs, ys, k, weights=None, loss="mse"):
    """sum_t weights[t] * truncated_bptt_step_gradient(params, xs, ys, t, k)."""
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    weights = _weights_or_ones(weights, len(xs))
    total = _zero_grad(p)
    for t in range(1, len(xs) + 1):
        if weights[t - 1] == 0.0:
            continue
        g = truncated_bptt_step_gradient(p, xs, ys, t, k, loss)
        for name in PARAM_NAMES:
            total[name] += weights[t - 1] * g[name]
    return total


# ------------------------------------------------- UORO (DESIGN 3.5)


def uoro_gradient(params, xs, ys, rng, eps=1e-7, weights=None, loss="mse"):
    """One draw of the UORO estimate, summed over t (float64).

    Rank-one P_t ~ htilde_t thetatilde_t^T (htilde (n,), thetatilde (N,)),
    fresh signs nu in {-1, +1}^n each step, D = D_t, M = M_t as above::

        u    = nu^T M_t                                       (N,)
        rho0 = sqrt((||thetatilde|| + eps) / (||D htilde|| + eps))
        rho1 = sqrt((||u|| + eps) / (||nu|| + eps))
        htilde <- rho0 D htilde + rho1 nu,   thetatilde <- thetatilde / rho0 + u / rho1
        g_t  = (c_t . htilde) thetatilde,    c_t = W_out^T e_t

    ``rng`` is a numpy Generator; the signs are drawn at every step whatever
    the weight.  The estimate is unbiased over the draws.
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    T = len(xs)
    weights = _weights_or_ones(weights, T)
    n, m, _ = sizes(p)
    h_tilde = np.zeros(n)
    theta_tilde = np.zeros(n_core_params(n, m))
    core_grad = np.zeros(n_core_params(n, m))
    steps = _run(p, xs)
    for t, s in enumerate(steps):
        nu = rng.choice([-1.0, 1.0], size=n)
        Dh = state_jacobian(p, s) @ h_tilde
        u = nu @ parameter_jacobian(p, s)
        rho0 = np.sqrt((np.linalg.norm(theta_tilde) + eps) / (np.linalg.norm(Dh) + eps))
        rho1 = np.sqrt((np.linalg.norm(u) + eps) / (np.linalg.norm(nu) + eps))
        h_tilde = rho0 * Dh + rho1 * nu
        theta_tilde = theta_tilde / rho0 + u / rho1
        yhat = p["W_out"] @ s["h"] + p["b_out"]
        c = p["W_out"].T @ (weights[t] * output_error(yhat, ys[t], loss)[1])
        core_grad += (c @ h_tilde) * theta_tilde
    return _assemble(p, core_grad, steps, ys, weights, loss)


# ------------------------------------------------- online training


def online_rtrl_sgd(params, xs, ys, lr, loss="mse"):
    """Exact online RTRL with plain SGD, updating after every sample.

    At step t: the step with the current weights from h_{t-1} and x_t;
    P_t = D_t P_{t-1} + M_t with the current weights; yhat_t (returned as the
    prediction of step t); the gradient of L_t; then theta <- theta - lr * grad.

    Returns (params_after, yhats) with params_after a dict of float64 arrays.
    """
    p = as_float64(params)
    xs, ys = _sequences(p, xs, ys)
    n, m, n_out = sizes(p)
    h = np.zeros(n)
    P = np.zeros((n, n_core_params(n, m)))
    yhats = np.zeros((len(xs), n_out))
    for t in range(len(xs)):
        s = cell_step(p, xs[t], h)
        h = s["h"]
        P = state_jacobian(p, s) @ P + parameter_jacobian(p, s)
        yhats[t] = p["W_out"] @ h + p["b_out"]
        e = output_error(yhats[t], ys[t], loss)[1]
        g = unflatten_core((p["W_out"].T @ e) @ P, n, m)
        g["W_out"] = np.outer(e, h)
        g["b_out"] = e
        for name in PARAM_NAMES:
            p[name] = p[name] - lr * g[name]
    return p, yhats
