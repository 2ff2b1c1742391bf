"""Every (cell, learner, loss) combination's ``gradient()`` against an
independent float64 reference, and the identities between learners.

References: tests/reference.py (Elman), reference_diag.py (diag),
reference_gru.py (GRU; itself checked against torch.nn.GRUCell and finite
differences in test_reference_gru.py), reference_loss.py (softmax).  The
model's own float32 parameters are cast to float64 for the reference.

Tolerances: relative error ||g - g_ref|| / ||g_ref|| per parameter array
<= 1e-4 (GRAD_TOL) for every combination, UORO included: the reference is
driven by the same random signs as the kernel (`KernelSigns`, the kernel's
xorshift128+ reimplemented here from its documented definition), so its
estimate is reproduced draw for draw.  Learners that must agree exactly in
exact arithmetic (snap2 dense and rtrl, tbptt with window >= T and rtrl,
snap1 and rtrl on diagonal W_hh blocks) agree to <= 1e-5 (SAME_TOL) in
float32.
"""

import numpy as np
import pytest

import rtrl_edge
import reference as ref_elman
import reference_diag as ref_diag
import reference_gru as ref_gru
from reference import relative_error
from reference_loss import labels_to_rows, softmax

GRAD_TOL = 1e-4
SAME_TOL = 1e-5
SIZE = (3, 6, 3)          # n_in, n_hidden (even, for diag), n_out
T = 14
WINDOW = 4
MASK = np.array([[1, 0, 0, 1, 0, 0],     # W_rec (each W_hh block) kept where True
                 [1, 1, 0, 0, 0, 1],
                 [0, 1, 0, 0, 1, 0],
                 [0, 0, 1, 1, 0, 0],
                 [1, 0, 0, 0, 1, 0],
                 [0, 0, 0, 0, 0, 0]], bool)

REFERENCES = {"elman": ref_elman, "diag": ref_diag, "gru": ref_gru}
COMBINATIONS = [(cell, learner) for cell in ("elman", "gru")
                for learner in ("rtrl", "snap1", "snap2", "uoro", "tbptt")] + [("diag", "rtrl")]


# ------------------------------------------------------------------ helpers

class KernelSigns:
    """The kernel's UORO signs: xorshift128+ (Vigna 2017) seeded with two
    splitmix64 (Vigna 2014) outputs of ``seed``; unit i of a draw takes bit
    i % 64 of the (i // 64)-th number, 1 -> +1, 0 -> -1.  Duck-types the one
    method of numpy's Generator that the references call."""

    MASK64 = (1 << 64) - 1

    def __init__(self, seed):
        self.state, x = [], seed & self.MASK64
        for _ in range(2):
            x = (x + 0x9E3779B97F4A7C15) & self.MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.MASK64
            self.state.append((z ^ (z >> 31)) or 1)

    def _next(self):
        s1, s0 = self.state
        s1 = (s1 ^ (s1 << 23)) & self.MASK64
        new = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26)
        self.state = [s0, new]
        return (new + s0) & self.MASK64

    def choice(self, values, size):
        assert list(values) == [-1.0, 1.0]
        out, bits = np.empty(size), 0
        for i in range(size):
            if i % 64 == 0:
                bits = self._next()
            out[i] = 1.0 if (bits >> (i % 64)) & 1 else -1.0
        return out


def make(cell, learner, loss, seed=3, **kw):
    n_in, n_hidden, n_out = SIZE
    if learner == "tbptt":
        kw.setdefault("window", WINDOW)
    if learner == "snap2":
        kw.setdefault("rec_mask", MASK)
    return rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, cell=cell, learner=learner, loss=loss,
                               seed=seed, init="uniform", **kw)


def params64(net):
    return {k: np.asarray(v, np.float64) for k, v in net.params.items()}


