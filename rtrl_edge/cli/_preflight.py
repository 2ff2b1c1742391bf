"""Checks `rtrl-edge run` makes before anything runs: output paths, sizes
that would not fit in memory, the flags of a checkpoint being resumed, and
keeping an old checkpoint aside."""
from __future__ import annotations

import os
import stat
from typing import Dict, List, Optional

import numpy as np

from .. import planning
from .._layout import n_core, n_params
from ..forecast import Forecaster

# The model flags of `rtrl-edge run` and their defaults (None in the parser,
# so that a flag given can be told from one left out).
DEFAULTS = dict(horizon=10, target=0, learner="rtrl", cell="elman", hidden=32, window=16,
                rec_density=None, optimizer="sgd", lr=1e-2, seed=0)
# Any of these asks for one model of that kind; without them, the forecaster
# is `Forecaster.auto`, whose RNN members have AUTO_HIDDEN units unless
# --hidden says otherwise.
PLAIN_FLAGS = ("learner", "lr", "cell", "optimizer", "window", "rec_density")
AUTO_HIDDEN = 16


def wants_auto(args) -> bool:
    """No flag that only a single model has: the auto mixture."""
    return all(getattr(args, name, None) is None for name in PLAIN_FLAGS)


def check_output_path(path: Optional[str]) -> Optional[str]:
    """Why a file cannot be written at `path` (None if it can, or no path)."""
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISDIR(st.st_mode):
        return "is a folder"
    if not stat.S_ISREG(st.st_mode):
        return "exists and is not a regular file (a FIFO, device or socket)"
    return None


def _checkpoint_values(net, extra) -> Dict[str, object]:
    from ..auto import AutoForecaster
    from ..compensator import DelayCompensator
    if isinstance(net, AutoForecaster):
        values = dict(kind="auto", hidden=net.hidden, seed=net.seed, horizon=net.horizon)
        _add_target(values, extra)
        return values
    if isinstance(net, DelayCompensator):
        values = dict(kind="delay", hidden=net.hidden, seed=net.seed, horizon=net.delay,
                      actuation_delay=net.delay)
        _add_target(values, extra)
        return values
    cfg = net.config
    values = dict(kind="plain", learner=cfg["learner"], cell=cfg["cell"],
                  hidden=cfg["n_hidden"], window=cfg["window"], rec_density=cfg["rec_density"],
                  optimizer=cfg["optimizer"], lr=cfg["lr"], seed=cfg["seed"])
    pos = extra.get("forecast_pos")
    if pos is not None and np.shape(pos) == (4,):
        values["horizon"] = int(pos[2])
    _add_target(values, extra)
    return values


def _add_target(values, extra) -> None:
    channels = extra.get("loop_channels")
    if channels is not None and np.ndim(channels) == 1 and len(channels) > 1 + int(channels[0]):
        values["target"] = int(channels[1 + int(channels[0])])


def differing_flags(args, net, extra) -> List[str]:
    """'--flag: checkpoint A, command line B' for every model flag given on
    the command line that differs from the checkpoint's."""
    saved = _checkpoint_values(net, extra)
    out = []
    holds = dict(auto="the auto mixture", delay="a DelayCompensator").get(saved["kind"])
    if holds:
        for name in PLAIN_FLAGS:
            given = getattr(args, name)
            if given is not None:
                out.append(f"--{name.replace('_', '-')}: the checkpoint holds {holds} "
                           f"(no such setting), command line {given}")
    delay = getattr(args, "actuation_delay", None)
    if delay is not None and delay != saved.get("actuation_delay", 0):
        out.append(f"--actuation-delay: checkpoint {saved.get('actuation_delay', 0)} "
                   f"({'a DelayCompensator' if saved['kind'] == 'delay' else 'no compensator'})"
                   f", command line {delay}")
    for name in DEFAULTS:
        given = getattr(args, name)
        if given is None or name not in saved:
            continue
        if name == "window" and saved["learner"] != "tbptt":
            continue                  # only tbptt has a window; --learner tells the rest
        if given != saved[name]:
            flag = "--" + name.replace("_", "-")
            out.append(f"{flag}: checkpoint {saved[name]}, command line {given}")
    return out


