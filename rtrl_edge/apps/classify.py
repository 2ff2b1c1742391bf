"""Classifying whole sequences with an online RNN (``loss="softmax"``).

Each sequence starts from a zero state; its label is given at its last step
only, and every earlier step advances the state and the sensitivities without
an update (``step(x)``), so one update per sequence carries the gradient of
its label through all of it (exactly with ``learner="rtrl"``, or ``tbptt``
with a window at least the sequence's length).  Predictions are made before
the label is learnt, so accuracy during training is an honest online figure.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..model import OnlineRNN


@dataclass
class Timing:
    """Wall time of the model calls, per step (one frame or row)."""
    steps: int = 0
    ns: int = 0
    per_sequence: List[float] = field(default_factory=list)   # µs per step, each sequence

    @property
    def us_per_step(self) -> float:
        return self.ns / max(self.steps, 1) / 1e3

    def median_us(self) -> float:
        return float(np.median(self.per_sequence)) if self.per_sequence else float("nan")

    def record(self, ns: int, steps: int) -> None:
        """One sequence of `steps` steps took `ns` nanoseconds."""
        self.steps += steps
        self.ns += ns
        self.per_sequence.append(ns / steps / 1e3)


def learn_sequence(net: OnlineRNN, xs: np.ndarray, label: int,
                   timing: Optional[Timing] = None) -> np.ndarray:
    """Feed one sequence ``xs`` (T, n_in) from a zero state, learning from
    ``label`` at its last step; returns the class probabilities predicted at
    that step, before the update."""
    clock = time.perf_counter_ns
    t0 = clock()
    net.reset_state()
    step = net.step
    for x in xs[:-1]:
        step(x)
    probs = step(xs[-1], label)
    if timing is not None:
        timing.record(clock() - t0, len(xs))
    return probs


def classify_sequence(net: OnlineRNN, xs: np.ndarray,
                      timing: Optional[Timing] = None) -> np.ndarray:
    """Class probabilities after the sequence ``xs`` from a zero state;
    nothing is learnt."""
    clock = time.perf_counter_ns
    t0 = clock()
    net.reset_state()
    predict = net.predict
    for x in xs[:-1]:
        predict(x)
    probs = predict(xs[-1])
    if timing is not None:
        timing.record(clock() - t0, len(xs))
    return probs


def fit(net: OnlineRNN, sequences: Sequence[np.ndarray], labels: Sequence[int], *,
        epochs: int = 1, seed: int = 0, timing: Optional[Timing] = None,
        progress: Optional[Callable[[int, int, float], None]] = None) -> List[float]:
    """Online passes over the training sequences, in a fresh seeded order each
    epoch; returns each epoch's online accuracy (predicted before learning).
    ``progress(epoch, done, accuracy_so_far)`` is called about ten times per
    epoch."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    every = max(len(sequences) // 10, 1)
    accuracies = []
    for epoch in range(epochs):
        right = 0
        order = rng.permutation(len(sequences))
        for done, i in enumerate(order, 1):
            probs = learn_sequence(net, sequences[i], int(labels[i]), timing)
            right += int(np.argmax(probs) == labels[i])
            if progress is not None and (done % every == 0 or done == len(order)):
                progress(epoch, done, right / done)
        accuracies.append(right / max(len(order), 1))
    return accuracies


def predict_all(net: OnlineRNN, sequences: Sequence[np.ndarray],
                timing: Optional[Timing] = None) -> np.ndarray:
    """The predicted class of every sequence (nothing is learnt)."""
    return np.array([int(np.argmax(classify_sequence(net, xs, timing))) for xs in sequences],
                    dtype=np.int64)


def confusion(labels: Sequence[int], predicted: Sequence[int], n_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predicted)), 1)
    return counts


def format_confusion(counts: np.ndarray, names: Optional[Sequence[str]] = None) -> str:
    """A text table: one row per true class, one column per predicted class."""
    k = len(counts)
    names = [str(i) for i in range(k)] if names is None else [str(n) for n in names]
    width = max(4, max(len(n) for n in names) + 1, len(str(int(counts.max()))) + 1)
    head = "true \\ predicted".ljust(16) + "".join(n.rjust(width) for n in names)
    rows = [names[i].ljust(16) + "".join(str(int(v)).rjust(width) for v in counts[i])
            for i in range(k)]
    return "\n".join([head] + rows)
