"""`rtrl-edge run --actuation-delay N`: the forecaster becomes a
DelayCompensator over every channel of the board; what it refuses, in one
line and before anything runs, and a checkpointed run continued with
--resume against the real firmware in simavr."""
import io
import json
import os
import subprocess
import sys

import pytest

import rtrl_edge
from rtrl_edge import DelayCompensator, cli, data
from support import needs_simavr, simulated_board

ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))
RECORDING = data.list_recordings()[0]


def run_inproc(*argv):
    out = io.StringIO()
    args = cli.build_parser().parse_args(["run", *argv])
    return cli.run.main(args, out=out), out.getvalue()


def test_a_delay_needs_a_board_with_an_actuator(tmp_path):
    code, out = run_inproc("--replay", RECORDING, "--actuation-delay", "5", "--quiet")
    assert code == 2
    assert "--actuation-delay delays the commands sent to a board's actuator: it needs " \
           "--port with a board that has one" in out


@pytest.mark.parametrize("flags, named", [
    (["--learner", "rtrl"], "--learner"),
    (["--lr", "0.01", "--optimizer", "adam"], "--lr, --optimizer"),
])
def test_single_model_flags_are_refused_with_a_delay(flags, named):
    code, out = run_inproc("--replay", RECORDING, "--actuation-delay", "5", *flags)
    assert code == 2
    assert f"{named}: with --actuation-delay the forecaster is a DelayCompensator" in out


@pytest.mark.parametrize("flags", [[], ["--learner", "rtrl"]])
def test_hidden_zero_is_only_for_the_compensator(flags):
    code, out = run_inproc("--synthetic", "--hidden", "0", *flags)
    assert code == 2
    assert "--hidden 0: only --actuation-delay's compensator can do without RNN members" in out


def test_a_negative_delay_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["run", "--synthetic", "--actuation-delay", "-1"])
    assert exc.value.code == 2
    assert "expected an integer >= 0, got -1" in capsys.readouterr().err


@needs_simavr
def test_a_delayed_run_checkpoints_a_compensator_and_resumes_it(firmware_build, tmp_path):
    ck, js = tmp_path / "ck.npz", tmp_path / "s.json"

    def run(*argv, check=True):
        res = subprocess.run([sys.executable, "-m", "rtrl_edge", "run", "--port", port,
                              "--quiet", "--checkpoint", str(ck), *argv],
                             cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
        if check:
            assert res.returncode == 0, res.stdout + res.stderr
        return res

    with simulated_board(firmware_build) as port:
        res = run("--actuation-delay", "5", "--horizon", "3", check=False)
        assert res.returncode == 2 and "--horizon 3: with --actuation-delay 5 the forecast " \
            "is of the state when a command sent now lands" in res.stdout
        assert not ck.exists()
        run("--actuation-delay", "5", "--max-steps", "300", "--summary-json", str(js))
        s = json.loads(js.read_text())
        assert s["samples"] == 300 and s["horizon"] == 5 and s["commands"] > 200
        comp, extra = DelayCompensator.load_with_extra(ck)
        assert (comp.n_state, comp.n_command, comp.delay) == (3, 1, 5)
        assert comp.counters["samples"] == 300
        # a flag that differs from the checkpoint is refused, the file untouched
        before = ck.read_bytes()
        res = run("--resume", "--actuation-delay", "6", "--max-steps", "400", check=False)
        assert res.returncode == 2
        assert "--actuation-delay: checkpoint 5 (a DelayCompensator), command line 6" \
            in res.stdout
        res = run("--resume", "--horizon", "3", "--max-steps", "400", check=False)
        assert res.returncode == 2 and "--horizon: checkpoint 5, command line 3" in res.stdout
        assert ck.read_bytes() == before
        # left out, the delay is the checkpoint's
        run("--resume", "--max-steps", "400", "--summary-json", str(js))
        s = json.loads(js.read_text())
        assert s["samples"] == 400 and s["horizon"] == 5
        assert DelayCompensator.load(ck).counters["samples"] == 400
        # --hidden 0: the compensator's linear members alone
        run("--fresh", "--actuation-delay", "3", "--hidden", "0", "--max-steps", "100")
        lean = DelayCompensator.load(ck)
        assert lean.hidden == 0 and lean.delay == 3 and not any(
            name.startswith("RNN") for name in lean.names)
