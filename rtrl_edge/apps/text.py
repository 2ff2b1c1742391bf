"""Next-character prediction in one online pass: a recurrent net as a compressor.

The net reads a text one byte at a time and, before it sees each byte, gives
a probability to every byte value of the text's vocabulary; then it learns
from the byte (``OnlineRNN.step(x, y)``, ``loss="softmax"``).  Every byte is
predicted before it is learnt and the model never sees a byte twice, so the
summed cross-entropy is the length of the code an arithmetic coder driven by
the same model would write: bits per character (bpc) here is a compression
rate, directly comparable with gzip, bzip2 and xz on the same bytes.

Accounting (the same for the net and for the unigram baseline):

- the vocabulary V is the set of byte values present; announcing it costs a
  256-bit bitmap, charged to the total;
- the first byte is predicted from an all-zero "start" input, every later
  byte from the one-hot code of the byte before it;
- bpc = (256 + sum over bytes of -log2 p(byte)) / number of bytes.

Layers:

- ``load_text(path=None)``: the shipped tinyshakespeare (Karpathy's char-rnn
  copy of Shakespeare, public domain; ``rtrl_edge/data/README.md``), or a file;
- ``compression_bpc(data)``, ``unigram_bpc(data)``: the baselines;
- ``Vocab``, ``run(data, ...)``: the online pass, timed step by step;
- ``sample(net, vocab, n_chars)``: text drawn from a trained model, on a
  twin of it (the model itself is left untouched).
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import math
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Dict, Optional

import numpy as np

from ..model import OnlineRNN

__all__ = ["DEFAULTS", "TextResult", "Vocab", "compression_bpc", "load_text", "make_net", "run",
           "sample", "unigram_bpc"]

#: The data file shipped in the package (xz-compressed, 364 kB).
SHIPPED = "tinyshakespeare.txt.xz"

#: Bits charged for announcing the vocabulary: one bit per byte value.
VOCAB_HEADER_BITS = 256

#: The defaults of `run` and of ``rtrl-edge demo text``, chosen by measurement
#: (GRU, snap1, Adam, PyTorch's uniform init, no clipping): over the whole of
#: tinyshakespeare this is 2.459 bits/char (second half alone 2.359) against
#: gzip 3.112, xz 2.614 and bzip2 2.356, at a median 206 µs per character and
#: 3,847,836 bytes, about 5 minutes on a shared 2-core machine.  Wider or
#: exact learners cost more time for little: n = 256 (lr 3e-4) gains about
#: 0.02 bits/char at 1.5 times the time; tbptt(16) at n = 64 costs what snap1
#: at n = 128 costs and does worse.  Clipping at 1 costs about 0.2 bits/char
#: with Adam; lr 1e-2 does not learn at all (worse than the unigram model),
#: lr 1e-3 learns fastest at first and lr 4e-4 ends lowest.
DEFAULTS: Dict[str, object] = dict(cell="gru", learner="snap1", hidden=192, lr=4e-4,
                                   optimizer="adam", window=None, seed=0, init="uniform",
                                   clip=None)

_LN2 = math.log(2.0)


def load_text(path: Optional[os.PathLike] = None) -> bytes:
    """The bytes of a text: the shipped tinyshakespeare (1,115,394 bytes,
    decompressed from the package's ``data/tinyshakespeare.txt.xz``) without
    ``path``, else the file at ``path`` read as bytes.

    Raises FileNotFoundError / IsADirectoryError / PermissionError as
    ``open`` does, and ValueError if the text is empty.
    """
    if path is None:
        raw = resources.files("rtrl_edge").joinpath("data", SHIPPED).read_bytes()
        data = lzma.decompress(raw)
        where = f"the shipped {SHIPPED}"
    else:
        with open(path, "rb") as f:
            data = f.read()
        where = repr(os.fspath(path))
    if not data:
        raise ValueError(f"{where} is empty: there is nothing to predict")
    return data


def _check_data(data) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not data:
        raise ValueError("data is empty: there is nothing to predict")
    return data


def compression_bpc(data: bytes) -> Dict[str, float]:
    """Bits per character of Python's general-purpose compressors on
    ``data``: ``gzip_bpc`` (gzip level 9, as ``gzip -9``), ``bzip2_bpc``
    (bz2 level 9, ``bzip2 -9``) and ``xz_bpc`` (lzma preset
    ``9 | PRESET_EXTREME``, ``xz -9e``); headers included."""
    data = _check_data(data)
    bits = 8.0 / len(data)
    return dict(
        gzip_bpc=len(gzip.compress(data, compresslevel=9, mtime=0)) * bits,
        bzip2_bpc=len(bz2.compress(data, compresslevel=9)) * bits,
        xz_bpc=len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) * bits)


def unigram_bpc(data: bytes) -> float:
    """Bits per character of the online adaptive unigram model: each byte
    is coded with its Laplace-smoothed frequency among the bytes before it,
    ``p = (count + 1) / (seen + V)`` over the vocabulary V of the text, and
    counted after it is coded; plus the same 256-bit vocabulary header the
    net pays.  A model that has learnt anything from context beats it."""
    data = _check_data(data)
    arr = np.frombuffer(data, dtype=np.uint8)
    V = len(np.unique(arr))
    order = np.argsort(arr, kind="stable")
    sorted_arr = arr[order]
    starts = np.flatnonzero(np.r_[True, sorted_arr[1:] != sorted_arr[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(arr)]))
    before = np.empty(len(arr), dtype=np.float64)     # occurrences of this byte before it
    before[order] = np.arange(len(arr)) - group_start
    seen = np.arange(len(arr), dtype=np.float64)
    bits = -np.sum(np.log2((before + 1.0) / (seen + V)))
    return float((VOCAB_HEADER_BITS + bits) / len(arr))


@dataclass(frozen=True)
class Vocab:
    """The byte values present in a text, in increasing order; class q of
    the net is the byte ``symbols[q]``."""
    symbols: bytes

    @classmethod
    def of(cls, data: bytes) -> "Vocab":
        return cls(bytes(sorted(set(_check_data(data)))))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, data: bytes) -> np.ndarray:
        """Class indices (int64) of the bytes of ``data``; ValueError if a
        byte is not in the vocabulary."""
        index = np.full(256, -1, dtype=np.int64)
        index[np.frombuffer(self.symbols, dtype=np.uint8)] = np.arange(len(self.symbols))
        ids = index[np.frombuffer(data, dtype=np.uint8)]
        if len(ids) and ids.min() < 0:
            bad = data[int(np.argmin(ids))]
            raise ValueError(f"byte {bad!r} (0x{bad:02x}) is not in the vocabulary")
        return ids


@dataclass
class TextResult:
    """What one online pass measured.

    ``bpc``: bits per character over all ``chars`` bytes (header included,
    see the module doc); ``us_per_char`` / ``us_per_char_mean``: median and
    mean wall time of ``net.step`` (predict, then learn), in µs, timed one
    call at a time; ``memory_bytes``: every buffer of the model;
    ``curve_chars`` / ``curve_bpc``: bpc of successive segments (about 100)
    ending at those character counts, the learning curve; ``nats``: the
    cross-entropy of every step.
    """
    bpc: float
    chars: int
    us_per_char: float
    us_per_char_mean: float
    memory_bytes: int
    net: OnlineRNN
    vocab: Vocab
    curve_chars: np.ndarray
    curve_bpc: np.ndarray
    seconds: float
    divergence_recoveries: int
    nats: np.ndarray = field(repr=False)


def make_net(V: int, *, cell, learner, hidden, lr, optimizer, window=None, seed=0,
             init=DEFAULTS["init"], clip=DEFAULTS["clip"]) -> OnlineRNN:
    """The model of `run`: one-hot inputs and softmax outputs over V bytes."""
    if learner == "tbptt" and window is None:
        window = 16
    return OnlineRNN(n_in=V, n_hidden=hidden, n_out=V, cell=cell, learner=learner,
                     loss="softmax", optimizer=optimizer, lr=lr, clip=clip, init=init,
                     seed=seed, window=window if learner == "tbptt" else None)


def run(data: bytes, *, cell: str = DEFAULTS["cell"], learner: str = DEFAULTS["learner"],
        hidden: int = DEFAULTS["hidden"], lr: float = DEFAULTS["lr"],
        optimizer: str = DEFAULTS["optimizer"], window: Optional[int] = DEFAULTS["window"],
        seed: int = DEFAULTS["seed"], init: str = DEFAULTS["init"],
        clip: Optional[float] = DEFAULTS["clip"],
        progress: Optional[Callable[[int, int, float, float], None]] = None,
        progress_every: Optional[int] = None) -> TextResult:
    """Predict, then learn, every byte of ``data`` once.

    The net is ``OnlineRNN(n_in=V, n_hidden=hidden, n_out=V, cell=cell,
    learner=learner, loss="softmax", ...)`` over the V byte values present
    (``window``: tbptt's truncation, 16 if not given).  Step t feeds the
    one-hot code of byte t-1 (zeros for t = 0) and learns byte t; the
    input rows are preallocated (an identity matrix), and only ``net.step``
    is inside the timer (``time.perf_counter_ns``).

    ``progress(chars_done, chars_total, bpc_so_far, us_per_char)`` is called
    every ``progress_every`` bytes (default: at each tenth of them) and at
    the end; ``bpc_so_far`` is the code length so far per byte, ``us_per_char``
    the median step time since the previous call.

    Raises ValueError for empty data, a text of one distinct byte value
    (softmax needs two classes) or an invalid model configuration.
    """
    data = _check_data(data)
    if progress_every is not None and not (isinstance(progress_every, (int, np.integer))
                                           and progress_every >= 1):
        raise ValueError(f"progress_every must be a positive integer, got {progress_every!r}")
    vocab = Vocab.of(data)
    V = len(vocab)
    if V < 2:
        raise ValueError(f"the text has a single distinct byte value {vocab.symbols!r}: "
                         f"there is nothing to predict")
    net = make_net(V, cell=cell, learner=learner, hidden=hidden, lr=lr,
                   optimizer=optimizer, window=window, seed=seed, init=init, clip=clip)
    ids = vocab.encode(data)
    N = len(ids)
    inputs = np.zeros((V + 1, V), dtype=np.float32)   # row V: the start input (zeros)
    inputs[:V] = np.eye(V, dtype=np.float32)
    prev = np.empty(N, dtype=np.int64)
    prev[0] = V
    prev[1:] = ids[:-1]
    targets = ids.tolist()                            # Python ints: no conversion in the loop
    prev_rows = [inputs[i] for i in range(V + 1)]
    rows = [prev_rows[i] for i in prev.tolist()]
    nats = np.empty(N, dtype=np.float64)
    ns = np.empty(N, dtype=np.int64)
    if progress_every is None:      # tenths, the last one at N exactly
        reports = [round(N * k / 10) for k in range(1, 11)]
    else:
        reports = list(range(progress_every, N, progress_every)) + [N]
    reports = sorted(set(r for r in reports if r >= 1)) if progress is not None else []
    reports.append(N + 1)           # sentinel: never reached
    step = net.step
    clock = time.perf_counter_ns
    lo = 0
    k = 0
    total_nats = 0.0
    start = time.perf_counter()
    for t in range(N):
        x = rows[t]
        y = targets[t]
        t0 = clock()
        step(x, y)
        t1 = clock()
        ns[t] = t1 - t0
        nats[t] = net.last_loss
        if t + 1 == reports[k]:
            total_nats += float(np.sum(nats[lo:t + 1]))
            progress(t + 1, N, (VOCAB_HEADER_BITS + total_nats / _LN2) / (t + 1),
                     float(np.median(ns[lo:t + 1])) / 1e3)
            lo = t + 1
            k += 1
    seconds = time.perf_counter() - start
    bpc = (VOCAB_HEADER_BITS + float(np.sum(nats)) / _LN2) / N
    edges = np.unique(np.linspace(0, N, min(N, 100) + 1).round().astype(np.int64))
    sums = np.add.reduceat(nats, edges[:-1]) / _LN2
    return TextResult(
        bpc=bpc, chars=N, us_per_char=float(np.median(ns)) / 1e3,
        us_per_char_mean=float(np.mean(ns)) / 1e3, memory_bytes=net.memory_bytes,
        net=net, vocab=vocab, curve_chars=edges[1:], curve_bpc=sums / np.diff(edges),
        seconds=seconds, divergence_recoveries=net.stats["divergence_recoveries"],
        nats=nats)


def _twin(net: OnlineRNN) -> OnlineRNN:
    """A forward-only copy of ``net``: same parameters and hidden state, with
    the cheapest learner that trains its cell (it never learns anyway)."""
    cfg = net.config
    if cfg["cell"] != "diag":
        cfg.update(learner="snap1", window=None, rec_density=None)
    twin = OnlineRNN(**cfg)
    theirs = net.params
    for name, view in twin.params.items():
        view[...] = theirs[name]
    twin._core.buffers["h"][...] = net.snapshot()["h"]
    return twin


def sample(net: OnlineRNN, vocab, n_chars: int, *, temperature: float = 0.8,
           seed: int = 0, prime: bytes = b"\n") -> str:
    """``n_chars`` characters drawn from the model, one at a time.

    A twin of ``net`` (same parameters, same hidden state) reads ``prime``
    and then each drawn byte (`OnlineRNN.predict`: forward only); each byte
    is drawn from the predicted probabilities raised to ``1/temperature``
    and renormalised (lower is more conservative).  ``net`` is untouched.
    ``prime`` must be non-empty and made of bytes of the vocabulary.
    ``vocab`` is a `Vocab` or the bytes of one.  Each byte becomes one
    character (latin-1), so the result has exactly ``n_chars`` characters,
    each in the vocabulary.
    """
    symbols = vocab.symbols if isinstance(vocab, Vocab) else bytes(vocab)
    V = len(symbols)
    if V != net.n_out or net.n_in != V:
        raise ValueError(f"a vocabulary of {V} symbols does not match a net with "
                         f"n_in={net.n_in}, n_out={net.n_out}")
    if not isinstance(n_chars, (int, np.integer)) or n_chars < 0:
        raise ValueError(f"n_chars must be a non-negative integer, got {n_chars!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0
            and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not isinstance(prime, (bytes, bytearray)) or not prime:
        raise ValueError(f"prime must be non-empty bytes, got {prime!r}")
    prime_ids = Vocab(symbols).encode(bytes(prime))
    twin = _twin(net)
    eye = np.eye(V, dtype=np.float32)
    rng = np.random.default_rng(seed)
    for i in prime_ids.tolist():
        p = twin.predict(eye[i])
    out = bytearray()
    for _ in range(int(n_chars)):
        logp = np.log(np.maximum(np.asarray(p, dtype=np.float64), 1e-30)) / temperature
        q = np.exp(logp - logp.max())
        q /= q.sum()
        i = int(rng.choice(V, p=q))
        out.append(symbols[i])
        p = twin.predict(eye[i])
    return out.decode("latin-1")
