"""Independent float64 reference for the per-step losses (DESIGN.md 3.1, 3.9).

Plain numpy, float64, importing nothing from ``rtrl_edge``.  A loss turns
the readout yhat_t (o,) and the target row y_t (o,) of one step into the loss
L_t and the output error e_t = dL_t/dyhat_t; every cell's reference uses
e_t and nothing else of the loss (c_t = W_out^T e_t, the contractions, the
readout gradients e_t h_t^T and e_t are the same for every loss)::

    "mse"      L = 0.5 ||yhat - y||^2                  e = yhat - y
    "softmax"  p = softmax(yhat)                        e = p * sum_q y[q] - y
               L = -sum_q y[q] log p[q]                 (= p - y for a proper row)

For "softmax" y is a probability row; a class index c is the one-hot row
(labels_to_rows).  An all-zero row gives L = 0 and e = 0, which is what an
unlabelled step contributes; the references also take per-step ``weights``
(0 = unlabelled) that multiply L_t and e_t.

Functions
---------
output_error(yhat, y, loss)      -> (L, e)       one step, float64
softmax(v)                       -> p            stable (the max is subtracted)
log_softmax(v)                   -> log p        stable
labels_to_rows(labels, n_out)    -> rows (T, n_out), weights (T,)
"""

import numpy as np

LOSSES = ("mse", "softmax")


def _check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def log_softmax(v):
    """log softmax(v) for a vector v, computed stably: (v - max) - log sum exp(v - max)."""
    v = np.asarray(v, dtype=np.float64)
    shifted = v - np.max(v)
    return shifted - np.log(np.sum(np.exp(shifted)))


def softmax(v):
    """softmax(v) = exp(v - max) / sum exp(v - max) for a vector v (float64)."""
    v = np.asarray(v, dtype=np.float64)
    shifted = np.exp(v - np.max(v))
    return shifted / np.sum(shifted)


def output_error(yhat, y, loss="mse"):
    """Loss L and output error e = dL/dyhat of one step, both float64.

    yhat, y: (o,) vectors.  ``loss`` is "mse" or "softmax" (see the module
    docstring).  Returns (L as a Python float, e as an (o,) array).
    """
    _check_loss(loss)
    yhat = np.asarray(yhat, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if loss == "mse":
        diff = yhat - y
        return 0.5 * float(np.sum(diff ** 2)), diff
    log_p = log_softmax(yhat)
    L = -float(np.sum(y * log_p))
    e = np.exp(log_p) * np.sum(y) - y
    return L, e


def labels_to_rows(labels, n_out):
    """Class indices -> one-hot target rows and per-step weights.

    labels: (T,) integers in [0, n_out) or -1 for "no label at this step".
    Returns rows (T, n_out) float64 (an all-zero row where the label is -1)
    and weights (T,) float64 (1 where labelled, 0 where -1).
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size and not np.all((labels == -1) | ((labels >= 0) & (labels < n_out))):
        raise ValueError(f"labels must be -1 or in [0, {n_out}), got {labels}")
    labels = labels.astype(np.int64)
    T = len(labels)
    rows = np.zeros((T, n_out))
    weights = np.zeros(T)
    for t in range(T):
        if labels[t] >= 0:
            rows[t, labels[t]] = 1.0
            weights[t] = 1.0
    return rows, weights
