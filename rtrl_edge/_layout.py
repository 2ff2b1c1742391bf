"""Every buffer of a model, sized without allocating anything.

This is the single source of the arena layout: the compiled core allocates
exactly these buffers, `OnlineRNN.memory_bytes` is their sum, and `plan()`
uses the same function to size models it never builds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

MAX_VL = 16          # widest vector in floats; must equal RTRL_MAX_VL in _tile.h
MAX_TILE = 64        # widest column tile in floats; must equal RTRL_MAX_TILE in _tile.h
ALIGN_SLACK = 16     # floats of slack to align the float32 arena to 64 bytes

CELLS = ("elman", "diag", "gru")
LEARNERS = ("rtrl", "snap1", "snap2", "uoro", "tbptt")
OPTIMIZERS = ("sgd", "momentum", "adam")
LOSSES = ("mse", "softmax")

# What each kind of buffer is:
#   param     the parameters (saved, compared by snapshot)
#   state     running state the model carries between samples (saved, snapshot)
#   structure fixed at construction from the configuration (saved: the mask)
#   scratch   rewritten within every step (neither saved nor compared)
KINDS = ("param", "state", "structure", "scratch")


@dataclass(frozen=True)
class Buffer:
    name: str
    dtype: str       # "f4", "f8" or "i8"
    size: int        # elements
    kind: str

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


def round_up(x: int, to: int) -> int:
    return -(-x // to) * to


def n_core(n: int, m: int, cell: str) -> int:
    """Parameters before the readout: Elman n(n+m+1); diag n(m+2); GRU
    3n(n+m+2) (W_ih, W_hh, b_ih, b_hh)."""
    if cell == "gru":
        return 3 * n * (n + m + 2)
    return n * (n + m + 1) if cell == "elman" else n * (m + 2)


def n_params(n: int, m: int, o: int, cell: str) -> int:
    """Number of parameters: n_core + o(n+1) for the readout."""
    return n_core(n, m, cell) + o * n + o


def rtrl_blocking(n: int, m: int, cell: str = "elman"):
    """(ldp, scratch): row stride of P, and the product scratch of one thread
    (n4 x MAX_TILE floats, n4 = n rounded up to 4)."""
    return round_up(n_core(n, m, cell), MAX_VL), round_up(n, 4) * MAX_TILE


def snap2_structure(mask: np.ndarray, m: int, cell: str = "elman") -> Dict[str, np.ndarray]:
    """Index sets of SnAp-2 (DESIGN §3.4) for a boolean (n, n) mask of W_rec
    (of each of the GRU's three W_hh blocks).

    Elman: row i of W = [W_rec | W_in | b] keeps the columns C_i (its unmasked
    recurrent weights, then all m inputs and the bias); its sensitivities are
    kept for the units S_i = {i} ∪ {k : mask[k, i]} it reaches within two
    steps, as one dense block of |S_i| rows and ld_i = ceil(|C_i|/16)*16
    columns.  GRU: C_i holds unit i's kept recurrent columns only, and its
    block has three gate segments of |C_i| + m + 2 columns each (_gru.pyx).
    """
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[0]
    K = n + m + 1
    s_sets, c_sets = [], []
    for i in range(n):
        s_sets.append(np.union1d([i], np.flatnonzero(mask[:, i])))
        kept = np.flatnonzero(mask[i, :])
        c_sets.append(kept if cell == "gru" else np.concatenate([kept, np.arange(n, K)]))
    s_off = np.zeros(n + 1, np.int64)
    c_off = np.zeros(n + 1, np.int64)
    p_off = np.zeros(n + 1, np.int64)
    width = (lambda c: 3 * (len(c) + m + 2)) if cell == "gru" else len
    ld = np.array([round_up(width(c), MAX_VL) for c in c_sets], np.int64)
    s_off[1:] = np.cumsum([len(s) for s in s_sets])
    c_off[1:] = np.cumsum([len(c) for c in c_sets])
    p_off[1:] = np.cumsum([len(s) * l for s, l in zip(s_sets, ld)])
    return dict(s_off=s_off, s_idx=np.concatenate(s_sets).astype(np.int64),
                c_off=c_off,
                c_idx=np.concatenate(c_sets + [np.zeros(0, np.int64)]).astype(np.int64),
                p_off=p_off, ld=ld)


def layout(n: int, m: int, o: int, *, cell: str = "elman", learner: str = "rtrl",
           optimizer: str = "sgd", window: Optional[int] = None,
           mask: Optional[np.ndarray] = None,
           snap2: Optional[Dict[str, np.ndarray]] = None, threads: int = 1) -> List[Buffer]:
    """The buffers of one model, in arena order (the largest, vector-loaded
    learner buffer first so that it starts on the aligned base).  Exact RTRL
    of the Elman and GRU cells keeps one product scratch per thread."""
    K = n + m + 1
    p = n_params(n, m, o, cell)
    core = n_core(n, m, cell)
    f4: List[Buffer] = []
    i8: List[Buffer] = []
    add = lambda name, size, kind, to=f4, dtype="f4": to.append(Buffer(name, dtype, int(size), kind))
    # learner state and its scratch
    if cell == "diag":
        add("traces", n * (2 * m + 4), "state")
        add("h_prev", n, "scratch")
        add("feat", n, "scratch")          # tanh(h); the Elman cell reads out h itself
    elif learner == "rtrl":
        ldp, scratch = rtrl_blocking(n, m, cell)
        add("P", n * ldp, "state")
        add("tmp", threads * scratch, "scratch")
        if cell == "gru":
            add("dmat", n * n, "scratch")
    elif learner == "snap1":
        add("J", core, "state")           # like the core parameters (Elman: n x K)
        if cell == "gru":
            add("tmp", n, "scratch")         # D_t's diagonal
    elif learner == "snap2":
        if snap2 is None:
            snap2 = snap2_structure(np.ones((n, n), bool) if mask is None else mask, m,
                                    cell)
        sizes = np.diff(snap2["s_off"])
        smax, ldmax = int(sizes.max()), int(snap2["ld"].max())
        add("P_blocks", snap2["p_off"][-1], "state")
        add("tmp", round_up(smax, 4) * ldmax, "scratch")
        add("wsub", round_up(smax, 4) * smax, "scratch")
        add("dsub", smax, "scratch")
        add("csub", smax, "scratch")
        add("gsub", ldmax, "scratch")
        for name in ("s_off", "s_idx", "c_off", "c_idx", "p_off", "ld"):
            add(name, snap2[name].size, "structure", to=i8, dtype="i8")
    elif learner == "uoro":
        add("uoro_theta", core, "state")
        add("uoro_h", n, "state")
        add("v1", n, "scratch")
        add("v2", n, "scratch")
        add("rng", 2, "state", to=i8, dtype="i8")
    elif learner == "tbptt":
        add("ring_z", window * K, "state")
        add("ring_d", window * (5 * n if cell == "gru" else n), "state")
        add("v1", n, "scratch")
        add("v2", n, "scratch")
        add("ring", 2, "state", to=i8, dtype="i8")
    if cell == "gru":
        add("gates", 6 * n, "scratch")
        add("gcoef", 5 * n, "scratch")
    # parameters and optimiser
    add("theta", p, "param")
    add("grad", p, "scratch")
    add("good", p, "scratch")
    moments = OPTIMIZERS.index(optimizer)          # sgd 0, momentum 1, adam 2
    for name in ("m1", "m2")[:moments]:
        add(name, p, "state")
    if mask is not None:
        add("mask", n * n, "structure")
    # running state and per-step scratch
    add("h", n, "state")
    for name, size in (("z", K), ("dphi", n), ("c", n), ("yn", o), ("e", o),
                       ("x_in", m), ("y_in", o), ("h_saved", n)):
        add(name, size, "scratch")
    f8 = [Buffer(name, "f8", size, "state") for name, size in
          (("x_mean", m), ("x_var", m), ("y_mean", o), ("y_var", o), ("counts", 2))]
    return f4 + f8 + i8


def memory_bytes(buffers: List[Buffer]) -> int:
    """Bytes of all buffers plus the float32 arena's alignment slack."""
    return sum(b.nbytes for b in buffers) + 4 * ALIGN_SLACK
