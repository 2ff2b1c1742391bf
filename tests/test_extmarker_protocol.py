"""The respiratory-motion protocol of benchmarks/extmarker.py (Pohl et al.'s, on
the ExtMarker data) and a quick run of benchmarks/bench_extmarker.py.

The metrics are checked against the study's definitions written out with
loops, the forecasters for causality (a forecast made at time t must not
change when anything after t does) and the benchmark for a complete, finite
report.  Nothing here is about speed."""
import importlib.util
import math
import os
import sys

import numpy as np
import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "benchmarks")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SHORT = "201205111057"      # the shortest session, 727 samples


def _load(monkeypatch, name):
    for var in THREAD_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.syspath_prepend(BENCH_DIR)
    spec = importlib.util.spec_from_file_location(f"{name}_under_test",
                                                  os.path.join(BENCH_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def em(monkeypatch):
    monkeypatch.syspath_prepend(BENCH_DIR)
    return importlib.import_module("extmarker")


@pytest.fixture(scope="module")
def short_session():
    sys.path.insert(0, BENCH_DIR)
    try:
        (s,) = importlib.import_module("extmarker").load_sessions([SHORT])
    finally:
        sys.path.remove(BENCH_DIR)
    return s


# -- data -------------------------------------------------------------------

def test_all_nine_sessions_load_with_three_aligned_markers(em):
    sessions = em.load_sessions()
    assert [s.name for s in sessions] == [
        "201205101519", "201205101522", "201205101534", "201205101536", "201205101541",
        "201205111055", "201205111057", "201205181211", "201205181220"]
    lengths = {s.name: len(s) for s in sessions}
    assert lengths["201205181211"] == 3198 and lengths[SHORT] == 727
    for s in sessions:
        assert s.xyz.shape == (len(s), 9) and np.all(np.isfinite(s.xyz))
        assert len(s.markers) == 3 and len({m[:12] for m in s.markers}) == 1
        # the columns are the three markers' own files, in order
        from rtrl_edge.data import load_extmarker_csv
        path = [p for p in em.session_files()[s.name] if s.markers[1] in p][0]
        np.testing.assert_array_equal(s.xyz[:, 3:6], load_extmarker_csv(path).xyz)


def test_unknown_session_is_named(em):
    with pytest.raises(ValueError, match="unknown sessions.*'nope'"):
        em.load_sessions(["nope"])


def test_standardise_uses_the_first_30_seconds_only(em, short_session):
    z, mu, sg = em.standardise(short_session.xyz)
    np.testing.assert_allclose(z[:em.TRAIN].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:em.TRAIN].std(axis=0), 1.0, atol=1e-5)
    xyz = short_session.xyz.copy()
    xyz[em.TRAIN:] += 100.0                      # later data does not move the statistics
    _, mu2, sg2 = em.standardise(xyz)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sg, sg2)


def test_windows_put_the_newest_sample_first_and_zeros_before_the_start(em, rng):
    z = rng.standard_normal((10, 9)).astype(np.float32)
    X = em.windows(z, 3)
    assert X.shape == (10, 27) and X.dtype == np.float32
    for t in range(10):
        for lag in range(3):
            want = z[t - lag] if t - lag >= 0 else np.zeros(9)
            np.testing.assert_array_equal(X[t, 9 * lag:9 * lag + 9], want)


def test_splits_are_the_studys(em):
    assert em.split("valid", 1000) == slice(300, 600)
    assert em.split("test", 1000) == slice(600, 1000)
    with pytest.raises(ValueError, match="phase must be"):
        em.split("train", 1000)


# -- metrics ------------------------------------------------------------------