def data(rng, loss, labels_missing=True):
    """xs, the targets as `gradient` takes them, and as the references take
    them (rows, weights)."""
    n_in, _, n_out = SIZE
    xs = rng.normal(size=(T, n_in)).astype(np.float32)
    if loss == "mse":
        ys = rng.normal(size=(T, n_out)).astype(np.float32)
        return xs, ys, ys.astype(np.float64), np.ones(T)
    labels = rng.integers(-1 if labels_missing else 0, n_out, T)
    labels[0] = 1                                   # at least one label
    rows, weights = labels_to_rows(labels, n_out)
    return xs, labels, rows, weights


def reference_gradient(cell, learner, net, xs, rows, weights, loss):
    ref = REFERENCES[cell]
    p = params64(net)
    if learner == "rtrl":
        return ref.bptt_gradient(p, xs, rows, weights=weights, loss=loss)
    if learner == "snap1":
        return ref.snap1_gradient(p, xs, rows, weights=weights, loss=loss)
    if learner == "snap2":
        return ref.snap2_gradient(p, xs, rows, rec_mask=MASK, weights=weights, loss=loss)
    if learner == "tbptt":
        return ref.truncated_bptt_gradient(p, xs, rows, WINDOW, weights=weights, loss=loss)
    return ref.uoro_gradient(p, xs, rows, KernelSigns(net.config["seed"]), weights=weights,
                             loss=loss)


def assert_close(g, g_ref, tol, names=None):
    for name in names or g_ref:
        assert g[name].shape == np.shape(g_ref[name]), name
        err = relative_error(g[name], g_ref[name])
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


# ------------------------------------------------- every combination vs reference

@pytest.mark.parametrize("loss", ["mse", "softmax"])
@pytest.mark.parametrize("cell,learner", COMBINATIONS)
def test_gradient_matches_the_float64_reference(rng, cell, learner, loss):
    """gradient() of the summed loss (softmax: over the labelled steps only,
    labels -1 elsewhere) == the reference learner's, <= 1e-4 per array."""
    net = make(cell, learner, loss)
    xs, ys, rows, weights = data(rng, loss)
    g = net.gradient(xs, ys)
    assert set(g) == set(REFERENCES[cell].PARAM_NAMES)
    assert all(v.dtype == np.float32 for v in g.values())
    assert_close(g, reference_gradient(cell, learner, net, xs, rows, weights, loss), GRAD_TOL)


@pytest.mark.parametrize("cell,learner", COMBINATIONS)
def test_probability_rows_give_the_gradient_of_the_soft_targets(rng, cell, learner):
    """Softmax with probability rows (T, o) instead of indices: the gradient of
    -sum_t sum_q y_t[q] log p_t[q], <= 1e-4 against the reference."""
    net = make(cell, learner, "softmax")
    xs, _, _, _ = data(rng, "softmax")
    rows = rng.dirichlet(np.ones(SIZE[2]), T)
    g = net.gradient(xs, rows.astype(np.float32))
    rows32 = rows.astype(np.float32).astype(np.float64)
    assert_close(g, reference_gradient(cell, learner, net, xs, rows32, np.ones(T), "softmax"),
                 GRAD_TOL)


# ------------------------------------------------------------- identities (GRU)

@pytest.mark.parametrize("loss", ["mse", "softmax"])
def test_gru_identities_between_learners(rng, loss):
    """snap2 with a dense mask == rtrl; tbptt with window >= T == rtrl;
    snap1 == rtrl when the three W_hh blocks are diagonal."""
    xs, ys, _, _ = data(rng, loss)
    exact = make("gru", "rtrl", loss)
    g_exact = exact.gradient(xs, ys)
    dense = make("gru", "snap2", loss, rec_mask=np.ones((SIZE[1],) * 2, bool))
    assert_close(dense.gradient(xs, ys), g_exact, SAME_TOL)
    long = make("gru", "tbptt", loss, window=T)
    assert_close(long.gradient(xs, ys), g_exact, SAME_TOL)

    diagonal = make("gru", "rtrl", loss, seed=8)
    diagonal.params["W_hh"].reshape(3, SIZE[1], SIZE[1])[...] *= np.eye(SIZE[1])
    snap1 = make("gru", "snap1", loss, seed=8)
    for name, v in diagonal.params.items():
        snap1.params[name][...] = v
    assert_close(snap1.gradient(xs, ys), diagonal.gradient(xs, ys), SAME_TOL)
    # and not equal with dense blocks: the identity is not vacuous
    full = make("gru", "snap1", loss)
    assert relative_error(full.gradient(xs, ys)["W_hh"], g_exact["W_hh"]) > 1e-2


