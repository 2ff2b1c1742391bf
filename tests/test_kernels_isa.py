"""Every instruction-set version of the sensitivity kernels (portable 4-wide,
AVX2, AVX-512: whichever this CPU has) gives the reference gradient.

The default run exercises only the widest version the CPU offers; the
RTRL_EDGE_ISA switch lets this test force each one in turn."""
import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import _kernels
from reference import as_float64, bptt_gradient, relative_error

ISAS = ("base", "avx2", "avx512")


def _build(monkeypatch, isa, *args, **kwargs):
    monkeypatch.setenv("RTRL_EDGE_ISA", isa)
    try:
        return rtrl_edge.OnlineRNN(*args, **kwargs)
    except ValueError as exc:
        assert "not available" in str(exc)
        pytest.skip(f"{isa} kernels not available on this CPU or build")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n_in,n_hidden,n_out", [(1, 1, 1), (3, 8, 2), (5, 17, 3), (2, 45, 2)])
def test_each_isa_matches_bptt(monkeypatch, rng, isa, n_in, n_hidden, n_out):
    net = _build(monkeypatch, isa, n_in, n_hidden, n_out, seed=5)
    xs = rng.normal(size=(23, n_in))
    ys = rng.normal(size=(23, n_out))
    got = net.gradient(xs, ys)
    ref = bptt_gradient(as_float64(net.params), xs, ys)
    for name in ref:
        # float32 kernels against float64 BPTT: relative error <= 1e-4
        assert relative_error(got[name], ref[name]) <= 1e-4, (isa, name)


def test_isas_agree_on_an_online_run(monkeypatch, rng):
    """Online learning (parameters moving every step) gives the same
    trajectory, to float32 rounding, whichever kernels run it.  (SGD: Adam
    divides near-zero gradients by their own size, which turns the kernels'
    different summation orders into visible differences over a long run.)"""
    xs, ys = rng.normal(size=(200, 4)), rng.normal(size=(200, 2))
    runs = {}
    for isa in ISAS:
        monkeypatch.setenv("RTRL_EDGE_ISA", isa)
        try:
            net = rtrl_edge.OnlineRNN(4, 24, 2, optimizer="sgd", lr=2e-2, seed=1)
        except ValueError:
            continue
        runs[isa] = np.array([net.step(x, y) for x, y in zip(xs, ys)])
    assert "base" in runs
    for isa, preds in runs.items():
        np.testing.assert_allclose(preds, runs["base"], rtol=1e-3, atol=1e-4, err_msg=isa)


def test_unknown_isa_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RTRL_EDGE_ISA", "sse9")
    with pytest.raises(ValueError, match="RTRL_EDGE_ISA='sse9' is not available"):
        rtrl_edge.OnlineRNN(2, 3, 1)
    monkeypatch.delenv("RTRL_EDGE_ISA")
    assert _kernels.product_isa() in ISAS


CONFIGS = [dict(learner="snap1"), dict(learner="snap2", rec_density=0.3),
           dict(learner="uoro"), dict(learner="tbptt", window=4), dict(cell="diag"),
           dict(learner="rtrl", rec_density=0.5)]
# the GRU: rtrl runs the blocked product with its D_t, snap2 the product per block
CONFIGS += [dict(cell="gru", **c) for c in [dict(learner="rtrl")] + CONFIGS
            if c.get("cell") != "diag"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_every_learner_agrees_across_isas(monkeypatch, rng, config):
    """The level-1/2 primitives (forward, cheap learners, optimiser) of each
    instruction set give the same gradient and online trajectory as the
    portable version, to float32 rounding (relative 1e-4)."""
    xs, ys = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    grads, preds = {}, {}
    for isa in ISAS:
        monkeypatch.setenv("RTRL_EDGE_ISA", isa)
        try:
            net = rtrl_edge.OnlineRNN(3, 20, 2, optimizer="sgd", lr=1e-2, seed=4, **config)
        except ValueError:
            continue
        grads[isa] = net.gradient(xs, ys)
        preds[isa] = np.array([net.step(x, y) for x, y in zip(xs, ys)])
    for isa in grads:
        for name, g in grads[isa].items():
            assert relative_error(g, grads["base"][name]) <= 1e-4, (isa, name)
        np.testing.assert_allclose(preds[isa], preds["base"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_fma_peak_runs_the_chains_it_counts(isa):
    """The benchmark's peak loop (`_kernels.fma_peak`): its flop count is
    2 x lanes x chains per round, and its checksum is the sum of the chains
    x_{t+1} = a x_t + b from x_0 = i, whose closed form is
    c + (i - c) a^t with c = b / (1 - a) (float64; the loop runs float32,
    hence the tolerance).  Nothing here times anything."""
    try:
        flops, seconds, checksum = _kernels.fma_peak(isa, 500, 0.99, 0.01)
    except ValueError as exc:
        assert "not available" in str(exc)
        pytest.skip(f"{isa} kernels not available on this CPU or build")
    per_round = flops / 500
    lanes = {"base": 4, "avx2": 8, "avx512": 16}[isa]
    chains = per_round / (2 * lanes)
    assert chains == int(chains) and chains >= 8, per_round
    c = 0.01 / (1 - 0.99)
    expected = lanes * sum(c + (i - c) * 0.99 ** 500 for i in range(int(chains)))
    assert checksum == pytest.approx(expected, rel=1e-4)
    assert seconds > 0


def test_fma_peak_refuses_bad_arguments():
    with pytest.raises(ValueError, match="instruction set 'sse9' is not available"):
        _kernels.fma_peak("sse9")
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        _kernels.fma_peak(None, 0)
