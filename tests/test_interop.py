"""rtrl_edge.interop: weights between PyTorch modules and OnlineRNN.

Without torch: round trips are bit-identical, loaded weights compute what
PyTorch's cells compute (a float64 numpy reference written from PyTorch's
formulas, on the torch-layout arrays), and every refusal names what was wrong
and leaves the model bit-identical.  With torch (skipped if it is not
installed): real modules go in and come back out bit for bit, outputs agree
step by step, and a model fine-tuned online moves back to PyTorch.

The GRU tests need ``"gru"`` in ``rtrl_edge.model.CELLS`` and are skipped,
with that reason, on a build of the kernels without it.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

import rtrl_edge.model
from rtrl_edge.interop import MODULES, from_torch, load_torch, to_torch
from rtrl_edge.model import OnlineRNN

M, N, O = 3, 5, 2            # n_in, n_hidden, n_out
GATES = {"elman": 1, "gru": 3}
RTOL, ATOL = 1e-4, 1e-5      # float32 against float64 (or torch's float32), over 20-30 steps

needs_gru = pytest.mark.skipif(
    "gru" not in rtrl_edge.model.CELLS,
    reason="this build of the kernels has no GRU cell ('gru' not in rtrl_edge.model.CELLS)")


def per_cell(values, cell_of=lambda v: v):
    """pytest params, the GRU ones marked `needs_gru`."""
    return [pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=needs_gru)
            if cell_of(v) == "gru" else v for v in values]


ALL_CELLS = per_cell(["elman", "gru"])
ALL_MODULES = per_cell(list(MODULES), MODULES.get)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip(
        "torch", reason="PyTorch is not installed; the interop round trip through it is skipped")


# -- helpers ----------------------------------------------------------------------------

def warm_net(cell="elman", seed=0, **options):
    """A net whose parameters, state, sensitivities and moments are all non-trivial."""
    options = dict(dict(optimizer="adam", lr=1e-2), **options)
    net = OnlineRNN(M, N, O, cell=cell, seed=seed, **options)
    rng = np.random.default_rng(seed + 100)
    for _ in range(30):
        net.step(rng.normal(size=M), rng.normal(size=O))
    return net


def random_state(cell, rng, m=M, n=N, o=O, suffix="", scale=0.5):
    """Torch-layout state_dicts (float32) of a cell and its readout, both
    biases non-zero."""
    g = GATES[cell] * n
    draw = lambda *shape: (scale * rng.standard_normal(shape)).astype(np.float32)
    cell_state = {"weight_ih" + suffix: draw(g, m), "weight_hh" + suffix: draw(g, n),
                  "bias_ih" + suffix: draw(g), "bias_hh" + suffix: draw(g)}
    return cell_state, {"weight": draw(o, n), "bias": draw(o)}


def reference_outputs(cell, cell_state, readout_state, xs):
    """PyTorch's RNNCell (tanh) / GRUCell and Linear, in float64 numpy, from
    torch-layout arrays (keys without suffix; missing biases are zero)."""
    f = {k: np.asarray(v, np.float64) for k, v in cell_state.items()}
    n = f["weight_hh"].shape[1]
    b_ih = f.get("bias_ih", np.zeros(len(f["weight_hh"])))
    b_hh = f.get("bias_hh", np.zeros(len(f["weight_hh"])))
    w, b = np.asarray(readout_state["weight"], np.float64), readout_state.get("bias")
    b = np.zeros(len(w)) if b is None else np.asarray(b, np.float64)
    sigmoid = lambda a: 1.0 / (1.0 + np.exp(-a))
    h, out = np.zeros(n), []
    for x in np.asarray(xs, np.float64):
        gi, gh = f["weight_ih"] @ x + b_ih, f["weight_hh"] @ h + b_hh
        if cell == "elman":
            h = np.tanh(gi + gh)
        else:
            r = sigmoid(gi[:n] + gh[:n])
            z = sigmoid(gi[n:2 * n] + gh[n:2 * n])
            c = np.tanh(gi[2 * n:] + r * gh[2 * n:])
            h = (1.0 - z) * c + z * h
        out.append(w @ h + b)
    return np.array(out)


def predictions(net, xs):
    return np.array([net.predict(x) for x in xs])


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and \
        np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def assert_params_identical(net, other):
    assert set(net.params) == set(other.params)
    for key in net.params:
        assert same_bits(net.params[key], other.params[key]), key


def assert_unchanged(net, before):
    after = net.snapshot()
    assert set(after) == set(before)
    for key in before:
        assert np.array_equal(before[key], after[key]) and same_bits(before[key], after[key]), key


def has_softmax(cell):
    """Whether OnlineRNN takes loss="softmax" (being built: an older one has
    no ``loss`` argument at all)."""
    try:
        OnlineRNN(1, 2, 2, cell=cell, loss="softmax")
    except TypeError:
        return False
    return True


def cell_of_module(module):
    return MODULES[module]


# -- out and back in, without torch -------------------------------------------------------

@pytest.mark.parametrize("module", ALL_MODULES)
def test_round_trip_is_bit_identical(module):
    cell = cell_of_module(module)
    net = warm_net(cell)
    cell_state, readout_state = to_torch(net, module)
    suffix = "_l0" if module in ("GRU", "RNN") else ""
    assert set(cell_state) == {k + suffix for k in ("weight_ih", "weight_hh", "bias_ih",
                                                    "bias_hh")}
    assert set(readout_state) == {"weight", "bias"}
    g = GATES[cell] * N
    shapes = {"weight_ih": (g, M), "weight_hh": (g, N), "bias_ih": (g,), "bias_hh": (g,)}
    for key, shape in shapes.items():
        a = cell_state[key + suffix]
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous, key
    assert readout_state["weight"].shape == (O, N) and readout_state["bias"].shape == (O,)

    back = from_torch(cell_state, readout_state, lr=1e-2)
    assert (back.n_in, back.n_hidden, back.n_out, back.cell) == (M, N, O, cell)
    assert_params_identical(net, back)
    net.reset_state()
    xs = np.linspace(-1.0, 1.0, 4 * M).reshape(4, M)
    assert same_bits(predictions(back, xs), predictions(net, xs))


def test_elman_export_is_rnncell_with_the_bias_in_bias_ih():
    net = warm_net("elman")
    cell_state, readout_state = to_torch(net, "RNNCell")
    p = net.params
    for key, name in (("weight_ih", "W_in"), ("weight_hh", "W_rec"), ("bias_ih", "b")):
        assert same_bits(cell_state[key], p[name]), key
    assert same_bits(cell_state["bias_hh"], np.zeros(N, np.float32))
    assert same_bits(readout_state["weight"], p["W_out"])
    assert same_bits(readout_state["bias"], p["b_out"])


@needs_gru
def test_gru_export_is_the_parameters_as_they_are():
    net = warm_net("gru")
    cell_state, readout_state = to_torch(net, "GRUCell")
    for key, name in (("weight_ih", "W_ih"), ("weight_hh", "W_hh"), ("bias_ih", "b_ih"),
                      ("bias_hh", "b_hh")):
        assert same_bits(cell_state[key], net.params[name]), key
    assert same_bits(readout_state["weight"], net.params["W_out"])


@pytest.mark.parametrize("module", ALL_MODULES)
def test_export_is_a_copy(module):
    net = warm_net(cell_of_module(module))
    before = net.snapshot()
    for state in to_torch(net, module):
        for a in state.values():
            a[...] = 7.0
    assert_unchanged(net, before)


@pytest.mark.parametrize("suffix", ["", "_l0"])
@pytest.mark.parametrize("cell", ALL_CELLS)
def test_loaded_weights_compute_what_pytorch_computes(cell, suffix, rng):
    """Into an existing net, both biases non-zero (their sum, for Elman):
    predictions equal PyTorch's formulas in float64."""
    net = warm_net(cell)
    cell_state, readout_state = random_state(cell, rng, suffix=suffix)
    load_torch(net, cell_state, readout_state)
    net.reset_state()
    xs = rng.standard_normal((25, M))
    plain = {k.removesuffix("_l0"): v for k, v in cell_state.items()}
    np.testing.assert_allclose(predictions(net, xs),
                               reference_outputs(cell, plain, readout_state, xs),
                               rtol=RTOL, atol=ATOL)


