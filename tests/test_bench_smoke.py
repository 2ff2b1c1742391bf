"""Smoke test of benchmarks/bench_step.py: it runs, its numpy reference
computes the library's maths, and every number it reports is a positive
finite number.  Nothing here is about speed."""
import importlib.util
import math
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "benchmarks", "bench_step.py")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def load_bench(monkeypatch):
    # the module forces these at import; monkeypatch restores them afterwards
    for var in THREAD_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    spec = importlib.util.spec_from_file_location("bench_step_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive_finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_reports_positive_finite_numbers(monkeypatch, capsys):
    bench = load_bench(monkeypatch)
    result = bench.main(["--quick", "--no-write", "--sizes", "4", "8"])

    rows = result["rows"]
    assert [r["n_hidden"] for r in rows] == [4, 8]
    for r in rows:
        assert r["reference_check"]["passed"] is True
        assert r["reference_check"]["max_rel_pred_err"] <= bench.CHECK_RTOL
        for method in ("library", "numpy", "matmul"):
            stats = r[method]
            assert stats["samples"] == r["steps_per_method"] > 0
            for key in ("median_us", "p99_us", "min_us", "mean_us"):
                assert positive_finite(stats[key]), (r["n_hidden"], method, key, stats[key])
            assert stats["p99_us"] >= stats["median_us"]
        for key in ("speedup_median", "matmul_gflops", "library_sensitivity_gflops",
                    "sens_over_matmul", "library_memory_bytes", "numpy_memory_bytes",
                    "peak_fraction"):
            assert positive_finite(r[key]), (r["n_hidden"], key, r[key])
        # the step's rate over the peak measured in the same run, both GFLOP/s
        assert r["peak_fraction"] == (r["library_sensitivity_gflops"]
                                      / result["fma_peak_gflops"][result["environment"]
                                                                  ["product_isa"]])
        assert r["peak_fraction_p1"] >= r["peak_fraction"] > 0
    assert all(positive_finite(g) for g in result["fma_peak_gflops"].values())
    assert {t["status"] for t in result["targets"]} <= {"met", "missed", "not measured"}
    # threads: every count against threads=1, the models bit-identical at the end
    threads = result["threads"]
    assert threads["counts"][0] == 1 and 2 in threads["counts"]
    assert [r["n_hidden"] for r in threads["rows"]] == [4, 8]
    for r in threads["rows"]:
        assert r["identical_to_one_thread"] is True
        assert r["speedup"][1] == 1.0
        assert all(positive_finite(r["median_us"][k]) for k in threads["counts"])
    assert set(threads["handoff_us"]) == set(threads["counts"]) - {1}
    assert threads["target"]["status"] == "not measured"      # n = 64 not run
    out = capsys.readouterr().out
    assert "| 4 |" in out and "| 8 |" in out and "threads=2 median" in out


def test_no_write_leaves_files_alone(monkeypatch, tmp_path):
    bench = load_bench(monkeypatch)
    for name in ("JSON_PATH", "PNG_PATH", "README_PATH"):
        monkeypatch.setattr(bench, name, str(tmp_path / name))
    monkeypatch.setattr(bench, "RESULTS_DIR", str(tmp_path / "results"))
    bench.main(["--quick", "--no-write", "--sizes", "4"])
    assert list(tmp_path.iterdir()) == []


def test_numpy_reference_memory_counts_both_sensitivity_buffers(monkeypatch):
    bench = load_bench(monkeypatch)
    ref = bench.NumpyRTRL(8, 16, 1)
    K = 16 + 8 + 1
    assert ref.nbytes >= 2 * 16 * 16 * K * 4


def test_write_replaces_only_its_readme_block(monkeypatch, tmp_path):
    import json
    bench = load_bench(monkeypatch)
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nkeep me\n\n<!-- bench_step:begin -->\nold numbers\n"
                      "<!-- bench_step:end -->\n\n## other benchmark\nkeep me too\n")
    results = tmp_path / "results"
    monkeypatch.setattr(bench, "RESULTS_DIR", str(results))
    monkeypatch.setattr(bench, "JSON_PATH", str(results / "bench_step.json"))
    monkeypatch.setattr(bench, "PNG_PATH", str(results / "bench_step.png"))
    monkeypatch.setattr(bench, "README_PATH", str(readme))
    bench.main(["--quick", "--sizes", "4"])
    text = readme.read_text()
    assert "keep me\n" in text and "## other benchmark\nkeep me too" in text
    assert "old numbers" not in text and text.count("<!-- bench_step:begin -->") == 1
    saved = json.loads((results / "bench_step.json").read_text())
    assert saved["rows"][0]["n_hidden"] == 4
    assert saved["environment"]["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"


def test_learners_benchmark_quick_run(monkeypatch):
    """benchmarks/bench_learners.py runs every configuration and reports a
    positive latency and the model's own memory_bytes for each."""
    import sys
    bench = _load_sibling(monkeypatch, "bench_learners")
    out = bench.main(["--quick", "--no-write", "--sizes", "8", "16"])
    import rtrl_edge
    for n in ("8", "16"):
        assert set(out["results"][n]) == {label for label, _, _ in bench.CONFIGS}
        for label, kw, _ in bench.CONFIGS:
            row = out["results"][n][label]
            assert positive_finite(row["median_us"]) and row["p99_us"] >= row["median_us"]
            assert row["memory_bytes"] == rtrl_edge.OnlineRNN(8, int(n), 1, **kw).memory_bytes
    # at n = 8 and 16 only the GRU rtrl ratio (every size measured) is measured
    status = [t["status"] for t in out["targets"]]
    assert status[:4] + status[5:6] == ["not measured"] * 5
    assert status[4] in ("met", "missed") and out["targets"][4]["value"] > 0
    # issue 15's ratios against numpy's forward pass, always measured: every
    # learner's sgd and Adam step at both shapes, each a ratio of this run
    assert set(out["passes"]) == {"8,256,1", "540,128,9"}
    for (m, n, o), learners, _ in bench.PASS_SHAPES:
        row = out["passes"][f"{m},{n},{o}"]
        split = {f"{l} sgd threads={bench.THREADS}" for l in learners
                 if bench.CONFIGS_BY_LABEL[l].get("cell", "elman") == "elman"}
        assert split == {f"{l} sgd threads=2" for l in learners if l in ("snap1", "uoro")}
        assert set(row) == {bench.FORWARD} | split | {f"{l} {opt}" for l in learners
                                                     for opt in ("sgd", "adam")}
        assert all(positive_finite(v["median_us"]) for v in row.values())
    passes = out["targets"][6:]
    assert len(passes) == 2 * (3 + 2)
    assert all(t["status"] in ("met", "missed") and t["value"] > 0 for t in passes)
    sys.modules.pop("bench_step", None)


def test_bridge_benchmark_quick_run(monkeypatch):
    """benchmarks/bench_bridge.py decodes every frame at every stage (it
    asserts so itself) and reports positive throughputs; under single bit
    flips the protocol's framing delivers nothing wrong, version 1's does."""
    bench = _load_sibling(monkeypatch, "bench_bridge")
    result = bench.main(["--quick", "--no-write"])
    rows = result["rows"]
    assert len(rows) == 4
    for row in rows.values():
        assert positive_finite(row["frames_per_s"]) and positive_finite(row["mb_per_s"])
    wrong = {(r["framing"].split(":")[0], r["stream"]): r["wrong"] for r in result["flips"]}
    assert len(wrong) == 4 and all(r["flips"] == 20000 for r in result["flips"])
    assert wrong[("version 2", "frames back to back")] == 0
    assert wrong[("version 2", "a 0x00 before each frame")] == 0
    assert wrong[("version 1", "a 0x00 before each frame")] > 0


def _load_sibling(monkeypatch, name):
    """Import benchmarks/<name>.py (which imports bench_step first, pinning BLAS
    threads; monkeypatch restores the variables afterwards)."""
    for var in THREAD_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.syspath_prepend(os.path.dirname(BENCH))
    spec = importlib.util.spec_from_file_location(
        f"{name}_under_test", os.path.join(os.path.dirname(BENCH), f"{name}.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_horizons_benchmark_quick_run(monkeypatch, capsys):
    """benchmarks/bench_horizons.py forecasts with every method at both quick
    horizons and reports positive finite RMSEs and ratios."""
    import sys
    bench = _load_sibling(monkeypatch, "bench_horizons")
    out = bench.main(["--quick", "--no-write"])
    assert out["horizons"] == [1, 10] and out["seeds"] == [0]
    assert len(out["recordings"]) == 1
    for h in ("1", "10"):
        row = out["table"][h]
        assert set(row) == set(bench.methods())
        for method, v in row.items():
            assert positive_finite(v["rmse_mm"]), (h, method, v)
            assert positive_finite(v["ratio"]), (h, method, v)
        assert row[bench.LAST]["ratio"] == 1.0
        nlms = out["recordings"][0]["horizons"][h][bench.NLMS]
        assert nlms["mu"] in bench.NLMS_GRID
    assert "| 0.1 s (h=1) |" in capsys.readouterr().out
    sys.modules.pop("bench_step", None)


def test_loop_benchmark_quick_run(monkeypatch):
    """benchmarks/bench_loop.py times the model, process() and the serial path
    over a real pty for every learner, and every latency it reports is a
    positive finite number (nothing about how large)."""
    import sys
    bench = _load_sibling(monkeypatch, "bench_loop")
    out = bench.main(["--quick", "--no-write", "--reps", "100", "--samples", "150",
                      "--warmup", "20"])
    assert set(out["results"]) == {label for label, _ in bench.LEARNERS}
    for label, r in out["results"].items():
        for key in ("model", "process", "e2e"):
            stats = r[key]
            assert stats["samples"] > 0, (label, key)
            for q in ("median_us", "p99_us"):
                assert positive_finite(stats[q]), (label, key, q, stats[q])
            assert stats["p99_us"] >= stats["median_us"]
            for budget in stats["budgets"].values():
                assert positive_finite(budget["median_fraction"])
                assert 0.0 <= budget["share_over"] <= 1.0
        for key in ("overhead_process", "overhead_e2e"):
            assert all(math.isfinite(r[key][q]) for q in ("median_us", "p99_us"))
        info = r["e2e_info"]
        assert info["scored"] > 0 and info["commands_matched"] > 0
        assert info["link"]["crc_errors"] == info["link"]["seq_gaps"] == 0
    sys.modules.pop("bench_step", None)


def test_auto_benchmark_quick_run(monkeypatch, tmp_path, capsys):
    """benchmarks/bench_auto.py records the auto forecaster's weights (a
    distribution over its members, by name) and recent errors every few
    samples, scores it beside repeat-last-value, and with --no-write writes
    nothing."""
    import sys
    import numpy as np
    bench = _load_sibling(monkeypatch, "bench_auto")
    for name in ("JSON_PATH", "PNG_PATH"):
        monkeypatch.setattr(bench, name, str(tmp_path / name))
    monkeypatch.setattr(bench.common, "README_PATH", str(tmp_path / "README.md"))
    out = bench.main(["--quick", "--no-write", "--every", "50", "--horizon", "3"])
    import rtrl_edge
    names = rtrl_edge.Forecaster.auto(9, 9, 3).names
    assert out["names"] == names and out["setting"]["horizon"] == 3
    rec = out["records"]
    T = out["setting"]["samples"]
    assert rec["samples"] == list(range(50, T - 3 + 1, 50))
    W = np.array(rec["weights"])
    assert W.shape == (len(rec["samples"]), len(names))
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-4)
    assert np.all(W >= 0) and np.all(np.isfinite(rec["recent_error"]))
    for who in ("auto", "last value"):
        for phase in ("valid", "test"):
            assert positive_finite(out["scores"][who][phase]["nrmse"]), (who, phase)
    assert set(out["summary"]) == set(names)
    assert list(tmp_path.iterdir()) == []
    text = capsys.readouterr().out
    assert "| member |" in text and f"| {names[0]} |" in text
    sys.modules.pop("bench_step", None)


def test_init_benchmark_quick_run_and_its_cache(monkeypatch, tmp_path):
    """benchmarks/bench_init.py scores every initialisation with the same
    seeds; its cache lets a second invocation reuse every run, with the same
    result; the diag cell's "orthogonal" is its "gaussian" (readout only)."""
    import json
    import sys
    bench = _load_sibling(monkeypatch, "bench_init")
    cache = tmp_path / "runs.jsonl"
    args = ["--quick", "--no-write", "--part", "peers", "--learners", "snap1", "diag",
            "--seeds", "0", "--jobs", "1", "--cache", str(cache)]
    first = bench.main(args)
    lines = cache.read_text().splitlines()
    assert len(lines) == 2 * 3 * 2                    # learners x inits x learning rates
    rows = {(r["learner"], r["init"]): r for r in first["parts"]["peers"]["rows"]}
    assert set(rows) == {(lr, i) for lr in ("snap1", "diag") for i in bench.INITS}
    for r in rows.values():
        assert positive_finite(r["median_test_nrmse"]), r
        assert r["per_seed"][0]["lr"] in bench.QUICK["peers"]["lrs"]
    assert rows[("diag", "orthogonal")]["per_seed"] == rows[("diag", "gaussian")]["per_seed"]
    cache.write_text("\n".join(lines) + '\n[["snap1", 32')     # a line cut short
    second = bench.main(args)
    assert json.dumps(second["parts"], sort_keys=True) == json.dumps(first["parts"],
                                                                     sort_keys=True)
    sys.modules.pop("bench_step", None)
