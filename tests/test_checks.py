"""One shared suite of generic checks, run against every learner x cell.

In the manner of river's ``river/checks/``: the same checks run against every
valid configuration of ``OnlineRNN`` -- exact RTRL, SnAp-1, SnAp-2 (sparse
and dense mask), UORO and TBPTT(5) on the Elman cell and on the GRU, exact
RTRL on the diagonal (rotation-decay) cell -- each with ``sgd`` and ``adam``,
with the normaliser on and off.  ``CONFIGS`` is the list; the ``make`` fixture builds a
fresh model of the configuration under test.  Every configuration has to pass
every check; a new learner or cell is covered by adding one line to ``BASE``.

Checks (one test function each, run once per configuration):

- inputs are left unchanged: the x, y, xs, ys arrays passed to step, predict,
  forecast and gradient are bit-identical afterwards; non-contiguous,
  negative-stride, Fortran-ordered and read-only inputs are accepted and give
  bit-identical results to contiguous ones; returned arrays do not alias the
  model;
- seeding: same seed gives bit-identical predictions over a 300-step stream
  (and identical snapshots at the end), a different seed different initial
  parameters;
- save -> load: identical snapshot, stats and memory_bytes, then identical
  predictions and snapshots over the next 100 learning steps; also when the
  checkpoint is written mid-stream right after a predict() call;
- config rebuilds the model: OnlineRNN(**net.config) is the same model, for
  a built and for a loaded one;
- bad inputs: every wrong shape, 2-D array, non-numeric value, None inside a
  list, NaN, inf and float32 overflow passed to step / predict / forecast /
  gradient raises ValueError naming the expected shape or "finite", leaves
  snapshot() bit-identical and increments only stats["rejected_inputs"];
- gradient() leaves the model unchanged (snapshot, stats and the following
  learning steps are those of a twin that never called it) and returns one
  finite float32 array per parameter, shaped like it;
- forecast() leaves the model unchanged (as gradient());
- divergence (lr = 1e30) never leaves a non-finite prediction or snapshot
  entry, and is counted;
- reset_state() zeroes the hidden state and every learner buffer, leaves the
  parameters, optimiser and normaliser alone, and erases the history: two
  models with equal parameters but different histories behave identically
  after it;
- bounded memory growth (river's check_bounded_memory_growth): after 20,000
  warm-up steps, RSS growth over the second 50,000 steps <= 64 KiB and not
  more than over the first 50,000 plus 32 KiB; memory_bytes unchanged;
- constructor errors (not per configuration): tbptt without window or with
  window 0, snap2 with a mask of the wrong shape, rec_density outside (0, 1],
  cell="diag" with odd n_hidden or with a learner other than rtrl, an unknown
  cell, a GRU mask shaped like W_hh (3n, n) instead of one block (n, n):
  ValueError naming the argument; every valid configuration builds with
  every optimiser and reports its arguments in ``config``;
- snap2 with an explicit rec_mask: W_rec (each of the GRU's three W_hh
  blocks) is zero off the mask and stays so while learning, config keeps
  the mask, save/load keeps it.

Sizes are small (3 inputs, 6 hidden units, 2 outputs) so the whole file runs in
well under a minute.
"""

import gc
import math

import numpy as np
import pytest

import rtrl_edge

N_IN, N_HIDDEN, N_OUT = 3, 6, 2          # n_hidden even: the diag cell needs it
X_SHAPE = r"\(3,\)"                      # the expected shapes, as messages must name them
Y_SHAPE = r"\(2,\)"
XS_SHAPE = r"\(T, 3\)"
YS_SHAPE = r"\(T, 2\)"
LR = 1e-2
CLIP = 1.0

ELMAN_PARAMS = {"W_in", "W_rec", "b", "W_out", "b_out"}
DIAG_PARAMS = {"decay", "angle", "B", "b", "W_out", "b_out"}
GRU_PARAMS = {"W_ih", "W_hh", "b_ih", "b_hh", "W_out", "b_out"}
CELL_PARAMS = {"elman": ELMAN_PARAMS, "diag": DIAG_PARAMS, "gru": GRU_PARAMS}