def test_metrics_match_the_studys_definitions(em, rng):
    truth = rng.normal(0.0, 5.0, (40, 9))
    pred = truth + rng.normal(0.0, 1.0, (40, 9))
    got = em.metrics(pred, truth)
    deltas, jumps = [], []
    for t in range(40):
        for k in range(3):                       # marker k: columns 3k .. 3k+2
            deltas.append(math.dist(pred[t, 3 * k:3 * k + 3], truth[t, 3 * k:3 * k + 3]))
            if t:
                jumps.append(math.dist(pred[t, 3 * k:3 * k + 3],
                                       pred[t - 1, 3 * k:3 * k + 3]))
    mean = truth.mean(axis=0)
    spread = sum(float(np.sum((truth[t] - mean) ** 2)) for t in range(40))
    assert got["mae"] == pytest.approx(sum(deltas) / len(deltas), rel=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(sum(d * d for d in deltas) / len(deltas)),
                                        rel=1e-12)
    assert got["max"] == pytest.approx(max(deltas), rel=1e-12)
    assert got["nrmse"] == pytest.approx(math.sqrt(sum(d * d for d in deltas)) /
                                         math.sqrt(spread), rel=1e-12)
    assert got["jitter"] == pytest.approx(sum(jumps) / len(jumps), rel=1e-12)


def test_perfect_forecast_scores_zero_and_the_mean_scores_nrmse_one(em, rng):
    truth = rng.normal(0.0, 3.0, (50, 9))
    perfect = em.metrics(truth.copy(), truth)
    assert perfect["rmse"] == perfect["nrmse"] == perfect["max"] == 0.0
    mean = np.repeat(truth.mean(axis=0, keepdims=True), 50, axis=0)
    assert em.metrics(mean, truth)["nrmse"] == pytest.approx(1.0, rel=1e-12)
    assert em.metrics(mean, truth)["jitter"] == 0.0


# -- forecasters: what a forecast made at time t may depend on ---------------

def _perturbed(z, t0, rng):
    z2 = z.copy()
    z2[t0:] += rng.normal(0.0, 1.0, z2[t0:].shape).astype(np.float32)
    return z2


def _made_before(preds_a, preds_b, t0, h):
    """Forecasts made before t0 (targets before t0 + h) are equal; returns
    whether some later one differs."""
    np.testing.assert_array_equal(preds_a[:t0 + h], preds_b[:t0 + h])
    return not np.array_equal(preds_a[t0 + h:], preds_b[t0 + h:])


@pytest.mark.parametrize("h", [1, 4])
def test_causal_lms_and_last_value_never_use_the_future(em, short_session, rng, h):
    z, _, _ = em.standardise(short_session.xyz[:200])
    t0 = 120
    z2 = _perturbed(z, t0, rng)
    for L in (1, 3):
        a = em.lms(em.windows(z, L), z, h, 1e-3, causal=True)
        b = em.lms(em.windows(z2, L), z2, h, 1e-3, causal=True)
        assert _made_before(a, b, t0, h)
    assert _made_before(em.last_value(z, h), em.last_value(z2, h), t0, h)


def test_non_causal_lms_uses_a_target_not_yet_observed(em, short_session, rng):
    """The study's setting: perturbing z from t0 on changes a forecast made
    before t0 -- which is why it is reported apart."""
    z, _, _ = em.standardise(short_session.xyz[:200])
    h, t0 = 4, 120
    z2 = _perturbed(z, t0, rng)
    a = em.lms(em.windows(z, 2), z, h, 1e-3, causal=False)
    b = em.lms(em.windows(z2, 2), z2, h, 1e-3, causal=False)
    early = slice(t0 + 1, t0 + h)     # targets of forecasts made at t0-h+1 .. t0-1
    assert not np.array_equal(a[early], b[early])


@pytest.mark.parametrize("learner", ["snap1", "rtrl", "diag"])
def test_causal_network_forecasts_never_use_the_future(em, short_session, rng, learner):
    z, _, _ = em.standardise(short_session.xyz[:160])
    h, t0, L = 3, 100, 2
    z2 = _perturbed(z, t0, rng)
    runs = []
    for zz in (z, z2):
        net = em.make_net(learner, 9 * L, 8, 0.01, 0, init="library")
        runs.append(em.rnn(net, em.windows(zz, L), zz, h, causal=True, delta=True))
    assert _made_before(*runs, t0, h)
    # and the non-causal run of the same network does read ahead
    runs = []
    for zz in (z, z2):
        net = em.make_net(learner, 9 * L, 8, 0.01, 0, init="study")
        runs.append(em.rnn(net, em.windows(zz, L), zz, h, causal=False))
    assert not np.array_equal(runs[0][t0 + 1:t0 + h], runs[1][t0 + 1:t0 + h])