class TensorLike:
    """What load_torch reads from a torch tensor: .detach().cpu().numpy()."""

    def __init__(self, a):
        self.a = a
        self.calls = []

    def detach(self):
        self.calls.append("detach")
        return self

    def cpu(self):
        self.calls.append("cpu")
        return self

    def numpy(self):
        self.calls.append("numpy")
        return self.a


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_load_accepts_lists_float64_float16_and_tensors(cell, rng):
    cell_state, readout_state = random_state(cell, rng)
    expected = from_torch(cell_state, readout_state)
    tensors = {k: TensorLike(v) for k, v in cell_state.items()}
    mixed = {"weight_ih": cell_state["weight_ih"].tolist(),                 # nested lists
             "weight_hh": cell_state["weight_hh"].astype(np.float64),       # exact in float64
             "bias_ih": tensors["bias_ih"], "bias_hh": tensors["bias_hh"]}
    readout = {"weight": TensorLike(readout_state["weight"]),
               "bias": readout_state["bias"].astype(np.float64)}
    net = warm_net(cell)
    load_torch(net, mixed, readout)
    assert_params_identical(net, expected)
    assert tensors["bias_ih"].calls == ["detach", "cpu", "numpy"]

    # float64 values are rounded to float32, to nearest (the weights: Elman's
    # biases are summed first, which rounds once more)
    wide = {k: v.astype(np.float64) * (1.0 + 1e-12) if k.startswith("weight") else v
            for k, v in cell_state.items()}
    load_torch(net, wide, readout_state)
    assert_params_identical(net, expected)
    half = {k: v.astype(np.float16) for k, v in cell_state.items()}
    load_torch(net, half, readout_state)
    assert net.params["W_out"].dtype == np.float32
    np.testing.assert_array_equal(to_torch(net, "GRUCell" if cell == "gru" else "RNNCell")[0]
                                  ["weight_ih"], half["weight_ih"].astype(np.float32))


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_missing_biases_are_zero(cell, rng):
    """A module built with bias=False has no bias keys."""
    cell_state, readout_state = random_state(cell, rng)
    weights = {k: v for k, v in cell_state.items() if k.startswith("weight")}
    net = warm_net(cell)
    load_torch(net, weights, {"weight": readout_state["weight"]})
    exported, readout = to_torch(net, "GRUCell" if cell == "gru" else "RNNCell")
    for key in ("bias_ih", "bias_hh"):
        assert same_bits(exported[key], np.zeros(GATES[cell] * N, np.float32))
    assert same_bits(readout["bias"], np.zeros(O, np.float32))
    assert same_bits(exported["weight_hh"], cell_state["weight_hh"])
    fresh = from_torch(weights, {"weight": readout_state["weight"]})
    net.reset_state()
    xs = rng.standard_normal((10, M))
    np.testing.assert_array_equal(predictions(net, xs), predictions(fresh, xs))


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_load_changes_the_parameters_only(cell, rng):
    """State, sensitivities, optimiser moments, normaliser and counters are
    kept; reset_state() then starts a sequence on the new weights."""
    net = warm_net(cell, normalize=True) if cell == "elman" else warm_net(cell)
    before = net.snapshot()
    cell_state, readout_state = random_state(cell, rng)
    load_torch(net, cell_state, readout_state)
    after = net.snapshot()
    expected = from_torch(cell_state, readout_state)
    params = set(net.params) | {"theta"}
    assert_params_identical(net, expected)
    for key in before:
        if key not in params:
            assert same_bits(before[key], after[key]), key


