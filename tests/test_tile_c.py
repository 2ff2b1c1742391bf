"""The SIMD kernels in rtrl_edge/_tile.h, checked in C (tests/c/tile_check.c)
against plain double loops: natively for every instruction set this CPU has,
and for aarch64 -- the Raspberry Pi's NEON path -- under qemu when a cross
compiler and qemu-user are installed (.ci/run installs them)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "c" / "tile_check.c"
HEADERS = ROOT / "rtrl_edge"


def _build_and_run(compiler, out, runner=(), extra=()):
    build = subprocess.run([compiler, "-O2", "-Wall", "-Wextra", "-Werror", *extra,
                            f"-I{HEADERS}", str(SOURCE), "-o", str(out), "-lm"],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"{compiler} failed:\n{build.stderr}"
    return subprocess.run([*runner, str(out)], capture_output=True, text=True, timeout=300)


def test_kernels_native(tmp_path):
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    res = _build_and_run(compiler, tmp_path / "tile_check")
    assert res.returncode == 0 and res.stdout.rstrip().endswith("OK"), res.stdout + res.stderr
    assert "checked base" in res.stdout


def test_kernels_aarch64_under_qemu(tmp_path):
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64-static")
    if not (cross and qemu):
        pytest.skip("aarch64-linux-gnu-gcc and qemu-aarch64-static not installed")
    res = _build_and_run(cross, tmp_path / "tile_check_arm64", runner=(qemu,),
                         extra=("-static",))
    assert res.returncode == 0 and res.stdout.rstrip().endswith("OK"), res.stdout + res.stderr
    assert "checked base" in res.stdout and "best: base" in res.stdout