def test_linear_regression_fits_only_targets_before_the_scored_window(em, short_session, rng):
    z, _, _ = em.standardise(short_session.xyz)
    h, fit_end = 5, em.TRAIN
    z2 = _perturbed(z, fit_end, rng)
    a = em.linear_regression(em.windows(z, 3), z, h, fit_end)
    b = em.linear_regression(em.windows(z2, 3), z2, h, fit_end)
    assert _made_before(a, b, fit_end, h)
    # and it is the least-squares fit: its residuals are orthogonal to the inputs
    X = np.hstack([em.windows(z, 3)[:fit_end - h], np.ones((fit_end - h, 1))])
    resid = z[h:fit_end] - a[h:fit_end]
    assert np.abs(X.T @ resid).max() < 1e-2 * np.abs(X).sum()


def test_ridge_fits_only_targets_before_the_scored_window(em, short_session, rng):
    z, _, _ = em.standardise(short_session.xyz)
    h, fit_end = 5, em.TRAIN
    z2 = _perturbed(z, fit_end, rng)
    for L, alpha in ((3, 1.0), (36, 10.0)):     # 324 inputs: more than the 295 pairs
        a = em.ridge_regression(em.windows(z, L), z, h, fit_end, alpha)
        b = em.ridge_regression(em.windows(z2, L), z2, h, fit_end, alpha)
        assert _made_before(a, b, fit_end, h)
        assert np.all(np.isfinite(a)) and np.all(a[:h] == 0)
        # the bias is not penalised: the fitted pairs' residuals sum to zero
        resid = z[h:fit_end].astype(np.float64) - a[h:fit_end]
        assert np.abs(resid.mean(axis=0)).max() < 1e-4


def test_ridge_spans_least_squares_to_the_mean(em, short_session):
    z, _, _ = em.standardise(short_session.xyz)
    h, fit_end = 3, em.TRAIN
    X = em.windows(z, 1)                          # 9 inputs, 297 pairs: well posed
    near_ls = em.ridge_regression(X, z, h, fit_end, 1e-6)
    np.testing.assert_allclose(near_ls, em.linear_regression(X, z, h, fit_end), atol=1e-3)
    flat = em.ridge_regression(X, z, h, fit_end, 1e9)
    np.testing.assert_allclose(flat[h:], np.broadcast_to(z[h:fit_end].mean(axis=0),
                                                         flat[h:].shape), atol=1e-3)


@pytest.mark.parametrize("h", [1, 3])
def test_auto_forecasts_never_use_the_future(em, short_session, rng, h):
    """Forecaster.auto as the benchmark feeds it (update(z_t, z_t)): a
    forecast made at t is the same whatever comes after t."""
    z, _, _ = em.standardise(short_session.xyz[:160])
    t0 = 100
    z2 = _perturbed(z, t0, rng)
    (a, fc), (b, _) = em.auto(z, h, 0), em.auto(z2, h, 0)
    assert _made_before(a, b, t0, h)
    assert np.all(a[:h] == 0) and np.all(np.isfinite(a))
    assert fc.counters["samples"] == 160 - h and em.auto_divergences(fc) == 0
    # hidden= builds the members at that size
    _, small = em.auto(z[:20], h, 0, hidden=4)
    assert all(m.net.n_hidden == 4 for m in small.members if hasattr(m, "net"))


