"""The `rtrl-edge` command line: the demo on the shipped recording."""
import io
import os
import re
import subprocess
import sys

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
    args = cli.build_parser().parse_args(["demo", "--hidden", "100000", "--quiet"])
    assert cli.demo.main(args, out=out) == 2
    assert "--hidden 100000 --learner rtrl needs at least 3.6 PiB for the model" in out.getvalue()
    assert "--n-in 3 --n-out 3" in out.getvalue()


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
