"""The `rtrl-edge` command line: the demo on the shipped recording."""
import io
import os
import re
import struct
import subprocess
import sys
import threading
import time

import pytest

import rtrl_edge
from rtrl_edge import cli


def _demo(*argv):
    out = io.StringIO()
    args = cli.build_parser().parse_args(["demo", *argv])
    assert cli.demo.main(args, out=out) == 0
    return out.getvalue()


def _ratios(text):
    return {m.group(1): (float(m.group(2)), float(m.group(3)), float(m.group(4)))
            for m in re.finditer(r"^\s+(whole stream|second half)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
                                 text, re.M)}


def test_demo_learns_to_beat_the_last_value_baseline():
    text = _demo("--quiet")
    rows = _ratios(text)
    assert set(rows) == {"whole stream", "second half"}
    err, base, ratio = rows["second half"]
    # Recorded on the default recording (200 ms ahead, 16 units, sgd 0.01),
    # second half: RMSE 1.01 mm against 1.71 mm for repeating the last value,
    # ratio 0.59.
    assert ratio < 0.75 and err < base
    assert re.search(r"latency per sample: median [\d.]+ us, p99 [\d.]+ us", text)
    assert re.search(r"memory_bytes: [\d,]+", text)
    # what the loader dropped from the file is reported
    assert "terminator row" in text and "loader dropped" in text


def test_demo_progress_and_options():
    text = _demo("--horizon", "1", "--hidden", "4", "--optimizer", "sgd", "--lr", "0.01")
    assert len(re.findall(r"^  forecast +\d+/\d+", text, re.M)) >= 10
    assert "forecast 1 sample(s) = 100 ms ahead" in text


@pytest.mark.parametrize("argv", [
    ["--learner", "snap1"], ["--learner", "snap2", "--rec-density", "0.3"],
    ["--learner", "uoro", "--lr", "0.003"], ["--learner", "tbptt", "--window", "8"],
    ["--cell", "diag"],
])
def test_demo_runs_every_learner(argv):
    rows = _ratios(_demo("--quiet", *argv))
    assert rows["second half"][2] < 1.0, argv      # each beats repeating the last value


def test_demo_reports_an_impossible_configuration():
    out = io.StringIO()
    args = cli.build_parser().parse_args(["demo", "--cell", "diag", "--hidden", "5"])
    assert cli.demo.main(args, out=out) == 2
    assert "n_hidden must be even" in out.getvalue()


def test_demo_refuses_a_size_that_cannot_fit_before_allocating():
    """It used to end in a MemoryError traceback."""
    out = io.StringIO()
    args = cli.build_parser().parse_args(["demo", "--hidden", "100000", "--quiet",
                                          "--learner", "rtrl"])
    assert cli.demo.main(args, out=out) == 2
    assert "--hidden 100000 --learner rtrl needs at least 3.6 PiB for the model" in out.getvalue()
    assert "--n-in 3 --n-out 3" in out.getvalue()
    out = io.StringIO()                      # the auto mixture's RNN members
    args = cli.build_parser().parse_args(["demo", "--hidden", "100000", "--quiet"])
    assert cli.demo.main(args, out=out) == 2
    assert "--hidden 100000 (the auto mixture's RNN members) needs" in out.getvalue()


