"""Weight initialisation: `OnlineRNN(init=...)` ("gaussian", "uniform",
"orthogonal"); what each draws, seeding, validation, and the choice carried
by the configuration through save and load."""
import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import INITS, OnlineRNN

N_IN, N_OUT = 5, 3


def net(init, n=32, **kw):
    return OnlineRNN(N_IN, n, N_OUT, init=init, seed=kw.pop("seed", 7), **kw)


def test_the_choices_are_exported():
    assert INITS == ("gaussian", "uniform", "orthogonal")
    assert rtrl_edge.INITS is INITS


# ------------------------------------------------------------------ gaussian


def test_gaussian_draws_what_it_always_drew():
    """W_in uniform +-1/sqrt(m), W_rec Gaussian scaled to spectral radius
    about 0.9, b = 0, W_out N(0, 1/n), b_out = 0, in that order from
    default_rng(seed): models built before `init` existed are reproduced."""
    n, seed = 12, 4
    rng = np.random.default_rng(seed)
    w_in = rng.uniform(-1.0, 1.0, (n, N_IN)) / np.sqrt(N_IN)
    w_rec = rng.standard_normal((n, n)) * (0.9 / np.sqrt(n))
    w_out = rng.standard_normal((N_OUT, n)) / np.sqrt(n)
    p = net("gaussian", n, seed=seed).params
    np.testing.assert_array_equal(p["W_in"], w_in.astype(np.float32))
    np.testing.assert_array_equal(p["W_rec"], w_rec.astype(np.float32))
    np.testing.assert_array_equal(p["W_out"], w_out.astype(np.float32))
    assert not p["b"].any() and not p["b_out"].any()


def test_gaussian_spectral_radius_is_about_0_9():
    radii = [np.abs(np.linalg.eigvals(net("gaussian", 64, seed=s).params["W_rec"])).max()
             for s in range(5)]
    assert 0.8 < np.median(radii) < 1.0, radii


# ------------------------------------------------------------------ uniform


def test_uniform_draws_pytorch_defaults_within_plus_minus_one_over_sqrt_n():
    """nn.RNNCell(m, n) and nn.Linear(n, o): every weight and bias uniform
    on +-1/sqrt(n) (n the hidden size, the readout's fan-in)."""
    n = 64
    p = net("uniform", n).params
    bound = np.float32(1.0 / np.sqrt(n))
    for name, v in p.items():
        assert np.all(np.abs(v) <= bound), name
        assert np.abs(v).max() > 0.5 * bound, name       # not all near zero
    # the spread of a uniform on +-bound: std bound / sqrt(3)
    for name in ("W_in", "W_rec", "W_out"):
        std = p[name].std()
        assert abs(std / (bound / np.sqrt(3)) - 1) < 0.15, (name, std)
    assert p["b"].any() and p["b_out"].any()


def test_uniform_with_a_mask_zeroes_masked_weights_and_keeps_the_fan_in():
    n, density = 40, 0.25
    a = net("uniform", n, rec_density=density)
    mask, w = a.rec_mask, a.params["W_rec"]
    assert np.all(w[~mask] == 0.0)
    assert np.all(w[mask] != 0.0)
    bound = np.float32(1.0 / np.sqrt(n * mask.mean()))
    assert np.all(np.abs(w) <= bound) and np.abs(w).max() > 0.8 * bound
    # the rest is drawn as without a mask
    assert np.all(np.abs(a.params["W_in"]) <= np.float32(1.0 / np.sqrt(n)))


# ------------------------------------------------------------------ orthogonal


@pytest.mark.parametrize("n", [1, 7, 32])
def test_orthogonal_w_rec_is_orthogonal(n):
    w = net("orthogonal", n).params["W_rec"].astype(np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(n), rtol=0, atol=1e-5)
    np.testing.assert_allclose(w @ w.T, np.eye(n), rtol=0, atol=1e-5)


def test_orthogonal_is_uniformly_distributed():
    """Q of a QR decomposition with R's signs moved into it is Haar
    distributed: E[trace] = 0 (numpy's raw Q has a trace near -2.4 at n = 16)."""
    traces = [np.trace(net("orthogonal", 16, seed=s).params["W_rec"]) for s in range(100)]
    assert abs(np.mean(traces)) < 0.5, np.mean(traces)


