"""`rtrl-edge demo digits`: handwritten 8 x 8 digits read row by row, learnt
online, and the test accuracy, confusion matrix, time per row and memory."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..apps import classify, digits
from ..model import CELLS, LEARNERS
from ._common import (add_output_flags, json_safe, non_negative_int, plot_confusion,
                      positive_float, positive_int, write_json)
from ._preflight import check_output_path

_NAME = "rtrl-edge demo digits"


def add_parser(sub) -> argparse.ArgumentParser:
    d = digits.Config()
    p = sub.add_parser(
        "digits", help="classify handwritten digits read row by row, learnt online",
        description="Learn scikit-learn's 1,797 handwritten digits (8 x 8 pixels; UCI optdigits, "
                    "Alpaydin & Kaynak 1998, CC BY 4.0; shipped, no download) as sequences of "
                    "8 rows of 8 pixels, the label given at the last row. Online epochs over "
                    "1,347 training images, each predicted before it is learnt, then the "
                    "accuracy on the 450 others with nothing learnt; reports the confusion "
                    "matrix, time per row and the model's memory.")
    p.add_argument("--epochs", type=positive_int, default=d.epochs,
                   help="online passes over the training images (default: %(default)s)")
    p.add_argument("--anneal", type=non_negative_int, metavar="EPOCHS",
                   help="run the last EPOCHS of them at lr / 10 (default: a quarter of "
                        "--epochs; 0 keeps lr constant)")
    p.add_argument("--hidden", type=positive_int, default=d.n_hidden,
                   help="hidden units (default: %(default)s)")
    p.add_argument("--cell", choices=CELLS, default=d.cell,
                   help="recurrent cell (default: %(default)s; diag needs --learner rtrl "
                        "and an even --hidden)")
    p.add_argument("--learner", choices=LEARNERS, default=d.learner,
                   help="sensitivity learner (default: %(default)s with a window of 8 rows, "
                        "exact here; rtrl gives the same gradient at about 25 times the cost)")
    p.add_argument("--lr", type=positive_float, default=d.lr,
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--clip", type=positive_float, default=d.clip,
                   help="clip each update's gradient to this norm (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="initialisation and shuffling seed (default: %(default)s)")
    add_output_flags(p, "draw the confusion matrix")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace, out=sys.stdout) -> int:
    """Train on the fixed 1,347-image split, test on the 450 others, report."""
    def say(*parts):
        print(*parts, file=out, flush=True)

    def fail(message, code=2):
        say(f"{_NAME}: {message}")
        return code

    for flag, path in (("--summary-json", args.summary_json), ("--plot", args.plot)):
        problem = check_output_path(path)
        if problem:
            return fail(f"{flag} {path}: {problem}")
    if args.seed < 0:
        return fail(f"--seed must be >= 0, got {args.seed}")
    if args.anneal is not None and args.anneal > args.epochs:
        return fail(f"--anneal {args.anneal} is more than --epochs {args.epochs}")
    config = digits.Config(cell=args.cell, learner=args.learner, n_hidden=args.hidden,
                           lr=args.lr, clip=args.clip, epochs=args.epochs,
                           anneal_epochs=args.anneal, seed=args.seed)
    try:
        config.check()
        net = digits.make_net(config)
    except ValueError as exc:
        return fail(str(exc))

    images, labels = digits.load_digits()
    train_idx, test_idx = digits.split()
    xs = digits.sequences(images)
    say(f"{_NAME}: {len(images):,} handwritten digits, {digits.ROWS} x {digits.COLS} pixels, "
        f"read row by row ({digits.ROWS} steps of {digits.COLS} inputs, the label at the "
        f"last row)")
    say(f"  split: {len(train_idx):,} training / {len(test_idx)} test images (fixed: "
        f"rtrl_edge.apps.digits.split)")
    window = f" (window {digits.ROWS})" if config.learner == "tbptt" else ""
    anneal = (f", the last {config.annealed} epoch(s) at {config.lr * config.anneal_factor:g}"
              if config.annealed else "")
    say(f"  model: {config.cell} cell, {config.n_hidden} hidden units, {config.learner} "
        f"learner{window}, adam lr={config.lr:g}{anneal}, clip {config.clip:g}, "
        f"memory_bytes={net.memory_bytes:,}")

    def on_epoch(epoch, accuracy, lr):
        if not args.quiet:
            say(f"  epoch {epoch + 1:3d}/{config.epochs}  online training accuracy "
                f"{100 * accuracy:5.1f} %  lr {lr:g}")

    t_train, t_test = classify.Timing(), classify.Timing()
    t0 = time.perf_counter()
    net, accuracies = digits.train(net, xs[train_idx], labels[train_idx], config,
                                   timing=t_train, on_epoch=on_epoch)
    accuracy, predicted = digits.evaluate(net, xs[test_idx], labels[test_idx], t_test)
    seconds = time.perf_counter() - t0
    counts = classify.confusion(labels[test_idx], predicted, digits.N_CLASSES)
    right = int(np.trace(counts))

    say("")
    say("summary")
    say(f"  test accuracy {100 * accuracy:.1f} % ({right}/{len(test_idx)}; chance 10 %), "
        f"online training accuracy of the last epoch {100 * accuracies[-1]:.1f} %")
    say("  confusion matrix of the test images:")
    for line in classify.format_confusion(counts).splitlines():
        say("    " + line)
    say(f"  time per row: {t_train.us_per_step:.1f} us learning (median per image "
        f"{t_train.median_us():.1f} us), {t_test.us_per_step:.1f} us predicting; "
        f"{t_train.steps:,} rows learnt, {t_test.steps:,} predicted")
    say(f"  memory_bytes: {net.memory_bytes:,} (all buffers, allocated once)")
    say(f"  wall time: {seconds:.1f} s (training and test)")
    say("  data: UCI optdigits test set as shipped with scikit-learn, Alpaydin & Kaynak "
        "(1998), CC BY 4.0 (see rtrl_edge/data/README.md)")

    code = 0
    if args.summary_json:
        summary = dict(
            test_accuracy=accuracy, test_correct=right, test_images=len(test_idx),
            train_images=len(train_idx), train_accuracies=accuracies,
            rows=t_train.steps, test_rows=t_test.steps,
            us_per_row=t_train.us_per_step, us_per_row_median=t_train.median_us(),
            us_per_row_predict=t_test.us_per_step, memory_bytes=net.memory_bytes,
            seconds=seconds, confusion=counts.tolist(),
            config=dict(cell=config.cell, learner=config.learner, n_hidden=config.n_hidden,
                        optimizer=config.optimizer, lr=config.lr, clip=config.clip,
                        epochs=config.epochs, anneal_epochs=config.annealed,
                        anneal_factor=config.anneal_factor, seed=config.seed,
                        window=digits.ROWS if config.learner == "tbptt" else None))
        try:
            write_json(args.summary_json, json_safe(summary))
        except OSError as exc:
            say(f"{_NAME}: --summary-json {args.summary_json}: {exc.strerror or exc}")
            code = 1
    if args.plot:
        title = (f"{config.cell}, {config.n_hidden} units, {config.learner}: "
                 f"test accuracy {100 * accuracy:.1f} %")
        code = max(code, plot_confusion(counts, title, "true digit", args.plot, say, _NAME))
    return code
