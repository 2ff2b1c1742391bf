"""Tests of benchmarks/pi_estimate.py: its counts are the library's own
planning functions, its estimates are positive, finite and grow with n, the
model's arithmetic is what its docstring says, and it writes only what it
should.  Nothing here is about how fast a Raspberry Pi is."""
import importlib.util
import json
import math
import os
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "benchmarks")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.fixture
def bench(monkeypatch):
    """benchmarks/pi_estimate.py as a module (it imports bench_step first,
    which pins the BLAS thread variables; monkeypatch restores them)."""
    for var in THREAD_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.syspath_prepend(BENCH_DIR)
    spec = importlib.util.spec_from_file_location(
        "pi_estimate_under_test", os.path.join(BENCH_DIR, "pi_estimate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_step", None)


def positive_finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def quick(bench, *extra):
    return bench.main(["--quick", "--no-write", *extra])


def test_quick_run_reports_positive_finite_numbers(bench, capsys):
    result = quick(bench)
    rows = result["rows"]
    expected = sum(sum(1 for n in bench.SIZES if n <= top) for *_, top in bench.CONFIGS)
    expected += len(bench.CONFIGS) * len(bench.RESP_SIZES)
    assert len(rows) == expected
    assert positive_finite(result["overhead"]["median_us"])
    for r in rows:
        for key in ("macs", "flop", "bytes_moved", "memory_bytes"):
            assert positive_finite(r[key]), (r["label"], r["n_hidden"], key, r[key])
        for board in ("pi4", "pi5"):
            e = r["estimate"][board]
            assert e["level"] in ("L1", "L2", "L3", "DRAM")
            for end in ("optimistic", "pessimistic"):
                for key in ("us", "compute_us", "memory_us", "overhead_us", "max_rate_hz"):
                    assert positive_finite(e[end][key]), (r["label"], board, end, key)
            assert e["pessimistic"]["us"] >= e["optimistic"]["us"]
    for a in result["anchor"]["rows"]:
        assert positive_finite(a["ratio"]) and positive_finite(a["measured_us"])
    out = capsys.readouterr().out
    assert "ESTIMATE, not a measurement" in out
    assert "What this implies:" in out and "Honesty check" in out


@pytest.mark.parametrize("label, n_in, n, n_out", [
    ("rtrl", 8, 16, 1),
    ("snap2 d=0.1", 8, 64, 1),
    ("tbptt k=16", 8, 32, 1),
    ("diag (rtrl)", 8, 128, 1),
    ("uoro", 108, 32, 9),
    ("rtrl", 108, 64, 9),
])
def test_counts_are_the_library_planning_functions(bench, label, n_in, n, n_out):
    import rtrl_edge
    from rtrl_edge import planning
    rows = [r for r in quick(bench)["rows"] if (r["label"], r["n_in"], r["n_hidden"],
                                                r["n_out"]) == (label, n_in, n, n_out)]
    assert len(rows) == 1
    r = rows[0]
    kw = dict(learner=r["learner"], cell=r["cell"], window=16, rec_density=0.1)
    assert r["macs"] == planning.work(n_in, n, n_out, **kw)
    assert r["flop"] == 2 * planning.work(n_in, n, n_out, **kw)
    assert r["memory_bytes"] == planning.memory_bytes(n_in, n, n_out, optimizer="sgd", **kw)
    built = dict(learner=r["learner"], cell=r["cell"], optimizer="sgd", seed=0)
    if r["learner"] == "tbptt":
        built["window"] = 16
    if r["learner"] == "snap2":
        built["rec_density"] = 0.1
    assert r["memory_bytes"] == rtrl_edge.OnlineRNN(n_in, n, n_out, **built).memory_bytes


def test_bytes_moved_follows_the_documented_rule(bench):
    import rtrl_edge
    from rtrl_edge import _layout
    n, m, o = 16, 8, 1
    total, parts, in_cache = bench.bytes_moved(rtrl_edge, m, n, o, "rtrl", "elman")
    ldp, _ = _layout.rtrl_blocking(n, m)
    p = _layout.n_params(n, m, o, "elman")
    assert parts["P"] == 2 * n * ldp * 4            # sensitivities read + written
    assert parts["theta"] == 3 * p * 4 and parts["grad"] == 3 * p * 4
    assert "good" not in parts                       # copied once per 64 updates
    # snap1 sums the gradient's norm as it writes it: one read of grad fewer
    _, fused, _ = bench.bytes_moved(rtrl_edge, m, n, o, "snap1", "elman")
    assert fused["grad"] == 2 * p * 4 and fused["J"] == 2 * n * (n + m + 1) * 4
    assert "tmp" not in parts and in_cache["tmp (slice of P packed per column tile)"] > 0
    assert total == sum(parts.values())
    # tbptt: the gradient of the cell is read + written once per step back
    _, tb, _ = bench.bytes_moved(rtrl_edge, m, n, o, "tbptt", "elman")
    assert tb["grad, read + written per step back"] == 16 * 2 * n * (n + m + 1) * 4


def test_estimate_grows_with_n(bench):
    rows = [r for r in quick(bench)["rows"] if r["group"] == "grid"]
    for label, *_ in bench.CONFIGS:
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["n_hidden"])
        for board in ("pi4", "pi5"):
            for end in ("optimistic", "pessimistic"):
                us = [r["estimate"][board][end]["us"] for r in mine]
                assert all(a < b for a, b in zip(us, us[1:])), (label, board, end, us)
    rtrl = [r["estimate"]["pi4"]["pessimistic"]["us"] for r in rows if r["label"] == "rtrl"]
    assert rtrl[-1] > 1000 * rtrl[0]                # n^4: 8 -> 128


