"""Command line: ``rtrl-edge`` and ``python -m rtrl_edge``.

This module only parses and dispatches; each sub-command is a module:
  demo       (demo.py)       stream a shipped respiration recording through an
                             online learner; forecast error, latency, memory.
    demo text|speech|digits  (demo_text.py, demo_speech.py, demo_digits.py)
                             the applications: next-character prediction,
                             spoken digits, handwritten digits.
  plan       (plan.py)       the largest model of each learner and cell within
                             a memory and/or per-step time budget.
  run        (run.py)        the online loop: forecast, learn, control,
                             checkpoint; on a serial port, a shipped recording
                             or a synthetic signal.
  sim-board  (sim_board.py)  the real firmware in the AVR simulator, on a pty.
  tune       (tune.py)       the learner, size and learning rate that forecast
                             the user's recordings best within the budgets,
                             on every core or a Dask cluster.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .. import __version__
from . import demo, plan, run, sim_board, tune

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtrl-edge",
        description="Online training of recurrent networks with Real-Time Recurrent "
                    "Learning, in bounded memory.")
    parser.add_argument("--version", action="version", version=f"rtrl-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (demo, plan, run, sim_board, tune):
        command.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, dispatch, and turn what escapes a command into one line: a
    user's mistake never ends in a traceback (RTRL_EDGE_TRACEBACK=1 shows it
    for a bug report)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`rtrl-edge ... | head`): stop quietly, and
        # keep the interpreter's final flush from failing again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:   # noqa: BLE001 - the last line of defence
        if os.environ.get("RTRL_EDGE_TRACEBACK"):
            raise
        what = "out of memory" if isinstance(exc, MemoryError) else type(exc).__name__
        print(f"rtrl-edge {args.command}: {what}: {exc} (this is a bug if your input was "
              f"valid; RTRL_EDGE_TRACEBACK=1 shows the traceback for a report)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