def test_study_initialisation_draws_every_weight_from_n_0_002(em):
    net = em.make_net("snap1", 90, 60, 0.01, 3, init="study")
    W = np.concatenate([net.params[k].ravel() for k in ("W_rec", "W_in", "b", "W_out")])
    assert abs(W.std() - em.STUDY_INIT_STD) < 0.001 and abs(W.mean()) < 0.001
    assert np.all(net.params["b_out"] == 0.0)
    masked = em.make_net("snap2", 9, 20, 0.01, 0, init="study", rec_density=0.2)
    assert np.all(masked.params["W_rec"][~masked.rec_mask] == 0.0)
    with pytest.raises(ValueError, match="init must be"):
        em.make_net("snap1", 9, 4, 0.01, 0, init="xavier")


def test_timer_records_every_call(em, short_session):
    z, _, _ = em.standardise(short_session.xyz[:80])
    timer = np.zeros(80, np.int64)
    em.rnn(em.make_net("snap1", 9, 4, 0.01, 0, init="library"), em.windows(z, 1), z, 2,
           causal=True, delta=True, timer=timer)
    assert np.all(timer[:78] > 0) and np.all(timer[78:] == 0)


# -- the benchmark ------------------------------------------------------------

def test_benchmark_quick_run_reports_every_method_and_setting(monkeypatch, capsys):
    bench = _load(monkeypatch, "bench_extmarker")
    methods = ["last value", "LMS", "linear regression", "snap1", "diag"]
    out = bench.main(["--quick", "--no-write", "--sessions", SHORT, "--horizons", "1", "4",
                      "--methods", *methods, "--jobs", "1", "--timing-steps", "200"])
    assert out["horizons"] == [1, 4] and [s["name"] for s in out["sessions"]] == [SHORT]
    for method in methods:
        for mode in bench.MODES:
            row = out["table"][f"{method}|{mode}"]
            for k in bench.METRICS:
                assert math.isfinite(row[k]) and row[k] >= 0.0, (method, mode, k, row[k])
    # repeat-last-value is the same in both settings and matches a direct computation
    (s,) = bench.em.load_sessions([SHORT])
    direct = np.mean([bench.em.metrics(s.xyz[600 - h:len(s) - h], s.xyz[600:])["nrmse"]
                      for h in (1, 4)])
    for mode in bench.MODES:
        assert out["table"][f"last value|{mode}"]["nrmse"] == pytest.approx(direct, rel=1e-5)
    # every chosen configuration is a point of its grid
    latency = {(g["method"], tuple(sorted(g["config"].items()))): g["median_us"]
               for g in out["grid_latency_us"]}
    for run in out["runs"]:
        mode = "non-causal" if run["mode"] == bench.BUDGET else run["mode"]
        grid = bench.GRIDS["quick"][mode].get(run["method"], {})
        assert all(v in grid[k] for k, v in run["config"].items()), run
        if run["mode"] == bench.BUDGET:      # chosen only among the fast enough
            assert latency[(run["method"], tuple(sorted(run["config"].items())))] \
                <= bench.BUDGET_US, run
    for key in ("snap1|non-causal", "snap1|causal", "diag|causal"):
        assert out["timing"][key]["median_us"] > 0
    text = capsys.readouterr().out
    assert "| published (non-causal; MATLAB, i7-13700) | SnAp-1 | 0.157 |" in text
    assert "ours, **causal** | snap1 |" in text and "Targets:" in text
    sys.modules.pop("bench_step", None)


QUICK_CAUSAL = ["--quick", "--sessions", SHORT, "--horizons", "1", "4", "--jobs", "1",
                "--timing-steps", "200"]