def test_estimate_is_the_documented_arithmetic(bench):
    board = dict(clock_ghz=(2.0, 1.0), vector_flop_per_cycle=8, scalar_flop_per_cycle=2,
                 caches=(("L1", 1000),), cache_bytes_per_cycle={"L1": (10, 5)},
                 dram_gbs=(4.0, 2.0), overhead_ratio=(2.0, 3.0))
    eff_o, eff_p = bench.EFFICIENCY
    small = dict(flop=1e6, bytes_moved=1e3, memory_bytes=1000)
    e = bench.estimate(board, small, "vector", overhead_us=0.5)
    assert e["level"] == "L1"
    assert e["optimistic"]["us"] == pytest.approx(1e6 / (eff_o * 16e9) * 1e6 + 1.0)
    assert e["pessimistic"]["us"] == pytest.approx(1e6 / (eff_p * 8e9) * 1e6 + 1.5)
    assert e["pessimistic"]["max_rate_hz"] == pytest.approx(
        bench.CPU_BUDGET / (e["pessimistic"]["us"] * 1e-6))
    big = dict(flop=1e3, bytes_moved=4e6, memory_bytes=1001)      # spills to DRAM
    e = bench.estimate(board, big, "scalar", overhead_us=0.0)
    assert e["level"] == "DRAM" and e["optimistic"]["bound"] == "memory"
    assert e["optimistic"]["us"] == pytest.approx(4e6 / 4e9 * 1e6)
    assert e["pessimistic"]["us"] == pytest.approx(4e6 / 2e9 * 1e6)
    e = bench.estimate(board, dict(flop=4e3, bytes_moved=1.0, memory_bytes=1), "scalar", 0.0)
    assert e["optimistic"]["compute_us"] == pytest.approx(4e3 / (eff_o * 4e9) * 1e6)
    # exact RTRL's blocked product: the vector rate at its own efficiency
    prod_o, prod_p = bench.PRODUCT_EFFICIENCY
    e = bench.estimate(board, dict(flop=4e3, bytes_moved=1.0, memory_bytes=1), "product", 0.0)
    assert e["optimistic"]["compute_us"] == pytest.approx(4e3 / (prod_o * 16e9) * 1e6)
    assert e["pessimistic"]["compute_us"] == pytest.approx(4e3 / (prod_p * 8e9) * 1e6)


def test_anchor_compares_measured_medians(bench, monkeypatch, tmp_path, capsys):
    measured = tmp_path / "bench_learners.json"
    measured.write_text(json.dumps({
        "quick": False, "environment": {"date": "d", "cpu_model": "c", "product_isa": "base"},
        "results": {"16": {"rtrl": {"median_us": 7.0}, "uoro": {"median_us": 1.0}}}}))
    monkeypatch.setattr(bench, "LEARNERS_JSON", str(measured))
    anc = quick(bench, "--sizes", "8", "16")["anchor"]
    assert anc["available"] and {(a["label"], a["n_hidden"]) for a in anc["rows"]} == {
        ("rtrl", 16), ("uoro", 16)}
    for a in anc["rows"]:
        assert a["central_us"] == pytest.approx(math.sqrt(a["optimistic_us"]
                                                          * a["pessimistic_us"]))
        assert a["ratio"] == pytest.approx(a["measured_us"] / a["central_us"])
        assert a["in_range"] == (a["optimistic_us"] <= a["measured_us"] <= a["pessimistic_us"])
    monkeypatch.setattr(bench, "LEARNERS_JSON", str(tmp_path / "missing.json"))
    capsys.readouterr()
    assert quick(bench, "--sizes", "8")["anchor"]["available"] is False
    assert "No measured medians" in capsys.readouterr().out


def test_no_write_leaves_files_alone(bench, monkeypatch, tmp_path):
    for name in ("JSON_PATH", "PNG_PATH"):
        monkeypatch.setattr(bench, name, str(tmp_path / "results" / name))
    monkeypatch.setattr(bench.common, "README_PATH", str(tmp_path / "README.md"))
    monkeypatch.setattr(bench.common, "RESULTS_DIR", str(tmp_path / "results"))
    quick(bench)
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_only_its_readme_block(bench, monkeypatch, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nkeep me\n\n<!-- bench_step:begin -->\nstep numbers\n"
                      "<!-- bench_step:end -->\n\n## pi\n<!-- pi_estimate:begin -->\nold "
                      "numbers\n<!-- pi_estimate:end -->\n\n## other benchmark\nkeep me too\n")
    results = tmp_path / "results"
    monkeypatch.setattr(bench, "JSON_PATH", str(results / "pi_estimate.json"))
    monkeypatch.setattr(bench, "PNG_PATH", str(results / "pi_estimate.png"))
    monkeypatch.setattr(bench.common, "README_PATH", str(readme))
    bench.main(["--quick", "--sizes", "8", "16"])
    text = readme.read_text()
    assert "keep me\n" in text and "## other benchmark\nkeep me too" in text
    assert "<!-- bench_step:begin -->\nstep numbers\n<!-- bench_step:end -->" in text
    assert "old numbers" not in text and text.count("<!-- pi_estimate:begin -->") == 1
    block = text[text.index("<!-- pi_estimate:begin -->"):text.index("<!-- pi_estimate:end -->")]
    assert "ESTIMATE, not a measurement" in block
    saved = json.loads((results / "pi_estimate.json").read_text())
    assert saved["estimate_not_measurement"] is True and saved["sizes"] == [8, 16]
    assert {r["n_hidden"] for r in saved["rows"] if r["group"] == "grid"} == {8, 16}
    assert saved["environment"]["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert set(os.listdir(results)) <= {"pi_estimate.json", "pi_estimate.png"}