# learner x cell: (id, constructor arguments)
BASE = [
    ("rtrl-elman", dict(learner="rtrl", cell="elman")),
    ("snap1-elman", dict(learner="snap1", cell="elman")),
    ("snap2-elman-d0.25", dict(learner="snap2", cell="elman", rec_density=0.25)),
    ("snap2-elman-dense", dict(learner="snap2", cell="elman")),
    ("uoro-elman", dict(learner="uoro", cell="elman")),
    ("tbptt5-elman", dict(learner="tbptt", cell="elman", window=5)),
    ("rtrl-diag", dict(learner="rtrl", cell="diag")),
    ("rtrl-gru", dict(learner="rtrl", cell="gru")),
    ("snap1-gru", dict(learner="snap1", cell="gru")),
    ("snap2-gru-d0.25", dict(learner="snap2", cell="gru", rec_density=0.25)),
    ("snap2-gru-dense", dict(learner="snap2", cell="gru")),
    ("uoro-gru", dict(learner="uoro", cell="gru")),
    ("tbptt5-gru", dict(learner="tbptt", cell="gru", window=5)),
]
CONFIGS = [
    pytest.param(dict(kwargs, optimizer=optimizer, normalize=normalize),
                 id=f"{name}-{optimizer}{'-norm' if normalize else ''}")
    for name, kwargs in BASE
    for optimizer in ("sgd", "adam")
    for normalize in (False, True)
]


@pytest.fixture(params=CONFIGS)
def config(request):
    return dict(request.param)


@pytest.fixture
def make(config):
    """Factory of fresh models of the configuration under test."""
    def build(seed=0, **overrides):
        kwargs = dict(config, lr=LR, clip=CLIP, seed=seed)
        kwargs.update(overrides)
        return rtrl_edge.OnlineRNN(N_IN, N_HIDDEN, N_OUT, **kwargs)
    return build


# ---------------------------------------------------------------- helpers


