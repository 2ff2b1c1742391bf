"""The three applications of ``rtrl_edge.apps`` beside the tools people use
for them: the same data, the same protocol, one run (issue 14).

Every contender runs alone in a fresh Python process (``child`` below), one
after the other, never two at once (they time things): the process loads
numpy and the data (prepared once by this script, from the applications' own
loaders, outside every timer), records its peak RSS, imports its tool,
trains, evaluates, and records its peak RSS again.  Peak RSS is VmHWM of
/proc/self/status (getrusage's ru_maxrss of a forked child also counts the
parent: see ``bench_peers.py``).  torch runs on one thread, BLAS too
(``bench_step`` pins the thread variables, which the children inherit).

Text: next-character prediction on tinyshakespeare (``apps.text``), bits
per character of one online pass, each byte predicted before it is learnt,
accounted as ``text.run`` does (a 256-bit vocabulary header; byte 0
predicted from an all-zero input).  ``--quick``: the first 50,000 bytes;
full: the whole file (1,115,394 bytes; ``TEXT_FULL_CHARS``), about 15 of
the full run's 20 minutes on 2 cores, most of it PyTorch's.

  rtrl_edge       ``text.run(data)`` with ``text.DEFAULTS``;
  PyTorch GRU     ``apps_peers.torch_text(cell="gru")``: ``nn.GRU`` of the same
                  size with an ``nn.Linear`` readout, one-hot inputs, online
                  truncated BPTT over chunks of k = 32 bytes in order, the
                  state carried across chunks (detached), Adam, the gradient
                  clipped to norm 1 as rtrl_edge's; one pass; each chunk's
                  predictions come from its forward pass before its update.
                  Learning rate from {1e-3, 3e-3, 1e-2, 3e-2} on the first
                  100,000 bytes (``TORCH_TEXT_LR``; rtrl_edge's defaults were
                  chosen on the first 200,000);
  PyTorch RNN     the same with ``nn.RNN`` (tanh);
  gzip / bzip2 / xz   ``gzip -9``, ``bzip2 -9``, ``xz -9e`` on the same bytes
                  (Python's gzip, bz2 and lzma, as ``text.compression_bpc``);
  baseline        the adaptive unigram model (``text.unigram_bpc``).

Speech: FSDD spoken digits (``apps.speech``), the official split (takes 5-49
of every digit and speaker train, 0-4 test: 2,700 / 300), the features of
the application's streaming front end (``speech.make_frontend()``: 20 MFCCs
of 32 log-mel bands, 25 ms windows every 10 ms), computed once.

  rtrl_edge       ``speech.train_and_evaluate`` with ``speech.DEFAULTS``:
                  online, the label at each recording's last frame;
  PyTorch GRU     ``apps_peers.torch_gru_offline``: ``nn.GRU`` of the same
                  size trained offline, mini-batches of 32 padded and packed
                  recordings, Adam 3e-3, clip 1, ``SPEECH_EPOCHS`` epochs of
                  which the last quarter at 3e-4, inputs standardised on the
                  training frames: meant as an upper bound for any online
                  learner (every pass it likes; nothing chosen on the test
                  set: the last epoch's weights are scored);
  LogisticRegression  scikit-learn, after a StandardScaler, on fixed-length
                  vectors: each coefficient's mean and standard deviation
                  over the recording (2 x 20 numbers), and the first
                  ``SPEECH_FRAMES`` = 64 frames, zero-padded (0.67 s: 95 % of
                  the recordings are no longer; 64 x 20 numbers).

Digits: the 8 x 8 digits read row by row (``apps.digits``), the
application's fixed split (1,347 / 450).

  rtrl_edge       ``digits.Config()``, trained by ``digits.train``;
  PyTorch GRU     as for speech, ``DIGITS_EPOCHS`` epochs;
  LogisticRegression  on the 64 pixels.

Per contender: accuracy or bits per character; latency per character, per
frame or per row (rtrl_edge: each ``step`` timed; PyTorch text: each chunk's
update over its length; the offline learners: an epoch's time over its
frames), and per sequence for inference (one sequence at a time, nothing
learnt); the state kept between samples (bytes); peak RSS of the fresh
process before importing the tool (numpy and the data), after importing it,
and at the end.

    python benchmarks/bench_apps.py                    # full run (~20 min on 2 cores)
    python benchmarks/bench_apps.py --quick --no-write  # smoke run (~2 min)
    python benchmarks/bench_apps.py --apps digits      # one application

PyTorch and scikit-learn are optional: their rows are skipped, with a
message, when they are missing (``pip install ".[peers]"``).  Writes
results/bench_apps.json, results/bench_apps.png (with matplotlib) and the
block between the bench_apps markers in benchmarks/README.md.  This is a
benchmark, not a test: nothing asserts on the numbers.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_step as common  # noqa: E402  (before numpy: it pins BLAS threads)

import argparse  # noqa: E402
import gzip  # noqa: E402
import bz2  # noqa: E402
import json  # noqa: E402
import lzma  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import apps_peers as peers  # noqa: E402

RESULTS_DIR = common.RESULTS_DIR
JSON_PATH = os.path.join(RESULTS_DIR, "bench_apps.json")
PNG_PATH = os.path.join(RESULTS_DIR, "bench_apps.png")
BEGIN, END = "<!-- bench_apps:begin -->", "<!-- bench_apps:end -->"
COMMAND = "python benchmarks/bench_apps.py"
APPS = ("text", "speech", "digits")

TEXT_QUICK_CHARS = 50_000
TEXT_FULL_CHARS = None       # the whole file
TORCH_CHUNK = 32
#: Adam's learning rate per PyTorch cell, chosen by ``--tune-text`` from
#: TUNE_LRS by bits per character on the first TUNE_CHARS bytes (one pass,
#: k = 32, clip 1), at the hidden size of ``text.DEFAULTS`` then,
#: TORCH_TEXT_TUNED_HIDDEN.  At 1e-3 / 3e-3 / 1e-2 / 3e-2, GRU: 3.212 /
#: 2.887 / 2.935 / 4.913; RNN: 3.391 / 3.369 / 4.968 / 6.566.  Rerun it when
#: the default's size changes (the report flags it).
TORCH_TEXT_LR = {"gru": 3e-3, "rnn": 3e-3}
TORCH_TEXT_TUNED_HIDDEN = 192
TUNE_CHARS, TUNE_LRS = 100_000, (1e-3, 3e-3, 1e-2, 3e-2)
TORCH_CLIP = 1.0
SPEECH_FRAMES = 64
SPEECH_EPOCHS, SPEECH_QUICK_EPOCHS = 20, 2
SPEECH_QUICK_STRIDE = 5       # --quick: every 5th training recording (540)
DIGITS_EPOCHS, DIGITS_QUICK_EPOCHS = 40, 4
OFFLINE = dict(batch=32, lr=3e-3, clip=TORCH_CLIP, seed=0)
CHILD_TIMEOUT_S = 1800

LIB, TORCH, SKLEARN, COMPRESSOR = "rtrl_edge", "PyTorch", "scikit-learn", "compressor"

#: (application, key, family, options)
CONTENDERS = (
    ("text", "rtrl_edge (text defaults)", LIB, {}),
    ("text", f"PyTorch nn.GRU, TBPTT k={TORCH_CHUNK}", TORCH, dict(cell="gru")),
    ("text", f"PyTorch nn.RNN, TBPTT k={TORCH_CHUNK}", TORCH, dict(cell="rnn")),
    ("text", "gzip -9", COMPRESSOR, dict(tool="gzip")),
    ("text", "bzip2 -9", COMPRESSOR, dict(tool="bzip2")),
    ("text", "xz -9e", COMPRESSOR, dict(tool="xz")),
    ("speech", "rtrl_edge (speech defaults)", LIB, {}),
    ("speech", "PyTorch nn.GRU, offline", TORCH, {}),
    ("speech", "LogisticRegression, mean+std", SKLEARN, dict(features="pooled")),
    ("speech", f"LogisticRegression, {SPEECH_FRAMES} frames", SKLEARN,
     dict(features="pad_crop", frames=SPEECH_FRAMES)),
    ("digits", "rtrl_edge (digits defaults)", LIB, {}),
    ("digits", "PyTorch nn.GRU, offline", TORCH, {}),
    ("digits", "LogisticRegression, 64 pixels", SKLEARN, dict(features="flat")),
)
BY_KEY = {(c[0], c[1]): c for c in CONTENDERS}
UNIT = {"text": "char", "speech": "frame", "digits": "row"}


# --------------------------------------------------------------------------
# the data, prepared once in this process (outside every timer)
# --------------------------------------------------------------------------

def _flatten(seqs):
    return (np.concatenate([np.asarray(s, np.float32) for s in seqs]),
            np.array([len(s) for s in seqs], np.int64))


def _unflatten(frames, lengths):
    return np.split(frames, np.cumsum(lengths)[:-1])


def prepare_text(quick):
    from rtrl_edge.apps import text
    whole = text.load_text()
    data = whole[:TEXT_QUICK_CHARS if quick else TEXT_FULL_CHARS]
    vocab = text.Vocab.of(data)
    return data, dict(chars=len(data), vocab=len(vocab), total_chars=len(whole),
                      unigram_bpc=text.unigram_bpc(data),
                      header_bits=text.VOCAB_HEADER_BITS, torch_lr=dict(TORCH_TEXT_LR),
                      torch_lr_tuned_at_hidden=TORCH_TEXT_TUNED_HIDDEN,
                      hidden=text.DEFAULTS["hidden"])


def prepare_speech(quick):
    """(arrays, setting): the front end's features of the official split."""
    from rtrl_edge.apps import classify, speech
    recordings = speech.load_fsdd()
    train, test = speech.official_split(recordings)
    if quick:
        train = train[::SPEECH_QUICK_STRIDE]
    frontend = speech.make_frontend()
    timing = classify.Timing()
    f_train = speech.features(train, frontend, timing)
    f_test = speech.features(test, frontend, timing)
    xtr, ltr = _flatten(f_train)
    xte, lte = _flatten(f_test)
    arrays = dict(x_train=xtr, len_train=ltr, y_train=np.array([r.digit for r in train]),
                  x_test=xte, len_test=lte, y_test=np.array([r.digit for r in test]))
    setting = dict(train=len(train), test=len(test), frontend=frontend.config,
                   features=frontend.n_features,
                   frames_per_recording=dict(zip(("min", "median", "p95", "max"), map(
                       float, np.percentile(np.r_[ltr, lte], [0, 50, 95, 100])))),
                   frontend_us_per_frame=timing.us_per_step,
                   pad_crop_frames=SPEECH_FRAMES,
                   pad_crop_covers=float(np.mean(np.r_[ltr, lte] <= SPEECH_FRAMES)))
    return arrays, setting


