"""rtrl_edge.apps.text and `rtrl-edge demo text`: next-character prediction
in one online pass, scored as a compression rate."""
import argparse
import bz2
import gzip
import hashlib
import io
import json
import lzma
import math

import numpy as np
import pytest

from rtrl_edge.apps import text
from rtrl_edge.cli import demo_text

SMALL = dict(cell="gru", learner="snap1", hidden=32, lr=3e-3, optimizer="adam",
             window=None, seed=0, clip=None)


@pytest.fixture(scope="module")
def shakespeare():
    return text.load_text()


@pytest.fixture(scope="module")
def small_run(shakespeare):
    return text.run(shakespeare[:20_000], **SMALL)


def parse(argv):
    parser = argparse.ArgumentParser(prog="rtrl-edge demo")
    demo_text.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["text", *argv])


# -- data and baselines ------------------------------------------------------

def test_shipped_text_is_tinyshakespeare(shakespeare):
    assert len(shakespeare) == 1_115_394
    assert hashlib.sha256(shakespeare).hexdigest() == (
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")
    assert len(text.Vocab.of(shakespeare)) == 65
    assert shakespeare.startswith(b"First Citizen:\n")


def test_load_text_from_a_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"to be or not to be")
    assert text.load_text(path) == b"to be or not to be"
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        text.load_text(empty)
    with pytest.raises(FileNotFoundError):
        text.load_text(tmp_path / "missing.txt")


def test_compression_bpc_is_the_compressors_size(shakespeare):
    data = shakespeare[:20_000]
    got = text.compression_bpc(data)
    assert set(got) == {"gzip_bpc", "bzip2_bpc", "xz_bpc"}
    assert got["bzip2_bpc"] == 8 * len(bz2.compress(data, 9)) / len(data)
    assert got["xz_bpc"] == 8 * len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) \
        / len(data)
    assert abs(got["gzip_bpc"] - 8 * len(gzip.compress(data, 9)) / len(data)) < 1e-9
    # English text: every compressor well under 8 bits, gzip the weakest
    assert 2.0 < got["bzip2_bpc"] < got["xz_bpc"] < got["gzip_bpc"] < 4.5
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    assert all(7.9 < v < 8.3 for v in text.compression_bpc(noise).values())


def test_unigram_bpc_matches_a_plain_loop():
    data = b"abracadabra, abracadabra!\n" * 7
    V = len(set(data))
    counts, bits = {}, 256.0
    for seen, byte in enumerate(data):
        bits -= math.log2((counts.get(byte, 0) + 1) / (seen + V))
        counts[byte] = counts.get(byte, 0) + 1
    assert text.unigram_bpc(data) == pytest.approx(bits / len(data), rel=1e-12)
    with pytest.raises(ValueError, match="empty"):
        text.unigram_bpc(b"")


# -- the online pass ---------------------------------------------------------

def test_run_beats_the_unigram_model(shakespeare, small_run):
    data = shakespeare[:20_000]
    r = small_run
    unigram = text.unigram_bpc(data)
    assert r.chars == 20_000 and len(r.vocab) == len(set(data))
    assert np.isfinite(r.bpc) and np.all(np.isfinite(r.nats))
    assert r.bpc < unigram - 0.5, (r.bpc, unigram)
    # bpc is the code length: the header plus every step's cross-entropy in bits
    assert r.bpc == pytest.approx((256 + r.nats.sum() / math.log(2)) / 20_000, rel=1e-12)
    assert r.curve_chars[-1] == 20_000 and len(r.curve_bpc) == len(r.curve_chars) == 100
    assert r.curve_bpc[-10:].mean() < r.curve_bpc[:10].mean()     # it learns
    assert 0 < r.us_per_char <= r.us_per_char_mean * 10
    assert r.memory_bytes == r.net.memory_bytes
    assert r.divergence_recoveries == 0


def test_each_character_is_predicted_before_it_is_learnt(shakespeare, small_run):
    data = shakespeare[:20_000]
    vocab = text.Vocab.of(data)
    fresh = text.make_net(len(vocab), **{k: v for k, v in SMALL.items()})
    p = fresh.predict(np.zeros(len(vocab), dtype=np.float32))   # the start input
    first = vocab.encode(data[:1])[0]
    assert small_run.nats[0] == pytest.approx(-math.log(p[first]), rel=1e-5)


