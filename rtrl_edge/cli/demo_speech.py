"""`rtrl-edge demo speech`: spoken digits (FSDD) through a streaming log-mel
front end, learnt online; test accuracy, confusion matrix, time per frame of
the front end and of the model, memory, and leave-one-speaker-out accuracy
with ``--loso``."""
from __future__ import annotations

import argparse
import importlib
import sys
import time

import numpy as np

from ..apps import classify, speech
from ..model import CELLS, LEARNERS, OPTIMIZERS
from ._common import (add_output_flags, json_safe, non_negative_int, plot_confusion,
                      positive_float, positive_int, write_json)
from ._preflight import check_output_path, check_sizes

_NAME = "rtrl-edge demo speech"
_D = speech.DEFAULTS


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "speech", help="recognise spoken digits (FSDD) from a streaming log-mel front end",
        description="Recognise the spoken digits of the Free Spoken Digit Dataset (3,000 "
                    "recordings of 6 speakers at 8 kHz; Jackson et al. 2018, CC BY-SA 4.0; a "
                    "compact mu-law copy ships in benchmarks/data/fsdd of the repository). "
                    "Each recording goes through a streaming front end (25 ms Hann windows "
                    "every 10 ms, 32 mel bands, 20 MFCCs) into an online RNN, one frame at a "
                    "time, the label given at the last frame. Online passes over the 2,700 "
                    "training recordings (takes 5-49), then the accuracy on the 300 test "
                    "recordings (takes 0-4) with nothing learnt. About half a minute on 2 "
                    "cores; --loso adds leave-one-speaker-out, six more trainings (1.5 to 3 "
                    "minutes more).")
    p.add_argument("--data", metavar="DIR",
                   help="the compact copy's folder or a folder of FSDD WAV files "
                        "(default: $RTRL_EDGE_FSDD, else benchmarks/data/fsdd here or in the "
                        "checkout the package runs from)")
    p.add_argument("--epochs", type=positive_int, default=_D["epochs"],
                   help="online passes over the training recordings (default: %(default)s)")
    p.add_argument("--hidden", type=positive_int, default=_D["hidden"],
                   help="hidden units (default: %(default)s)")
    p.add_argument("--cell", choices=CELLS, default=_D["cell"],
                   help="recurrent cell (default: %(default)s)")
    p.add_argument("--learner", choices=LEARNERS, default=_D["learner"],
                   help="sensitivity learner (default: %(default)s with a window covering the "
                        "longest training recording: the exact gradient of each label; rtrl "
                        "is exact too, at n^4 per frame; snap1 is cheaper and approximate)")
    p.add_argument("--window", type=positive_int,
                   help="truncation of --learner tbptt, in frames (default: the longest "
                        "training recording's frames)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=_D["optimizer"],
                   help="online optimiser (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=_D["lr"],
                   help="learning rate (default: %(default)s)")
    p.add_argument("--clip", type=positive_float, default=_D["clip"],
                   help="clip each update's gradient to this norm (default: %(default)s)")
    p.add_argument("--mels", type=positive_int, default=_D["n_mels"],
                   help="mel bands of the front end (default: %(default)s)")
    p.add_argument("--mfcc", type=non_negative_int, default=_D["n_mfcc"], metavar="N",
                   help="MFCCs kept (a DCT of the log-mel energies; default: %(default)s; "
                        "0 feeds the log-mel energies themselves)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="initialisation, shuffling and subset seed (default: 0)")
    p.add_argument("--max-utterances", type=positive_int, metavar="N",
                   help="a quick run on N recordings drawn at random (seeded), 9 in 10 from "
                        "the training takes and 1 in 10 from the test takes")
    p.add_argument("--loso", action="store_true",
                   help="also train and test once per speaker left out (six runs)")
    add_output_flags(p, "draw the test confusion matrix")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace, out=sys.stdout) -> int:
    """Load FSDD, extract features, train on the official split, test, report."""
    def say(*parts):
        print(*parts, file=out, flush=True)

    def fail(message, code=2):
        say(f"{_NAME}: {message}")
        return code

    started = time.perf_counter()
    for flag, path in (("--summary-json", args.summary_json), ("--plot", args.plot)):
        problem = check_output_path(path)
        if problem:
            return fail(f"{flag} {path}: {problem}")
    if args.plot:
        try:
            importlib.import_module("matplotlib")
        except ImportError:
            return fail("--plot needs matplotlib (pip install 'rtrl-edge[plot]')")
    if args.max_utterances is not None and args.max_utterances < 2:
        return fail("--max-utterances must be at least 2 (one to train, one to test)")
    if args.window is not None and args.learner != "tbptt":
        return fail(f"--window applies to --learner tbptt only, got --learner {args.learner}")
    n_mfcc = args.mfcc or None
    try:
        frontend = speech.make_frontend(n_mels=args.mels, n_mfcc=n_mfcc)
    except ValueError as exc:
        return fail(str(exc).replace("n_mfcc", "--mfcc").replace("n_mels", "--mels"))
    model = dict(hidden=args.hidden, cell=args.cell, learner=args.learner,
                 optimizer=args.optimizer, lr=args.lr, clip=args.clip, window=args.window)
    # sizes first: a model that cannot fit is refused before any work (tbptt's
    # window is not known yet; 256 frames = 2.6 s bounds FSDD's longest, 226)
    settings = dict(kind="plain", hidden=args.hidden, horizon=1, learner=args.learner,
                    cell=args.cell, window=args.window or 256, optimizer=args.optimizer,
                    rec_density=None)
    problem = check_sizes(settings, frontend.n_features, n_out=10)
    if problem:
        return fail(problem)
    try:     # a combination OnlineRNN refuses, before any work (window: any will do)
        speech.make_model(frontend.n_features, longest=1, seed=args.seed, **model)
    except ValueError as exc:
        return fail(str(exc))

    try:
        source = speech.find_fsdd(args.data)
        recordings = speech.load_fsdd(source)
    except (FileNotFoundError, ValueError, OSError) as exc:
        return fail(f"--data {exc}" if args.data is not None else str(exc))
    kind = ("compact mu-law copy" if (source / speech.INDEX_FILE).is_file()
            else "WAV files")
    train, test = speech.official_split(recordings)
    if args.max_utterances is not None:
        train, test = _subset(train, test, args.max_utterances, args.seed)
    used = train + test
    if not train or not test:
        return fail(f"{source}: the official split leaves {len(train)} training and "
                    f"{len(test)} test recordings; need at least one of each")
    speakers = sorted({r.speaker for r in used})
    say(f"{_NAME}: Free Spoken Digit Dataset, {len(recordings):,} recordings of "
        f"{len({r.speaker for r in recordings})} speakers at {speech.SAMPLE_RATE} Hz "
        f"({kind} in {source})")
    if args.max_utterances is not None:
        say(f"  --max-utterances {args.max_utterances}: a seeded random subset")
    say(f"  split: {len(train):,} training (takes 5-49) / {len(test):,} test (takes 0-4) "
        f"recordings")
    what = "log-mel energies" if n_mfcc is None else f"{n_mfcc} MFCCs of"
    say(f"  front end: LogMel, {frontend.win / speech.SAMPLE_RATE * 1e3:.0f} ms Hann windows "
        f"every {frontend.hop / speech.SAMPLE_RATE * 1e3:.0f} ms, FFT {frontend.n_fft}, "
        f"{what} {frontend.n_mels} mel bands; memory {frontend.memory_bytes:,} bytes")

    t_front = classify.Timing()
    feats = speech.features(used, frontend, timing=t_front)
    train_x, test_x = feats[:len(train)], feats[len(train):]
    train_y = [r.digit for r in train]
    test_y = [r.digit for r in test]
    longest = max(len(x) for x in train_x)
    say(f"  features: {t_front.steps:,} frames ({t_front.steps / len(used):.0f} per recording "
        f"on average, longest training recording {longest}), "
        f"{t_front.us_per_step:.1f} us per frame")
    window = args.window or longest
    say(f"  model: {args.cell} cell, {args.hidden} hidden units, {args.learner} learner"
        f"{f' (window {window})' if args.learner == 'tbptt' else ''}, {args.optimizer} "
        f"lr={args.lr:g}, clip {args.clip:g}, inputs normalised online, softmax over 10 "
        f"digits at the last frame")

    clock = {"t": time.perf_counter()}

    def progress(epoch, done, accuracy):
        if done == len(train_x) and not args.quiet:
            now = time.perf_counter()
            say(f"  epoch {epoch + 1:3d}/{args.epochs}  online training accuracy "
                f"{100 * accuracy:5.1f} %  ({now - clock['t']:.1f} s)")
            clock["t"] = now

    t0 = time.perf_counter()
    result = speech.train_and_evaluate(train_x, train_y, test_x, test_y, epochs=args.epochs,
                                       seed=args.seed, progress=progress, **model)
    train_seconds = time.perf_counter() - t0
    counts = classify.confusion(result.labels, result.predicted, 10)
    right = int(np.trace(counts))

    loso = None
    if args.loso:
        loso = _loso(used, feats, args, model, say)

    seconds = time.perf_counter() - started
    say("")
    say("summary")
    say(f"  test accuracy {100 * result.accuracy:.1f} % ({right}/{len(test_y)}; chance 10 %), "
        f"online training accuracy of the last epoch {100 * result.epoch_accuracy[-1]:.1f} %")
    say("  confusion matrix of the test recordings:")
    for line in classify.format_confusion(counts).splitlines():
        say("    " + line)
    say(f"  time per frame: front end {t_front.us_per_step:.1f} us (median per recording "
        f"{t_front.median_us():.1f} us); model {result.learn.us_per_step:.1f} us learning, "
        f"{result.predict.us_per_step:.1f} us predicting; {result.learn.steps:,} frames "
        f"learnt, {result.predict.steps:,} predicted")
    say(f"  memory_bytes: model {result.net.memory_bytes:,}, front end "
        f"{frontend.memory_bytes:,} (all buffers, allocated once)")
    if loso is not None:
        per = ", ".join(f"{s} {100 * a:.1f}" for s, a in loso["per_speaker"].items())
        say(f"  leave-one-speaker-out accuracy {100 * loso['accuracy']:.1f} % "
            f"({loso['right']}/{loso['total']}; per speaker: {per})")
    else:
        say("  leave-one-speaker-out: not run (--loso; six more trainings)")
    say(f"  wall time: {seconds:.1f} s (official split: {train_seconds:.1f} s training and "
        f"test)")
    say("  data: Free Spoken Digit Dataset, Z. Jackson, C. Souza, J. Flaks, Y. Pan, "
        "H. Nicolas, A. Thite (2018), doi:10.5281/zenodo.1342401, CC BY-SA 4.0 "
        "(see benchmarks/data/fsdd/README.md)")

    code = 0
    if args.summary_json:
        summary = dict(
            test_accuracy=result.accuracy, test_correct=right, test_recordings=len(test_y),
            train_recordings=len(train_y), train_accuracies=result.epoch_accuracy,
            frames=t_front.steps, frames_learnt=result.learn.steps,
            frames_predicted=result.predict.steps,
            # the contract: one number, a frame's whole cost while
            # learning (front end + model step, means); the parts beside it
            us_per_frame=t_front.us_per_step + result.learn.us_per_step,
            us_per_frame_parts=dict(frontend=t_front.us_per_step,
                              frontend_median=t_front.median_us(),
                              model_learn=result.learn.us_per_step,
                              model_learn_median=result.learn.median_us(),
                              model_predict=result.predict.us_per_step),
            memory_bytes=dict(model=result.net.memory_bytes, frontend=frontend.memory_bytes),
            confusion=counts.tolist(), seconds=seconds, speakers=speakers,
            data=dict(source=str(source), kind=kind),
            frontend=frontend.config,
            config=dict(cell=args.cell, learner=args.learner, n_hidden=args.hidden,
                        window=result.net.config["window"], optimizer=args.optimizer,
                        lr=args.lr, clip=args.clip, epochs=args.epochs, seed=args.seed,
                        normalize=True, init=_D["init"], max_utterances=args.max_utterances))
        if loso is not None:
            summary["loso_accuracy"] = loso["accuracy"]
            summary["loso_per_speaker"] = loso["per_speaker"]
        try:
            write_json(args.summary_json, json_safe(summary))
        except OSError as exc:
            say(f"{_NAME}: --summary-json {args.summary_json}: {exc.strerror or exc}")
            code = 1
    if args.plot:
        title = (f"FSDD: {args.cell}, {args.hidden} units, {args.learner}: "
                 f"test accuracy {100 * result.accuracy:.1f} %")
        code = max(code, plot_confusion(counts, title, "spoken digit", args.plot, say, _NAME))
    return code