def prepare_digits(quick):
    from rtrl_edge.apps import digits
    images, labels = digits.load_digits()
    tr, te = digits.split()
    xs = digits.sequences(images)
    arrays = dict(x_train=xs[tr], y_train=labels[tr], x_test=xs[te], y_test=labels[te])
    return arrays, dict(train=len(tr), test=len(te), rows=digits.ROWS, cols=digits.COLS)


# --------------------------------------------------------------------------
# one contender, in a fresh process
# --------------------------------------------------------------------------

def peak_rss_bytes():
    """This process's peak RSS in bytes: VmHWM on Linux (bench_peers.py
    explains why not ru_maxrss), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def import_tool(family, app):
    if family == LIB:
        import importlib
        importlib.import_module(f"rtrl_edge.apps.{app}")
    elif family == TORCH:
        peers.import_torch()
    elif family == SKLEARN:
        peers.import_sklearn()


def _sequences(d, part):
    x = d[f"x_{part}"]
    if f"len_{part}" in d:
        return _unflatten(x, d[f"len_{part}"])
    return list(x)


def _library_classify(app, d, quick):
    """rtrl_edge's speech or digits default, on the prepared sequences."""
    from rtrl_edge.apps import classify
    train, test = _sequences(d, "train"), _sequences(d, "test")
    y_train, y_test = d["y_train"], d["y_test"]
    t_train, t_test = classify.Timing(), classify.Timing()
    t0 = time.perf_counter()
    if app == "digits":
        from rtrl_edge.apps import digits
        config = digits.Config()
        net = digits.make_net(config)
        net, accuracies = digits.train(net, np.stack(train), y_train, config, timing=t_train)
        settings = dict(vars(config), window=digits.ROWS if config.learner == "tbptt"
                        else None)
        train_s = time.perf_counter() - t0
        predicted = classify.predict_all(net, test, t_test)
    else:
        from rtrl_edge.apps import speech
        r = speech.train_and_evaluate(train, y_train, test, y_test, seed=0)
        train_s = time.perf_counter() - t0 - r.predict.ns / 1e9
        net, accuracies, predicted = r.net, r.epoch_accuracy, r.predicted
        t_train, t_test = r.learn, r.predict
        settings = dict(speech.DEFAULTS, window=net.config["window"],
                        normalize=net.config["normalize"])
    lengths = np.array([len(s) for s in test])
    per_frame = np.asarray(t_test.per_sequence)
    return dict(accuracy=float(np.mean(predicted == y_test)), predicted=predicted,
                train_accuracies=list(accuracies), train_s=train_s,
                train_us_per_frame=peers.percentiles(t_train.per_sequence),
                train_us_per_frame_mean=t_train.us_per_step,
                inference_per_sequence=peers.percentiles(per_frame * lengths),
                inference_per_frame=peers.percentiles(per_frame),
                state_bytes=int(net.memory_bytes),
                divergence_recoveries=int(net.stats["divergence_recoveries"]),
                settings=settings)


