"""Smoke test of benchmarks/bench_apps.py and its peers (benchmarks/apps_peers.py):
the benchmark runs, reports a positive finite number wherever it reports one,
keeps PyTorch and scikit-learn optional, and the PyTorch text peer predicts
every byte before it learns it.  Nothing here is about speed or accuracy."""
import contextlib
import io
import math
import sys

import numpy as np
import pytest

from support import load_benchmark


@pytest.fixture
def peers(monkeypatch):
    return load_benchmark(monkeypatch, "apps_peers")


def positive_finite(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def toy_sequences(rng, count, dim=3, lengths=(4, 12)):
    """Variable-length sequences whose class is the sign of their first
    feature's mean."""
    seqs = [rng.standard_normal((int(rng.integers(*lengths)), dim)).astype(np.float32)
            for _ in range(count)]
    labels = np.array([int(s[:, 0].mean() > 0) for s in seqs])
    return seqs, labels


# --------------------------------------------------------------------------
# the peers
# --------------------------------------------------------------------------

def test_torch_text_predicts_each_byte_before_learning_it(peers):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 5, 70)
    other = codes.copy()
    other[50:] = (other[50:] + 1) % 5
    kw = dict(cell="gru", hidden=8, chunk=16, lr=1e-2, keep_nats=True)
    a = peers.torch_text(codes, 5, **kw)
    b = peers.torch_text(other, 5, **kw)
    # the runs differ from byte 50 on, in the middle of a chunk: the cost of
    # every byte before it is the same (nothing learnt from a later byte
    # reaches an earlier prediction), from it on it is not
    np.testing.assert_array_equal(a["nats"][:50], b["nats"][:50])
    assert np.all(a["nats"][50:] != b["nats"][50:])
    assert a["chars"] == 70 and a["finite"]
    assert a["bpc"] == pytest.approx(a["nats"].sum() / math.log(2) / 70)
    for key in ("median_us", "p99_us", "mean_us"):
        assert positive_finite(a["latency_per_char"][key]), key
    assert a["latency_per_char"]["samples"] == 5          # ceil(70 / 16) chunks
    chars = np.array(a["curve"]["chars"])
    assert chars[-1] == 70 and np.all(np.diff(chars) > 0)
    seg = np.diff(np.r_[0, chars])
    assert np.dot(a["curve"]["bpc"], seg) == pytest.approx(a["nats"].sum() / math.log(2))
    assert positive_finite(a["state_bytes"]) and positive_finite(a["parameters"])


def test_torch_text_header_and_rnn(peers):
    pytest.importorskip("torch")
    codes = np.arange(40) % 3
    plain = peers.torch_text(codes, 3, cell="rnn", hidden=4, chunk=8)
    header = peers.torch_text(codes, 3, cell="rnn", hidden=4, chunk=8, header_bits=256)
    assert header["bpc"] == pytest.approx(plain["bpc"] + 256 / 40)
    with pytest.raises(ValueError, match="cell"):
        peers.torch_text(codes, 3, cell="lstm")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        peers.torch_text(codes, 2)


def test_torch_gru_offline_on_variable_length_sequences(peers):
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    train, y_train = toy_sequences(rng, 64)
    test, y_test = toy_sequences(rng, 16)
    r = peers.torch_gru_offline(train, y_train, test, y_test, n_classes=2, hidden=8,
                                epochs=3, batch=16)
    assert 0.0 <= r["accuracy"] <= 1.0
    assert r["predicted"].shape == (16,) and set(r["predicted"]) <= {0, 1}
    assert len(r["history"]) == 3 and r["settings"]["packed"]
    for block in ("train_us_per_frame", "inference_per_sequence", "inference_per_frame"):
        assert positive_finite(r[block]["median_us"]), block
    assert r["inference_per_sequence"]["samples"] == 16
    assert positive_finite(r["state_bytes"])


@pytest.mark.parametrize("features, frames, dim", [("pooled", None, 6), ("pad_crop", 5, 15)])
def test_logistic_on_fixed_length_vectors(peers, features, frames, dim):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(2)
    train, y_train = toy_sequences(rng, 80)
    test, y_test = toy_sequences(rng, 20)
    r = peers.logistic(train, y_train, test, y_test, features=features, frames=frames)
    assert r["settings"]["dim"] == dim and r["converged"]
    assert 0.0 <= r["accuracy"] <= 1.0 and r["predicted"].shape == (20,)
    assert positive_finite(r["inference_per_sequence"]["median_us"])
    assert positive_finite(r["fit_us_per_frame"])


