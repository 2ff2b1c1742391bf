"""Bounded memory: step() allocates nothing that it keeps, and memory_bytes
is the exact documented size of the preallocated buffers."""

import gc
import math
import re

import numpy as np
import pytest

import rtrl_edge

STEPS = 200_000
RSS_TOLERANCE_KIB = 64


def vm_rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])  # "VmRSS:   12345 kB"
    raise RuntimeError("VmRSS not found")


RSS_CASES = [  # (optimizer, constructor arguments)
    ("adam", dict()), ("sgd", dict()),
    ("adam", dict(cell="gru")), ("adam", dict(cell="gru", learner="snap1")),
    ("adam", dict(cell="gru", loss="softmax", n_out=3)),   # stepped with class labels
]


@pytest.mark.parametrize("optimizer,config", RSS_CASES,
                         ids=["adam", "sgd", "gru-adam", "gru-snap1-adam", "gru-softmax-adam"])
def test_rss_does_not_grow_over_200k_steps(optimizer, config):
    """200,000 step(x, y) calls on a (2, 8, 1) net -- Elman or GRU -- after
    20,000 warm-up steps; process RSS growth must stay <= 64 KiB.  Inputs are
    built before the measurement; the loop keeps no references to the
    returned predictions.  The softmax case, a (2, 8, 3) GRU, steps with
    Python int class labels: the label path allocates nothing either."""
    config = dict(config)
    n_out = config.pop("n_out", 1)
    config.setdefault("learner", "rtrl")
    net = rtrl_edge.OnlineRNN(2, 8, n_out, optimizer=optimizer, lr=1e-3,
                              clip=1.0, normalize=True, seed=0, **config)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (STEPS, 2)).astype(np.float32)
    ys = rng.uniform(-1, 1, (STEPS, 1)).astype(np.float32)
    x_rows = list(xs)  # pre-built row views: no allocation from indexing in the loop
    y_rows = list(ys) if net.loss == "mse" else rng.integers(0, n_out, STEPS).tolist()
    step = net.step

    for i in range(20_000):  # warm-up: caches, allocator pools, lazy buffers
        step(x_rows[i], y_rows[i])
    gc.collect()
    gc.disable()
    try:
        before = vm_rss_kib()
        for i in range(STEPS):
            step(x_rows[i], y_rows[i])
        after = vm_rss_kib()
    finally:
        gc.enable()
    assert net.stats["updates"] >= STEPS
    assert after - before <= RSS_TOLERANCE_KIB, f"RSS grew by {after - before} KiB"


@pytest.mark.parametrize("cell", ["elman", "gru"])
def test_rss_does_not_grow_with_predict_and_unlabelled_steps(cell):
    net = rtrl_edge.OnlineRNN(2, 8, 1, learner="rtrl", seed=0, cell=cell)
    rng = np.random.default_rng(1)
    x_rows = list(rng.uniform(-1, 1, (100_000, 2)).astype(np.float32))
    for x in x_rows[:10_000]:
        net.step(x)
        net.predict(x)
    gc.collect()
    before = vm_rss_kib()
    for x in x_rows:
        net.step(x)
        net.predict(x)
    after = vm_rss_kib()
    assert after - before <= RSS_TOLERANCE_KIB, f"RSS grew by {after - before} KiB"


def documented_memory_bytes(n_in, n_hidden, n_out, optimizer, threads=1):
    """Evaluate the formula written in the OnlineRNN docstring ("Memory").

    The docstring defines K, p, ldp, n4, t in ``name = expression`` spans and
    then gives ``memory_bytes = ...`` as a literal block with ``#`` comments;
    both are read from the docstring itself, so the test checks the code
    against what the user is told, and follows the docstring when it changes.
    """
    doc = rtrl_edge.OnlineRNN.__doc__
    section = doc[doc.index("Memory"):]
    names = {"n": n_hidden, "m": n_in, "o": n_out,
             "k": {"sgd": 0, "momentum": 1, "adam": 2}[optimizer],
             "threads": threads, "ceil": math.ceil, "min": min, "max": max}
    definitions = re.findall(r"``(\w+) = ([^`]+)``", section)
    defined = [name for name, _ in definitions]
    for required in ("K", "p", "ldp", "n4", "t"):
        assert required in defined, f"{required} is not defined in the docstring: {defined}"
    for name, expression in definitions:
        names[name] = eval(expression, {"__builtins__": {}}, names)
    block = re.search(r"memory_bytes = (.*?)\n\s*\n", section, re.S)
    assert block, "memory_bytes formula not found in the docstring"
    expression = " ".join(line.split("#")[0].strip() for line in block.group(1).splitlines())
    return eval(expression, {"__builtins__": {}}, names)


@pytest.mark.parametrize("n_in,n_hidden,n_out", [(1, 1, 1), (2, 8, 1), (3, 17, 2), (8, 32, 4)])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("threads", [1, 3])
def test_memory_bytes_matches_documented_formula(n_in, n_hidden, n_out, optimizer, threads):
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl", optimizer=optimizer,
                              threads=threads)
    assert net.memory_bytes == rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl",
                                                   optimizer=optimizer, normalize=True,
                                                   clip=1.0, threads=threads).memory_bytes
    expected = documented_memory_bytes(n_in, n_hidden, n_out, optimizer, threads)
    assert isinstance(net.memory_bytes, int)
    assert net.memory_bytes == expected


def test_memory_bytes_covers_the_sensitivity_tensor():
    """Exact RTRL keeps P: n^2 (n + m + 1) float32 at least (DESIGN 3.2)."""
    for n_in, n_hidden, n_out in [(1, 1, 1), (8, 32, 1)]:
        net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, learner="rtrl")
        p_bytes = 4 * n_hidden * n_hidden * (n_hidden + n_in + 1)
        params_bytes = 4 * (n_hidden * (n_hidden + n_in + 1) + n_out * (n_hidden + 1))
        assert net.memory_bytes >= p_bytes + params_bytes
        assert net.memory_bytes < 4 * (p_bytes + params_bytes) + 65536


def test_docstring_example_matches_memory_bytes():
    """The worked example in the docstring ("For n = 32, m = 8, o = 1 with sgd
    that is N bytes, of which P is M") agrees with the model."""
    doc = rtrl_edge.OnlineRNN.__doc__
    match = re.search(r"n = (\d+), m = (\d+), o = (\d+) with (\w+) that is ([\d,]+) bytes,"
                      r"\s+of which P is ([\d,]+)", doc)
    assert match, "worked example not found in the OnlineRNN docstring"
    n, m, o = (int(v) for v in match.group(1, 2, 3))
    total, p_bytes = (int(v.replace(",", "")) for v in match.group(5, 6))
    net = rtrl_edge.OnlineRNN(m, n, o, optimizer=match.group(4))
    assert net.memory_layout["P"] == p_bytes
    assert net.memory_bytes == total, (net.memory_bytes, total)
