"""`rtrl_edge.apps.speech` and `rtrl-edge demo speech`: the streaming front
end against a whole-signal numpy reference, the G.711 codec, the shipped FSDD
copy, a short training run, and the command line."""
import argparse
import io
import json
import lzma
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from rtrl_edge.apps import speech
from rtrl_edge.cli import demo_speech

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "benchmarks" / "data" / "fsdd"
ORIGINAL = REPO.parent / "shared" / "data" / "fsdd" / "recordings"   # the WAVs, if present


@pytest.fixture(scope="module")
def recordings():
    return speech.load_fsdd(SHIPPED)


def _signal(n=4000, seed=0):
    """A chirp with noise, int16, loud enough to use most of the range."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000
    x = 12000 * np.sin(2 * np.pi * (200 + 900 * t) * t) + 800 * rng.standard_normal(n)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


# -- the front end -------------------------------------------------------------

def _reference(audio, n_mels=32, n_mfcc=None, win=200, hop=80, n_fft=256, sr=8000,
               floor=1e-6):
    """The same features computed the plain way, in float64, on the whole
    signal at once: strided frames, FFT, triangles built band by band, log,
    DCT-II as an explicit cosine sum."""
    x = np.asarray(audio, np.float64) / 32768
    n_frames = 1 + (len(x) - win) // hop
    frames = np.stack([x[t * hop:t * hop + win] for t in range(n_frames)])
    hann = np.array([0.5 - 0.5 * np.cos(2 * np.pi * i / win) for i in range(win)])
    power = np.abs(np.fft.rfft(frames * hann, n=n_fft, axis=1)) ** 2
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)
    edges = [inv(mel(0) + (mel(sr / 2) - mel(0)) * k / (n_mels + 1)) for k in range(n_mels + 2)]
    bins = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((n_mels, len(bins)))
    for b in range(n_mels):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        for j, f in enumerate(bins):
            if lo < f <= mid:
                fb[b, j] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                fb[b, j] = (hi - f) / (hi - mid)
    logmel = np.log(power @ fb.T + floor)
    if n_mfcc is None:
        return logmel
    out = np.zeros((n_frames, n_mfcc))
    for k in range(n_mfcc):
        scale = np.sqrt(1 / n_mels) if k == 0 else np.sqrt(2 / n_mels)
        for n in range(n_mels):
            out[:, k] += scale * logmel[:, n] * np.cos(np.pi * k * (n + 0.5) / n_mels)
    return out


@pytest.mark.parametrize("n_mels,n_mfcc", [(32, None), (20, None), (32, 20), (40, 13)])
def test_frontend_matches_a_whole_signal_numpy_reference(n_mels, n_mfcc):
    audio = _signal()
    got = speech.LogMel(n_mels=n_mels, n_mfcc=n_mfcc).transform(audio)
    want = _reference(audio, n_mels=n_mels, n_mfcc=n_mfcc)
    assert got.dtype == np.float32 and got.shape == want.shape == (48, n_mfcc or n_mels)
    # float32 output of float64 work: relative 1e-6 of values of magnitude ~10
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_frontend_on_a_real_recording(recordings):
    audio = recordings[123].audio
    np.testing.assert_allclose(speech.LogMel(n_mfcc=20).transform(audio),
                               _reference(audio, n_mfcc=20), rtol=1e-5, atol=2e-5)


def test_chunk_size_does_not_change_the_frames(recordings):
    audio = recordings[7].audio
    lm = speech.LogMel(n_mfcc=20)
    whole = lm.transform(audio)
    assert len(whole) == 1 + (len(audio) - 200) // 80
    for size in (1, 37, 80, 1000):
        lm.reset()
        parts = []
        for i in range(0, len(audio), size):
            chunk = audio[i:i + size]
            k = lm.frames_for(len(chunk))
            parts.append(lm.push(chunk))
            assert len(parts[-1]) == k
        assert np.array_equal(np.concatenate(parts), whole), size
    # floats in [-1, 1) give the same frames as the int16 they scale
    assert np.array_equal(lm.transform(audio / 32768.0), whole)


def test_reset_starts_a_new_utterance_and_out_is_filled_in_place():
    a, b = _signal(seed=1), _signal(3000, seed=2)
    lm = speech.LogMel()
    lm.push(a[:1234])
    lm.reset()
    buf = np.full((100, lm.n_features), np.nan, dtype=np.float32)
    got = lm.push(b, out=buf)
    assert got.base is buf and np.array_equal(got, speech.LogMel().transform(b))
    assert np.isnan(buf[len(got):]).all()
    assert len(lm.push(np.zeros(0, np.int16))) == 0


@pytest.mark.parametrize("chunk,out,message", [
    (np.zeros((2, 80), np.int16), None, "1-D chunk"),
    (np.zeros(300, np.int32), None, "int16 or float samples"),
    (np.zeros(300, np.int16), np.zeros((1, 32), np.float32), "out must be float32 of shape"),
    (np.zeros(300, np.int16), np.zeros((5, 32), np.float64), "out must be float32 of shape"),
])
def test_bad_pushes_raise_and_change_nothing(chunk, out, message):
    lm = speech.LogMel()
    lm.push(_signal(150))                      # part of a frame in the ring
    before = (lm._ring.copy(), lm._write, lm._until, lm.frames)
    with pytest.raises(ValueError, match=message):
        lm.push(chunk, out=out)
    assert np.array_equal(lm._ring, before[0])
    assert (lm._write, lm._until, lm.frames) == before[1:]


@pytest.mark.parametrize("kwargs,message", [
    (dict(hop=0), "hop <= win"), (dict(win=300), "win <= n_fft"),
    (dict(n_mfcc=40), "n_mfcc <= n_mels"), (dict(f_max=5000), "f_max <= sample_rate/2"),
    (dict(floor=0), "floor must be > 0"),
])
def test_bad_frontend_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        speech.LogMel(**kwargs)


# -- G.711 mu-law ---------------------------------------------------------------

def test_mulaw_round_trip_is_within_its_quantisation_error():
    x = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)
    u = speech.mulaw_encode(x)
    back = speech.mulaw_decode(u).astype(np.int64)
    assert u.dtype == np.uint8 and back.dtype == np.int64
    assert np.all(np.abs(back - x) <= (np.abs(x.astype(np.int64)) + 132) / 32)
    assert np.all(np.diff(back) >= 0)                             # monotonic
    codes = np.arange(256, dtype=np.uint8)                        # decoded values are fixed points
    decoded = speech.mulaw_decode(codes)
    assert np.array_equal(speech.mulaw_decode(speech.mulaw_encode(decoded)), decoded)
    # the G.711 reference points: 0 -> 0xFF, full scale -> 0x80 / 0x00
    ends = np.array([0, 32767, -32768], np.int16)
    assert speech.mulaw_encode(ends).tolist() == [0xFF, 0x80, 0x00]
    with pytest.raises(ValueError, match="int16"):
        speech.mulaw_encode(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="uint8"):
        speech.mulaw_decode(np.zeros(3, np.int16))


# -- the data -------------------------------------------------------------------

def test_the_shipped_copy_has_every_recording(recordings):
    assert len(recordings) == 3000
    assert sorted({r.speaker for r in recordings}) == [
        "george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    assert sorted({r.digit for r in recordings}) == list(range(10))
    keys = {(r.digit, r.speaker, r.index) for r in recordings}
    assert len(keys) == 3000 and {k[2] for k in keys} == set(range(50))
    assert all(r.audio.dtype == np.int16 and len(r.audio) >= 1000 for r in recordings)
    train, test = speech.official_split(recordings)
    assert (len(train), len(test)) == (2700, 300)
    assert all(r.index < 5 for r in test) and all(r.index >= 5 for r in train)
    folds = speech.speaker_folds(recordings)
    assert [(s, len(tr), len(te)) for s, tr, te in folds][:1] == [("george", 2500, 500)]
    assert all({r.speaker for r in te} == {s} and s not in {r.speaker for r in tr}
               for s, tr, te in folds)
    readme = SHIPPED / "README.md"                            # the licence travels with it
    assert readme.is_file() and "CC BY-SA 4.0" in readme.read_text()


@pytest.mark.skipif(not (ORIGINAL / "7_theo_3.wav").is_file(),
                    reason="the original FSDD WAV files are not beside the project")
def test_the_shipped_copy_is_the_original_within_mulaw_error(recordings):
    rate, original = speech.read_wav(ORIGINAL / "7_theo_3.wav")
    shipped = next(r.audio for r in recordings if (r.digit, r.speaker, r.index) == (7, "theo", 3))
    assert rate == 8000 and len(shipped) == len(original)
    x = original.astype(np.int64)
    assert np.all(np.abs(shipped - x) <= (np.abs(x) + 132) / 32)
    assert np.array_equal(shipped, speech.mulaw_decode(speech.mulaw_encode(original)))


def _write_wav(path, samples, rate=8000, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).astype("<i2" if width == 2 else "u1").tobytes())


def test_a_folder_of_wavs_loads_exactly(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    clips = {(3, "ann", 4): _signal(900, 1), (0, "bob", 12): _signal(1200, 2)}
    for (d, s, i), audio in clips.items():
        _write_wav(folder / f"{d}_{s}_{i}.wav", audio)
    (folder / "notes.wav").write_bytes(b"ignored: not digit_speaker_index")
    got = speech.load_fsdd(tmp_path)                          # the parent works too
    assert [(r.digit, r.speaker, r.index) for r in got] == [(0, "bob", 12), (3, "ann", 4)]
    for r in got:
        assert np.array_equal(r.audio, clips[(r.digit, r.speaker, r.index)])
    _write_wav(folder / "5_cat_1.wav", _signal(500), rate=16000)
    with pytest.raises(ValueError, match="5_cat_1.wav: expected 8000 Hz, got 16000 Hz"):
        speech.load_fsdd(folder)


def test_where_the_recordings_are_looked_for(tmp_path, monkeypatch):
    wavs = tmp_path / "mine"
    wavs.mkdir()
    _write_wav(wavs / "1_x_0.wav", _signal(400))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(speech, "_repo_root", lambda: tmp_path / "no-checkout")
    monkeypatch.setenv("RTRL_EDGE_FSDD", str(wavs))
    assert speech.find_fsdd() == wavs                          # $RTRL_EDGE_FSDD
    monkeypatch.delenv("RTRL_EDGE_FSDD")
    with pytest.raises(FileNotFoundError, match="free-spoken-digit-dataset") as exc:
        speech.find_fsdd()
    assert "\n" not in str(exc.value) and "--data DIR" in str(exc.value)
    cwd_copy = elsewhere / "benchmarks" / "data" / "fsdd"      # then ./benchmarks/data/fsdd
    cwd_copy.mkdir(parents=True)
    for name in (speech.INDEX_FILE, speech.AUDIO_FILE):
        (cwd_copy / name).write_bytes((SHIPPED / name).read_bytes())
    assert speech.find_fsdd() == cwd_copy
    monkeypatch.setattr(speech, "_repo_root", lambda: REPO)    # then the checkout's
    monkeypatch.chdir(tmp_path)
    assert speech.find_fsdd() == SHIPPED
    with pytest.raises(FileNotFoundError, match="no FSDD recordings there"):
        speech.find_fsdd(elsewhere)                            # --data is not searched past


def test_a_damaged_index_is_named_by_line(tmp_path):
    (tmp_path / speech.AUDIO_FILE).write_bytes(lzma.compress(bytes(range(256)) * 4))
    (tmp_path / speech.INDEX_FILE).write_text(
        "digit,speaker,index,offset,length\n0,a,0,0,512\n1,b,0,512,x\n")
    with pytest.raises(ValueError, match=r"line 3: expected digit,speaker"):
        speech.load_fsdd(tmp_path)
    (tmp_path / speech.INDEX_FILE).write_text(
        "digit,speaker,index,offset,length\n0,a,0,1000,100\n")
    with pytest.raises(ValueError, match=r"line 2: samples 1000..1100 outside the 1024"):
        speech.load_fsdd(tmp_path)


# -- learning -------------------------------------------------------------------

def test_a_short_training_run_beats_chance_by_far(recordings):
    """300 training and 100 held-out recordings, a 32-unit GRU, 4 epochs:
    measured 0.77 with seed 0 (0.70-0.85 over seeds 0-3); chance is 0.1."""
    train, test = speech.official_split(recordings)
    rng = np.random.default_rng(0)
    tr = [train[i] for i in rng.choice(len(train), 300, replace=False)]
    te = [test[i] for i in rng.choice(len(test), 100, replace=False)]
    xs = speech.features(tr + te)
    result = speech.train_and_evaluate(xs[:300], [r.digit for r in tr], xs[300:],
                                       [r.digit for r in te], epochs=4, seed=0, hidden=32)
    assert result.accuracy > 0.5
    assert result.epoch_accuracy[-1] > result.epoch_accuracy[0]
    assert result.net.config["window"] == max(len(x) for x in xs[:300])    # exact tbptt


# -- the command line -------------------------------------------------------------

def _main(*argv):
    parser = argparse.ArgumentParser(prog="rtrl-edge demo")
    demo_speech.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["speech", *argv])
    out = io.StringIO()
    return args.func(args, out=out), out.getvalue()


def test_cli_quick_run_writes_the_summary(tmp_path):
    path = tmp_path / "summary.json"
    code, text = _main("--data", str(SHIPPED), "--max-utterances", "80", "--epochs", "2",
                       "--hidden", "16", "--loso", "--summary-json", str(path))
    assert code == 0, text
    summary = json.loads(path.read_text())
    assert {"test_accuracy", "frames", "us_per_frame", "loso_accuracy"} <= set(summary)
    assert 0 <= summary["test_accuracy"] <= 1 and summary["test_recordings"] == 8
    assert summary["frames"] > 80 * 20
    parts = summary["us_per_frame_parts"]
    assert set(parts) >= {"frontend", "model_learn", "model_predict"}
    assert summary["us_per_frame"] == pytest.approx(parts["frontend"] + parts["model_learn"])
    assert len(summary["loso_per_speaker"]) == 6
    assert "epoch   2/2" in text and "test accuracy" in text and "true \\ predicted" in text
    assert "leave-one-speaker-out accuracy" in text and "CC BY-SA 4.0" in text


@pytest.mark.parametrize("argv,message", [
    (["--data", "/no/such/folder"], "--data /no/such/folder: no such folder"),
    (["--learner", "snap1", "--window", "9"], "--window applies to --learner tbptt only"),
    (["--mfcc", "40"], "--mfcc <= --mels"),
    (["--max-utterances", "1"], "--max-utterances must be at least 2"),
    (["--hidden", "100000", "--learner", "rtrl"], "needs at least"),
    (["--cell", "diag"], "cell='diag' is trained by its exact traces"),
])
def test_cli_errors_are_one_line(argv, message):
    code, text = _main(*argv)
    assert code == 2
    assert text.count("\n") == 1 and message in text and text.startswith("rtrl-edge demo speech: ")


def test_cli_data_without_recordings_is_one_line(tmp_path):
    code, text = _main("--data", str(tmp_path))
    assert code == 2 and text.count("\n") == 1 and "no FSDD recordings there" in text


def test_cli_plot_without_matplotlib_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import fails
    code, text = _main("--plot", str(tmp_path / "c.png"))
    assert code == 2 and text.count("\n") == 1 and "--plot needs matplotlib" in text
