"""The tools people use for the three applications of ``rtrl_edge.apps``,
written on plain numpy arrays so that any data can be fed to them: the peers
of ``bench_apps.py``.

Text (next-character prediction, bits per character):

  ``torch_text``        ``torch.nn.GRU`` or ``torch.nn.RNN`` (tanh) and an
                        ``nn.Linear`` readout, one-hot inputs, trained the way
                        its users train a char-rnn on a stream: one pass in
                        order, chunks of k characters, the state carried over
                        (detached) from chunk to chunk, the mean cross-entropy
                        of the chunk back-propagated through it (truncated
                        BPTT), the gradient clipped to a global norm, Adam.
                        The bits of each character are those of the
                        prediction made before any update saw it (the
                        forward pass of its chunk runs before that chunk's
                        update), so the figure is the same online code length
                        as rtrl_edge's.

(gzip, bzip2, xz and the adaptive unigram model on the same bytes are
``rtrl_edge.apps.text.compression_bpc`` and ``unigram_bpc``.)

Sequence classification (a label per sequence: spoken digits, 8x8 digits
read row by row):

  ``torch_gru_offline`` ``torch.nn.GRU`` (one layer, batch first) and an
                        ``nn.Linear`` readout of its last state, trained
                        offline by mini-batch BPTT over whole sequences
                        (padded and packed, so every sequence ends at its own
                        last frame), Adam, a fixed number of epochs in a
                        fresh seeded order each epoch, the last quarter at a
                        tenth of the learning rate; inputs standardised
                        with the training frames' mean and standard
                        deviation.  What an offline learner gets from the
                        same features with every pass it likes: meant as an
                        upper bound for an online learner.  Test accuracy is that
                        of the last epoch's weights (nothing is selected on
                        the test set).
  ``logistic``          scikit-learn ``LogisticRegression`` (lbfgs,
                        multinomial) after a ``StandardScaler``, on
                        fixed-length vectors: ``pooled`` (each feature's mean
                        and standard deviation over the frames: 2 d numbers)
                        or ``pad_crop`` (the first F frames, zeros after a
                        short sequence's end: F d numbers), or the flattened
                        image.

Latency is measured per call with ``time.perf_counter_ns``: per character
for the text peers (each chunk's update, divided by its length), and for the
classifiers the training time per frame (an epoch's wall time over the frames
it saw) and the inference time of one sequence at a time (batch of one, no
gradient; for logistic regression the featurisation and ``predict_proba`` of
one row), median and p99.

torch runs on one thread (``torch.set_num_threads(1)``), as rtrl_edge does.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np

TORCH_INSTALL = ("pip install torch==2.13.0 "
                 "--extra-index-url https://download.pytorch.org/whl/cpu")
SKLEARN_INSTALL = "pip install scikit-learn"
LN2 = math.log(2.0)


def import_torch(threads: int = 1):
    """torch on `threads` threads; ImportError if it is not installed."""
    import torch
    torch.set_num_threads(threads)
    return torch


def import_sklearn():
    """(LogisticRegression, StandardScaler, make_pipeline); ImportError if
    scikit-learn is not installed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return LogisticRegression, StandardScaler, make_pipeline


def percentiles(us) -> Dict[str, float]:
    """median, p99, mean, min and max of a sample of µs."""
    us = np.asarray(us, np.float64)
    if us.size == 0:
        return dict(samples=0)
    p50, p99 = np.percentile(us, [50, 99])
    return dict(samples=int(us.size), median_us=float(p50), p99_us=float(p99),
                mean_us=float(us.mean()), min_us=float(us.min()), max_us=float(us.max()))


def tensor_bytes(tensors) -> int:
    return int(sum(t.nelement() * t.element_size() for t in tensors if t is not None))


# --------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------

