"""Argument types and output helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np


def _integer_from(low: int, expected: str):
    """An argparse type: an integer >= `low`, else 'expected EXPECTED, got ...'."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


non_negative_int = _integer_from(0, "an integer >= 0")
positive_int = _integer_from(1, "a positive integer")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value



_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000 ** 2, "mib": 1024 ** 2,
          "gb": 1000 ** 3, "gib": 1024 ** 3}


def byte_size(text: str) -> int:
    """'512KiB' -> 524288; plain numbers are bytes."""
    t = text.strip().lower().replace(" ", "")
    number = t.rstrip("kmgib")
    unit = t[len(number):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"expected a size like 200000, 512KiB or 4MB, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(value)



def json_safe(obj):
    """NaN (nothing scored yet) as null, numpy scalars as numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path: str, obj) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename):
    a summary is replaced whole or not at all."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rtrl-edge-summary.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def add_output_flags(p, plot_help: str) -> None:
    """--plot PNG (`plot_help`), --summary-json PATH and --quiet, as the
    classification demos take them."""
    p.add_argument("--plot", metavar="PNG",
                   help=f"{plot_help} (needs matplotlib: pip install 'rtrl-edge[plot]')")
    p.add_argument("--summary-json", metavar="PATH", help="write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="print the summary only")


def plot_confusion(counts, title: str, ylabel: str, path: str, say, name: str) -> int:
    """A confusion matrix (true classes in rows) as a PNG at `path`; 0, or 1
    if it could not be written.  Without matplotlib it says so and returns 0."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say(f"{name}: --plot needs matplotlib (pip install 'rtrl-edge[plot]')")
        return 0
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(counts, cmap="Blues")
    top = max(int(counts.max()), 1)
    for (i, j), v in np.ndenumerate(counts):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > top / 2 else "black")
    ax.set_xticks(range(counts.shape[1]))
    ax.set_yticks(range(counts.shape[0]))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        say(f"{name}: --plot {path}: {exc.strerror or exc}")
        return 1
    finally:
        plt.close(fig)
    say(f"  plot: {path}")
    return 0


def num(value, spec: str = ".4g") -> str:
    """A number, or 'n/a' where there is none yet (None, or NaN: nothing scored)."""
    return "n/a" if value is None or value != value else format(value, spec)
