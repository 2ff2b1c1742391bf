"""`rtrl-edge demo text`: next-character prediction on tinyshakespeare in one
online pass, scored as a compression rate beside gzip, bzip2 and xz."""
from __future__ import annotations

import argparse
import os
import sys

from ..apps import text
from ..model import CELLS, LEARNERS, OPTIMIZERS
from ._common import json_safe, write_json, positive_float, positive_int

_PROG = "rtrl-edge demo text"
D = text.DEFAULTS


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "text", help="learn to predict Shakespeare one character at a time (a compressor)",
        description="Read a text one byte at a time (by default the shipped tinyshakespeare, "
                    "1,115,394 characters) with an online recurrent net: each character is "
                    "predicted before it is learnt, and seen once, so the cross-entropy in "
                    "bits per character is a compression rate. It is reported beside gzip "
                    "-9, bzip2 -9, xz -9e and an adaptive unigram model on the same bytes, "
                    "with the time per character and the model's memory, then a few lines "
                    "sampled from the trained model.")
    p.add_argument("--max-chars", type=positive_int, metavar="N",
                   help="read only the first N characters (default: the whole text)")
    p.add_argument("--text", metavar="PATH",
                   help="another text file to learn, read as bytes (default: the shipped "
                        "tinyshakespeare)")
    p.add_argument("--cell", choices=CELLS, default=D["cell"],
                   help="recurrent cell (default: %(default)s)")
    p.add_argument("--learner", choices=LEARNERS, default=D["learner"],
                   help="sensitivity learner (default: %(default)s)")
    p.add_argument("--hidden", type=positive_int, default=D["hidden"],
                   help="hidden units (default: %(default)s)")
    p.add_argument("--window", type=positive_int,
                   help="truncation of --learner tbptt (default: 16)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=D["optimizer"],
                   help="online optimiser (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=D["lr"],
                   help="learning rate (default: %(default)g)")
    p.add_argument("--clip", type=positive_float, default=D["clip"],
                   help="clip each step's gradient to this norm (default: no clipping; "
                        "with Adam, clipping at 1 costs 0.2 bits/char here)")
    p.add_argument("--temperature", type=positive_float, default=0.8,
                   help="sampling temperature of the lines printed at the end; lower is "
                        "more conservative (default: %(default)s)")
    p.add_argument("--sample-chars", type=int, default=400, metavar="N",
                   help="characters to sample at the end, 0 for none (default: %(default)s)")
    p.add_argument("--seed", type=int, default=D["seed"],
                   help="initialisation and sampling seed (default: %(default)s)")
    p.add_argument("--summary-json", metavar="PATH",
                   help="also write the results as JSON to PATH (replaced if it exists)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines and no samples: the summary only")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace, out=sys.stdout) -> int:
    """Load, measure the baselines, run the net over the text, report."""
    def say(*parts):
        print(*parts, file=out, flush=True)

    def fail(message):
        say(f"{_PROG}: {message}")
        return 2

    if args.max_chars is not None and args.max_chars < 1:
        return fail(f"--max-chars must be a positive integer, got {args.max_chars}")
    if args.sample_chars < 0:
        return fail(f"--sample-chars must be 0 or more, got {args.sample_chars}")
    if args.seed < 0:
        return fail(f"--seed must be 0 or more, got {args.seed}")
    if args.window is not None and args.learner != "tbptt":
        return fail(f"--window applies to --learner tbptt only, not {args.learner}")
    if args.cell == "diag" and args.learner != "rtrl":
        return fail("--cell diag is trained by its exact traces: use --learner rtrl")
    if args.summary_json and os.path.isdir(args.summary_json):
        return fail(f"--summary-json {args.summary_json!r} is a directory")
    try:
        data = text.load_text(args.text)
    except FileNotFoundError:
        return fail(f"no such file: {args.text!r}")
    except (IsADirectoryError, PermissionError, OSError) as exc:
        return fail(f"cannot read {args.text!r}: {exc.strerror or exc}")
    except ValueError as exc:
        return fail(str(exc))
    total = len(data)
    if args.max_chars is not None:
        data = data[:args.max_chars]
    source = args.text or "tinyshakespeare (shipped)"
    vocab = text.Vocab.of(data)
    if len(vocab) < 2:
        return fail(f"the text has a single distinct byte value {vocab.symbols!r}: "
                    f"there is nothing to predict")

    say(f"{_PROG}: {source}, {len(data):,} of {total:,} characters, "
        f"{len(vocab)} distinct byte values")
    settings = dict(cell=args.cell, learner=args.learner, hidden=args.hidden, lr=args.lr,
                    optimizer=args.optimizer, window=args.window, seed=args.seed,
                    clip=args.clip, init=D["init"])
    try:   # build it once first: a bad configuration is one line, before any work
        net = text.make_net(len(vocab), **settings)
    except ValueError as exc:
        return fail(str(exc))
    window = f", window {net.config['window']}" if args.learner == "tbptt" else ""
    say(f"  model: {args.cell} cell, {args.hidden} hidden units, {args.learner} learner"
        f"{window}, {args.optimizer} lr={args.lr:g}, "
        f"{'no clipping' if args.clip is None else f'clip {args.clip:g}'}, one-hot in, "
        f"softmax out; memory_bytes={net.memory_bytes:,}")
    del net
    say("  each character is predicted before it is learnt, and seen once")

    def progress(done, n, bpc, us):
        say(f"  {done:>9,}/{n:,} chars  {100 * done / n:3.0f} %  running {bpc:5.3f} bits/char"
            f"  {us:7.1f} us/char")

    result = text.run(data, progress=None if args.quiet else progress, **settings)
    baselines = text.compression_bpc(data)
    unigram = text.unigram_bpc(data)

    rows = [(f"rtrl-edge ({args.cell}, {args.learner}, n={args.hidden})", result.bpc),
            ("gzip -9", baselines["gzip_bpc"]), ("bzip2 -9", baselines["bzip2_bpc"]),
            ("xz -9e", baselines["xz_bpc"]), ("adaptive unigram", unigram)]
    say("")
    say(f"summary: bits per character on the same {len(data):,} bytes (lower is better)")
    for label, bpc in sorted(rows, key=lambda r: r[1]):
        say(f"  {label:34s} {bpc:6.3f}")
    beaten = [label for label, bpc in rows[1:] if result.bpc < bpc]
    say(f"  the net beats: {', '.join(beaten) if beaten else 'none of them'}")
    second_half = float(result.nats[len(result.nats) // 2:].mean()) / text._LN2
    say(f"  second half alone: {second_half:.3f} bits/char (the net still learning; "
        f"the compressors see the whole text at once)")
    say(f"  time per character: median {result.us_per_char:.1f} us, mean "
        f"{result.us_per_char_mean:.1f} us (predict + learn, one net.step); "
        f"{result.seconds:.1f} s in all")
    say(f"  memory_bytes: {result.memory_bytes:,} (all buffers, allocated once)")
    say(f"  divergence recoveries: {result.divergence_recoveries}")
    samples = ""
    if args.sample_chars and not args.quiet:
        samples = text.sample(result.net, result.vocab, args.sample_chars,
                              temperature=args.temperature, seed=args.seed)
        say("")
        say(f"sampled from the trained model (temperature {args.temperature:g}):")
        shown = samples.encode("latin-1").decode("utf-8", "replace").lstrip("\n")
        for line in shown.splitlines()[:12]:
            say(f"  | {line}")
    if args.text is None:
        say("")
        say("  data: tinyshakespeare (Karpathy, char-rnn), works of William Shakespeare, "
            "public domain (see rtrl_edge/data/README.md)")

    if args.summary_json:
        summary = dict(
            text=args.text or "tinyshakespeare", chars=result.chars, vocab_size=len(vocab),
            bpc=result.bpc, second_half_bpc=second_half, gzip_bpc=baselines["gzip_bpc"],
            bzip2_bpc=baselines["bzip2_bpc"], xz_bpc=baselines["xz_bpc"],
            unigram_bpc=unigram, us_per_char=result.us_per_char,
            us_per_char_mean=result.us_per_char_mean, seconds=result.seconds,
            memory_bytes=result.memory_bytes,
            divergence_recoveries=result.divergence_recoveries,
            model=dict(settings, window=result.net.config["window"]),
            curve=dict(chars=result.curve_chars.tolist(), bpc=result.curve_bpc.tolist()))
        try:
            write_json(args.summary_json, json_safe(summary))
        except OSError as exc:
            return fail(f"cannot write --summary-json {args.summary_json!r}: "
                        f"{exc.strerror or exc}")
        say(f"  summary written to {args.summary_json}")
    return 0