def run_text(family, options, data):
    from rtrl_edge.apps import text
    if family == LIB:
        r = text.run(data)
        p99 = getattr(r, "us_per_char_p99", None)
        return dict(bpc=r.bpc, chars=r.chars, wall_s=r.seconds,
                    latency_per_char=dict(median_us=r.us_per_char, mean_us=r.us_per_char_mean,
                                          p99_us=p99),
                    state_bytes=int(r.memory_bytes),
                    divergence_recoveries=int(r.divergence_recoveries),
                    curve=dict(chars=np.asarray(r.curve_chars).tolist(),
                               bpc=np.asarray(r.curve_bpc).tolist()),
                    settings=dict(text.DEFAULTS))
    if family == TORCH:
        vocab = text.Vocab.of(data)
        cell = options["cell"]
        return peers.torch_text(vocab.encode(data), len(vocab), cell=cell,
                                hidden=text.DEFAULTS["hidden"], chunk=TORCH_CHUNK,
                                lr=TORCH_TEXT_LR[cell], clip=TORCH_CLIP, seed=0,
                                header_bits=text.VOCAB_HEADER_BITS)
    compress = dict(gzip=lambda b: gzip.compress(b, compresslevel=9, mtime=0),
                    bzip2=lambda b: bz2.compress(b, compresslevel=9),
                    xz=lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME))
    t0 = time.perf_counter()
    out = compress[options["tool"]](data)
    wall = time.perf_counter() - t0
    return dict(bpc=8.0 * len(out) / len(data), chars=len(data), wall_s=wall,
                latency_per_char=dict(mean_us=wall * 1e6 / len(data)),
                compressed_bytes=len(out), settings=dict(options))


