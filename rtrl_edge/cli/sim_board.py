"""`rtrl-edge sim-board`: the real firmware in the AVR simulator, its UART
on a pty.

Where the firmware comes from, first match wins:
  --firmware-dir DIR, or $RTRL_EDGE_FIRMWARE   that folder; built in DIR/build
  firmware_bridge/ in the current folder or a parent (a source checkout)
                                               built in its build/
  the package's own copy of the sources        built in a per-user cache,
                                               $XDG_CACHE_HOME/rtrl-edge/firmware-<hash>
                                               (default ~/.cache/...), one folder per
                                               version of the sources
The package's copy is rtrl_edge/firmware_bridge/ in an installed wheel
(pyproject.toml maps the checkout's firmware_bridge/ there), or the
checkout's firmware_bridge/ itself when the package runs from a source tree.

stdout gets one line, ``PORT <path>``, before anything else is printed on
either stream; every note (where it built, the simulator's own messages)
goes to stderr after it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Tuple

from ._common import positive_float

#: The files the build needs, relative to a firmware_bridge folder (the
#: wheel's package data holds these, see pyproject.toml).
SOURCES = ("Makefile", "firmware/*.c", "firmware/*.h", "sim/*.c")
APT = "build-essential gcc-avr avr-libc binutils-avr simavr libsimavr-dev"


def add_parser(sub) -> argparse.ArgumentParser:
    import textwrap
    fill = lambda text: textwrap.fill(text, 79)
    sim = sub.add_parser(
        "sim-board", help="run the real firmware in the AVR simulator, on a pty",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=fill(
            "Build the firmware and its simulator harness if needed, run the firmware's "
            ".elf in simavr with its UART on a pseudo-terminal, print 'PORT <path>' as the "
            "first line of stdout, and run until interrupted (Ctrl-C, SIGTERM) or for "
            "--seconds of simulated time. Another terminal then talks to the board through "
            "that path, e.g. rtrl-edge run --port <path>. Every other message goes to "
            "stderr."),
        epilog=fill(
            "Works from any folder: the package carries the firmware's sources. Built from "
            "a source checkout's firmware_bridge/ when run inside one (or the folder given "
            "by --firmware-dir or $RTRL_EDGE_FIRMWARE), else from the package's copy into "
            "$XDG_CACHE_HOME/rtrl-edge/firmware-<hash> (default ~/.cache); stderr says "
            "where.") + "\n\n" + fill(
            "Needs make, a C compiler, avr-gcc, avr-libc, binutils-avr and simavr with its "
            "headers; on Debian or Ubuntu:") + f"\n  apt-get install {APT}")
    sim.add_argument("--firmware-dir", metavar="DIR",
                     help="a firmware_bridge folder to build and run, in DIR/build "
                          "(default: $RTRL_EDGE_FIRMWARE, a checkout around the current "
                          "folder, or the package's own copy)")
    sim.add_argument("--fast", action="store_true",
                     help="run the simulation as fast as it goes instead of in real time")
    sim.add_argument("--seconds", type=positive_float, metavar="S",
                     help="stop after S seconds of simulated time")
    sim.set_defaults(func=main)
    return sim


def packaged_sources() -> Optional[str]:
    """The firmware sources that came with the package: rtrl_edge/firmware_bridge
    when installed, the checkout's firmware_bridge/ when run from a source
    tree; None if neither is there."""
    from pathlib import Path
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "firmware_bridge", package.parent / "firmware_bridge"):
        if (folder / "Makefile").is_file():
            return str(folder)
    return None


def source_hash(root: str) -> str:
    """12 hex digits of SHA-256 over the SOURCES files (names and contents)."""
    import glob
    import hashlib
    import os
    h = hashlib.sha256()
    for pattern in SOURCES:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            h.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
            h.update(b"\0")
    return h.hexdigest()[:12]


def cache_dir() -> str:
    """$XDG_CACHE_HOME/rtrl-edge (an absolute $XDG_CACHE_HOME), else ~/.cache/rtrl-edge."""
    import os
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rtrl-edge")


def find_firmware(explicit: Optional[str] = None) -> Tuple[Optional[str], Optional[str], str]:
    """(source folder, build folder, where from) -- (None, None, why) if there
    is none."""
    import os
    from pathlib import Path
    given = explicit or os.environ.get("RTRL_EDGE_FIRMWARE")
    if given:
        where = "--firmware-dir" if explicit else "$RTRL_EDGE_FIRMWARE"
        if os.path.isfile(os.path.join(given, "Makefile")):
            root = os.path.abspath(given)
            return root, os.path.join(root, "build"), where
        return None, None, f"no firmware_bridge/Makefile in {given} ({where})"
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / "firmware_bridge" / "Makefile").is_file():
            root = str(d / "firmware_bridge")
            return root, os.path.join(root, "build"), "the checkout around the current folder"
    root = packaged_sources()
    if root is None:
        return None, None, ("no firmware_bridge/Makefile in the current folder, its parents "
                            "or the package (a broken install?); pass --firmware-dir")
    build = os.path.join(cache_dir(), f"firmware-{source_hash(root)}")
    return root, build, "the package's sources"


def build(root: str, build_dir: str):
    """`make -C root BUILD=build_dir`, one build at a time per folder; None,
    or the error text."""
    import fcntl
    import os
    import shutil
    import subprocess
    missing = [tool for tool in ("make", "cc", "avr-gcc") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found; on Debian or Ubuntu: apt-get install {APT}"
    os.makedirs(build_dir, exist_ok=True)
    with open(os.path.join(build_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)            # another sim-board may be building
        made = subprocess.run(["make", "-s", "-C", root, f"BUILD={build_dir}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if made.returncode != 0:
        return made.stdout + "building the firmware or the simulator failed (above)"
    if not os.path.isfile(os.path.join(build_dir, "simboard")):
        return (f"{made.stdout}the simulator was not built: simavr's headers are missing; "
                f"on Debian or Ubuntu: apt-get install {APT}")
    return None


def _relay(stream, to):
    """Copy the lines of `stream` to `to` until it closes."""
    for line in stream:
        to.write(line)
        to.flush()


def main(args: argparse.Namespace, out=None) -> int:
    import os
    import signal
    import subprocess
    import threading
    out = sys.stdout if out is None else out

    def note(text):
        print(f"rtrl-edge sim-board: {text}", file=sys.stderr, flush=True)

    root, build_dir, origin = find_firmware(args.firmware_dir)
    if root is None:
        note(origin)
        return 2
    failed = build(root, build_dir)
    if failed:
        note(failed)
        return 2
    cmd = [os.path.join(build_dir, "simboard"), "--fast" if args.fast else "--realtime"]
    if args.seconds:
        cmd += ["--seconds", str(args.seconds)]
    cmd.append(os.path.join(build_dir, "firmware.elf"))
    # the simulator's stderr is held in its pipe until the PORT line is out
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(signum, frame):                    # SIGTERM: stop the simulator too
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    relays = []
    try:
        first = child.stdout.readline()
        if not first.startswith("PORT "):
            child.wait(timeout=5)
            sys.stderr.write(first + child.stderr.read())
            note(f"the simulator did not report its port (exit {child.returncode})")
            return 1
        print(first.strip(), file=out, flush=True)
        note(f"firmware and simulator from {origin} ({root}), built in {build_dir}")
        relays = [threading.Thread(target=_relay, args=(s, sys.stderr), daemon=True)
                  for s in (child.stderr, child.stdout)]   # anything more is a note
        for t in relays:
            t.start()
        code = child.wait()
        return 0 if code == 0 else 1
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.kill()
        for t in relays:
            if t.ident is not None:             # started (SIGTERM may come first)
                t.join(timeout=2)