def test_a_recovery_goes_back_to_the_loaded_weights(rng):
    """The divergence guard's restore point is the loaded parameters: a
    blow-up right after loading restores them, not the ones they replaced."""
    net = warm_net("elman")
    cell_state, readout_state = random_state("elman", rng)
    load_torch(net, cell_state, readout_state)
    loaded = {k: np.array(v) for k, v in net.params.items()}
    net.params["b_out"][0] = 2.0 * rtrl_edge.model._kernels.GUARD["max_norm"]  # past the bound
    net.step(rng.standard_normal(M), rng.standard_normal(O))
    assert net.stats["divergence_recoveries"] == 1
    for key, value in loaded.items():
        assert same_bits(net.params[key], value), key


def test_from_torch_passes_options_through(rng):
    cell_state, readout_state = random_state("elman", rng)
    net = from_torch(cell_state, readout_state, learner="snap1", optimizer="momentum",
                     lr=0.05, clip=1.0, seed=3, n_in=M, n_hidden=N, n_out=O, cell="elman")
    cfg = net.config
    assert (cfg["learner"], cfg["optimizer"], cfg["lr"], cfg["clip"], cfg["seed"]) == \
        ("snap1", "momentum", 0.05, 1.0, 3)
    assert same_bits(net.params["W_rec"], cell_state["weight_hh"])
    with pytest.raises(ValueError, match="learner must be one of"):
        from_torch(cell_state, readout_state, learner="nope")


@pytest.mark.parametrize("option, value, message", [
    ("n_in", M + 1, rf"n_in={M + 1} was given, but the arrays are those of n_in={M} "
                    rf"\(cell_state\['weight_hh'\] \({N}, {N}\), cell_state\['weight_ih'\] "
                    rf"\({N}, {M}\), readout_state\['weight'\] \({O}, {N}\)\)"),
    ("n_hidden", N - 1, rf"n_hidden={N - 1} was given, but the arrays are those of "
                        rf"n_hidden={N}"),
    ("n_out", 1, rf"n_out=1 was given, but the arrays are those of n_out={O}"),
    ("cell", "gru", r"cell='gru' was given, but the arrays are those of cell='elman'"),
    ("cell", "diag", r"cell='diag' was given, but the arrays are those of cell='elman'"),
])
def test_from_torch_refuses_dimensions_the_arrays_contradict(option, value, message, rng):
    cell_state, readout_state = random_state("elman", rng)
    with pytest.raises(ValueError, match=message):
        from_torch(cell_state, readout_state, **{option: value})