def run_classify(app, family, options, d, quick):
    if family == LIB:
        return _library_classify(app, d, quick)
    train, test = _sequences(d, "train"), _sequences(d, "test")
    if family == TORCH:
        hidden = library_hidden(app)
        epochs = {"speech": (SPEECH_EPOCHS, SPEECH_QUICK_EPOCHS),
                  "digits": (DIGITS_EPOCHS, DIGITS_QUICK_EPOCHS)}[app][bool(quick)]
        return peers.torch_gru_offline(train, d["y_train"], test, d["y_test"],
                                       n_classes=10, hidden=hidden, epochs=epochs,
                                       **OFFLINE)
    return peers.logistic(train, d["y_train"], test, d["y_test"], **options)


def library_hidden(app):
    """The hidden size of the application's default model."""
    if app == "digits":
        from rtrl_edge.apps import digits
        return digits.Config().n_hidden
    if app == "text":
        from rtrl_edge.apps import text
        return text.DEFAULTS["hidden"]
    from rtrl_edge.apps import speech
    return speech.DEFAULTS["hidden"]


def child(spec):
    """In a fresh process: load the data, import the tool, run; print the
    row as JSON on the last line of stdout."""
    app, key, quick = spec["app"], spec["key"], spec["quick"]
    _, _, family, options = BY_KEY[(app, key)]
    if app == "text":
        with open(spec["data"], "rb") as f:
            data = f.read()
    else:
        data = dict(np.load(spec["data"]))
    rss = dict(before_import=peak_rss_bytes())
    import_tool(family, app)
    rss["after_import"] = peak_rss_bytes()
    if app == "text":
        row = run_text(family, options, data)
    else:
        row = run_classify(app, family, options, data, quick)
    rss["at_end"] = peak_rss_bytes()
    row["rss"] = rss
    print(json.dumps(common.to_json(_jsonable(row))))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


CHILD = ("import sys, json; sys.path.insert(0, {here!r}); import bench_apps; "
         "bench_apps.child(json.loads(sys.argv[1]))")