def test_gru_gradient_matches_torch_autograd(rng):
    """The float32 kernel against PyTorch's own GRUCell + Linear in float64,
    cross-entropy with ignored steps, where PyTorch is installed."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    n_in, n, n_out = SIZE
    net = make("gru", "rtrl", "softmax")
    xs, labels, _, _ = data(rng, "softmax")
    cell = torch.nn.GRUCell(n_in, n).double()
    lin = torch.nn.Linear(n, n_out).double()
    p = net.params
    with torch.no_grad():
        for mod, names in ((cell, ("weight_ih", "W_ih", "weight_hh", "W_hh", "bias_ih", "b_ih",
                                   "bias_hh", "b_hh")), (lin, ("weight", "W_out", "bias", "b_out"))):
            for t_name, o_name in zip(names[::2], names[1::2]):
                getattr(mod, t_name).copy_(torch.from_numpy(p[o_name].astype(np.float64)))
    h = torch.zeros(1, n, dtype=torch.float64)
    logits = []
    for x in xs:
        h = cell(torch.from_numpy(x[None].astype(np.float64)), h)
        logits.append(lin(h))
    loss = torch.nn.functional.cross_entropy(torch.cat(logits), torch.from_numpy(labels),
                                             ignore_index=-1, reduction="sum")
    loss.backward()
    expected = {"W_ih": cell.weight_ih.grad, "W_hh": cell.weight_hh.grad,
                "b_ih": cell.bias_ih.grad, "b_hh": cell.bias_hh.grad,
                "W_out": lin.weight.grad, "b_out": lin.bias.grad}
    assert_close(net.gradient(xs, labels), {k: v.numpy() for k, v in expected.items()},
                 GRAD_TOL)


# ------------------------------------------------------------- online updates

@pytest.mark.parametrize("loss", ["mse", "softmax"])
def test_gru_online_sgd_run_is_the_reference_online_rtrl(rng, loss):
    """20 online steps with sgd: every prediction (probabilities for softmax)
    and the final parameters match the float64 online RTRL reference."""
    net = make("gru", "rtrl", loss, optimizer="sgd", lr=0.05)
    xs, ys, rows, _ = data(rng, loss, labels_missing=False)
    p0 = params64(net)
    preds = np.array([net.step(x, y) for x, y in zip(xs, ys)])
    p_ref, yhats = ref_gru.online_rtrl_sgd(p0, xs, rows, 0.05, loss=loss)
    expected = yhats if loss == "mse" else np.array([softmax(v) for v in yhats])
    np.testing.assert_allclose(preds, expected, rtol=1e-4, atol=1e-5)
    for name, value in p_ref.items():
        assert relative_error(net.params[name], value) <= 1e-5, name


@pytest.mark.parametrize("learner", ["rtrl", "snap1", "snap2", "uoro", "tbptt"])
def test_gru_masked_weights_stay_zero_in_all_three_blocks(rng, learner):
    """A mask applies to each gate's block of W_hh: zero at construction, zero
    gradient, and still exactly zero after 200 online Adam steps."""
    net = make("gru", learner, "mse", rec_mask=MASK, optimizer="adam", lr=1e-2)
    blocks = net.params["W_hh"].reshape(3, SIZE[1], SIZE[1])
    assert not blocks[:, ~MASK].any() and blocks[:, MASK].all()
    xs, ys, _, _ = data(rng, "mse")
    g = net.gradient(xs, ys)["W_hh"].reshape(3, SIZE[1], SIZE[1])
    assert not g[:, ~MASK].any()
    before = blocks.copy()
    for t in range(200):
        net.step(xs[t % T], ys[t % T])
    assert not blocks[:, ~MASK].any()
    assert not np.array_equal(before[:, MASK], blocks[:, MASK])


# ------------------------------------------------------------ the GRU's surface

def test_gru_parameters_have_pytorchs_layout_and_are_live():
    net = rtrl_edge.OnlineRNN(4, 6, 2, cell="gru")
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"W_ih": (18, 4), "W_hh": (18, 6), "b_ih": (18,), "b_hh": (18,),
                      "W_out": (2, 6), "b_out": (2,)}
    x = np.ones(4, np.float32)
    before = net.predict(x)
    net.reset_state()
    net.params["b_out"][...] += 1.0
    np.testing.assert_allclose(net.predict(x), before + 1.0, rtol=1e-6)


def test_gru_uniform_init_is_pytorchs():
    """init="uniform": every GRU weight and bias within +-1/sqrt(n), spread
    over the range (PyTorch's GRUCell default)."""
    net = rtrl_edge.OnlineRNN(4, 16, 2, cell="gru", init="uniform", seed=1)
    bound = 1 / np.sqrt(16)
    for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
        v = net.params[name]
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound, name


@pytest.mark.parametrize("init", rtrl_edge.INITS)
def test_gru_inits_are_seeded_and_distinct(init):
    a = rtrl_edge.OnlineRNN(3, 8, 1, cell="gru", init=init, seed=5)
    b = rtrl_edge.OnlineRNN(3, 8, 1, cell="gru", init=init, seed=5)
    c = rtrl_edge.OnlineRNN(3, 8, 1, cell="gru", init=init, seed=6)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["W_hh"], c.params["W_hh"])
    if init == "orthogonal":
        for block in a.params["W_hh"].reshape(3, 8, 8):
            np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-5)


