"""How a model's parameters are first drawn: the weight initialisations
(`OnlineRNN(init=...)`), the sparsity mask of W_rec, and the seed words of
UORO's random generator.  Everything is drawn from the model's ``seed``."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

#: weight initialisations (`OnlineRNN(init=...)`; documented there)
INITS = ("gaussian", "uniform", "orthogonal")


def initialise(params: Dict[str, np.ndarray], cell: str, init: str,
               mask: Optional[np.ndarray], rng: np.random.Generator) -> None:
    """Draw a model's parameters into its live views ``params``.  Every
    scheme draws the cell's input weights (or the diag cell's parameters)
    first, then its recurrent weights, then the readout, from the one
    generator seeded by ``seed``."""
    n, m = params["W_out"].shape[1], _n_in(params, cell)
    p = params
    if cell == "diag":
        # Decays r in [0.5, 0.99] and angles in [0, pi/4], as in LRU
        # (Orvieto et al. 2023); inputs scaled by sqrt(1 - r^2) so that
        # every pair's state has about unit variance.  `init` sets only
        # the readout below: the cell has no W_rec.
        half = n // 2
        r = rng.uniform(0.5, 0.99, half)
        p["decay"][...] = np.log(r / (1.0 - r))
        p["angle"][...] = rng.uniform(0.0, np.pi / 4, half)
        gain = np.repeat(np.sqrt(1.0 - r ** 2), 2)[:, None]
        p["B"][...] = rng.standard_normal(p["B"].shape) / np.sqrt(m) * gain
        p["b"][...] = 0.0
    elif cell == "gru":
        _gru(p, init, mask, rng, n, m)
    elif init == "uniform":
        # PyTorch's nn.RNNCell: U(-1/sqrt(n), 1/sqrt(n)) for every weight
        # and bias.  With a mask W_rec's bound is 1/sqrt(n * density), the
        # fan-in of the weights kept: the same spectral radius, about
        # 1/sqrt(3), as the dense draw.
        bound = 1.0 / np.sqrt(n)
        p["W_in"][...] = rng.uniform(-bound, bound, p["W_in"].shape)
        w_rec = rng.uniform(-1.0, 1.0, p["W_rec"].shape) / np.sqrt(n * kept(mask, n))
        p["W_rec"][...] = w_rec if mask is None else w_rec * mask
        p["b"][...] = rng.uniform(-bound, bound, n)
    else:
        p["W_in"][...] = rng.uniform(-1.0, 1.0, p["W_in"].shape) / np.sqrt(m)
        g = rng.standard_normal(p["W_rec"].shape)
        if init == "orthogonal":
            p["W_rec"][...] = orthogonal(g, mask)
        else:
            # Gaussian with spectral radius about 0.9 (circular law): stable, not dead.
            w_rec = g * (0.9 / np.sqrt(n * kept(mask, n)))
            p["W_rec"][...] = w_rec if mask is None else w_rec * mask
        p["b"][...] = 0.0
    if init == "uniform":
        # nn.Linear(n, o): weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = 1.0 / np.sqrt(n)
        p["W_out"][...] = rng.uniform(-bound, bound, p["W_out"].shape)
        p["b_out"][...] = rng.uniform(-bound, bound, p["b_out"].shape)
    else:
        p["W_out"][...] = rng.standard_normal(p["W_out"].shape) / np.sqrt(n)
        p["b_out"][...] = 0.0


def _n_in(params, cell) -> int:
    return params["B" if cell == "diag" else "W_ih" if cell == "gru" else "W_in"].shape[1]


def _gru(p, init, mask, rng, n, m) -> None:
    """The GRU's W_ih, W_hh, b_ih, b_hh.  "uniform" is PyTorch's
    ``nn.GRUCell(m, n)``: all four U(-1/sqrt(n), 1/sqrt(n)).  "gaussian" and
    "orthogonal" treat each gate's n x n block of W_hh as Elman's W_rec
    (Gaussian at spectral radius 0.9, or a random orthogonal matrix), with
    W_ih U(-1/sqrt(m), 1/sqrt(m)) and zero biases.  A mask applies to each
    block, rescaled as for W_rec."""
    blocks = p["W_hh"].reshape(3, n, n)
    keep = 1.0 if mask is None else mask
    if init == "uniform":
        bound = 1.0 / np.sqrt(n)
        p["W_ih"][...] = rng.uniform(-bound, bound, p["W_ih"].shape)
        blocks[...] = rng.uniform(-1.0, 1.0, blocks.shape) / np.sqrt(n * kept(mask, n)) * keep
        p["b_ih"][...] = rng.uniform(-bound, bound, 3 * n)
        p["b_hh"][...] = rng.uniform(-bound, bound, 3 * n)
        return
    p["W_ih"][...] = rng.uniform(-1.0, 1.0, p["W_ih"].shape) / np.sqrt(m)
    for g in range(3):
        draw = rng.standard_normal((n, n))
        if init == "orthogonal":
            blocks[g] = orthogonal(draw, mask)
        else:
            blocks[g] = draw * (0.9 / np.sqrt(n * kept(mask, n))) * keep
    p["b_ih"][...] = 0.0
    p["b_hh"][...] = 0.0


def kept(mask: Optional[np.ndarray], n: int) -> float:
    """The fraction of recurrent weights a mask keeps (1 without one; at
    least 1/n, so that an empty mask divides by something)."""
    return 1.0 if mask is None else max(float(mask.mean()), 1.0 / n)
def orthogonal(g: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """A random orthogonal matrix from the square Gaussian draw ``g``: Q of its
    QR decomposition with the signs of R's diagonal moved into Q, so that Q
    is uniformly (Haar) distributed (Mezzadri 2007).  With a ``mask`` the
    masked entries are zeroed and the rest rescaled so that the Frobenius
    norm is sqrt(n), as an orthogonal matrix's: the mean squared singular
    value stays 1."""
    q, r = np.linalg.qr(g)
    d = np.sign(np.diag(r))
    q *= np.where(d == 0, 1.0, d)
    if mask is None:
        return q
    q = q * mask
    norm = np.linalg.norm(q)
    return q * (np.sqrt(len(q)) / norm) if norm > 0 else q


def seed_words(seed: int) -> np.ndarray:
    """Two non-zero 64-bit words for the kernels' xorshift128+, from `seed`
    (splitmix64, Vigna 2014)."""
    words, x = [], seed & 0xFFFFFFFFFFFFFFFF
    for _ in range(2):
        x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        words.append((z ^ (z >> 31)) or 1)
    return np.array(words, dtype=np.uint64).view(np.int64)