def model_settings(args, net=None, extra=None) -> Dict[str, object]:
    """Every model flag: as given, else the checkpoint's, else the default."""
    saved = _checkpoint_values(net, extra) if net is not None else {}
    kind = saved.get("kind") or ("delay" if getattr(args, "actuation_delay", None) else
                                 "auto" if wants_auto(args) else "plain")
    defaults = dict(DEFAULTS, hidden=AUTO_HIDDEN) if kind in ("auto", "delay") else DEFAULTS
    settings = {"kind": kind}
    delay = getattr(args, "actuation_delay", None)
    settings["actuation_delay"] = delay if delay is not None else \
        saved.get("actuation_delay", 0)
    if kind == "delay":
        # the compensator forecasts the state when a command sent now lands
        defaults = dict(defaults, horizon=settings["actuation_delay"])
    for name, default in defaults.items():
        given = getattr(args, name)
        settings[name] = given if given is not None else saved.get(name, default)
    if settings["window"] is None:
        settings["window"] = DEFAULTS["window"]
    return settings


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux MemAvailable,
    else the physical memory), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(b: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if b < 1024 or unit == "EiB":
            return f"{b:,.0f} {unit}" if unit == "bytes" else f"{b:,.1f} {unit}"
        b /= 1024
    return f"{b:.3g}"


def check_sizes(settings: Dict[str, object], channels: int, trace: int = 0,
                available: Optional[int] = None, n_out: int = 1) -> Optional[str]:
    """Why the model and buffers the settings imply cannot be allocated here
    (None if they can), computed from `plan`'s formulas without allocating."""
    from ..loop import OnlineLoop
    available = available_memory() if available is None else available
    if available is None:
        return None
    n, m, o, h = settings["hidden"], channels, n_out, settings["horizon"]
    learner, window = settings["learner"], settings["window"]
    window_bytes = Forecaster.buffer_bytes(m, o, h) + OnlineLoop.buffer_bytes(h, o, trace=trace)
    if window_bytes > available:
        return (f"--horizon {h} needs {_bytes(window_bytes)} for the forecast window; "
                f"{_bytes(available)} of memory is available")
    if settings.get("kind") in ("auto", "delay"):
        if settings["kind"] == "auto":
            from ..auto import estimate_bytes
            need, what = estimate_bytes(m, o, h, n), "the auto mixture's RNN members"
        else:
            from ..compensator import estimate_bytes
            need, what = estimate_bytes(m, 1, h, n), "the DelayCompensator's RNN members"
        if need + window_bytes <= available:
            return None
        return (f"--hidden {n} ({what}) needs {_bytes(need)}; "
                f"{_bytes(available)} of memory is available")
    # a lower bound first (parameters, gradient, last good copy, moments,
    # tbptt's ring), cheap at any size; then the exact figure
    moments = ("sgd", "momentum", "adam").index(settings["optimizer"])
    p = n_params(n, m, o, settings["cell"])
    floor = 4 * (3 + moments) * p
    if learner == "rtrl" and settings["cell"] != "diag":
        floor += 4 * n * n_core(n, m, settings["cell"])
    if learner == "tbptt":
        floor += 4 * window * (2 * n + m + 1)
    exact = floor <= available
    if exact:
        floor = planning.memory_bytes(m, n, o, learner=learner, cell=settings["cell"],
                                      optimizer=settings["optimizer"], window=window,
                                      rec_density=settings["rec_density"] or 1.0)
    if floor + window_bytes <= available:
        return None
    flags = f"--hidden {n} --learner {learner}"
    if learner == "tbptt":
        flags += f" --window {window}"
    return (f"{flags} needs {'' if exact else 'at least '}{_bytes(floor)} for the model (rtrl_edge.plan's formulas); "
            f"{_bytes(available)} of memory is available. `rtrl-edge plan --n-in {m} "
            f"--n-out {o} --memory BYTES` lists what fits")


def keep_as_backup(path: str) -> str:
    """Move `path` to PATH.bak (PATH.bak2, ... if taken) without replacing any
    existing file; returns the new name."""
    for i in range(1, 1000):
        candidate = f"{path}.bak" if i == 1 else f"{path}.bak{i}"
        try:
            os.link(path, candidate)           # fails if candidate exists: no clobbering
        except FileExistsError:
            continue
        except OSError:                        # a file system without hard links
            if os.path.lexists(candidate):
                continue
            os.rename(path, candidate)
            return candidate
        os.unlink(path)
        return candidate
    raise FileExistsError(f"{path}.bak .. {path}.bak999 all exist")
