"""Helpers shared by the test modules (imported as `support`; conftest.py
puts this folder on sys.path)."""
import contextlib
import errno
import importlib.util
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_bridge"

BENCH_DIR = FIRMWARE.parent / "benchmarks"
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def load_benchmark(monkeypatch, name):
    """benchmarks/NAME.py imported afresh as a module.  The benchmarks pin
    the BLAS thread variables at import (through bench_step); monkeypatch
    restores them, and the benchmarks folder on sys.path, afterwards."""
    for var in _THREAD_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(f"{name}_under_test",
                                                  BENCH_DIR / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: skip marker for tests that need the AVR toolchain and simavr
needs_simavr = pytest.mark.skipif(
    shutil.which("avr-gcc") is None or not Path("/usr/include/simavr/sim_avr.h").exists(),
    reason="avr-gcc or simavr headers not installed (apt-get install gcc-avr avr-libc "
           "simavr libsimavr-dev)")


def wait_for(cond, timeout, step=None):
    """Call `step` (e.g. a poll; default a 5 ms sleep) until `cond()` holds or
    `timeout` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline:
            return cond()
        if step is not None:
            step()
        else:
            time.sleep(0.005)


def read_pty(master, timeout=0.0):
    """What the device end `master` of a pty has received within `timeout`
    seconds: the bytes, or b"" if none came (or the other end is closed)."""
    ready, _, _ = select.select([master], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(master, 4096)
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.EAGAIN):
            return b""
        raise


def build_firmware(build_dir):
    """`make -C firmware_bridge BUILD=build_dir`; asserts it succeeded."""
    made = subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"BUILD={build_dir}"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    return Path(build_dir)


@contextlib.contextmanager
def simulated_board(build_dir, *options):
    """The real firmware running in simavr (real time unless --fast is given);
    yields the pty path it prints, stops it on exit."""
    proc = subprocess.Popen([str(Path(build_dir) / "simboard"), *(options or ("--realtime",)),
                             str(Path(build_dir) / "firmware.elf")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("PORT "), first
        yield first.split(" ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Pty:
    """A pseudo-terminal; the host opens `path`, a fake device uses `master`
    (non-blocking). Raw mode: no echo or line editing before the host opens it."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        os.set_blocking(self.master, False)
        self._open = True

    def close(self):
        if self._open:
            self._open = False
            os.close(self.master)
            os.close(self.slave)


def readme_block(heading: str, index: int = 0) -> str:
    """The `index`th ```sh block of the README section under `heading`."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```", section, re.M | re.S)[index]


def launcher_dir(tmp_path) -> str:
    """A folder holding an executable `rtrl-edge` that runs the package under
    test with this interpreter, to put first on PATH for shell commands."""
    import rtrl_edge
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    path = folder / "rtrl-edge"
    root = os.path.dirname(os.path.dirname(rtrl_edge.__file__))
    path.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(root)} exec "
                    f"{shlex.quote(sys.executable)} -m rtrl_edge \"$@\"\n")
    path.chmod(0o755)
    return str(folder)