def test_orthogonal_changes_only_w_rec():
    """W_in, b and the readout are gaussian's, draw for draw."""
    g, o = net("gaussian", 16).params, net("orthogonal", 16).params
    for name in ("W_in", "b", "W_out", "b_out"):
        np.testing.assert_array_equal(g[name], o[name], err_msg=name)
    assert not np.array_equal(g["W_rec"], o["W_rec"])


def test_orthogonal_with_a_mask_zeroes_masked_weights_and_keeps_the_norm():
    """Masked entries are zero; the rest is rescaled to the Frobenius norm of
    an orthogonal matrix, sqrt(n) (mean squared singular value 1)."""
    n = 24
    a = net("orthogonal", n, rec_density=0.3)
    mask, w = a.rec_mask, a.params["W_rec"].astype(np.float64)
    assert np.all(w[~mask] == 0.0) and np.all(w[mask] != 0.0)
    assert abs(np.linalg.norm(w) - np.sqrt(n)) < 1e-4 * np.sqrt(n)
    empty = net("orthogonal", 4, rec_mask=np.zeros((4, 4), bool))
    assert not empty.params["W_rec"].any()


# ------------------------------------------------------------------ every init


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("kw", [{}, dict(rec_density=0.3), dict(cell="diag")],
                         ids=["dense", "masked", "diag"])
def test_seeded_initialisation_is_reproducible(init, kw):
    a, b, c = net(init, 16, **kw), net(init, 16, **kw), net(init, 16, seed=8, **kw)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params)
    x, y = np.ones(N_IN), np.zeros(N_OUT)
    np.testing.assert_array_equal(a.step(x, y), b.step(x, y))


@pytest.mark.parametrize("init", INITS)
def test_every_init_learns_finitely(init):
    rng = np.random.default_rng(0)
    for learner, kw in (("rtrl", {}), ("snap1", {}), ("uoro", {}), ("tbptt", dict(window=4)),
                        ("snap2", dict(rec_density=0.3))):
        m = net(init, 8, learner=learner, lr=1e-2, **kw)
        for _ in range(50):
            out = m.step(rng.normal(size=N_IN), rng.normal(size=N_OUT))
        assert np.isfinite(out).all() and m.stats["divergence_recoveries"] == 0


def test_diag_cell_takes_init_for_its_readout_only():
    """The diag cell keeps its LRU initialisation (decay, angle, B, b);
    "uniform" draws its readout as nn.Linear does, "gaussian" and
    "orthogonal" (which concerns a W_rec it does not have) as gaussian."""
    g, u, o = (net(i, 16, cell="diag").params for i in INITS)
    for name in ("decay", "angle", "B", "b"):
        np.testing.assert_array_equal(g[name], u[name], err_msg=name)
    for name in g:
        np.testing.assert_array_equal(g[name], o[name], err_msg=name)
    bound = np.float32(1.0 / 4.0)
    assert np.all(np.abs(u["W_out"]) <= bound) and np.all(np.abs(u["b_out"]) <= bound)
    assert u["b_out"].any() and not g["b_out"].any()


@pytest.mark.parametrize("bad", ["xavier", "Uniform", "", None, 1, ("uniform",)])
def test_an_unknown_init_is_refused_naming_the_choices(bad):
    with pytest.raises(ValueError, match="init must be one of gaussian, uniform, orthogonal"):
        OnlineRNN(N_IN, 4, N_OUT, init=bad)


def test_the_default_is_documented():
    import inspect
    default = inspect.signature(OnlineRNN).parameters["init"].default
    assert default in INITS
    assert OnlineRNN(N_IN, 4, N_OUT).config["init"] == default
    assert f'init : {{"gaussian", "uniform", "orthogonal"}}, default "{default}"' \
        in OnlineRNN.__doc__


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("init", INITS)
def test_init_is_in_the_config_and_survives_save_and_load(init, tmp_path):
    a = net(init, 6, learner="snap1", optimizer="adam", lr=1e-2)
    assert a.config["init"] == init
    fresh = OnlineRNN(**a.config)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], fresh.params[name], err_msg=name)
    rng = np.random.default_rng(1)
    for _ in range(10):
        a.step(rng.normal(size=N_IN), rng.normal(size=N_OUT))
    a.save(tmp_path / "m.npz")
    b = OnlineRNN.load(tmp_path / "m.npz")
    assert b.config == a.config
    sa, sb = a.snapshot(), b.snapshot()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