def test_run_is_reproducible_and_reports_progress(shakespeare):
    seen = []
    a = text.run(shakespeare[:2_000], **SMALL, progress=lambda *x: seen.append(x))
    b = text.run(shakespeare[:2_000], **SMALL)
    assert a.bpc == b.bpc
    assert [s[0] for s in seen] == list(range(200, 2_001, 200))
    assert all(s[1] == 2_000 and np.isfinite(s[2]) and s[3] > 0 for s in seen)
    assert seen[-1][2] == pytest.approx(a.bpc, rel=1e-9)


def test_run_rejects_what_it_cannot_learn():
    with pytest.raises(ValueError, match="empty"):
        text.run(b"", **SMALL)
    with pytest.raises(ValueError, match="single distinct byte"):
        text.run(b"aaaa", **SMALL)
    with pytest.raises(ValueError, match="learner"):
        text.run(b"abab", **dict(SMALL, learner="nope"))


# -- sampling ----------------------------------------------------------------

def test_sample_draws_from_the_vocabulary_and_leaves_the_net_alone(small_run):
    net, vocab = small_run.net, small_run.vocab
    before = net.snapshot()
    s = text.sample(net, vocab, 300, temperature=0.8, seed=1)
    assert isinstance(s, str) and len(s) == 300
    assert set(s.encode("latin-1")) <= set(vocab.symbols)
    after = net.snapshot()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert text.sample(net, vocab, 300, temperature=0.8, seed=1) == s
    assert text.sample(net, vocab.symbols, 0) == ""
    for bad in (dict(temperature=0), dict(temperature=float("nan")), dict(prime=b""),
                dict(prime=b"\x00")):
        with pytest.raises(ValueError):
            text.sample(net, vocab, 10, **bad)


# -- the command line --------------------------------------------------------

def test_cli_runs_and_writes_the_summary(tmp_path):
    summary = tmp_path / "s.json"
    summary.write_text("old")                       # an output file: replaced
    out = io.StringIO()
    args = parse(["--max-chars", "3000", "--hidden", "16", "--lr", "3e-3",
                  "--summary-json", str(summary),
                  "--sample-chars", "120"])
    assert demo_text.main(args, out=out) == 0
    got = json.loads(summary.read_text())
    for key in ("bpc", "chars", "gzip_bpc", "bzip2_bpc", "xz_bpc", "unigram_bpc",
                "us_per_char", "memory_bytes"):
        assert key in got, key
    assert got["chars"] == 3000 and np.isfinite(got["bpc"]) and got["memory_bytes"] > 0
    assert got["bpc"] < got["unigram_bpc"]
    printed = out.getvalue()
    for needle in ("gzip -9", "bzip2 -9", "xz -9e", "adaptive unigram", "us/char",
                   "memory_bytes", "sampled from the trained model", "public domain"):
        assert needle in printed, needle
    assert printed.count("running") == 10           # a progress line every 10 %


def test_cli_quiet_prints_the_summary_only(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"the quick brown fox jumps over the lazy dog. " * 20)
    out = io.StringIO()
    assert demo_text.main(parse(["--text", str(path), "--hidden", "8", "--quiet"]),
                          out=out) == 0
    printed = out.getvalue()
    assert "running" not in printed and "sampled" not in printed
    assert "900 of 900 characters" in printed


@pytest.mark.parametrize("argv, message", [
    (["--text", "{tmp}/empty.txt"], "is empty"),
    (["--text", "{tmp}/missing.txt"], "no such file"),
    (["--text", "{tmp}"], "cannot read"),
    (["--text", "{tmp}/same.txt"], "single distinct byte"),
    (["--learner", "snap1", "--window", "8"], "--window applies to --learner tbptt"),
    (["--cell", "diag"], "--cell diag"),
])
def test_cli_errors_are_one_line(tmp_path, argv, message):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "same.txt").write_bytes(b"zzzz")
    summary = tmp_path / "s.json"
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--summary-json", str(summary),
                                                      "--max-chars", "50"]
    out = io.StringIO()
    assert demo_text.main(parse(argv), out=out) == 2
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtrl-edge demo text: ")
    assert message in lines[0]
    assert not summary.exists()


def test_cli_rejects_max_chars_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["--max-chars", "0"])
    assert exc.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    args = parse([])
    args.max_chars = 0                               # built by hand, not parsed
    out = io.StringIO()
    assert demo_text.main(args, out=out) == 2
    assert out.getvalue() == "rtrl-edge demo text: --max-chars must be a positive integer, " \
                             "got 0\n"