def stream(steps, seed=0):
    """Inputs and targets with an offset and scale, so the normaliser matters."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(steps, N_IN)) * 3.0 + 1.0
    ys = np.tanh(np.roll(xs[:, :N_OUT], 1, axis=0)) * 2.0 - 0.5
    return xs, ys


def warm(net, steps=20, seed=1):
    """Learn for `steps` steps, then one step without a target, so that the
    state, the learner's buffers, the optimiser and the normaliser are all
    non-trivial."""
    xs, ys = stream(steps + 1, seed)
    for t in range(steps):
        net.step(xs[t], ys[t])
    net.step(xs[steps])
    return net


def assert_same_snapshot(a, b, skip=()):
    assert set(a) == set(b), (sorted(a), sorted(b))
    for key in a:
        if key in skip:
            continue
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype and x.shape == y.shape, (key, x.dtype, y.dtype, x.shape, y.shape)
        assert x.tobytes() == y.tobytes(), f"snapshot[{key!r}] differs"


def assert_params_match_names(net, config):
    expected = CELL_PARAMS[config.get("cell", "elman")]
    assert set(net.params) == expected, sorted(net.params)


def frozen(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


# ------------------------------------------------------- inputs left unchanged


def test_inputs_are_left_unchanged(make, config):
    net = warm(make())
    assert_params_match_names(net, config)
    rng = np.random.default_rng(5)
    arrays = {
        "x64": rng.normal(size=N_IN) * 4 + 2,
        "y64": rng.normal(size=N_OUT),
        "x32": (rng.normal(size=N_IN) * 4 + 2).astype(np.float32),
        "y32": rng.normal(size=N_OUT).astype(np.float32),
        "xs": rng.normal(size=(6, N_IN)) * 4 + 2,
        "ys": rng.normal(size=(6, N_OUT)),
        "xs32": (rng.normal(size=(4, N_IN)) * 4 + 2).astype(np.float32),
    }
    copies = {k: (v.dtype, v.shape, v.tobytes()) for k, v in arrays.items()}
    lists = {"xl": [0.5, -1.0, 2.0], "yl": [0.25, -0.5]}
    list_copies = {k: list(v) for k, v in lists.items()}

    net.step(arrays["x64"], arrays["y64"])
    net.step(arrays["x32"], arrays["y32"])
    net.step(lists["xl"], lists["yl"])
    net.step(arrays["x64"])
    net.predict(arrays["x32"])
    net.forecast(arrays["xs"])
    net.forecast(arrays["xs32"])
    net.gradient(arrays["xs"], arrays["ys"])
    net.step(arrays["x64"], arrays["y64"])

    for k, v in arrays.items():
        assert (v.dtype, v.shape, v.tobytes()) == copies[k], f"{k} was modified"
    assert lists == list_copies


def test_non_contiguous_and_read_only_inputs_give_identical_results(make):
    """Strided, negative-stride, Fortran-column and read-only inputs are read
    exactly like contiguous float64 ones (bit-identical predictions, params,
    forecasts and gradients), and none of them is rejected."""
    net, twin = warm(make()), warm(make())
    xs, ys = stream(12, seed=7)
    big_x = np.repeat(xs, 2, axis=1)               # (12, 6): every column twice
    big_y = np.repeat(ys, 2, axis=1)
    forms_x = [lambda t: big_x[t, ::2],             # stride 2
               lambda t: xs[t][::-1].copy()[::-1],  # negative stride
               lambda t: np.asfortranarray(np.stack([xs[t], xs[t]], axis=1))[:, 0],
               lambda t: frozen(xs[t])]
    forms_y = [lambda t: big_y[t, ::2], lambda t: ys[t][::-1].copy()[::-1],
               lambda t: np.asfortranarray(np.stack([ys[t], ys[t]], axis=1))[:, 0],
               lambda t: frozen(ys[t])]
    for t in range(12):
        fx, fy = forms_x[t % 4](t), forms_y[t % 4](t)
        if t % 3 == 2:
            np.testing.assert_array_equal(net.predict(fx), twin.predict(xs[t]), err_msg=str(t))
        else:
            np.testing.assert_array_equal(net.step(fx, fy), twin.step(xs[t], ys[t]),
                                          err_msg=str(t))
    assert_same_snapshot(net.snapshot(), twin.snapshot())

    seq_x, seq_y = stream(5, seed=8)
    strided_xs = np.repeat(seq_x, 2, axis=1)[:, ::2]          # non-contiguous 2-D
    fortran_xs = np.asfortranarray(seq_x)
    assert not strided_xs.flags.c_contiguous and not fortran_xs.flags.c_contiguous
    for form in (strided_xs, fortran_xs, frozen(seq_x), seq_x[::-1].copy()[::-1]):
        np.testing.assert_array_equal(net.forecast(form), twin.forecast(seq_x))
    g_net = net.gradient(frozen(np.asfortranarray(seq_x)), np.repeat(seq_y, 2, axis=1)[:, ::2])
    g_twin = twin.gradient(seq_x, seq_y)
    assert set(g_net) == set(g_twin) == set(net.params)
    for name in g_net:
        np.testing.assert_array_equal(g_net[name], g_twin[name], err_msg=name)
    assert net.stats["rejected_inputs"] == 0
    assert_same_snapshot(net.snapshot(), twin.snapshot())


def test_returned_arrays_do_not_alias_the_model(make):
    net = warm(make())
    x, y = stream(3, seed=9)
    outs = [net.step(x[0], y[0]), net.step(x[1]), net.predict(x[2]), net.forecast(x)]
    grads = net.gradient(x, y)
    before = net.snapshot()
    for out in outs:
        assert out.shape == (N_OUT,) and out.dtype == np.float32
        out[...] = 1e6
    for g in grads.values():
        g[...] = 1e6
    assert_same_snapshot(before, net.snapshot())
    # snapshot() returns copies, too
    snap = net.snapshot()
    for key, value in snap.items():
        np.asarray(value)[...] = 0
    assert_same_snapshot(before, net.snapshot())


# ------------------------------------------------------------------- seeding


def test_same_seed_same_predictions_different_seed_different_params(make):
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert_same_snapshot(a.snapshot(), b.snapshot())
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params), \
        "seeds 3 and 4 gave identical initial parameters"
    xs, ys = stream(300, seed=11)
    pa = np.empty((300, N_OUT), np.float32)
    pb = np.empty((300, N_OUT), np.float32)
    for t in range(300):
        if t % 50 == 49:                       # now and then: no target, and inference
            pa[t], pb[t] = a.predict(xs[t]), b.predict(xs[t])
        elif t % 50 == 25:
            pa[t], pb[t] = a.step(xs[t]), b.step(xs[t])
        else:
            pa[t], pb[t] = a.step(xs[t], ys[t]), b.step(xs[t], ys[t])
    assert pa.tobytes() == pb.tobytes()
    assert_same_snapshot(a.snapshot(), b.snapshot())
    assert a.stats == b.stats
    assert a.stats["updates"] == 300 - 12, a.stats
    # the parameters really moved, so the comparison above was not vacuous
    fresh = make(seed=3)
    assert any(not np.array_equal(a.params[k], fresh.params[k]) for k in a.params)


# ------------------------------------------------------------- save -> load


def _without_mask(config):
    return {k: v for k, v in config.items() if k not in ("rec_density", "rec_mask")}


@pytest.mark.parametrize("after_predict", [False, True], ids=["after-step", "after-predict"])
def test_save_load_round_trip(make, tmp_path, after_predict):
    net = warm(make(seed=2), steps=30)
    xs, ys = stream(101, seed=12)
    if after_predict:
        net.predict(xs[100])                   # mid-stream inference: traces go stale
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = rtrl_edge.OnlineRNN.load(path)
    # a drawn mask is stored in the checkpoint and comes back as rec_mask
    # (config["rec_density"] is then None): compare the masks themselves
    assert _without_mask(loaded.config) == _without_mask(net.config)
    if net.rec_mask is None:
        assert loaded.rec_mask is None
    else:
        np.testing.assert_array_equal(loaded.rec_mask, net.rec_mask)
    assert loaded.memory_bytes == net.memory_bytes
    assert loaded.stats == net.stats
    assert_same_snapshot(net.snapshot(), loaded.snapshot())
    for t in range(100):
        np.testing.assert_array_equal(loaded.step(xs[t], ys[t]), net.step(xs[t], ys[t]),
                                      err_msg=f"step {t} after load")
    assert_same_snapshot(net.snapshot(), loaded.snapshot())
    assert loaded.stats == net.stats


def test_config_rebuilds_the_same_model(make, tmp_path):
    """``config`` is "the constructor arguments": OnlineRNN(**net.config)
    builds the same model (same initial snapshot, mask and memory_bytes),
    also for a model loaded from a checkpoint."""
    net = make(seed=5)
    path = tmp_path / "m.npz"
    net.save(path)
    loaded = rtrl_edge.OnlineRNN.load(path)
    for label, source in (("built", net), ("loaded", loaded)):
        cfg = source.config
        n_in, n_hidden, n_out = cfg.pop("n_in"), cfg.pop("n_hidden"), cfg.pop("n_out")
        rebuilt = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, **cfg)
        assert rebuilt.memory_bytes == net.memory_bytes, label
        if net.rec_mask is None:
            assert rebuilt.rec_mask is None, label
        else:
            assert rebuilt.rec_mask is not None, f"{label}: config lost the W_rec mask"
            np.testing.assert_array_equal(rebuilt.rec_mask, net.rec_mask, err_msg=label)
        assert_same_snapshot(rebuilt.snapshot(), net.snapshot())


# -------------------------------------------------------------- bad inputs


def _x_cases():
    good = np.array([0.1, -0.2, 0.3])
    cases = {
        "too long": (np.zeros(4), X_SHAPE),
        "too short": (np.zeros(2), X_SHAPE),
        "empty": (np.zeros(0), X_SHAPE),
        "2-D row": (np.zeros((1, 3)), X_SHAPE),
        "2-D column": (np.zeros((3, 1)), X_SHAPE),
        "scalar": (1.0, X_SHAPE),
        "nested list": ([[0.1, 0.2, 0.3]], X_SHAPE),
        "string": ("abc", X_SHAPE),
        "list of strings": (["a", "b", "c"], X_SHAPE),
        "None": (None, X_SHAPE),
        "list with None": ([0.1, None, 0.3], X_SHAPE),
        "object array": (np.array([0.1, None, 0.3], dtype=object), X_SHAPE),
        "dict": ({"a": 1}, X_SHAPE),
        "complex": (np.array([0.1 + 1j, 0.0, 0.0]), X_SHAPE),
        "bytes": (b"abc", X_SHAPE),
        "datetime64": (np.array(["2020-01-01"] * 3, dtype="datetime64[D]"), X_SHAPE),
        "python int beyond int64": ([10 ** 40, 0, 0], X_SHAPE),
        "overflows float32": (np.array([0.0, 1e39, 0.0]), "finite"),
        "long double overflows float32": (np.array([1e39, 0, 0], dtype=np.longdouble), "finite"),
        "float16 inf": (np.array([0.0, 0.0, np.inf], dtype=np.float16), "finite"),
    }
    for label, value in (("nan", np.nan), ("+inf", np.inf), ("-inf", -np.inf)):
        for pos in (0, 2):
            bad = good.copy()
            bad[pos] = value
            cases[f"{label} at {pos}"] = (bad, "finite")
            cases[f"{label} at {pos}, float32"] = (bad.astype(np.float32), "finite")
    return cases


def _y_cases():
    good = np.array([0.5, -0.5])
    cases = {
        "too long": (np.zeros(3), Y_SHAPE),
        "too short": (np.zeros(1), Y_SHAPE),
        "2-D": (np.zeros((2, 2)), Y_SHAPE),
        "2-D row": (np.zeros((1, 2)), Y_SHAPE),
        "scalar": (1.0, Y_SHAPE),
        "string": ("ab", Y_SHAPE),
        "list of strings": (["a", "b"], Y_SHAPE),
        "list with None": ([0.5, None], Y_SHAPE),
        "object array": (np.array([None, 0.5], dtype=object), Y_SHAPE),
        "complex": (np.array([0.5j, 0.0]), Y_SHAPE),
        "overflows float32": (np.array([-1e39, 0.0]), "finite"),
        "list with nan": ([0.5, math.nan], "finite"),
    }
    for label, value in (("nan", np.nan), ("+inf", np.inf), ("-inf", -np.inf)):
        for pos in (0, 1):
            bad = good.copy()
            bad[pos] = value
            cases[f"{label} at {pos}"] = (bad, "finite")
    return cases


def _sequence_cases():
    T = 4
    xs, ys = np.zeros((T, N_IN)), np.zeros((T, N_OUT))
    nan_xs = xs.copy()
    nan_xs[2, 1] = np.nan
    inf_ys = ys.copy()
    inf_ys[3, 0] = np.inf
    big_xs = xs.copy()
    big_xs[0, 2] = 1e39
    return {  # name: (xs, ys, expected message)
        "xs too wide": (np.zeros((T, N_IN + 1)), ys, XS_SHAPE),
        "xs too narrow": (np.zeros((T, N_IN - 1)), ys, XS_SHAPE),
        "xs 3-D": (np.zeros((T, N_IN, 1)), ys, XS_SHAPE),
        "xs empty": (np.zeros((0, N_IN)), np.zeros((0, N_OUT)), XS_SHAPE),
        "xs strings": (np.full((T, N_IN), "a"), ys, XS_SHAPE),
        "ys complex": (xs, np.zeros((T, N_OUT), complex), YS_SHAPE),
        "xs None": (None, ys, XS_SHAPE),
        "ys None": (xs, None, YS_SHAPE),
        "ys too wide": (xs, np.zeros((T, N_OUT + 1)), YS_SHAPE),
        "ys 3-D": (xs, np.zeros((T, N_OUT, 1)), YS_SHAPE),
        "ys list with None": (xs, [[0.0, None]] * T, YS_SHAPE),
        "ys shorter": (xs, np.zeros((T - 1, N_OUT)), r"4.*3"),
        "xs nan": (nan_xs, ys, "finite"),
        "ys inf": (xs, inf_ys, "finite"),
        "xs overflows float32": (big_xs, ys, "finite"),
    }


def _forecast_cases():
    rows = np.zeros((3, N_IN))
    nan_rows = rows.copy()
    nan_rows[1, 1] = np.nan
    inf32 = rows.astype(np.float32)
    inf32[2, 0] = -np.inf
    big = rows.copy()
    big[0, 0] = 1e39
    return {
        "too wide": (np.zeros((2, N_IN + 1)), XS_SHAPE),
        "no rows": (np.zeros((0, N_IN)), XS_SHAPE),
        "3-D": (np.zeros((2, N_IN, 1)), XS_SHAPE),
        "strings": ([["a", "b", "c"]], XS_SHAPE),
        "complex": (np.zeros((2, N_IN), complex), XS_SHAPE),
        "None": (None, XS_SHAPE),
        "nan float64": (nan_rows, "finite"),
        "-inf float32": (inf32, "finite"),
        "nan in a list": ([[1.0, math.nan, 0.0]], "finite"),
        "overflows float32": (big, "finite"),
    }


def assert_rejected(net, call, match, label):
    before = net.snapshot()
    stats = net.stats
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert_same_snapshot(before, net.snapshot())
    after = net.stats
    assert after["rejected_inputs"] == stats["rejected_inputs"] + 1, label
    for key in after:
        if key != "rejected_inputs":
            assert after[key] == stats[key], (label, key)
    return info


def test_bad_inputs_raise_and_change_nothing(make):
    net = warm(make())
    good_x = np.array([0.1, -0.2, 0.3])
    good_y = np.array([0.5, -0.5])
    checked = 0
    for label, (bad, match) in _x_cases().items():
        for what, call in (("step(x)", lambda: net.step(bad)),
                           ("step(x, y)", lambda: net.step(bad, good_y)),
                           ("predict(x)", lambda: net.predict(bad))):
            try:
                assert_rejected(net, call, match, f"{what}: {label}")
            except (Exception, pytest.fail.Exception) as exc:
                raise AssertionError(f"{what} with x {label}: {exc!r}") from exc
            checked += 1
    for label, (bad, match) in _y_cases().items():
        try:
            assert_rejected(net, lambda: net.step(good_x, bad), match, label)
        except (Exception, pytest.fail.Exception) as exc:
            raise AssertionError(f"step(x, y) with y {label}: {exc!r}") from exc
        checked += 1
    for label, (xs, ys, match) in _sequence_cases().items():
        try:
            assert_rejected(net, lambda: net.gradient(xs, ys), match, label)
        except (Exception, pytest.fail.Exception) as exc:
            raise AssertionError(f"gradient(xs, ys) with {label}: {exc!r}") from exc
        checked += 1
    for label, (xs, match) in _forecast_cases().items():
        try:
            assert_rejected(net, lambda: net.forecast(xs), match, label)
        except (Exception, pytest.fail.Exception) as exc:
            raise AssertionError(f"forecast(xs) with {label}: {exc!r}") from exc
        checked += 1
    assert net.stats["rejected_inputs"] == checked
    # and the model still works, exactly as a twin that saw no bad input
    twin = warm(make())
    np.testing.assert_array_equal(net.step(good_x, good_y), twin.step(good_x, good_y))
    assert_same_snapshot(net.snapshot(), twin.snapshot())


# ------------------------------------------------------- gradient, reset_state


def test_gradient_leaves_the_model_unchanged(make, tmp_path):
    net = warm(make())
    path = tmp_path / "twin.npz"
    net.save(path)
    twin = rtrl_edge.OnlineRNN.load(path)
    before, stats = net.snapshot(), net.stats
    xs, ys = stream(8, seed=13)
    grads = net.gradient(xs, ys)
    assert_same_snapshot(before, net.snapshot())
    assert net.stats == stats
    assert set(grads) == set(net.params)
    for name, g in grads.items():
        assert g.dtype == np.float32 and g.shape == net.params[name].shape, name
        assert np.all(np.isfinite(g)), name
    assert any(np.any(g != 0) for g in grads.values())
    for t in range(20):          # it did not move any random stream or counter either
        np.testing.assert_array_equal(net.step(xs[t % 8], ys[t % 8]),
                                      twin.step(xs[t % 8], ys[t % 8]), err_msg=str(t))
    assert_same_snapshot(net.snapshot(), twin.snapshot())


def test_forecast_leaves_the_model_unchanged(make, tmp_path):
    net = warm(make())
    path = tmp_path / "twin.npz"
    net.save(path)
    twin = rtrl_edge.OnlineRNN.load(path)
    before, stats = net.snapshot(), net.stats
    xs, ys = stream(8, seed=14)
    first = net.forecast(xs)
    np.testing.assert_array_equal(net.forecast(xs), first)   # repeatable
    assert_same_snapshot(before, net.snapshot())
    assert net.stats == stats
    for t in range(20):
        np.testing.assert_array_equal(net.step(xs[t % 8], ys[t % 8]),
                                      twin.step(xs[t % 8], ys[t % 8]), err_msg=str(t))
    assert_same_snapshot(net.snapshot(), twin.snapshot())


def test_divergence_never_poisons_the_model(make):
    """lr = 1e30 on an ordinary stream: updates overflow float32.  After every
    step the prediction and every array of the snapshot stay finite (the
    divergence guard restores the last good parameters and resets the
    learner), the recoveries are counted, and the model keeps running."""
    net = make(lr=1e30)
    xs, ys = stream(60, seed=15)
    for t in range(60):
        out = net.step(xs[t], ys[t])
        assert np.all(np.isfinite(out)), t
        for key, value in net.snapshot().items():
            value = np.asarray(value)
            if value.dtype.kind == "f":
                assert np.all(np.isfinite(value)), (t, key)
    assert net.stats["divergence_recoveries"] >= 1, net.stats


# Snapshot entries that reset_state() must leave alone: parameters (by any
# name), optimiser moments, normaliser statistics and counters.  Everything
# else in the snapshot is state or a learner buffer and must be zero after it.
KEPT_BY_RESET = ELMAN_PARAMS | DIAG_PARAMS | GRU_PARAMS | {"theta", "m1", "m2", "x_mean", "x_var",
                                              "y_mean", "y_var", "counts", "counters"}


def _kept(key):
    return key in KEPT_BY_RESET or "rng" in key.lower() or "seed" in key.lower()


def test_reset_state_zeroes_state_and_learner_buffers(make):
    net = warm(make(), steps=30)
    before = net.snapshot()
    buffers = [k for k in before if not _kept(k)]
    assert "h" in buffers, sorted(before)
    assert any(np.any(np.asarray(before[k]) != 0) for k in buffers if k != "h"), \
        f"no learner buffer is non-zero before reset_state: {buffers}"
    net.reset_state()
    after = net.snapshot()
    assert set(after) == set(before)
    for key in buffers:
        assert not np.any(np.asarray(after[key])), f"{key!r} not zeroed by reset_state"
    assert_same_snapshot(before, after, skip=set(buffers) | {"counters"})


def test_reset_state_erases_the_history(make, tmp_path):
    """Two models with the same parameters, optimiser and normaliser but
    different recent histories behave identically after reset_state():
    nothing of the history survives.  a and b start from one checkpoint; b
    runs predict() over other inputs (state moves, traces go stale); with the
    normaliser off (on, unlabelled steps would move its statistics) both also
    take 3 unlabelled steps on different inputs, so that the state and every
    learner buffer differ while a random stream (uoro's signs) advances
    alike."""
    a = warm(make(), steps=25)
    a.save(tmp_path / "a.npz")
    b = rtrl_edge.OnlineRNN.load(tmp_path / "a.npz")
    other, _ = stream(10, seed=21)
    for x in other:
        b.predict(x * 3)
    if not a.config["normalize"]:
        for x in other[:3]:
            a.step(x)
        for x in other[3:6]:
            b.step(-2 * x)
    assert not np.array_equal(a.snapshot()["h"], b.snapshot()["h"])
    a.reset_state()
    b.reset_state()
    xs, ys = stream(40, seed=22)
    for t in range(40):
        np.testing.assert_array_equal(a.step(xs[t], ys[t]), b.step(xs[t], ys[t]),
                                      err_msg=f"step {t} after reset_state")
    assert_same_snapshot(a.snapshot(), b.snapshot(), skip={"counters"})


# ----------------------------------------------------------- bounded memory

WARMUP, HALF = 20_000, 50_000
RSS_LIMIT_KIB, RSS_SLACK_KIB = 64, 32


def vm_rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def test_bounded_memory_growth(make):
    """river's check_bounded_memory_growth: learn from a long stream; the
    process may not grow over the second half more than over the first (plus
    32 KiB slack), nor by more than 64 KiB.  Every per-sample call is
    exercised: step with and without a target, predict and forecast."""
    net = make()
    mem = net.memory_bytes
    rng = np.random.default_rng(0)
    total = WARMUP + 2 * HALF
    x_rows = list(rng.uniform(-1, 1, (total, N_IN)).astype(np.float32))
    y_rows = list(rng.uniform(-1, 1, (total, N_OUT)).astype(np.float32))
    recent = rng.uniform(-1, 1, (3, N_IN)).astype(np.float32)
    step, predict, forecast = net.step, net.predict, net.forecast

    def run(lo, hi):
        for i in range(lo, hi):
            if i % 16 == 0:
                predict(x_rows[i])
                forecast(recent)
                step(x_rows[i])
            else:
                step(x_rows[i], y_rows[i])

    run(0, WARMUP)
    gc.collect()
    gc.disable()
    try:
        r0 = vm_rss_kib()
        run(WARMUP, WARMUP + HALF)
        r1 = vm_rss_kib()
        run(WARMUP + HALF, total)
        r2 = vm_rss_kib()
    finally:
        gc.enable()
    first, second = r1 - r0, r2 - r1
    assert net.stats["steps"] >= total
    assert net.memory_bytes == mem
    assert second <= RSS_LIMIT_KIB, f"RSS grew {second} KiB over the second half"
    assert second <= max(first, 0) + RSS_SLACK_KIB, (first, second)


# -------------------------------------------------------- constructor errors


BAD_CONSTRUCTOR_ARGS = [
    (dict(learner="tbptt"), "window"),
    (dict(learner="tbptt", window=0), "window"),
    (dict(learner="tbptt", window=-2), "window"),
    (dict(learner="tbptt", window=2.5), "window"),
    (dict(learner="snap2", rec_mask=np.ones((N_HIDDEN, N_HIDDEN + 1), bool)), "rec_mask"),
    (dict(learner="snap2", rec_mask=np.ones((N_HIDDEN - 1, N_HIDDEN - 1), bool)), "rec_mask"),
    (dict(learner="snap2", rec_mask=np.ones(N_HIDDEN * N_HIDDEN, bool)), "rec_mask"),
    (dict(learner="snap2", rec_density=0.0), "rec_density"),
    (dict(learner="snap2", rec_density=-0.25), "rec_density"),
    (dict(learner="snap2", rec_density=1.5), "rec_density"),
    (dict(learner="snap2", rec_density=math.nan), "rec_density"),
    (dict(learner="rtrl", rec_density=0.0), "rec_density"),
    (dict(learner="rtrl", rec_density=1.0001), "rec_density"),
    (dict(learner="rtrl", cell="diag", n_hidden=5), "n_hidden"),
    (dict(learner="rtrl", cell="diag", n_hidden=1), "n_hidden"),
    (dict(learner="snap1", cell="diag"), r"cell|learner"),
    (dict(learner="snap2", cell="diag"), r"cell|learner"),
    (dict(learner="uoro", cell="diag"), r"cell|learner"),
    (dict(learner="tbptt", cell="diag", window=5), r"cell|learner"),
    (dict(learner="snap2", cell="gru", rec_mask=np.ones((3 * N_HIDDEN, N_HIDDEN), bool)),
     "rec_mask"),
    (dict(learner="snap2", cell="gru", rec_density=0.0), "rec_density"),
    (dict(cell="lstm"), "cell"),
    (dict(cell=""), "cell"),
    (dict(cell=3), "cell"),
]


def _describe(kwargs):
    return ",".join(f"{k}={v.shape if isinstance(v, np.ndarray) else v!r}"
                    for k, v in kwargs.items())


@pytest.mark.parametrize("kwargs,name", BAD_CONSTRUCTOR_ARGS,
                         ids=[_describe(k) for k, _ in BAD_CONSTRUCTOR_ARGS])
def test_constructor_rejects_bad_arguments(kwargs, name):
    kwargs = dict(kwargs)
    n_hidden = kwargs.pop("n_hidden", N_HIDDEN)
    with pytest.raises(ValueError, match=name):
        rtrl_edge.OnlineRNN(N_IN, n_hidden, N_OUT, **kwargs)


@pytest.mark.parametrize("name,kwargs", BASE, ids=[b[0] for b in BASE])
def test_constructor_accepts_every_configuration(name, kwargs):
    """The valid configurations build, with every optimiser, and report
    their own settings back in ``config``."""
    for optimizer in ("sgd", "momentum", "adam"):
        net = rtrl_edge.OnlineRNN(N_IN, N_HIDDEN, N_OUT, optimizer=optimizer, **kwargs)
        cfg = net.config
        for key, value in kwargs.items():
            assert cfg[key] == value, (key, cfg[key], value)
        assert np.all(np.isfinite(net.step(np.ones(N_IN), np.zeros(N_OUT))))


def recurrent_blocks(net):
    """W_rec as (1, n, n), the GRU's W_hh as its three (n, n) gate blocks."""
    w = net.params["W_hh" if net.cell == "gru" else "W_rec"]
    return w.reshape(-1, N_HIDDEN, N_HIDDEN)


@pytest.mark.parametrize("cell", ["elman", "gru"])
def test_rec_mask_is_the_sparsity_of_w_rec(tmp_path, cell):
    """snap2 with an explicit mask: W_rec (every W_hh block of the GRU) is
    zero off the mask at construction and stays zero while learning; with
    rec_density=0.25 about a quarter of it is non-zero."""
    rng = np.random.default_rng(3)
    mask = rng.uniform(size=(N_HIDDEN, N_HIDDEN)) < 0.3
    np.fill_diagonal(mask, True)
    net = rtrl_edge.OnlineRNN(N_IN, N_HIDDEN, N_OUT, learner="snap2", rec_mask=mask,
                              optimizer="adam", lr=LR, cell=cell)
    assert np.all(recurrent_blocks(net)[:, ~mask] == 0)
    assert np.all(recurrent_blocks(net)[:, mask] != 0)
    before = recurrent_blocks(net).copy()
    warm(net, steps=200)
    assert np.all(recurrent_blocks(net)[:, ~mask] == 0)
    assert np.all(recurrent_blocks(net)[:, mask] != before[:, mask])
    cfg = net.config                        # "the constructor arguments" include the mask
    rebuilt = rtrl_edge.OnlineRNN(cfg.pop("n_in"), cfg.pop("n_hidden"), cfg.pop("n_out"), **cfg)
    assert rebuilt.rec_mask is not None, "config lost the explicit rec_mask"
    np.testing.assert_array_equal(rebuilt.rec_mask, mask)
    path = tmp_path / "masked.npz"          # the mask survives a round trip
    net.save(path)
    loaded = rtrl_edge.OnlineRNN.load(path)
    assert_same_snapshot(net.snapshot(), loaded.snapshot())
    xs, ys = stream(50, seed=4)
    for t in range(50):
        np.testing.assert_array_equal(loaded.step(xs[t], ys[t]), net.step(xs[t], ys[t]))
    assert np.all(recurrent_blocks(loaded)[:, ~mask] == 0)
    dense = rtrl_edge.OnlineRNN(N_IN, 16, N_OUT, learner="snap2", rec_density=0.25,
                                cell=cell)
    w = dense.params["W_hh" if cell == "gru" else "W_rec"].reshape(-1, 16, 16)
    nonzero = np.count_nonzero(w, axis=(1, 2))
    assert np.all((0.1 * 256 <= nonzero) & (nonzero <= 0.45 * 256)), nonzero
    assert np.all(w[:, ~dense.rec_mask] == 0)
