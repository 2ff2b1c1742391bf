"""`rtrl-edge sim-board`: the real firmware in the AVR simulator, its UART
on a pty."""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from ._common import positive_float


def add_parser(sub) -> argparse.ArgumentParser:
    sim = sub.add_parser(
        "sim-board", help="run the real firmware in the AVR simulator, on a pty",
        description="Build what is missing (make -C firmware_bridge), run the firmware's "
                    ".elf in simavr with its UART on a pseudo-terminal, print 'PORT <path>' "
                    "as the first line, and run until interrupted. Another terminal can "
                    "then talk to the board through that path, e.g. rtrl-edge run --port "
                    "<path>. Needs avr-gcc, avr-libc and simavr (Debian: apt-get install "
                    "gcc-avr avr-libc simavr libsimavr-dev) and the firmware_bridge/ folder "
                    "of a source checkout.")
    sim.add_argument("--firmware-dir", metavar="DIR",
                     help="the firmware_bridge folder (default: $RTRL_EDGE_FIRMWARE, or "
                          "found from the current folder or the package's checkout)")
    sim.add_argument("--fast", action="store_true",
                     help="run the simulation as fast as it goes instead of in real time")
    sim.add_argument("--seconds", type=positive_float, metavar="S",
                     help="stop after S seconds of simulated time")
    sim.set_defaults(func=main)
    return sim


def find_firmware_dir(explicit: Optional[str] = None) -> Optional[str]:
    """The firmware_bridge folder: explicit, $RTRL_EDGE_FIRMWARE, the current
    folder or a parent, or beside the installed package's source checkout."""
    import os
    from pathlib import Path
    candidates = [explicit] if explicit else []
    if os.environ.get("RTRL_EDGE_FIRMWARE"):
        candidates.append(os.environ["RTRL_EDGE_FIRMWARE"])
    here = Path.cwd()
    candidates += [str(d / "firmware_bridge") for d in (here, *here.parents)]
    candidates.append(str(Path(__file__).resolve().parents[2] / "firmware_bridge"))
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "Makefile")):
            return os.path.abspath(c)
        if explicit:
            return None
    return None


def main(args: argparse.Namespace, out=sys.stdout) -> int:
    import os
    import shutil
    import signal
    import subprocess
    root = find_firmware_dir(args.firmware_dir)
    if root is None:
        where = args.firmware_dir or "the current folder, its parents or the package checkout"
        print(f"rtrl-edge sim-board: no firmware_bridge/Makefile in {where}; run it from a "
              f"source checkout or pass --firmware-dir", file=sys.stderr)
        return 2
    missing = [tool for tool in ("make", "avr-gcc", "cc") if shutil.which(tool) is None]
    if missing:
        print(f"rtrl-edge sim-board: {', '.join(missing)} not found; on Debian: apt-get "
              f"install build-essential gcc-avr avr-libc simavr libsimavr-dev",
              file=sys.stderr)
        return 2
    build = subprocess.run(["make", "-s", "-C", root], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    if build.returncode != 0:
        sys.stderr.write(build.stdout)
        print("rtrl-edge sim-board: building the firmware or the simulator failed (above)",
              file=sys.stderr)
        return 2
    cmd = [os.path.join(root, "build", "simboard"), "--fast" if args.fast else "--realtime"]
    if args.seconds:
        cmd += ["--seconds", str(args.seconds)]
    cmd.append(os.path.join(root, "build", "firmware.elf"))
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def stop(signum, frame):                    # SIGTERM: stop the simulator too
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        first = child.stdout.readline()
        if not first.startswith("PORT "):
            child.wait(timeout=5)
            print(f"rtrl-edge sim-board: the simulator did not report its port "
                  f"(exit {child.returncode})", file=sys.stderr)
            return 1
        print(first.strip(), file=out, flush=True)
        for line in child.stdout:
            print(line.rstrip("\n"), file=out, flush=True)
        return 0 if child.wait() == 0 else 1
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