def test_benchmark_auto_and_ridge_causal_rows(monkeypatch, capsys):
    """Auto is one configuration: never validated, run over the test seeds;
    ridge is chosen on validation from its grid; both causal only; the
    per-horizon comparison with the causal baselines is printed."""
    bench = _load(monkeypatch, "bench_extmarker")
    out = bench.main(QUICK_CAUSAL + ["--no-write", "--methods", "auto", "ridge", "lms", "last",
                                     "--modes", "causal"])
    auto, ridge = bench.AUTO, bench.RIDGE
    assert set(out["table"]) == {f"{m}|causal" for m in (auto, ridge, "LMS", "last value")}
    assert out["methods_run"] == ["last value", "LMS", ridge, auto]
    assert out["modes_run"] == ["causal"]
    assert {v["method"] for v in out["validation"]} == {"LMS", ridge}
    grid = bench.GRIDS["quick"]["causal"][ridge]
    assert {tuple(sorted(v["config"])) for v in out["validation"]
            if v["method"] == ridge} == {("L", "alpha")}
    seeds = bench.SEEDS["quick"]["test"]
    for run in out["runs"]:
        if run["method"] == auto:
            assert run["config"] == {} and run["valid_nrmse"] is None
            assert len(run["nrmse_per_seed"]) == len(seeds)
        if run["method"] == ridge:
            assert all(v in grid[k] for k, v in run["config"].items()), run
    assert sorted(r["horizon"] for r in out["runs"] if r["method"] == auto) == [1, 4]
    for m in (auto, ridge):
        row = out["table"][f"{m}|causal"]
        assert all(math.isfinite(row[k]) and row[k] >= 0.0 for k in bench.METRICS)
    assert out["timing"][f"{auto}|causal"]["median_us"] > 0
    assert out["timing"][f"{auto}|causal"]["memory_bytes_max"] > 0
    text = capsys.readouterr().out
    assert "Auto against the causal baselines" in text
    assert "| 0.1 s |" in text and "| 0.4 s |" in text
    assert "causal nRMSE averaged over horizons <= 0.60" in text
    assert "a subset of the methods and settings" in text
    sys.modules.pop("bench_step", None)


def test_benchmark_carries_over_the_rows_it_does_not_run(monkeypatch, tmp_path, capsys):
    """--carry-over keeps an earlier run's rows for what this run does not
    run, marked, with that run's command; it refuses results of another
    protocol (here: other horizons)."""
    bench = _load(monkeypatch, "bench_extmarker")
    monkeypatch.setattr(bench, "JSON_PATH", str(tmp_path / "x.json"))
    monkeypatch.setattr(bench, "PNG_PATH", str(tmp_path / "x.png"))
    monkeypatch.setattr(bench.common, "README_PATH", str(tmp_path / "README.md"))
    first = bench.main(QUICK_CAUSAL + ["--methods", "last", "lms"])
    capsys.readouterr()
    second = bench.main(QUICK_CAUSAL + ["--methods", "auto", "--modes", "causal",
                                        "--carry-over"])
    text = capsys.readouterr().out
    assert set(second["table"]) == set(first["table"]) | {f"{bench.AUTO}|causal"}
    for key, row in first["table"].items():
        assert second["table"][key]["nrmse"] == pytest.approx(row["nrmse"], rel=1e-4)
        assert second["provenance"][key]["command"] == first["command"]
    assert second["provenance"][f"{bench.AUTO}|causal"]["command"] == second["command"]
    assert f"| LMS {bench.CARRIED} |" in text and "carried over" in text
    assert f"| {bench.AUTO} |" in text
    readme = (tmp_path / "README.md").read_text()
    assert first["command"] in readme and "carried over" in readme
    with pytest.raises(SystemExit, match="other sessions, horizons"):
        bench.main(["--quick", "--sessions", SHORT, "--horizons", "2", "--jobs", "1",
                    "--methods", "auto", "--modes", "causal", "--carry-over", "--no-write"])
    sys.modules.pop("bench_step", None)


def test_benchmark_rejects_bad_arguments(monkeypatch, capsys):
    bench = _load(monkeypatch, "bench_extmarker")
    for argv, msg in ((["--horizons", "0"], "--horizons must lie in"),
                      (["--jobs", "0"], "--jobs must be >= 1"),
                      (["--methods", "ridge", "--modes", "non-causal"], "nothing to run"),
                      (["--modes", "acausal"], "invalid choice"),
                      (["--methods", "dni"], "invalid choice")):
        with pytest.raises(SystemExit):
            bench.main(argv + ["--no-write"])
        assert msg in capsys.readouterr().err
    sys.modules.pop("bench_step", None)
