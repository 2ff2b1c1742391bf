"""Smoke test of benchmarks/bench_peers.py: it runs, reports a positive finite
number wherever it reports one, keeps the PyTorch peer optional, and the
PyTorch (and slax) forecasters are causal.  Nothing here is about speed or
accuracy."""
import contextlib
import importlib.util
import io
import math
import os
import sys

import numpy as np
import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "benchmarks")
BENCH = os.path.join(BENCH_DIR, "bench_peers.py")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
METRICS = ("nrmse", "rmse", "mae", "max", "jitter")
RSS_PEAKS = ("before_import", "after_import", "after_construction", "after_stream")
RSS_GROWTHS = ("import_bytes", "construction_bytes", "stream_bytes")


def load_bench(monkeypatch):
    # the module forces the BLAS thread variables at import (through
    # bench_step); monkeypatch restores them afterwards
    for var in THREAD_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.syspath_prepend(BENCH_DIR)
    spec = importlib.util.spec_from_file_location("bench_peers_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive_finite(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def torch_importable():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `--quick --no-write` run, every output path pointed into an empty
    directory: (module, result, that directory, what it printed)."""
    out_dir = tmp_path_factory.mktemp("bench_peers_out")
    with pytest.MonkeyPatch.context() as mp:
        bench = load_bench(mp)
        for name in ("JSON_PATH", "PNG_PATH"):
            mp.setattr(bench, name, str(out_dir / name))
        mp.setattr(bench, "RESULTS_DIR", str(out_dir / "results"))
        mp.setattr(bench.common, "RESULTS_DIR", str(out_dir / "results"))
        mp.setattr(bench.common, "README_PATH", str(out_dir / "README.md"))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            result = bench.main(["--quick", "--no-write"])
        yield bench, result, out_dir, printed.getvalue()
    sys.modules.pop("bench_step", None)


def test_quick_run_reports_positive_finite_numbers(quick):
    bench, result, _, out = quick
    assert result["sizes"] == [32]
    for m in METRICS:
        assert positive_finite(result["baseline"][bench.LAST][m]), m
    rows = result["results"]["32"]["rows"]
    library = [key for key, family, _, _ in bench.CONTENDERS if family == bench.LIB]
    assert set(library) <= set(rows)
    for key, row in rows.items():
        if row["family"] == bench.AUTO:          # no learning rate to choose
            assert row["lr"] is None and row["valid_nrmse_by_lr"] == {}, key
        else:
            assert row["lr"] in result["setting"]["lr_grid"], key
        for m in METRICS:
            assert positive_finite(row["test"][m]), (key, m, row["test"][m])
            assert positive_finite(row["valid"][m]), (key, m, row["valid"][m])
        lat = row["latency"]
        assert lat["samples"] == result["setting"]["samples"] - bench.H
        for q in ("median_us", "p99_us"):
            assert positive_finite(lat[q]), (key, q, lat[q])
        assert lat["p99_us"] >= lat["median_us"]
        assert positive_finite(row["state_bytes"]) and row["finite"], key
        rss = row["rss"]
        assert "error" not in rss, (key, rss)
        for k in RSS_PEAKS:
            assert positive_finite(rss[k]), (key, k, rss[k])
        for k in RSS_GROWTHS:                   # a peak can stay put: >= 0, not > 0
            assert isinstance(rss[k], int) and rss[k] >= 0, (key, k, rss[k])
        assert rss["after_stream"] >= rss["after_construction"] >= rss["before_import"]
        for other, ratio in row.get("median_ratio_to", {}).items():
            assert other in rows and positive_finite(ratio), (key, other, ratio)
    for key in library:
        assert rows[key]["family"] == bench.LIB
        assert rows[key]["state_bytes"] > 0
    assert "| repeat last value |" in out and "| rtrl_edge rtrl |" in out


def test_auto_row_at_the_benchmark_size(quick):
    """The auto forecaster runs once (no learning rate), at the size of the
    others' networks, and is reported against PyTorch when that ran."""
    bench, result, _, out = quick
    from rtrl_edge import AutoForecaster
    key = "rtrl_edge auto (no tuning)"
    row = result["results"]["32"]["rows"][key]
    assert row["family"] == bench.AUTO and row["divergence_recoveries"] >= 0
    assert row["state_bytes"] == AutoForecaster(9, 9, bench.H, hidden=32).memory_bytes
    assert "median_ratio_to" not in row
    assert list(result["results"]["32"]["per_lr"][key]) == [bench.NO_LR]
    assert f"| {key} | — (none) |" in out
    if torch_importable():
        assert f"- n=32: {key} (RNN members of 32 units" in out
    else:
        assert "not run -- **not measured**" in out


def test_torch_row_or_skip_message(quick):
    bench, result, _, _ = quick
    rows = result["results"]["32"]["rows"]
    key = f"PyTorch TBPTT k={bench.K}"
    if torch_importable():
        assert key in rows
    else:
        assert key not in rows
        assert any(s.startswith("skipped: PyTorch not installed (pip install")
                   for s in result["skipped"])


def test_torch_row_compares_with_the_library(quick):
    pytest.importorskip("torch")
    bench, result, _, _ = quick
    row = result["results"]["32"]["rows"][f"PyTorch TBPTT k={bench.K}"]
    assert row["same_learner"] == f"rtrl_edge tbptt k={bench.K}"
    assert set(row["median_ratio_to"]) == {row["same_learner"], "rtrl_edge rtrl",
                                           "rtrl_edge snap1"}
    assert row["state_bytes"] > 0 and row["rss"]["import_bytes"] > 0


def test_missing_torch_is_a_skip_message(monkeypatch):
    bench = load_bench(monkeypatch)

    def no_torch():
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(bench, "import_torch", no_torch)
    ok, message = bench.peer_status()[bench.TORCH]
    assert not ok
    assert message.startswith("skipped: PyTorch not installed (pip install torch")
    sys.modules.pop("bench_step", None)


def test_no_write_leaves_the_output_directory_empty(quick):
    _, _, out_dir, _ = quick
    assert list(out_dir.iterdir()) == []


def test_write_readme_replaces_only_its_block(monkeypatch, tmp_path):
    bench = load_bench(monkeypatch)
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nkeep me\n\n" + bench.BEGIN + "\nold numbers\n"
                      + bench.END + "\n\n## other benchmark\nkeep me too\n")
    monkeypatch.setattr(bench.common, "README_PATH", str(readme))
    bench.write_readme("new numbers")
    text = readme.read_text()
    assert "keep me\n" in text and "## other benchmark\nkeep me too" in text
    assert "old numbers" not in text and "new numbers" in text
    assert text.count(bench.BEGIN) == 1
    sys.modules.pop("bench_step", None)