def test_pad_crop_and_pooled(peers):
    seq = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(peers.pad_crop(seq, 2), [0, 1, 2, 3])
    np.testing.assert_array_equal(peers.pad_crop(seq, 4), [0, 1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_allclose(peers.pooled(seq), [2, 3, np.sqrt(8 / 3), np.sqrt(8 / 3)])


def test_pad_crop_needs_a_frame_count(peers):
    pytest.importorskip("sklearn")
    seq = np.arange(6, dtype=np.float32).reshape(3, 2)
    with pytest.raises(ValueError, match="frames"):
        peers.logistic([seq], [0], [seq], [0], features="pad_crop")


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------

@contextlib.contextmanager
def redirected(monkeypatch, bench, out_dir):
    for name in ("JSON_PATH", "PNG_PATH"):
        monkeypatch.setattr(bench, name, str(out_dir / name))
    monkeypatch.setattr(bench, "RESULTS_DIR", str(out_dir / "results"))
    monkeypatch.setattr(bench.common, "RESULTS_DIR", str(out_dir / "results"))
    monkeypatch.setattr(bench.common, "README_PATH", str(out_dir / "README.md"))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield printed
    finally:
        sys.modules.pop("bench_step", None)
        sys.modules.pop("apps_peers", None)


def test_quick_digits_run_reports_positive_finite_numbers(monkeypatch, tmp_path):
    bench = load_benchmark(monkeypatch, "bench_apps")
    with redirected(monkeypatch, bench, tmp_path) as printed:
        result = bench.main(["--quick", "--no-write", "--apps", "digits"])
    assert list(tmp_path.iterdir()) == []                 # --no-write
    assert list(result["apps"]) == ["digits"]
    rows = result["apps"]["digits"]["rows"]
    expected = {key for app, key, family, _ in bench.CONTENDERS
                if app == "digits" and result["status"][family][0]}
    assert set(rows) == expected and "rtrl_edge (digits defaults)" in rows
    for key, row in rows.items():
        assert "error" not in row, (key, row)
        assert 0.5 < row["accuracy"] <= 1.0, key
        for block in ("inference_per_sequence", "inference_per_frame"):
            assert positive_finite(row[block]["median_us"]), (key, block)
        rss = row["rss"]
        assert 0 < rss["before_import"] <= rss["after_import"] <= rss["at_end"], key
    out = printed.getvalue()
    assert "rtrl_edge (digits defaults)" in out and "Environment:" in out


def test_a_missing_peer_is_skipped_with_a_message(monkeypatch, tmp_path):
    bench = load_benchmark(monkeypatch, "bench_apps")
    real = bench.peer_status

    def without_peers():
        status = real()
        status[bench.TORCH] = (False, "skipped: PyTorch not installed (test)")
        status[bench.SKLEARN] = (False, "skipped: scikit-learn not installed (test)")
        return status

    monkeypatch.setattr(bench, "peer_status", without_peers)
    with redirected(monkeypatch, bench, tmp_path) as printed:
        result = bench.main(["--quick", "--no-write", "--apps", "digits"])
    assert list(result["apps"]["digits"]["rows"]) == ["rtrl_edge (digits defaults)"]
    assert result["skipped"] == ["skipped: PyTorch not installed (test)",
                                 "skipped: scikit-learn not installed (test)"]
    assert "skipped: PyTorch not installed (test)" in printed.getvalue()


def test_sequences_survive_the_trip_to_the_child(monkeypatch):
    bench = load_benchmark(monkeypatch, "bench_apps")
    rng = np.random.default_rng(3)
    seqs, _ = toy_sequences(rng, 5)
    frames, lengths = bench._flatten(seqs)
    back = bench._sequences(dict(x_train=frames, len_train=lengths), "train")
    assert len(back) == 5
    for a, b in zip(seqs, back):
        np.testing.assert_array_equal(a, b)
    images = rng.standard_normal((4, 8, 8)).astype(np.float32)
    assert [s.shape for s in bench._sequences(dict(x_test=images), "test")] == [(8, 8)] * 4


def test_tune_text_prints_one_row_per_cell(monkeypatch, capsys):
    pytest.importorskip("torch")
    bench = load_benchmark(monkeypatch, "bench_apps")
    monkeypatch.setattr(bench, "TUNE_CHARS", 300)
    monkeypatch.setattr(bench, "TUNE_LRS", (1e-3, 1e-2))
    try:
        out = bench.main(["--tune-text"])
    finally:
        sys.modules.pop("bench_step", None)
        sys.modules.pop("apps_peers", None)
    assert set(out) == {"gru", "rnn"}
    for by_lr in out.values():
        assert set(by_lr) == {1e-3, 1e-2} and all(positive_finite(v) for v in by_lr.values())
    printed = capsys.readouterr().out
    assert "| gru |" in printed and "| rnn |" in printed and "**" in printed
