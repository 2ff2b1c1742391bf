"""The softmax loss: label conventions of `step` and `gradient`, rejected
labels, probabilities out, normalisation of inputs only.

The gradients themselves are checked against the float64 references for
every cell and learner in test_cells_losses.py.
"""

import numpy as np
import pytest

import rtrl_edge
from reference_loss import softmax

N_IN, N_HIDDEN, N_OUT = 3, 6, 4
CELLS = rtrl_edge.CELLS


def make(cell="elman", **kw):
    kw.setdefault("seed", 2)
    return rtrl_edge.OnlineRNN(N_IN, N_HIDDEN, N_OUT, cell=cell, loss="softmax", **kw)


def same(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def warmed(cell="elman", **kw):
    net = make(cell, **kw)
    rng = np.random.default_rng(0)
    for t in range(5):
        net.step(rng.normal(size=N_IN), t % N_OUT)
    return net


# ------------------------------------------------------------------ step()

@pytest.mark.parametrize("cell", CELLS)
def test_step_and_predict_return_class_probabilities(cell):
    net = make(cell)
    for t, x in enumerate(np.random.default_rng(1).normal(size=(20, N_IN))):
        p = net.step(x, t % N_OUT) if t % 2 else net.predict(x)
        assert p.shape == (N_OUT,) and p.dtype == np.float32
        assert (p > 0).all() and abs(p.sum() - 1) < 1e-5


@pytest.mark.parametrize("label", [2, np.int64(2), np.uint8(2), 2.0, np.float32(2.0),
                                   np.array(2), np.array(2.0), [0, 0, 1, 0],
                                   np.array([0, 0, 1, 0], np.float32)])
def test_every_form_of_a_label_is_the_same_update(label):
    """An integer, an integral float, a 0-d array and the one-hot row are one
    and the same target."""
    x = np.array([0.3, -1.0, 0.5], np.float32)
    a, b = make(), make()
    a.step(x, 2)
    b.step(x, label)
    assert same(a.snapshot(), b.snapshot())


def test_probability_target_and_loss():
    """A soft target: last_loss is its cross-entropy -sum y log p with p the
    probabilities before the update."""
    net = make(optimizer="sgd", lr=0.1)
    x = np.array([0.3, -1.0, 0.5], np.float32)
    y = np.array([0.1, 0.2, 0.3, 0.4])
    probe = make(optimizer="sgd", lr=0.1)
    p = probe.predict(x).astype(np.float64)
    before = net.params["b_out"].copy()
    net.step(x, y)
    assert net.last_loss == pytest.approx(-(y * np.log(p)).sum(), rel=1e-5)
    # the readout bias moves by -lr (p - y)
    np.testing.assert_allclose(net.params["b_out"] - before, -0.1 * (p - y), rtol=1e-4,
                               atol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
def test_unlabelled_steps_advance_without_an_update(cell):
    """y=None: no update, but the state and sensitivities advance, so the
    first labelled step's update is -lr times the exact gradient of its loss
    over the whole stream (gradient() with -1 on the unlabelled steps)."""
    kw = dict(optimizer="sgd", lr=0.1)
    net = make(cell, **kw)
    xs = np.random.default_rng(3).normal(size=(6, N_IN)).astype(np.float32)
    labels = np.array([-1, -1, -1, -1, -1, 3])
    g = net.gradient(xs, labels)
    before = {k: v.copy() for k, v in net.params.items()}
    for x in xs[:-1]:
        net.step(x)
    assert net.stats["updates"] == 0
    assert all(np.array_equal(before[k], net.params[k]) for k in before)
    net.step(xs[-1], 3)
    assert net.stats["updates"] == 1
    for k in before:
        np.testing.assert_allclose(net.params[k] - before[k], -0.1 * g[k], rtol=1e-3,
                                   atol=1e-7)


BAD_LABELS = [
    (4, "out of range"), (-1, "out of range"), (10 ** 30, "out of range"),
    (np.int64(-3), "out of range"), (4.0, "out of range"),
    (1.5, "whole number"), (np.float32(0.25), "whole number"), (np.array(2.5), "whole number"),
    (float("nan"), "finite"), (np.array(np.nan), "finite"), (float("inf"), "finite"),
    (True, "bool"), (np.bool_(False), "bool"),
    ([1.2, -0.2, 0.0, 0.0], "negative"), ([0.5, 0.2, 0.2, 0.0], "sum to 1"),
    ([0.5, 0.5], "length 4"), ([0.5, np.nan, 0.5, 0.0], "length 4"),
    ("a", "probability vector"), (None if False else object(), "probability vector"),
]


@pytest.mark.parametrize("label,why", BAD_LABELS, ids=[repr(b[0])[:20] for b in BAD_LABELS])
def test_bad_labels_are_rejected_and_change_nothing(label, why):
    net = warmed()
    before = net.snapshot()
    rejected = net.stats["rejected_inputs"]
    with pytest.raises(ValueError) as err:
        net.step(np.zeros(N_IN), label)
    message = str(err.value)
    assert "class index in [0, 4)" in message and "probability vector of length 4" in message
    assert why in message, message
    assert same(before, net.snapshot())
    assert net.stats["rejected_inputs"] == rejected + 1
    # and the model goes on as if nothing happened
    twin = warmed()
    x = np.ones(N_IN, np.float32)
    np.testing.assert_array_equal(net.step(x, 1), twin.step(x, 1))


def test_a_probability_row_within_the_tolerance_is_accepted():
    net = make()
    net.step(np.zeros(N_IN), [0.2, 0.3, 0.5 + 9e-4, 0.0])
    with pytest.raises(ValueError, match="sum to 1"):
        net.step(np.zeros(N_IN), [0.2, 0.3, 0.5 + 2e-3, 0.0])


# ------------------------------------------------------------------ gradient()

def test_gradient_label_forms_agree():
    """Integer labels, integral floats and the equivalent one-hot rows give the
    same gradient, and the summed loss is linear in its steps: with -1 at
    some steps it is the gradient over all steps less that over those."""
    net = make()
    xs = np.random.default_rng(4).normal(size=(8, N_IN))
    labels = np.array([0, 3, -1, 2, -1, 1, 1, 0])
    a = net.gradient(xs, labels)
    assert same(a, net.gradient(xs, labels.astype(np.float64)))
    full = np.array([0, 3, 1, 2, 0, 1, 1, 0])
    g_full = net.gradient(xs, full)
    g_rows = net.gradient(xs, np.eye(N_OUT)[full])
    for k in a:
        np.testing.assert_allclose(g_rows[k], g_full[k], rtol=1e-6, atol=1e-7)
    only = np.full(8, -1)
    only[[2, 4]] = full[[2, 4]]
    g_only = net.gradient(xs, only)
    for k in a:
        np.testing.assert_allclose(a[k], g_full[k] - g_only[k], rtol=1e-4, atol=1e-6)


BAD_YS = [
    (np.array([0, 1, 4, 0]), "ys[2] = 4"), (np.array([0, -2, 1, 0]), "ys[1] = -2"),
    (np.array([0, 1.5, 1, 0]), "ys[1] = 1.5"), (np.array([0, np.nan, 1, 0]), "ys[1] = nan"),
    (np.array([True, False, True, True]), "dtype bool"),
    (np.full((4, 4), 0.3), "row 0"), (np.array([[1.5, -0.5, 0, 0]] * 4), "row 0"),
    (np.ones((4, 5)) / 5, "shape (4, 5)"), (np.zeros((4, 4, 1)), "shape (4, 4, 1)"),
    (["a", "b", "c", "d"], "dtype <U1"), (np.zeros(0), "shape (0,)"),
]


@pytest.mark.parametrize("ys,where", BAD_YS, ids=[w for _, w in BAD_YS])
def test_gradient_rejects_bad_labels_and_changes_nothing(ys, where):
    net = warmed()
    before = net.snapshot()
    with pytest.raises(ValueError) as err:
        net.gradient(np.zeros((4, N_IN)), ys)
    assert "class indices of shape (T,) in [0, 4)" in str(err.value)
    assert where in str(err.value), str(err.value)
    assert same(before, net.snapshot())


def test_gradient_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        make().gradient(np.zeros((4, N_IN)), np.zeros(3, int))


# ------------------------------------------------------------- configuration

def test_normalize_applies_to_the_inputs_only():
    net = make(normalize=True)
    rng = np.random.default_rng(5)
    for t in range(50):
        p = net.step(100 + 10 * rng.normal(size=N_IN), t % N_OUT)
        assert abs(p.sum() - 1) < 1e-5
    snap = net.snapshot()
    assert snap["counts"][0] == 50 and snap["counts"][1] == 0
    np.testing.assert_array_equal(snap["y_mean"], 0.0)
    np.testing.assert_array_equal(snap["y_var"], 1.0)
    assert np.all(np.abs(snap["x_mean"] - 100) < 5)


@pytest.mark.parametrize("kw,message", [
    (dict(loss="xent"), "loss must be one of mse, softmax; got 'xent'"),
    (dict(loss="softmax", n_out=1), "needs n_out >= 2 classes, got n_out=1"),
])
def test_loss_argument_is_checked(kw, message):
    args = dict(n_in=2, n_hidden=4, n_out=3)
    args.update(kw)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rtrl_edge.OnlineRNN(**args)


def test_checkpoints_without_a_loss_load_as_mse(tmp_path):
    """Files written before the option existed hold no `loss`: read as "mse"."""
    import json
    from rtrl_edge import checkpoint
    net = rtrl_edge.OnlineRNN(2, 4, 1, seed=1)
    arrays = net._state_arrays()
    config = json.loads(str(arrays["config"]))
    del config["loss"]
    arrays["config"] = np.array(json.dumps(config, sort_keys=True))
    checkpoint.write(tmp_path / "old.npz", arrays)
    loaded = rtrl_edge.OnlineRNN.load(tmp_path / "old.npz")
    assert loaded.loss == "mse"
    assert same(loaded.snapshot(), net.snapshot())


# ----------------------------------------------------------------- learning

@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_learns_a_sequence_of_classes(cell):
    """Next-symbol prediction of the cycle 0, 1, 2, 3, 0, ... from the one-hot
    current symbol: the cross-entropy of the last 50 steps falls far below
    chance (log 4 = 1.39) within 1500 online steps."""
    net = rtrl_edge.OnlineRNN(N_OUT, 8, N_OUT, cell=cell, loss="softmax", optimizer="adam",
                              lr=2e-2, seed=0)
    losses = []
    for t in range(1500):
        net.step(np.eye(N_OUT)[t % N_OUT], (t + 1) % N_OUT)
        losses.append(net.last_loss)
    assert np.mean(losses[-50:]) < 0.1, np.mean(losses[-50:])
    assert net.stats["divergence_recoveries"] == 0


def test_predictions_are_the_softmax_of_the_reference_logits():
    """Elman: step's probabilities == softmax of the float64 reference's
    outputs (no update yet affects them: each is made before learning)."""
    import reference
    net = make(optimizer="sgd", lr=1e-30)
    xs = np.random.default_rng(6).normal(size=(10, N_IN)).astype(np.float32)
    p = {k: np.asarray(v, np.float64) for k, v in net.params.items()}
    _, yhats = reference.forward(p, xs)
    got = np.array([net.step(x, 0) for x in xs])
    np.testing.assert_allclose(got, [softmax(v) for v in yhats], rtol=1e-5, atol=1e-7)


def test_forecaster_with_softmax_forecasts_classes_but_not_deltas():
    """A Forecaster over a softmax model forecasts the class h steps ahead
    (probabilities); delta=True, a change of value, is refused."""
    from rtrl_edge import Forecaster
    with pytest.raises(ValueError, match="delta=True .* needs loss='mse'"):
        Forecaster(make(), 2, delta=True)
    f = Forecaster(make(), 2)
    for t in range(10):
        p = f.update(np.eye(N_OUT)[t % N_OUT][:N_IN], np.eye(N_OUT)[t % N_OUT])
    assert abs(p.sum() - 1) < 1e-5 and f.stats["learned"] == 8