def run_child(spec, env, cwd):
    """Run one contender in a fresh process; its row, or {"error": ...}."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", CHILD.format(here=HERE), json.dumps(spec)],
                           env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {CHILD_TIMEOUT_S} s")
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines() or ["?"]
        return dict(error=lines[-1][:300])
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - t0
    return row


# --------------------------------------------------------------------------
# the optional peers
# --------------------------------------------------------------------------

def peer_status():
    """{family: (available, versions or the skip message)}."""
    out = {}
    try:
        torch = peers.import_torch()
        out[TORCH] = (True, dict(torch=torch.__version__, threads=torch.get_num_threads()))
    except ImportError as exc:
        out[TORCH] = (False, f"skipped: PyTorch not installed ({peers.TORCH_INSTALL}) [{exc}]")
    try:
        import sklearn
        out[SKLEARN] = (True, dict(sklearn=sklearn.__version__))
    except ImportError as exc:
        out[SKLEARN] = (False, f"skipped: scikit-learn not installed "
                               f"({peers.SKLEARN_INSTALL}) [{exc}]")
    out[LIB] = out[COMPRESSOR] = (True, {})
    return out


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def _mib(b):
    return f"{b / 2**20:.1f}"


def _kib(b):
    return "—" if b is None else f"{b / 1024:,.1f}"


def _us(v):
    if v is None:
        return "—"
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def _rss(r):
    m = r.get("rss")
    if not m:
        return "—", "—"
    return _mib(m["at_end"]), f"+{_mib(m['after_import'] - m['before_import'])}"


def _settings_text(app, family, s):
    if family == LIB:
        keys = ("cell", "learner", "hidden", "n_hidden", "window", "optimizer", "lr", "clip",
                "epochs", "normalize")
        return ", ".join(f"{k} {s[k]}" if s[k] is not None else f"no {k}"
                         for k in keys if k in s and (k == "clip" or s[k] is not None))
    if family == TORCH and app == "text":
        return (f"hidden {s['hidden']}, k {s['chunk']}, Adam lr {s['lr']:g}, "
                f"clip {s['clip']:g}")
    if family == TORCH:
        return (f"hidden {s['hidden']}, {s['epochs']} epochs (last {s['anneal_epochs']} at "
                f"lr x {s['anneal_factor']:g}), batch {s['batch']}, Adam lr {s['lr']:g}, "
                f"clip {s['clip']:g}")
    if family == SKLEARN:
        return f"{s['dim']} features, C {s['C']:g}, {s['solver']}"
    return ""


def _errors(row, setting):
    return int(round((1.0 - row["accuracy"]) * setting["test"]))


def _ratio(row, lib, block):
    return f"{row[block]['median_us'] / lib[block]['median_us']:.2g}x"


def format_text(res):
    rows, setting = res["rows"], res["setting"]
    head = ("| contender | settings | bits/char | µs per char, median / p99 (mean) "
            "| state KiB | peak RSS MiB (import) | wall s |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|",
             f"| adaptive unigram (baseline) | Laplace counts | {setting['unigram_bpc']:.3f} "
             f"| — | — | — | — |"]
    for key, r in rows.items():
        if "error" in r:
            lines.append(f"| {key} | failed: {r['error']} | | | | | |")
            continue
        lat = r["latency_per_char"]
        lat_s = (f"{_us(lat.get('median_us'))} / {_us(lat.get('p99_us'))} "
                 f"({_us(lat.get('mean_us'))})" if "median_us" in lat
                 else f"— ({_us(lat['mean_us'])}, whole text at once)")
        peak, imp = _rss(r)
        lines.append(f"| {key} | {_settings_text('text', r['family'], r['settings'])} "
                     f"| {r['bpc']:.3f} | {lat_s} | {_kib(r.get('state_bytes'))} "
                     f"| {peak} ({imp}) | {r['wall_s']:.1f} |")
    lib = next((r for r in rows.values() if r["family"] == LIB and "error" not in r), None)
    ratios = [f"{key}: {_ratio(r, lib, 'latency_per_char')}" for key, r in rows.items()
              if lib is not None and r["family"] == TORCH and "error" not in r]
    tail = ("\n\nMedian time per character over rtrl_edge's: " + ", ".join(ratios) + "."
            if ratios else "")
    if setting["hidden"] != setting["torch_lr_tuned_at_hidden"]:
        tail += (f"\n\nNote: PyTorch's learning rates were chosen at hidden "
                 f"{setting['torch_lr_tuned_at_hidden']}, the text default is now "
                 f"{setting['hidden']}: rerun `{COMMAND} --tune-text` and update "
                 f"TORCH_TEXT_LR.")
    what = (f"the whole of tinyshakespeare ({setting['chars']:,} bytes"
            if setting["chars"] == setting["total_chars"] else
            f"the first {setting['chars']:,} bytes of tinyshakespeare "
            f"({100 * setting['chars'] / setting['total_chars']:.0f} % of "
            f"{setting['total_chars']:,}")
    return (f"Text: {what}; {setting['vocab']} distinct), one online pass; "
            f"bits per character include a {setting['header_bits']}-bit vocabulary header "
            f"(the compressors' own headers are in theirs):\n\n" + "\n".join(lines) + tail)


def format_classify(app, res):
    rows, setting = res["rows"], res["setting"]
    unit = UNIT[app]
    head = (f"| contender | settings | test accuracy (errors) | training µs per {unit}, median "
            f"| inference µs per sequence, median / p99 | inference µs per {unit} "
            f"| state KiB | peak RSS MiB (import) | training s |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, r in rows.items():
        if "error" in r:
            lines.append(f"| {key} | failed: {r['error']} | | | | | | | |")
            continue
        train_us = (r["train_us_per_frame"]["median_us"] if "train_us_per_frame" in r
                    else r.get("fit_us_per_frame"))
        fit = r.get("train_s", r.get("fit_s"))
        inf = r["inference_per_sequence"]
        peak, imp = _rss(r)
        lines.append(f"| {key} | {_settings_text(app, r['family'], r['settings'])} "
                     f"| {100 * r['accuracy']:.1f} % ({_errors(r, setting)}) | {_us(train_us)} "
                     f"| {_us(inf['median_us'])} / {_us(inf['p99_us'])} "
                     f"| {_us(r['inference_per_frame']['median_us'])} "
                     f"| {_kib(r.get('state_bytes', r.get('model_bytes')))} | {peak} ({imp}) "
                     f"| {fit:.1f} |")
    if app == "speech":
        fr = setting["frames_per_recording"]
        fe = setting["frontend"]
        what = (f"{fe['n_mfcc']} MFCCs of {fe['n_mels']} log-mel bands" if fe.get("n_mfcc")
                else f"{fe['n_mels']} log-mel bands")
        intro = (f"Speech: FSDD, official split ({setting['train']:,} training / "
                 f"{setting['test']} test recordings), {what} every "
                 f"{1000 * fe['hop'] / fe['sample_rate']:.0f} ms from the application's "
                 f"streaming front end "
                 f"({setting['frontend_us_per_frame']:.1f} µs per frame, the same for "
                 f"every contender and not in the figures below); {fr['median']:.0f} frames "
                 f"per recording (median; 95 % at most {fr['p95']:.0f}, max "
                 f"{fr['max']:.0f}); the {SPEECH_FRAMES}-frame vectors cover "
                 f"{100 * setting['pad_crop_covers']:.0f} % of recordings whole:")
    else:
        intro = (f"Digits: the 8 x 8 images read row by row, the application's split "
                 f"({setting['train']:,} training / {setting['test']} test):")
    lib = next((r for r in rows.values() if r["family"] == LIB and "error" not in r), None)
    ratios = [f"{key}: {_ratio(r, lib, 'inference_per_frame')}" for key, r in rows.items()
              if lib is not None and r["family"] != LIB and "error" not in r]
    tail = (f"\n\nMedian inference time per {unit} over rtrl_edge's: " + ", ".join(ratios)
            + "." if ratios else "")
    return intro + "\n\n" + "\n".join(lines) + tail


def format_setting(quick, elapsed):
    return (f"Each contender ran alone in a fresh process, one after the other, on one "
            f"thread, at seed 0.  Latency per {UNIT['text']} / {UNIT['speech']} / "
            f"{UNIT['digits']}: rtrl_edge, each step timed (learning included); PyTorch "
            f"text, each {TORCH_CHUNK}-byte chunk's update over its length; the offline "
            f"PyTorch GRU, an epoch's wall time over its frames; logistic regression, the "
            f"fit's time over the training frames; inference, one test sequence at a time, "
            f"nothing learnt.  rtrl_edge learns online, each prediction made before its "
            f"label is learnt; the offline PyTorch GRU is meant as an upper bound (many "
            f"epochs of mini-batches, the last quarter at a tenth of the learning rate, the "
            f"last epoch's weights scored); logistic regression is the classical baseline.  "
            f"State: bytes kept between samples (rtrl_edge's `memory_bytes`; PyTorch's "
            f"parameters, gradients, Adam's moments and carried state; the regression's "
            f"coefficients and scaler).  Peak RSS: VmHWM of the fresh process at the end, "
            f"and in parentheses what importing the tool added to numpy and the data.  "
            f"Run time {elapsed:.0f} s.")


def format_environment(env, status):
    parts = [", ".join(f"{k} {v}" for k, v in info.items())
             for fam, (ok, info) in status.items() if ok and isinstance(info, dict) and info]
    return common.format_environment(env) + ("; " + "; ".join(parts) if parts else "")


def readout(result):
    parts = []
    if result["quick"]:
        parts.append(f"Quick run (`--quick`): the first {TEXT_QUICK_CHARS:,} bytes of text; "
                     f"every {SPEECH_QUICK_STRIDE}th training recording; "
                     f"{SPEECH_QUICK_EPOCHS} / {DIGITS_QUICK_EPOCHS} offline epochs (speech / "
                     f"digits); indicative numbers only.")
    parts.append(format_setting(result["quick"], result["elapsed_s"]))
    for app in APPS:
        if app not in result["apps"]:
            continue
        res = result["apps"][app]
        parts.append(format_text(res) if app == "text" else format_classify(app, res))
    if result["skipped"]:
        parts.append("\n".join(result["skipped"]))
    parts.append("Environment: " + format_environment(result["environment"],
                                                      {k: tuple(v) for k, v in
                                                       result["status"].items()}))
    return "\n\n".join(parts)


def write_plot(result):
    """Score against latency, one panel per application, and the text nets'
    learning curves; returns the path, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)
    except ImportError:
        return None
    apps = [a for a in APPS if a in result["apps"]]
    curves = "text" in apps
    panels = len(apps) + curves
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 4.2), squeeze=False)
    colors = {LIB: "C0", TORCH: "C1", SKLEARN: "C2", COMPRESSOR: "C7"}
    for ax, app in zip(axes[0], apps):
        res = result["apps"][app]
        for key, r in res["rows"].items():
            if "error" in r:
                continue
            if app == "text":
                lat = r["latency_per_char"].get("median_us", r["latency_per_char"]["mean_us"])
                y = r["bpc"]
            else:
                lat = r["inference_per_frame"]["median_us"]
                y = 100 * r["accuracy"]
            ax.scatter(lat, y, color=colors[r["family"]], s=40)
            ax.annotate(key.replace("PyTorch ", "").replace("LogisticRegression", "LogReg"),
                        (lat, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if app == "text":
            ax.axhline(res["setting"]["unigram_bpc"], color="grey", linestyle="--",
                       linewidth=1)
            ax.annotate("adaptive unigram", (0.02, res["setting"]["unigram_bpc"]),
                        xycoords=("axes fraction", "data"), fontsize=6,
                        xytext=(0, -8), textcoords="offset points")
            ax.set_ylabel("bits per character (lower is better)")
            ax.set_xlabel("µs per character (learning), median")
        else:
            ax.set_ylabel("test accuracy %")
            ax.set_xlabel(f"inference µs per {UNIT[app]}, median")
        ax.set_title(app, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax = axes[0][-1]
        for key, r in result["apps"]["text"]["rows"].items():
            if "curve" in r:
                ax.plot(r["curve"]["chars"], r["curve"]["bpc"], color=colors[r["family"]],
                        linestyle="--" if "RNN" in key else "-", linewidth=1,
                        label=key.replace("PyTorch ", ""))
        ax.set_xlabel("characters read")
        ax.set_ylabel("bits per character of each segment")
        ax.set_title("text: learning curves (one pass)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"rtrl_edge (blue), PyTorch (orange), scikit-learn (green), compressors "
                 f"(grey) — {result['environment']['date'][:10]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(PNG_PATH, dpi=110)
    plt.close(fig)
    return PNG_PATH


SECTION_INTRO = f"""\
The three applications of `rtrl_edge.apps` (next-character prediction on
tinyshakespeare, FSDD spoken digits, 8 x 8 digits read row by row) beside the
tools people use for them, on the same data: PyTorch nets of the same size
trained the way their users train them (online truncated BPTT over 32-byte
chunks for text; offline mini-batch BPTT over many epochs for the classifiers,
meant as an upper bound for any online learner), scikit-learn's logistic
regression, and gzip / bzip2 / xz with the adaptive unigram model for text.
Bits per character or test accuracy, latency per character, frame or row (and
per sequence for inference), state bytes, and the peak RSS of a fresh process
per contender.  The peers are optional (skipped with a message when missing).
Regenerate (about 20 minutes on 2 cores, the whole text file; `--quick` about
2):

    pip install ".[peers]" --extra-index-url https://download.pytorch.org/whl/cpu
    {COMMAND}

"""


def write_readme(text):
    common.write_block(
        BEGIN, END, text,
        "## `bench_apps.py` -- the applications beside the tools people use\n\n"
        + SECTION_INTRO)


def tune_text():
    """Bits per character of each PyTorch text peer at each learning rate of
    TUNE_LRS on the first TUNE_CHARS bytes, in this process; prints a table
    and returns {cell: {lr: bpc}}."""
    common.import_library()
    from rtrl_edge.apps import text
    data = text.load_text()[:TUNE_CHARS]
    vocab = text.Vocab.of(data)
    codes = vocab.encode(data)
    out = {}
    for cell in sorted(TORCH_TEXT_LR):
        out[cell] = {}
        for lr in TUNE_LRS:
            r = peers.torch_text(codes, len(vocab), cell=cell, hidden=text.DEFAULTS["hidden"],
                                 chunk=TORCH_CHUNK, lr=lr, clip=TORCH_CLIP, seed=0,
                                 header_bits=text.VOCAB_HEADER_BITS)
            out[cell][lr] = r["bpc"]
            print(f"  {cell} lr {lr:g}: {r['bpc']:.3f} bpc", file=sys.stderr, flush=True)
    print("| cell | " + " | ".join(f"lr {lr:g}" for lr in TUNE_LRS) + " |")
    print("|---|" + "---:|" * len(TUNE_LRS))
    for cell, by_lr in out.items():
        best = min(by_lr, key=by_lr.get)
        print(f"| {cell} | " + " | ".join((f"**{v:.3f}**" if lr == best else f"{v:.3f}")
                                          for lr, v in by_lr.items()) + " |")
    return out


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: the first {TEXT_QUICK_CHARS:,} bytes of text, "
                        f"fewer training recordings and epochs")
    p.add_argument("--apps", nargs="+", choices=APPS, default=list(APPS),
                   help="applications to run (default: all three)")
    p.add_argument("--no-write", action="store_true",
                   help="print only; write no JSON, plot or README block")
    p.add_argument("--tune-text", action="store_true",
                   help=f"only choose PyTorch's text learning rates: each cell at each of "
                        f"{', '.join(map(str, TUNE_LRS))} on the first {TUNE_CHARS:,} bytes "
                        f"(TORCH_TEXT_LR holds the choice; minutes)")
    args = p.parse_args(argv)
    if args.tune_text:
        return tune_text()
    rtrl_edge = common.import_library()
    env = common.environment(rtrl_edge)
    status = peer_status()
    t0 = time.perf_counter()

    def progress(what):
        print(f"  {what}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    child_env = dict(os.environ)
    paths = [HERE, os.path.dirname(os.path.dirname(os.path.abspath(rtrl_edge.__file__)))]
    child_env["PYTHONPATH"] = os.pathsep.join(
        paths + [q for q in [child_env.get("PYTHONPATH")] if q])
    prepare = dict(text=prepare_text, speech=prepare_speech, digits=prepare_digits)
    apps, skipped = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for app in args.apps:
            data, setting = prepare[app](args.quick)
            path = os.path.join(tmp, f"{app}.{'bin' if app == 'text' else 'npz'}")
            if app == "text":
                with open(path, "wb") as f:
                    f.write(data)
            else:
                np.savez(path, **data)
            progress(f"{app}: data ready")
            rows = {}
            for a, key, family, _ in CONTENDERS:
                if a != app:
                    continue
                ok, info = status[family]
                if not ok:
                    if info not in skipped:
                        skipped.append(info)
                    continue
                row = run_child(dict(app=app, key=key, quick=args.quick, data=path),
                                child_env, tmp)
                row["family"] = family
                rows[key] = row
                if "error" in row:
                    if family == LIB:
                        raise SystemExit(f"{app}: {key} failed: {row['error']}")
                    skipped.append(f"skipped: {app}, {key}: failed ({row['error']})")
                progress(f"{app}: {key}")
            apps[app] = dict(setting=setting, rows=rows)
    elapsed = time.perf_counter() - t0
    given = list(argv) if argv is not None else sys.argv[1:]
    result = dict(benchmark="bench_apps", quick=bool(args.quick),
                  command=" ".join([COMMAND, *given]), environment=env,
                  status={fam: [ok, info] for fam, (ok, info) in status.items()},
                  setting=dict(text_chars=apps.get("text", {}).get("setting", {}).get("chars"),
                               torch_chunk=TORCH_CHUNK, torch_text_lr=TORCH_TEXT_LR,
                               torch_clip=TORCH_CLIP, offline=OFFLINE,
                               speech_epochs=SPEECH_QUICK_EPOCHS if args.quick
                               else SPEECH_EPOCHS,
                               digits_epochs=DIGITS_QUICK_EPOCHS if args.quick
                               else DIGITS_EPOCHS,
                               speech_frames=SPEECH_FRAMES),
                  apps=apps, skipped=skipped, elapsed_s=elapsed)
    text = readout(result)
    print(text)
    if not args.no_write:
        common.publish(_jsonable(common.to_json(result)), text, JSON_PATH, write_readme,
                       plot=lambda: write_plot(result),
                       alt="score against latency, per application")
    return result


if __name__ == "__main__":
    main()