def torch_text(codes: np.ndarray, n_symbols: int, *, cell: str = "gru", hidden: int = 128,
               chunk: int = 32, lr: float = 3e-3, clip: Optional[float] = 1.0,
               seed: int = 0, header_bits: float = 0.0, threads: int = 1,
               keep_nats: bool = False,
               progress: Optional[Callable[[int, float], None]] = None) -> dict:
    """One online pass of a PyTorch char-rnn over `codes` (ints in
    [0, n_symbols)), accounted as ``rtrl_edge.apps.text.run`` does: byte t is
    predicted from the one-hot code of byte t - 1 (an all-zero start input
    for t = 0), every byte is predicted once, and bpc = (header_bits + sum of
    -log2 p(byte)) / number of bytes.  Truncated BPTT over chunks of `chunk`
    bytes: the chunk's forward pass (its predictions) from the state carried
    over, detached, from the previous chunk; the mean cross-entropy back-
    propagated through the chunk; the gradient clipped to global norm
    `clip`; one Adam step.

    Returns bpc, chars, the per-character latency (each chunk's update
    timed, divided by its length: median/p99 over chunks; the mean over the
    pass), the pass's wall time, the learning curve (``curve``: bpc of about
    100 successive segments ending at ``chars``), the state kept between
    chunks in bytes
    (parameters, gradients, Adam's two moments, the carried state), the
    parameter count and a finite flag; with `keep_nats` also ``nats``, the
    cross-entropy of every byte (float64).  ``progress(chars_done,
    bpc_so_far)`` about ten times.
    """
    torch = import_torch(threads)
    if cell not in ("gru", "rnn"):
        raise ValueError(f"cell must be 'gru' or 'rnn', got {cell!r}")
    codes = np.asarray(codes, np.int64)
    if codes.ndim != 1 or codes.size == 0:
        raise ValueError("codes must be a non-empty 1-D array")
    if codes.min() < 0 or codes.max() >= n_symbols:
        raise ValueError(f"codes must lie in [0, {n_symbols})")
    torch.manual_seed(seed)
    V = int(n_symbols)
    if cell == "gru":
        rnn = torch.nn.GRU(V, hidden)
    else:
        rnn = torch.nn.RNN(V, hidden, nonlinearity="tanh")
    readout = torch.nn.Linear(hidden, V)
    params = [*rnn.parameters(), *readout.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    N = int(codes.size)
    inputs = torch.zeros(V + 1, V)                     # row V: the start input
    inputs[:V] = torch.eye(V)
    prev = torch.as_tensor(np.concatenate([[V], codes[:-1]]))
    target = torch.as_tensor(codes)
    h = torch.zeros(1, 1, hidden)
    nats = 0.0
    per_byte = np.empty(N, np.float64) if keep_nats else None
    chunk_us, chunk_nats = [], []
    finite = True
    every = max(N // 10, 1)
    next_report = every
    clock = time.perf_counter_ns
    t_start = clock()
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        t0 = clock()
        x = inputs[prev[start:stop]].unsqueeze(1)          # (k, 1, V)
        out, h_n = rnn(x, h)
        logp = torch.log_softmax(readout(out.squeeze(1)), dim=-1)
        nll = -logp.gather(1, target[start:stop].unsqueeze(1)).squeeze(1)
        loss = nll.mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        h = h_n.detach()
        s = float(nll.detach().sum())
        t1 = clock()
        if keep_nats:
            per_byte[start:stop] = nll.detach().double().numpy()
        chunk_us.append((t1 - t0) / 1e3 / (stop - start))
        if not math.isfinite(s):
            finite = False
        nats += s
        chunk_nats.append(s)
        if progress is not None and (stop >= next_report or stop == N):
            progress(stop, (header_bits + nats / LN2) / stop)
            next_report += every
    wall = (clock() - t_start) / 1e9
    state = list(params) + [p.grad for p in params] + [h]
    state += [v for st in opt.state.values() for v in st.values()
              if isinstance(v, torch.Tensor) and v.dim() > 0]
    # the learning curve: bpc of about 100 successive segments of whole chunks
    ends = np.minimum(np.arange(1, len(chunk_nats) + 1) * chunk, N)
    cut = np.unique(np.linspace(0, len(chunk_nats), min(len(chunk_nats), 100) + 1)
                    .round().astype(np.int64))
    seg_nats = np.add.reduceat(np.asarray(chunk_nats), cut[:-1])
    seg_chars = np.diff(np.r_[0, ends[cut[1:] - 1]])
    extra = dict(nats=per_byte) if keep_nats else {}
    return dict(bpc=(header_bits + nats / LN2) / N, chars=N, wall_s=wall,
                us_per_char_mean=wall * 1e6 / N, latency_per_char=percentiles(chunk_us),
                curve=dict(chars=ends[cut[1:] - 1].tolist(),
                           bpc=(seg_nats / LN2 / seg_chars).tolist()),
                state_bytes=tensor_bytes(state), finite=finite,
                parameters=int(sum(p.numel() for p in params)),
                settings=dict(cell=cell, hidden=hidden, chunk=chunk, lr=lr, clip=clip,
                              optimizer="adam", seed=seed, threads=threads,
                              input="one-hot, zero start input", n_symbols=V,
                              header_bits=header_bits), **extra)


# --------------------------------------------------------------------------
# sequence classification
# --------------------------------------------------------------------------

def frame_stats(sequences: Sequence[np.ndarray]):
    """(mean, std) of every feature over all the frames of `sequences`
    (std floored at 1e-3), float32."""
    allf = np.concatenate([np.asarray(s, np.float64) for s in sequences], axis=0)
    mu = allf.mean(axis=0)
    sd = np.maximum(allf.std(axis=0), 1e-3)
    return mu.astype(np.float32), sd.astype(np.float32)


def pooled(seq: np.ndarray) -> np.ndarray:
    """Mean and standard deviation of each feature over the frames: (2 d,)."""
    seq = np.asarray(seq, np.float32)
    return np.concatenate([seq.mean(axis=0), seq.std(axis=0)])


def pad_crop(seq: np.ndarray, frames: int) -> np.ndarray:
    """The first `frames` frames flattened, zeros after a short sequence's
    end: (frames d,)."""
    seq = np.asarray(seq, np.float32)
    out = np.zeros((frames, seq.shape[1]), np.float32)
    k = min(frames, len(seq))
    out[:k] = seq[:k]
    return out.reshape(-1)


def flat(seq: np.ndarray) -> np.ndarray:
    """The whole sequence flattened (fixed-length data: an image's pixels)."""
    return np.asarray(seq, np.float32).reshape(-1)


FEATURISERS = {"pooled": lambda s, _: pooled(s), "pad_crop": pad_crop,
               "flat": lambda s, _: flat(s)}


def logistic(train: Sequence[np.ndarray], y_train, test: Sequence[np.ndarray], y_test, *,
             features: str = "pooled", frames: Optional[int] = None, C: float = 1.0,
             max_iter: int = 5000, seed: int = 0) -> dict:
    """StandardScaler + LogisticRegression on fixed-length vectors of the
    sequences (`features`: "pooled", "pad_crop" with `frames`, or "flat").
    Returns the test accuracy, predictions, fit time (and over the training
    frames), and the inference time of one sequence at a time (featurise +
    predict_proba), median/p99."""
    LogisticRegression, StandardScaler, make_pipeline = import_sklearn()
    if features not in FEATURISERS:
        raise ValueError(f"features must be one of {', '.join(FEATURISERS)}")
    if features == "pad_crop" and not frames:
        raise ValueError("features='pad_crop' needs frames")
    featurise = FEATURISERS[features]
    X = np.stack([featurise(s, frames) for s in train])
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    t0 = time.perf_counter()
    model.fit(X, np.asarray(y_train))
    fit_s = time.perf_counter() - t0
    n_iter = int(np.max(model[-1].n_iter_))
    clock = time.perf_counter_ns
    pred, per_seq, per_frame = [], [], []
    for s in test:
        t0 = clock()
        p = model.predict_proba(featurise(s, frames)[None, :])
        t1 = clock()
        pred.append(int(model.classes_[int(np.argmax(p[0]))]))
        per_seq.append((t1 - t0) / 1e3)
        per_frame.append((t1 - t0) / 1e3 / len(s))
    pred = np.asarray(pred, np.int64)
    coef = model[-1].coef_
    frames = int(sum(len(s) for s in train))
    return dict(accuracy=float(np.mean(pred == np.asarray(y_test))), predicted=pred,
                fit_s=fit_s, fit_us_per_frame=fit_s * 1e6 / max(frames, 1), n_iter=n_iter,
                converged=bool(n_iter < max_iter),
                inference_per_sequence=percentiles(per_seq),
                inference_per_frame=percentiles(per_frame),
                model_bytes=int(coef.nbytes + model[-1].intercept_.nbytes
                                + 2 * X.shape[1] * 8),
                settings=dict(features=features, frames=frames, dim=int(X.shape[1]), C=C,
                              max_iter=max_iter, solver=model[-1].solver,
                              scaler="StandardScaler"))


def _batches(order: np.ndarray, size: int):
    for i in range(0, len(order), size):
        yield order[i:i + size]


def torch_gru_offline(train: Sequence[np.ndarray], y_train, test: Sequence[np.ndarray],
                      y_test, *, n_classes: int, hidden: int = 64, epochs: int = 30,
                      batch: int = 32, lr: float = 3e-3, clip: Optional[float] = 1.0,
                      anneal_epochs: Optional[int] = None, anneal_factor: float = 0.1,
                      seed: int = 0, threads: int = 1,
                      progress: Optional[Callable[[int, float, float], None]] = None) -> dict:
    """An ``nn.GRU`` + ``nn.Linear`` sequence classifier trained offline:
    mini-batches of `batch` whole sequences (padded, packed), cross-entropy
    on the last state, Adam, `epochs` passes in a fresh seeded order each,
    the last `anneal_epochs` (default a quarter) at ``lr * anneal_factor``
    (a step schedule, as ``rtrl_edge.apps.digits`` anneals).  Inputs
    standardised with the training frames' mean and std.

    Returns the test accuracy of the final weights, predictions, each
    epoch's training loss and accuracy, the training time per frame (epoch
    wall time over its frames; median over epochs), and inference one test
    sequence at a time (batch of one, no gradient): per sequence and per
    frame, median/p99.  ``progress(epoch, loss, train_accuracy)`` after each
    epoch."""
    torch = import_torch(threads)
    from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mu, sd = frame_stats(train)
    d = int(mu.size)

    def norm(s):
        return torch.from_numpy((np.asarray(s, np.float32) - mu) / sd)

    xs = [norm(s) for s in train]
    lengths = np.array([len(s) for s in train], np.int64)
    ys = torch.as_tensor(np.asarray(y_train, np.int64))
    rnn = torch.nn.GRU(d, hidden, batch_first=True)
    readout = torch.nn.Linear(hidden, n_classes)
    params = [*rnn.parameters(), *readout.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    same_length = bool(np.all(lengths == lengths[0]))

    def last_state(batch_x, batch_len):
        if same_length:
            _, h_n = rnn(torch.stack(batch_x))
        else:
            padded = pad_sequence(batch_x, batch_first=True)
            packed = pack_padded_sequence(padded, torch.as_tensor(batch_len),
                                          batch_first=True, enforce_sorted=False)
            _, h_n = rnn(packed)
        return h_n[-1]

    annealed = epochs // 4 if anneal_epochs is None else int(anneal_epochs)
    history, epoch_us_per_frame = [], []
    t_train = time.perf_counter()
    for epoch in range(epochs):
        if annealed and epoch == epochs - annealed:
            for group in opt.param_groups:
                group["lr"] = lr * anneal_factor
        t0 = time.perf_counter()
        order = rng.permutation(len(xs))
        total, right, frames = 0.0, 0, 0
        for idx in _batches(order, batch):
            logits = readout(last_state([xs[i] for i in idx], lengths[idx]))
            target = ys[idx]
            loss = torch.nn.functional.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
            right += int((logits.detach().argmax(1) == target).sum())
            frames += int(lengths[idx].sum())
        dt = time.perf_counter() - t0
        epoch_us_per_frame.append(dt * 1e6 / frames)
        history.append(dict(loss=total / len(xs), train_accuracy=right / len(xs),
                            seconds=dt, lr=opt.param_groups[0]["lr"]))
        if progress is not None:
            progress(epoch, total / len(xs), right / len(xs))
    train_s = time.perf_counter() - t_train

    clock = time.perf_counter_ns
    pred, per_seq, per_frame = [], [], []
    with torch.no_grad():
        for s in test:
            t0 = clock()
            x = norm(s).unsqueeze(0)
            _, h_n = rnn(x)
            p = int(readout(h_n[-1])[0].argmax())
            t1 = clock()
            pred.append(p)
            per_seq.append((t1 - t0) / 1e3)
            per_frame.append((t1 - t0) / 1e3 / len(s))
    pred = np.asarray(pred, np.int64)
    state = list(params) + [p.grad for p in params]
    state += [v for st in opt.state.values() for v in st.values()
              if isinstance(v, torch.Tensor) and v.dim() > 0]
    return dict(accuracy=float(np.mean(pred == np.asarray(y_test))), predicted=pred,
                history=history, train_s=train_s,
                train_us_per_frame=percentiles(epoch_us_per_frame),
                inference_per_sequence=percentiles(per_seq),
                inference_per_frame=percentiles(per_frame),
                state_bytes=tensor_bytes(state),
                parameters=int(sum(p.numel() for p in params)),
                settings=dict(hidden=hidden, epochs=epochs, batch=batch, lr=lr, clip=clip,
                              anneal_epochs=annealed, anneal_factor=anneal_factor,
                              optimizer="adam", seed=seed, threads=threads,
                              standardised="training frames' mean and std",
                              packed=not same_length))