@pytest.mark.parametrize("key, shape", [("weight_ih", (N * M,)), ("weight", (O * N,))])
def test_from_torch_refuses_weights_that_are_not_matrices(key, shape, rng):
    cell_state, readout_state = random_state("elman", rng)
    state = cell_state if key in cell_state else readout_state
    state[key] = state[key].reshape(shape)
    with pytest.raises(ValueError, match=rf"\['{key}'\] has shape \({shape[0]},\), "
                                         rf"expected a matrix"):
        from_torch(cell_state, readout_state)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_the_recurrent_mask_round_trips_and_is_checked(cell):
    """A masked net round-trips with its own mask; dense weights do not fit a
    mask (masked weights stay zero; the GRU's mask is each W_hh block's)."""
    net = warm_net(cell, rec_density=0.5, seed=4)
    module = "GRU" if cell == "gru" else "RNN"
    cell_state, readout_state = to_torch(net, module)
    back = from_torch(cell_state, readout_state, rec_density=0.5, seed=4)
    assert np.array_equal(back.rec_mask, net.rec_mask)
    assert_params_identical(net, back)
    g = GATES[cell]
    dense = dict(cell_state, weight_hh_l0=np.ones((g * N, N), np.float32))
    missing = g * int((~net.rec_mask).sum())
    with pytest.raises(ValueError, match=rf"cell_state\['weight_hh_l0'\] has {missing} non-zero "
                                         rf"weights where the OnlineRNN's rec_mask is False"):
        from_torch(dense, readout_state, rec_density=0.5, seed=4)
    before = net.snapshot()
    with pytest.raises(ValueError, match="rec_mask is False"):
        load_torch(net, dense, readout_state)
    one = cell_state["weight_hh_l0"].copy()          # one weight, in the last gate block
    i, j = np.argwhere(~net.rec_mask)[0]
    one[(g - 1) * N + i, j] = 0.25
    with pytest.raises(ValueError, match=r"has 1 non-zero weights where the OnlineRNN's "
                                         r"rec_mask is False"):
        load_torch(net, dict(cell_state, weight_hh_l0=one), readout_state)
    assert_unchanged(net, before)