def _subset(train, test, n, seed):
    """n recordings at random (seeded): a tenth (at least one) from the test takes."""
    rng = np.random.default_rng(seed)
    n_test = min(max(1, round(n / 10)), len(test))
    n_train = min(n - n_test, len(train))
    pick = lambda rs, k: [rs[i] for i in sorted(rng.choice(len(rs), size=k, replace=False))]
    return pick(train, n_train), pick(test, n_test)


def _loso(recordings, feats, args, model, say):
    """Train on all speakers but one, test on that one, for each speaker."""
    by_speaker = {}
    right = total = 0
    for speaker in sorted({r.speaker for r in recordings}):
        tr = [i for i, r in enumerate(recordings) if r.speaker != speaker]
        te = [i for i, r in enumerate(recordings) if r.speaker == speaker]
        if not tr:
            continue
        t0 = time.perf_counter()
        res = speech.train_and_evaluate([feats[i] for i in tr], [recordings[i].digit for i in tr],
                                        [feats[i] for i in te], [recordings[i].digit for i in te],
                                        epochs=args.epochs, seed=args.seed, **model)
        by_speaker[speaker] = res.accuracy
        right += int(np.sum(res.predicted == res.labels))
        total += len(te)
        if not args.quiet:
            say(f"  leave out {speaker:9s} train on {len(tr):,}, test on {len(te):,}: "
                f"accuracy {100 * res.accuracy:5.1f} %  ({time.perf_counter() - t0:.1f} s)")
    return dict(accuracy=right / max(total, 1), right=right, total=total,
                per_speaker=by_speaker)