# --------------------------------------------------------------------------
# causality of the peers' forecasters
# --------------------------------------------------------------------------

def _stream(rng, T=90):
    t = np.arange(T)[:, None]
    z = np.sin(2 * np.pi * t / 17 + np.arange(9)) + 0.05 * rng.standard_normal((T, 9))
    return z.astype(np.float32)


def _forecasts(bench, make, z, ys, L=3):
    X = bench.em.windows(z, L)
    return bench.stream_peer(make(X.shape[1]), X, ys, 3)


def _causal_violations(bench, make, rng, shift=0):
    """Forecasts made at or before t0 (rows <= t0 + h) must not change when
    the stream after t0 does.  `shift` > 0 feeds the target `shift` samples
    early (a leak) to show the check can fail.  Returns (number of early
    forecasts that changed, number of later ones that changed)."""
    h, t0 = 3, 50
    z = _stream(rng)
    z2 = z.copy()
    z2[t0 + 1:] = _stream(np.random.default_rng(99))[t0 + 1:] * 2.0
    early = slice(0, t0 + h + 1)

    def ys(v):
        return np.concatenate([v[shift:], np.repeat(v[-1:], shift, axis=0)]) if shift else v

    a = _forecasts(bench, make, z, ys(z))
    b = _forecasts(bench, make, z2, ys(z2))
    assert np.all(a[:h] == 0) and np.all(np.isfinite(a))
    changed = np.any(a != b, axis=1)
    return int(changed[early].sum()), int(changed[t0 + h + 1:].sum())


def test_torch_forecaster_is_causal(monkeypatch, rng):
    pytest.importorskip("torch")
    bench = load_bench(monkeypatch)

    def make(n_in):
        return bench.TorchTBPTT(n_in, 8, 9, 3, lr=0.05, window=4, seed=1)

    early, late = _causal_violations(bench, make, rng)
    assert early == 0, f"{early} forecasts made at or before t0 saw the later stream"
    assert late > 0, "the later stream changed nothing: the check is vacuous"
    leaky_early, _ = _causal_violations(bench, make, rng, shift=1)
    assert leaky_early > 0, "a target fed one sample early went unnoticed"
    sys.modules.pop("bench_step", None)