@pytest.mark.parametrize("learner", ["rtrl", "snap1", "snap2", "uoro", "tbptt"])
def test_gru_memory_bytes_is_the_layout_and_plan_agrees(learner):
    kw = dict(window=8) if learner == "tbptt" else {}
    kw.update(rec_density=0.1) if learner == "snap2" else None
    net = rtrl_edge.OnlineRNN(8, 24, 2, cell="gru", learner=learner, optimizer="adam", **kw)
    assert net.memory_bytes == sum(net.memory_layout.values()) + 4 * 16
    planned = rtrl_edge.planning.memory_bytes(8, 24, 2, cell="gru", learner=learner,
                                              optimizer="adam", window=8, rec_density=0.1)
    assert planned == net.memory_bytes
    if learner == "rtrl":
        # P: n x ceil(3n(n+m+2)/16)*16 floats
        assert net.memory_layout["P"] == 4 * 24 * (-(-3 * 24 * 34 // 16) * 16)


def test_gru_snapshot_and_checkpoint_round_trip(tmp_path, rng):
    """save/load mid-stream: the loaded GRU continues bit-identically."""
    xs, ys, _, _ = data(rng, "softmax", labels_missing=False)
    for learner in ("rtrl", "snap1", "snap2", "uoro", "tbptt"):
        net = make("gru", learner, "softmax", optimizer="adam", lr=1e-2)
        for x, y in zip(xs[:7], ys[:7]):
            net.step(x, y)
        net.save(tmp_path / f"{learner}.npz")
        loaded = rtrl_edge.OnlineRNN.load(tmp_path / f"{learner}.npz")
        a_cfg, b_cfg = loaded.config, net.config
        assert np.array_equal(a_cfg.pop("rec_mask"), b_cfg.pop("rec_mask"))
        assert a_cfg == b_cfg
        assert loaded.loss == "softmax" and loaded.cell == "gru"
        for x, y in zip(xs[7:], ys[7:]):
            np.testing.assert_array_equal(net.step(x, y), loaded.step(x, y))
        a, b = net.snapshot(), loaded.snapshot()
        assert all(np.array_equal(a[k], b[k]) for k in a), learner