def test_nothing_imports_torch(tmp_path):
    """interop works on numpy alone: a fresh interpreter that exports, loads
    and builds has not imported torch."""
    code = ("import sys, numpy as np\n"
            "from rtrl_edge.interop import from_torch, load_torch, to_torch\n"
            "from rtrl_edge.model import OnlineRNN\n"
            "net = OnlineRNN(3, 4, 2)\n"
            "load_torch(net, *to_torch(net, 'RNNCell'))\n"
            "from_torch(*to_torch(net, 'RNN'))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(rtrl_edge.model.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- refusals: nothing is written -----------------------------------------------------------

def _rename(state, old, new):
    return {(new if k == old else k): v for k, v in state.items()}


def _with(state, key, value):
    return dict(state, **{key: value})


def _poke(state, key, value, dtype=np.float32):
    a = np.array(state[key], dtype=dtype)
    a.reshape(-1)[-1] = value
    return dict(state, **{key: a})


def refusal_cases(cell):
    """name -> function(cell_state, readout_state, rng) -> (cell_state,
    readout_state, message pattern).  Every bad value sits where it is read
    last, after arrays that differ from the net's (a write before the
    check would show)."""
    g, other = GATES[cell] * N, "gru" if cell == "elman" else "elman"
    module = r"a GRU's" if other == "gru" else r"an RNN's"
    return {
        "prefixed keys": lambda c, r, rng: (
            {"rnn." + k: v for k, v in c.items()}, r,
            r"cell_state has unexpected key 'rnn\.weight_ih'.*removeprefix"),
        "readout key": lambda c, r, rng: (
            c, {"fc." + k: v for k, v in r.items()},
            r"readout_state has unexpected key 'fc\.weight'.*nn\.Linear has weight and bias"),
        "missing weight_hh": lambda c, r, rng: (
            {k: v for k, v in c.items() if k != "weight_hh"}, r,
            r"cell_state\['weight_hh'\] is missing"),
        "missing weight_ih": lambda c, r, rng: (
            {k: v for k, v in c.items() if k != "weight_ih"}, r,
            r"cell_state\['weight_ih'\] is missing"),
        "missing readout weight": lambda c, r, rng: (
            c, {"bias": r["bias"]}, r"readout_state\['weight'\] is missing"),
        "mixed suffixes": lambda c, r, rng: (
            _rename(c, "weight_hh", "weight_hh_l0"), r,
            r"cell_state mixes keys with and without the suffix _l0 \('weight_ih' and "
            r"'weight_hh_l0'\)"),
        "second layer": lambda c, r, rng: (
            dict({k + "_l0": v for k, v in c.items()}, weight_ih_l1=c["weight_ih"]), r,
            r"cell_state\['weight_ih_l1'\]: a module of more than one layer cannot be loaded"),
        "bidirectional": lambda c, r, rng: (
            dict({k + "_l0": v for k, v in c.items()}, weight_hh_l0_reverse=c["weight_hh"]), r,
            r"cell_state\['weight_hh_l0_reverse'\]: a bidirectional module cannot be loaded"),
        "other cell": lambda c, r, rng: (
            random_state(other, rng)[0], r,
            rf"cell_state is {module} \(cell_state\['weight_hh'\] has shape "
            rf"\({GATES[other] * N}, {N}\).* but the OnlineRNN has cell='{cell}'"),
        "lstm": lambda c, r, rng: (
            {k: np.zeros((4 * N,) + v.shape[1:], np.float32) for k, v in c.items()}, r,
            rf"cell_state\['weight_hh'\] has shape \({4 * N}, {N}\), expected a GRU's "
            rf"\(3n, n\) or an RNN's \(n, n\); an LSTM's \(4n, n\) cannot be loaded"),
        "weight_hh not a matrix": lambda c, r, rng: (
            _with(c, "weight_hh", c["weight_hh"].reshape(-1)), r,
            rf"cell_state\['weight_hh'\] has shape \({g * N},\), expected a GRU's"),
        "weight_hh of another n": lambda c, r, rng: (
            _with(c, "weight_hh", np.zeros((g // N * (N + 1), N + 1), np.float32)), r,
            rf"cell_state\['weight_hh'\] has shape \({g // N * (N + 1)}, {N + 1}\), expected "
            rf"\({g}, {N}\) \(n_in={M}, n_hidden={N}, n_out={O}, cell='{cell}'\)"),
        "weight_ih columns": lambda c, r, rng: (
            _with(c, "weight_ih", np.zeros((g, M + 1), np.float32)), r,
            rf"cell_state\['weight_ih'\] has shape \({g}, {M + 1}\), expected \({g}, {M}\)"),
        "weight_ih rows": lambda c, r, rng: (
            _with(c, "weight_ih", np.zeros((g + 1, M), np.float32)), r,
            rf"cell_state\['weight_ih'\] has shape \({g + 1}, {M}\), expected \({g}, {M}\)"),
        "bias_ih length": lambda c, r, rng: (
            _with(c, "bias_ih", np.zeros(g + 1, np.float32)), r,
            rf"cell_state\['bias_ih'\] has shape \({g + 1},\), expected \({g},\)"),
        "bias_hh a column": lambda c, r, rng: (
            _with(c, "bias_hh", c["bias_hh"].reshape(g, 1)), r,
            rf"cell_state\['bias_hh'\] has shape \({g}, 1\), expected \({g},\)"),
        "readout rows": lambda c, r, rng: (
            c, _with(r, "weight", np.zeros((O + 1, N), np.float32)),
            rf"readout_state\['weight'\] has shape \({O + 1}, {N}\), expected \({O}, {N}\)"),
        "readout columns": lambda c, r, rng: (
            c, _with(r, "weight", np.zeros((O, N + 1), np.float32)),
            rf"readout_state\['weight'\] has shape \({O}, {N + 1}\), expected \({O}, {N}\)"),
        "readout bias length": lambda c, r, rng: (
            c, _with(r, "bias", np.zeros(O + 1, np.float32)),
            rf"readout_state\['bias'\] has shape \({O + 1},\), expected \({O},\)"),
        "NaN": lambda c, r, rng: (
            _poke(c, "weight_ih", np.nan), r,
            rf"cell_state\['weight_ih'\] holds non-finite values \(NaN or inf\); "
            rf"shape \({g}, {M}\)"),
        "-inf": lambda c, r, rng: (
            _poke(c, "bias_hh", -np.inf), r,
            r"cell_state\['bias_hh'\] holds non-finite values"),
        "inf in the last array": lambda c, r, rng: (
            c, _poke(r, "bias", np.inf), r"readout_state\['bias'\] holds non-finite values"),
        "beyond float32": lambda c, r, rng: (
            _poke(c, "weight_hh", 1e39, np.float64), r,
            rf"cell_state\['weight_hh'\] holds values beyond float32 range \(largest "
            rf"magnitude 1e\+39 > 3\.40282e\+38\); shape \({g}, {N}\)"),
        "beyond float32 in the readout": lambda c, r, rng: (
            c, _poke(r, "bias", -4e38, np.float64),
            r"readout_state\['bias'\] holds values beyond float32 range"),
        "strings": lambda c, r, rng: (
            _with(c, "bias_ih", np.array(["0.5"] * g)), r,
            rf"cell_state\['bias_ih'\] must hold real numbers, got dtype <U3 of shape "
            rf"\({g},\)"),
        "complex": lambda c, r, rng: (
            c, _with(r, "weight", r["weight"] + 1j),
            r"readout_state\['weight'\] must hold real numbers, got dtype complex"),
        "ragged list": lambda c, r, rng: (
            _with(c, "weight_ih", [[0.0] * M, [0.0]]), r,
            r"cell_state\['weight_ih'\] must be an array of real numbers, got list"),
    }


@pytest.mark.parametrize("case", list(refusal_cases("elman")))
@pytest.mark.parametrize("cell", ALL_CELLS)
def test_load_refuses_and_writes_nothing(cell, case, rng):
    net = warm_net(cell)
    cell_state, readout_state, message = refusal_cases(cell)[case](
        *random_state(cell, rng), rng)
    before = net.snapshot()
    with pytest.raises(ValueError, match=message):
        load_torch(net, cell_state, readout_state)
    assert_unchanged(net, before)


def test_an_rnn_bias_sum_beyond_float32_is_refused(rng):
    net = warm_net("elman")
    cell_state, readout_state = random_state("elman", rng)
    cell_state["bias_ih"][-1] = cell_state["bias_hh"][-1] = 3e38
    before = net.snapshot()
    with pytest.raises(ValueError, match=r"cell_state\['bias_ih'\] \+ cell_state\['bias_hh'\] "
                                         r"holds values beyond float32 range"):
        load_torch(net, cell_state, readout_state)
    assert_unchanged(net, before)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_load_and_from_torch_refuse_what_is_not_a_state_dict(cell, rng):
    net = warm_net(cell)
    cell_state, readout_state = random_state(cell, rng)
    before = net.snapshot()
    with pytest.raises(TypeError, match="cell_state must be a state_dict"):
        load_torch(net, list(cell_state.values()), readout_state)
    with pytest.raises(TypeError, match="readout_state must be a state_dict"):
        from_torch(cell_state, None)
    assert_unchanged(net, before)


def test_the_diag_cell_has_no_pytorch_counterpart(rng):
    net = OnlineRNN(M, 4, O, cell="diag", seed=0)
    net.step(np.ones(M), np.ones(O))
    before = net.snapshot()
    with pytest.raises(ValueError, match=r"cell='diag' has no PyTorch counterpart"):
        to_torch(net, "RNNCell")
    with pytest.raises(ValueError, match=r"cell='diag' has no PyTorch counterpart"):
        load_torch(net, *random_state("elman", rng, n=4))
    assert_unchanged(net, before)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_to_torch_refuses_unknown_modules_and_the_other_cell(cell):
    net = warm_net(cell)
    before = net.snapshot()
    with pytest.raises(ValueError, match=r"module must be one of GRUCell, GRU, RNNCell, RNN; "
                                         r"got 'LSTM'"):
        to_torch(net, "LSTM")
    wrong = "GRUCell" if cell == "elman" else "RNN"
    right = "'RNNCell' or 'RNN'" if cell == "elman" else "'GRUCell' or 'GRU'"
    with pytest.raises(ValueError, match=rf"module='{wrong}' needs an OnlineRNN with "
                                         rf"cell='{MODULES[wrong]}'; this one has "
                                         rf"cell='{cell}' \(use module {right}\)"):
        to_torch(net, wrong)
    assert_unchanged(net, before)


# -- through real PyTorch ---------------------------------------------------------------------

def torch_modules(torch, module, m=M, n=N, o=O, *, batch_first=False, bias=True, seed=0):
    nn = torch.nn
    torch.manual_seed(seed)
    if module == "GRUCell":
        cell = nn.GRUCell(m, n, bias=bias)
    elif module == "RNNCell":
        cell = nn.RNNCell(m, n, bias=bias, nonlinearity="tanh")
    elif module == "GRU":
        cell = nn.GRU(m, n, num_layers=1, bias=bias, batch_first=batch_first)
    else:
        cell = nn.RNN(m, n, num_layers=1, bias=bias, batch_first=batch_first)
    return cell, nn.Linear(n, o, bias=bias)


def torch_outputs(torch, module, cell, linear, xs, batch_first=False):
    """Readout after each step of one sequence (batch of 1) from a zero state."""
    x = torch.from_numpy(np.asarray(xs, np.float32))
    dtype = next(cell.parameters()).dtype
    x = x.to(dtype)
    with torch.no_grad():
        if module in ("GRUCell", "RNNCell"):
            h, hs = torch.zeros(1, cell.hidden_size, dtype=dtype), []
            for t in range(len(x)):
                h = cell(x[t:t + 1], h)
                hs.append(h[0])
            hs = torch.stack(hs)
        else:
            seq = x[None] if batch_first else x[:, None]
            out, _ = cell(seq)
            hs = out[0] if batch_first else out[:, 0]
        return linear(hs).double().numpy()


def assert_torch_states_equal(torch, got, expected):
    assert list(got) == list(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        assert torch.equal(got[key], expected[key]), key


def numpy_to_torch(torch, state):
    return {k: torch.from_numpy(v) for k, v in state.items()}


@pytest.mark.parametrize("module, batch_first", per_cell(
    [("GRUCell", False), ("GRU", False), ("GRU", True), ("RNNCell", False), ("RNN", False),
     ("RNN", True)], lambda v: MODULES[v[0]]))
def test_pytorch_module_in_and_back_out(torch, module, batch_first, rng):
    cell, linear = torch_modules(torch, module, batch_first=batch_first)
    net = from_torch(cell.state_dict(), linear.state_dict())
    assert (net.n_in, net.n_hidden, net.n_out, net.cell) == (M, N, O, MODULES[module])
    xs = rng.standard_normal((30, M)).astype(np.float32)
    np.testing.assert_allclose(predictions(net, xs),
                               torch_outputs(torch, module, cell, linear, xs, batch_first),
                               rtol=RTOL, atol=ATOL)

    cell_state, readout_state = to_torch(net, module)
    cell2, linear2 = torch_modules(torch, module, batch_first=batch_first, seed=1)
    cell2.load_state_dict(numpy_to_torch(torch, cell_state))       # strict: every key
    linear2.load_state_dict(numpy_to_torch(torch, readout_state))
    assert_torch_states_equal(torch, linear2.state_dict(), linear.state_dict())
    got, original = cell2.state_dict(), cell.state_dict()
    if MODULES[module] == "gru":
        assert_torch_states_equal(torch, got, original)
    else:
        # one bias in OnlineRNN: the export's bias_ih is the float32 sum, bias_hh zero
        sfx = "_l0" if module == "RNN" else ""
        for key in ("weight_ih", "weight_hh"):
            assert torch.equal(got[key + sfx], original[key + sfx]), key
        assert torch.equal(got["bias_ih" + sfx],
                           original["bias_ih" + sfx] + original["bias_hh" + sfx])
        assert not got["bias_hh" + sfx].any()
        folded = copy.deepcopy(cell)                 # with bias_hh = 0: every bit back
        with torch.no_grad():
            folded.get_parameter("bias_ih" + sfx).add_(folded.get_parameter("bias_hh" + sfx))
            folded.get_parameter("bias_hh" + sfx).zero_()
        back = to_torch(from_torch(folded.state_dict(), linear.state_dict()), module)[0]
        assert_torch_states_equal(torch, numpy_to_torch(torch, back), folded.state_dict())
    np.testing.assert_allclose(torch_outputs(torch, module, cell2, linear2, xs, batch_first),
                               torch_outputs(torch, module, cell, linear, xs, batch_first),
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("module", per_cell(["GRUCell", "RNNCell"], MODULES.get))
def test_softmax_predictions_are_pytorch_softmax(torch, module, rng):
    if not has_softmax(MODULES[module]):
        pytest.skip("this OnlineRNN has no loss option (loss='softmax' is not built yet)")
    cell, linear = torch_modules(torch, module, o=4)
    net = from_torch(cell.state_dict(), linear.state_dict(), loss="softmax")
    xs = rng.standard_normal((20, M)).astype(np.float32)
    logits = torch.from_numpy(torch_outputs(torch, module, cell, linear, xs))
    probs = predictions(net, xs)
    np.testing.assert_allclose(probs, torch.softmax(logits, dim=-1).numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert same_bits(to_torch(net, module)[1]["weight"], linear.weight.detach().numpy())


@pytest.mark.parametrize("module", ALL_MODULES)
def test_fine_tuned_on_the_board_moves_back_to_pytorch(torch, module, rng):
    """Pre-trained in PyTorch, a few online steps in OnlineRNN, exported:
    PyTorch's forward on the exported weights is OnlineRNN's from a fresh state."""
    cell, linear = torch_modules(torch, module, seed=2)
    net = from_torch(cell.state_dict(), linear.state_dict(), optimizer="adam", lr=1e-2)
    start = {k: np.array(v) for k, v in net.params.items()}
    for _ in range(40):
        net.step(rng.standard_normal(M), rng.standard_normal(O))
    assert net.stats["updates"] == 40
    assert any(not np.array_equal(start[k], net.params[k]) for k in start)

    cell_state, readout_state = to_torch(net, module)
    cell2, linear2 = torch_modules(torch, module, seed=3)
    cell2.load_state_dict(numpy_to_torch(torch, cell_state))
    linear2.load_state_dict(numpy_to_torch(torch, readout_state))
    net.reset_state()
    xs = rng.standard_normal((25, M)).astype(np.float32)
    np.testing.assert_allclose(torch_outputs(torch, module, cell2, linear2, xs),
                               predictions(net, xs), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("module", ALL_MODULES)
def test_load_torch_reads_parameters_bias_free_and_other_dtypes(torch, module, rng):
    """Tensors that require grad (named_parameters), modules built with
    bias=False, float64 modules (rounded to float32) and bfloat16 ones (which
    numpy has no dtype for)."""
    cell, linear = torch_modules(torch, module, bias=False, seed=4)
    net = warm_net(MODULES[module])
    load_torch(net, dict(cell.named_parameters()), dict(linear.named_parameters()))
    assert next(cell.parameters()).requires_grad
    net.reset_state()
    xs = rng.standard_normal((20, M)).astype(np.float32)
    np.testing.assert_allclose(predictions(net, xs),
                               torch_outputs(torch, module, cell, linear, xs),
                               rtol=RTOL, atol=ATOL)
    exported = to_torch(net, module)[0]
    assert not any(v.any() for k, v in exported.items() if k.startswith("bias"))

    cell64, linear64 = (mod.double() for mod in torch_modules(torch, module, seed=5))
    net = from_torch(cell64.state_dict(), linear64.state_dict())
    key = "weight_hh_l0" if module in ("GRU", "RNN") else "weight_hh"
    assert same_bits(to_torch(net, module)[0][key],
                     cell64.state_dict()[key].numpy().astype(np.float32))
    np.testing.assert_allclose(predictions(net, xs),
                               torch_outputs(torch, module, cell64, linear64, xs),
                               rtol=RTOL, atol=ATOL)

    cell16 = torch_modules(torch, module, seed=6)[0].to(torch.bfloat16)
    net = from_torch(cell16.state_dict(), linear64.state_dict())
    assert same_bits(to_torch(net, module)[0][key], cell16.state_dict()[key].float().numpy())


@pytest.mark.parametrize("make, message", [
    (lambda nn: nn.RNN(M, N, num_layers=2), r"'weight_ih_l1'\]: a module of more than one layer"),
    (lambda nn: nn.GRU(M, N, num_layers=2), r"'weight_ih_l1'\]: a module of more than one layer"),
    (lambda nn: nn.RNN(M, N, bidirectional=True), r"_reverse'\]: a bidirectional module"),
    (lambda nn: nn.GRU(M, N, bidirectional=True), r"_reverse'\]: a bidirectional module"),
    (lambda nn: nn.LSTM(M, N), r"an LSTM's \(4n, n\) cannot be loaded"),
    (lambda nn: nn.LSTMCell(M, N), r"an LSTM's \(4n, n\) cannot be loaded"),
])
def test_pytorch_modules_that_cannot_be_loaded(torch, make, message):
    net = warm_net("elman")
    before = net.snapshot()
    state = make(torch.nn).state_dict()
    readout = torch.nn.Linear(N, O).state_dict()
    with pytest.raises(ValueError, match=message):
        load_torch(net, state, readout)
    with pytest.raises(ValueError, match=message):
        from_torch(state, readout)
    assert_unchanged(net, before)


def test_a_combined_module_loads_through_the_documented_recipe(torch, rng):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.RNN(M, N, batch_first=True)
            self.head = torch.nn.Linear(N, O)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    torch.manual_seed(6)
    model = Model()
    sd = model.state_dict()
    with pytest.raises(ValueError, match=r"unexpected key 'rnn\.weight_ih_l0'.*removeprefix"):
        from_torch(sd, {})
    cell = {k.removeprefix("rnn."): v for k, v in sd.items() if k.startswith("rnn.")}
    head = {k.removeprefix("head."): v for k, v in sd.items() if k.startswith("head.")}
    net = from_torch(cell, head)
    xs = rng.standard_normal((15, M)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(xs)[None])[0].numpy()
    np.testing.assert_allclose(predictions(net, xs), expected, rtol=RTOL, atol=ATOL)
