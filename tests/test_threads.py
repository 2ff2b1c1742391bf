"""`threads=k`: exact RTRL's n^4 term split across a persistent pool of
worker threads (rtrl_edge/_pool.h, _rtrl.pxd).

Every column of P is updated from that same column alone, so any split must
give bit-identical results to one thread: compared with array_equal (stricter
than the 1e-4 the design asks for).  The pool's lifetime is checked on the
process's own thread list (/proc/self/task): started once at construction,
none per step, all joined when the model is deleted, and a process that never
deletes its model still exits.
"""
import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import OnlineRNN

linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/task"),
                                reason="counts threads through /proc/self/task")


def n_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def stream(n_in, n_out, steps, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((steps, n_in)).astype(np.float32)
    ys = np.tanh(np.cumsum(xs[:, :n_out], axis=0) * 0.1).astype(np.float32)
    return xs, ys


def run(net, xs, ys):
    return np.stack([net.step(x, y) for x, y in zip(xs, ys)])


@pytest.mark.parametrize("cell", ["elman", "gru"])
@pytest.mark.parametrize("optimizer,clip", [("sgd", None), ("momentum", 1e-2), ("adam", None),
                                            ("adam", 1e-3)])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("isa", [None, "base"])
def test_threads_give_the_same_model_bit_for_bit(cell, optimizer, clip, threads, isa,
                                                 monkeypatch):
    if isa:     # the portable 4-wide kernels (what a NEON build runs)
        monkeypatch.setenv("RTRL_EDGE_ISA", isa)
    n_in, n, n_out = 3, 11, 2
    xs, ys = stream(n_in, n_out, 60)
    kw = dict(learner="rtrl", cell=cell, optimizer=optimizer, clip=clip, lr=1e-2,
              normalize=True, seed=4)
    one = OnlineRNN(n_in, n, n_out, **kw)
    many = OnlineRNN(n_in, n, n_out, threads=threads, **kw)
    assert many.threads == threads and one.threads == 1
    np.testing.assert_array_equal(run(many, xs, ys), run(one, xs, ys))
    for name, value in one.params.items():
        np.testing.assert_array_equal(many.params[name], value, err_msg=name)
    np.testing.assert_array_equal(many.snapshot()["P"], one.snapshot()["P"])
    # the batch paths go through the same split
    for name, g in one.gradient(xs[:20], ys[:20]).items():
        np.testing.assert_array_equal(many.gradient(xs[:20], ys[:20])[name], g, err_msg=name)
    np.testing.assert_array_equal(many.forecast(xs[:5]), one.forecast(xs[:5]))


@pytest.mark.parametrize("n", [1, 4, 33])
def test_more_threads_than_column_blocks(n):
    """n = 1 has one 16-column block of P: the other parts get empty ranges."""
    xs, ys = stream(2, 1, 30, seed=n)
    one = OnlineRNN(2, n, 1, learner="rtrl", lr=1e-2)
    many = OnlineRNN(2, n, 1, learner="rtrl", lr=1e-2, threads=7)
    np.testing.assert_array_equal(run(many, xs, ys), run(one, xs, ys))
    np.testing.assert_array_equal(many.snapshot()["P"], one.snapshot()["P"])


@linux_only
def test_workers_start_once_and_are_joined_when_the_model_goes():
    gc.collect()
    base = n_threads()
    net = OnlineRNN(4, 16, 1, learner="rtrl", threads=3)
    assert n_threads() == base + 2
    xs, ys = stream(4, 1, 50)
    run(net, xs, ys)
    assert n_threads() == base + 2          # no thread per step
    del net
    gc.collect()
    assert n_threads() == base


@linux_only
@pytest.mark.parametrize("kw", [dict(learner="snap1"), dict(learner="uoro"),
                                dict(learner="tbptt", window=4), dict(cell="diag"),
                                dict(cell="gru", learner="snap1")])
def test_small_models_without_an_n4_term_start_no_thread(kw):
    """Below SPLIT_MIN_PARAMS (65,536 parameters) a hand-off costs more than
    the passes it would split: no pool, the calling thread does it all."""
    gc.collect()
    base = n_threads()
    net = OnlineRNN(3, 8, 1, threads=4, **kw)
    assert n_threads() == base and net.threads == 4
    xs, ys = stream(3, 1, 20)
    ref = OnlineRNN(3, 8, 1, **kw)
    np.testing.assert_array_equal(run(net, xs, ys), run(ref, xs, ys))


# n = 32 with 2,100 inputs: 68,289 parameters, above SPLIT_MIN_PARAMS
BIG = dict(n_in=2100, n_hidden=32, n_out=2)


@linux_only
@pytest.mark.parametrize("kw", [dict(learner="snap1"), dict(learner="uoro"),
                                dict(learner="tbptt", window=3), dict(learner="rtrl")])
@pytest.mark.parametrize("optimizer,clip", [("sgd", 1e-2), ("momentum", None),
                                            ("adam", 1e-3)])
def test_large_models_split_their_passes_with_the_same_results(kw, optimizer, clip):
    """Above SPLIT_MIN_PARAMS the forward pass, the SnAp-1/UORO trace rows
    and the optimiser step are shared among the threads too.  Rows and
    parameters are each computed as by one thread; only the clip norm and
    the guard's sum of squares add the parts' sums in another order, so the
    results agree to float32 rounding (1e-4 relative, as DESIGN asks)."""
    gc.collect()
    base = n_threads()
    kw = dict(kw, optimizer=optimizer, clip=clip, lr=1e-2, normalize=True, seed=1)
    one = OnlineRNN(BIG["n_in"], BIG["n_hidden"], BIG["n_out"], **kw)
    two = OnlineRNN(BIG["n_in"], BIG["n_hidden"], BIG["n_out"], threads=2, **kw)
    assert n_threads() == base + 1                 # the pool of `two`
    xs, ys = stream(BIG["n_in"], BIG["n_out"], 12, seed=5)
    np.testing.assert_allclose(run(two, xs, ys), run(one, xs, ys), rtol=1e-4, atol=1e-6)
    for name, value in one.params.items():
        np.testing.assert_allclose(two.params[name], value, rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    assert two.stats == one.stats
    del two
    gc.collect()
    assert n_threads() == base


@pytest.mark.parametrize("bad,message", [
    (0, "threads must be >= 1, got 0"),
    (-2, "threads must be >= 1, got -2"),
    (2.0, "threads must be an integer >= 1, got 2.0"),
    ("2", "threads must be an integer >= 1, got '2'"),
    (True, "threads must be an integer >= 1, got True"),
    (65, "threads must be at most 64, got 65"),
])
def test_bad_threads_are_refused_before_any_thread_starts(bad, message):
    gc.collect()
    base = n_threads() if os.path.isdir("/proc/self/task") else None
    with pytest.raises(ValueError) as err:
        OnlineRNN(2, 4, 1, threads=bad)
    assert str(err.value) == message
    if base is not None:
        assert n_threads() == base


def test_threads_are_not_stored_in_checkpoints(tmp_path):
    xs, ys = stream(2, 1, 40)
    net = OnlineRNN(2, 9, 1, learner="rtrl", lr=1e-2, threads=2)
    run(net, xs[:20], ys[:20])
    path = tmp_path / "m.npz"
    net.save(path)
    with np.load(path) as f:
        assert "threads" not in str(f["config"])
    again = OnlineRNN.load(path)
    assert again.threads == 1
    spread = OnlineRNN.load(path, threads=3)
    assert spread.threads == 3
    np.testing.assert_array_equal(run(spread, xs[20:], ys[20:]), run(again, xs[20:], ys[20:]))
    np.testing.assert_array_equal(run(net, xs[20:], ys[20:]),
                                  run(OnlineRNN.load(path), xs[20:], ys[20:]))
    for bad, message in ((0, "threads must be >= 1, got 0"),
                         (65, "threads must be at most 64, got 65")):
        with pytest.raises(ValueError) as err:       # an argument error, not the file's
            OnlineRNN.load(path, threads=bad)
        assert str(err.value) == message


def python(code, tmp_path, timeout=60, **env):
    """Run `code` in a fresh interpreter that imports the package under test
    (from outside the source tree)."""
    root = os.path.dirname(os.path.dirname(rtrl_edge.__file__))
    env = dict(os.environ, PYTHONPATH=root, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


@linux_only
def test_pool_size_ignores_omp_num_threads_and_the_process_exits(tmp_path):
    """OMP_NUM_THREADS=1 does not shrink the pool; a process that exits with
    the model still alive (no del) ends promptly."""
    res = python("""
        import os, numpy as np
        from rtrl_edge import OnlineRNN
        base = len(os.listdir("/proc/self/task"))
        net = OnlineRNN(3, 12, 1, learner="rtrl", threads=4)
        print(len(os.listdir("/proc/self/task")) - base)
        x = np.ones(3, np.float32)
        for _ in range(20):
            net.step(x, np.zeros(1, np.float32))
        print("stepped")
    """, tmp_path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["3", "stepped"]


@linux_only
def test_a_model_deleted_mid_run_leaves_no_thread(tmp_path):
    res = python("""
        import gc, os, numpy as np
        from rtrl_edge import OnlineRNN
        base = len(os.listdir("/proc/self/task"))
        x, y = np.ones(5, np.float32), np.zeros(2, np.float32)
        for k in range(5):
            net = OnlineRNN(5, 20, 2, learner="rtrl", cell="gru" if k % 2 else "elman",
                            threads=3)
            for _ in range(7):
                net.step(x, y)
            del net
            gc.collect()
            print(len(os.listdir("/proc/self/task")) - base)
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0"] * 5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_runs_the_parts_itself(tmp_path):
    """After fork() the child has no workers: every part runs in the calling
    thread, with the same results (the alternative is a hang)."""
    res = python("""
        import os, numpy as np
        from rtrl_edge import OnlineRNN
        rng = np.random.default_rng(1)
        xs = rng.standard_normal((30, 3)).astype(np.float32)
        ys = rng.standard_normal((30, 1)).astype(np.float32)
        net = OnlineRNN(3, 10, 1, learner="rtrl", lr=1e-2, threads=2)
        ref = OnlineRNN(3, 10, 1, learner="rtrl", lr=1e-2)
        pid = os.fork()
        if pid == 0:
            ok = all(np.array_equal(net.step(x, y), ref.step(x, y)) for x, y in zip(xs, ys))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        del net
        print("parent done")
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0", "parent", "done"]


def test_memory_counts_one_product_scratch_per_thread():
    one = OnlineRNN(8, 32, 1, learner="rtrl")
    four = OnlineRNN(8, 32, 1, learner="rtrl", threads=4)
    scratch = 32 * 64 * 4                   # n4 x RTRL_MAX_TILE floats
    assert four.memory_layout["tmp"] == 4 * scratch == 4 * one.memory_layout["tmp"]
    assert four.memory_bytes - one.memory_bytes == 3 * scratch
    assert rtrl_edge.planning.memory_bytes(8, 32, 1, learner="rtrl", optimizer="sgd",
                                           threads=4) == four.memory_bytes