@pytest.mark.parametrize("argv,message", [
    (["demo", "--horizon", "0"], "expected a positive integer"),
    (["demo", "--lr", "-1"], "expected a positive number"),
    (["demo", "--recording", "nope"], "invalid choice"),
    (["demo", "--learner", "bogus"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_reaches_the_same_main(tmp_path):
    # run outside the source tree, on the same rtrl_edge this process imported
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))
    res = subprocess.run([sys.executable, "-m", "rtrl_edge", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "demo" in res.stdout


needs_avr = pytest.mark.skipif(
    __import__("shutil").which("avr-gcc") is None
    or not os.path.exists("/usr/include/simavr/sim_avr.h"),
    reason="avr-gcc or simavr headers not installed")


@needs_avr
def test_sim_board_prints_its_port_first_and_stops_on_sigterm(tmp_path):
    import signal
    firmware = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "firmware_bridge")
    # run outside the source tree, on the same rtrl_edge this process imported
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "rtrl_edge", "sim-board", "--firmware-dir",
                             firmware], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert re.fullmatch(r"PORT /dev/pts/\d+\n", first), (first, proc.stderr.read())
        port = first.split()[1]
        assert os.path.exists(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.exists(port)        # the simulator (and its pty) is gone
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sim_board_without_firmware_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["sim-board", "--firmware-dir", str(tmp_path)]) == 2
    assert "no firmware_bridge/Makefile" in capsys.readouterr().err


# -- run: what a broken board or a wrong port looks like ------------------------

def _run(*argv):
    out = io.StringIO()
    args = cli.build_parser().parse_args(["run", *argv])
    t0 = time.monotonic()
    code = cli.run.main(args, out=out)
    return code, out.getvalue(), time.monotonic() - t0


def test_run_on_a_missing_port_fails_at_once_with_the_os_error(tmp_path):
    code, text, elapsed = _run("--port", str(tmp_path / "ttyNOPE"), "--quiet")
    assert code == 1 and elapsed < 1.0, (code, elapsed)
    assert "ttyNOPE" in text and "No such file or directory" in text, text
    assert "HELLO" not in text                      # nothing to do with the device


def test_run_with_a_board_announcing_period_0_says_so_without_a_traceback():
    """A device whose HELLO says period_us = 0 (impossible): `run` exits 1
    naming the field, in well under its 10 s HELLO timeout."""
    from rtrl_edge.bridge import FrameDecoder, encode_frame, messages as m
    from support import Pty, read_pty

    hello = struct.pack("<BHI", m.HELLO, 0, 0) + struct.pack("<BBBBI", m.VERSION, 1, 1, 1, 0) \
        + struct.pack("<2f", 0.001, 0.0)
    pty, stop = Pty(), threading.Event()

    def board():                                     # answers every request with it
        dec = FrameDecoder()
        while not stop.is_set():
            for p in dec.feed(read_pty(pty.master, 0.01)):
                if p[0] == m.HELLO_REQUEST:
                    os.write(pty.master, encode_frame(hello))
    thread = threading.Thread(target=board, daemon=True)
    thread.start()
    try:
        code, text, elapsed = _run("--port", pty.path, "--quiet", "--max-steps", "10")
    finally:
        stop.set()
        thread.join(5)
        pty.close()
    assert code == 1 and elapsed < 5.0, (code, text, elapsed)
    assert "impossible HELLO: period_us = 0" in text, text
    assert "Traceback" not in text


# -- sim-board from any folder ----------------------------------------------------

def _sim_board_env(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("RTRL_EDGE_FIRMWARE", None)
    return env


@needs_avr
@pytest.mark.parametrize("merged", [False, True], ids=["separate", "stderr=STDOUT"])
def test_sim_board_from_any_folder_prints_port_alone_on_the_first_line(tmp_path, merged):
    """From a folder that is no checkout: the package's own sources are built
    in the per-user cache, `PORT /dev/pts/N` is the first line and alone on
    it -- also with stderr on the same pipe -- and every note is on stderr."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    res = subprocess.run([sys.executable, "-m", "rtrl_edge", "sim-board", "--fast",
                          "--seconds", "1"], cwd=work, env=_sim_board_env(tmp_path),
                         stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                         text=True, timeout=300)
    assert res.returncode == 0, (res.stdout, res.stderr)
    first, _, rest = res.stdout.partition("\n")
    assert re.fullmatch(r"PORT /dev/pts/\d+", first), res.stdout
    notes = rest if merged else res.stderr
    if not merged:
        assert rest == "", "nothing but the PORT line on stdout"
    cache = tmp_path / "cache" / "rtrl-edge"
    assert re.search(rf"built in {re.escape(str(cache))}/firmware-[0-9a-f]{{12}}\n", notes), notes
    assert "Loaded" in notes                        # simavr's own chatter: after, on stderr
    built = list(cache.glob("firmware-*"))
    assert len(built) == 1 and (built[0] / "firmware.elf").is_file()


def test_sim_board_finds_the_packaged_sources_with_no_checkout_around(tmp_path, monkeypatch):
    """No --firmware-dir, no $RTRL_EDGE_FIRMWARE, no firmware_bridge/ in the
    current folder or above: the sources that came with the package are used
    (rtrl_edge/firmware_bridge/ installed; the checkout's when run from it),
    and built in $XDG_CACHE_HOME/rtrl-edge/firmware-<hash of the sources>."""
    from rtrl_edge.cli import sim_board
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RTRL_EDGE_FIRMWARE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root, build, origin = sim_board.find_firmware()
    package = os.path.dirname(os.path.abspath(rtrl_edge.__file__))
    assert root in (os.path.join(package, "firmware_bridge"),
                    os.path.join(os.path.dirname(package), "firmware_bridge"))
    assert origin == "the package's sources"
    assert build == str(tmp_path / "xdg" / "rtrl-edge" / f"firmware-{sim_board.source_hash(root)}")
    for name in ("Makefile", "firmware/firmware.c", "firmware/protocol.h", "sim/simboard.c"):
        assert os.path.isfile(os.path.join(root, name)), name
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")          # ignored, as XDG says
    assert sim_board.find_firmware()[1].startswith(os.path.expanduser("~/.cache/rtrl-edge/"))


def test_sim_board_source_hash_follows_the_sources(tmp_path):
    from rtrl_edge.cli import sim_board
    (tmp_path / "firmware").mkdir()
    (tmp_path / "Makefile").write_text("all:\n")
    (tmp_path / "firmware" / "a.c").write_text("int a;\n")
    h = sim_board.source_hash(str(tmp_path))
    assert re.fullmatch(r"[0-9a-f]{12}", h) and sim_board.source_hash(str(tmp_path)) == h
    (tmp_path / "firmware" / "a.c").write_text("int a = 1;\n")
    assert sim_board.source_hash(str(tmp_path)) != h
    (tmp_path / "notes.txt").write_text("not a source")                # not hashed
    assert sim_board.source_hash(str(tmp_path)) == sim_board.source_hash(str(tmp_path))


CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not os.path.isfile(os.path.join(CHECKOUT, "pyproject.toml")),
                    reason="needs the source checkout's pyproject.toml")
def test_the_wheel_carries_every_file_sim_board_builds_from():
    """pyproject maps firmware_bridge/ to the package rtrl_edge.firmware_bridge
    and its package data covers sim_board.SOURCES: a wheel holds them all."""
    import glob
    tomllib = pytest.importorskip("tomllib")
    from rtrl_edge.cli import sim_board
    with open(os.path.join(CHECKOUT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    assert "rtrl_edge.firmware_bridge" in tool["packages"]
    assert tool["package-dir"]["rtrl_edge.firmware_bridge"] == "firmware_bridge"
    globs = tool["package-data"]["rtrl_edge.firmware_bridge"]
    assert set(sim_board.SOURCES) <= set(globs)
    shipped = {os.path.relpath(p, os.path.join(CHECKOUT, "firmware_bridge"))
               for g in globs for p in glob.glob(os.path.join(CHECKOUT, "firmware_bridge", g))}
    assert {"Makefile", "firmware/main.c", "firmware/config.h", "sim/simboard.c",
            "sim/hostcodec.c"} <= shipped


@needs_avr
def test_the_packaged_files_alone_build_the_firmware_and_simulator(tmp_path):
    """Only the files a wheel carries (sim_board.SOURCES), copied elsewhere,
    build everything sim-board runs: nothing else of the checkout is needed."""
    import glob
    import shutil
    from rtrl_edge.cli import sim_board
    src = os.path.join(CHECKOUT, "firmware_bridge")
    if not os.path.isdir(src):
        src = sim_board.packaged_sources()
    copy = tmp_path / "firmware_bridge"
    for pattern in sim_board.SOURCES:
        for path in glob.glob(os.path.join(src, pattern)):
            dest = copy / os.path.relpath(path, src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
    copy.chmod(0o555)                      # read-only, like site-packages may be
    try:
        err = sim_board.build(str(copy), str(tmp_path / "build"))
    finally:
        copy.chmod(0o755)
    assert err is None, err
    for name in ("firmware.elf", "simboard"):
        assert (tmp_path / "build" / name).is_file()


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`rtrl-edge ... | head`: the reader going away is not reported as a bug."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "rtrl_edge", "demo", "digits", "--epochs", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.readline()
    proc.stdout.close()                      # the reader goes away
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "bug" not in err and "Traceback" not in err, err
