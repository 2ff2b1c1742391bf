"""`rtrl-edge plan`: the largest model of each kind within a budget."""
from __future__ import annotations

import argparse
import sys

from ..model import OPTIMIZERS
from ._common import byte_size, positive_float, positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    plan = sub.add_parser(
        "plan", help="which learner, cell and size fit a memory and time budget",
        description="For each learner and cell, the largest hidden size whose exact "
                    "memory_bytes and predicted step time fit the budgets. Time is "
                    "predicted by a cost model fitted to a few timed steps on this "
                    "machine (under a second).")
    plan.add_argument("--n-in", type=positive_int, required=True, help="inputs per sample")
    plan.add_argument("--n-out", type=positive_int, required=True, help="outputs per sample")
    plan.add_argument("--memory", type=byte_size, metavar="BYTES",
                      help="memory budget, e.g. 200000, 512KiB, 4MB")
    plan.add_argument("--step-us", type=positive_float, metavar="US",
                      help="time budget of one learning step, in microseconds")
    plan.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                      help="optimiser (default: %(default)s)")
    plan.add_argument("--window", type=positive_int, default=16,
                      help="tbptt truncation (default: %(default)s)")
    plan.add_argument("--rec-density", type=positive_float, default=0.1,
                      help="snap2 density of W_rec (default: %(default)s)")
    plan.set_defaults(func=main)
    return plan


def main(args: argparse.Namespace, out=sys.stdout) -> int:
    from ..planning import format_plan, plan
    if args.memory is None and args.step_us is None:
        print("rtrl-edge plan: give --memory and/or --step-us", file=sys.stderr)
        return 2
    if args.rec_density > 1:
        print("rtrl-edge plan: --rec-density must be in (0, 1]", file=sys.stderr)
        return 2
    options = plan(args.n_in, args.n_out, memory_bytes=args.memory, step_us=args.step_us,
                   optimizer=args.optimizer, window=args.window,
                   rec_density=args.rec_density)
    budget = " and ".join(part for part in (
        f"{args.memory:,} bytes" if args.memory else "",
        f"{args.step_us:g} us per step" if args.step_us else "") if part)
    print(f"largest model of each kind within {budget} "
          f"(n_in={args.n_in}, n_out={args.n_out}, {args.optimizer}):", file=out)
    print(format_plan(options) if options else "  nothing fits", file=out)
    if args.step_us:
        print("step times: a cost model fitted on this machine just now; medians, "
              "within about 15 % while the model fits in cache", file=out)
    return 0