def test_torch_forecaster_learns_and_counts_its_buffers(monkeypatch, rng):
    torch = pytest.importorskip("torch")
    bench = load_bench(monkeypatch)
    z = _stream(rng, 200)
    X = bench.em.windows(z, 3)
    model = bench.TorchTBPTT(X.shape[1], 8, 9, 3, lr=0.05, window=4, seed=1)
    before = [p.detach().clone() for p in model.params]
    bench.stream_peer(model, X, z, 3)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.params))
    assert len(model.lagged) == 3               # the window, less the input just advanced
    n_params = sum(p.numel() for p in model.params)
    # parameters + gradients + 3 window inputs + 2 states, float32
    assert model.nbytes == 4 * (2 * n_params + 3 * X.shape[1] + 2 * 8)
    sys.modules.pop("bench_step", None)


def test_slax_forecaster_is_causal(monkeypatch, rng):
    bench = load_bench(monkeypatch)
    try:
        bench.import_slax()
    except ImportError as exc:
        pytest.skip(f"slax not installed: {exc}")

    def make(n_in):
        return bench.SlaxRTRL(n_in, 8, 9, 3, lr=0.05)

    early, late = _causal_violations(bench, make, rng)
    assert early == 0 and late > 0
    sys.modules.pop("bench_step", None)


def test_a_broken_peer_is_dropped_not_fatal(monkeypatch):
    """An optional peer that raises while streaming is reported and dropped;
    rtrl_edge's rows are still produced."""
    bench = load_bench(monkeypatch)

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("incompatible version\nsecond line")

    monkeypatch.setattr(bench, "TorchTBPTT", Broken)
    data = bench.load_data(bench.QUICK_SAMPLES)
    torch_key = f"PyTorch TBPTT k={bench.K}"
    per_lr, failures = bench.run_grid(["rtrl_edge snap1", torch_key], 4, [0.01], data,
                                      lambda what: None)
    assert list(per_lr) == ["rtrl_edge snap1"]
    assert failures == {torch_key: "RuntimeError: incompatible version"}
    sys.modules.pop("bench_step", None)


def test_torch_peer_matches_the_library_from_the_same_weights(monkeypatch, rng):
    """From the same initial weights, the PyTorch peer and rtrl_edge's tbptt
    make the same forecasts until the first update, and that update agrees
    on every weight; only the bias moves twice as far in PyTorch, whose
    RNNCell carries two biases (bias_ih, bias_hh) that each get the
    gradient."""
    pytest.importorskip("torch")
    bench = load_bench(monkeypatch)
    from rtrl_edge.forecast import Forecaster
    h, n, lr = 3, 8, 0.05
    z = _stream(rng, 40)
    X = bench.em.windows(z, 3)
    peer = bench.TorchTBPTT(X.shape[1], n, 9, h, lr=lr, window=4, seed=1)
    cell = {k: v.detach().numpy().copy() for k, v in peer.cell.named_parameters()}
    net = bench.em.make_net("tbptt", X.shape[1], n, lr, 0, init="library", window=4)
    net.params["W_in"][...] = cell["weight_ih"]
    net.params["W_rec"][...] = cell["weight_hh"]
    net.params["b"][...] = cell["bias_ih"] + cell["bias_hh"]
    net.params["W_out"][...] = peer.readout.weight.detach().numpy()
    net.params["b_out"][...] = peer.readout.bias.detach().numpy()
    b0 = net.params["b"].copy()
    fc = Forecaster(net, h, delta=True)
    for t in range(h + 1):                      # h forecasts, then the first update
        a, b = peer.update(X[t], z[t]), fc.update(X[t], z[t])
        if t < h:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    for name, tensor in (("W_in", peer.cell.weight_ih), ("W_rec", peer.cell.weight_hh),
                         ("W_out", peer.readout.weight), ("b_out", peer.readout.bias)):
        np.testing.assert_allclose(tensor.detach().numpy(), net.params[name], rtol=0,
                                   atol=1e-6, err_msg=name)
    step_peer = (peer.cell.bias_ih + peer.cell.bias_hh).detach().numpy() - b0
    step_lib = net.params["b"] - b0
    assert np.abs(step_lib).max() > 1e-4
    np.testing.assert_allclose(step_peer, 2 * step_lib, rtol=1e-3, atol=1e-7)
    sys.modules.pop("bench_step", None)
