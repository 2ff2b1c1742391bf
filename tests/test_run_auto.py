"""`rtrl-edge run` and `rtrl-edge demo` without a model flag use
`Forecaster.auto`; its checkpoints resume exactly and refuse single-model
flags."""
import io
import re

import numpy as np

from rtrl_edge import AutoForecaster, cli, data
from rtrl_edge.loop import OnlineLoop

RECORDING = data.DEFAULT_RECORDING


def run(*argv):
    out = io.StringIO()
    args = cli.build_parser().parse_args(["run", *argv])
    return cli.run.main(args, out=out), out.getvalue()


def replay(ck, *argv):
    return run("--replay", RECORDING, "--horizon", "4", "--quiet", "--checkpoint", str(ck),
               *argv)


def full_state(fc):
    state = dict(fc.state())
    for i, m in enumerate(fc.members):
        if hasattr(m, "net"):
            state.update({f"net{i}:{k}": v for k, v in m.net.snapshot().items()})
    return state


def test_run_without_a_model_flag_uses_auto_and_beats_the_last_value(tmp_path):
    ck = tmp_path / "ck.npz"
    rc, text = replay(ck, "--max-steps", "1500")
    assert rc == 0, text
    fc, extra = OnlineLoop.resume_any(str(ck))
    assert isinstance(fc, AutoForecaster) and fc.horizon == 4 and fc.hidden == 16
    rmse, base = (float(v) for v in re.search(
        r"forecast RMSE ([\d.]+) \(repeat last value ([\d.]+)\)", text).groups())
    assert rmse < 0.8 * base


def test_a_resumed_auto_run_ends_as_an_uninterrupted_one(tmp_path):
    whole, parts = tmp_path / "whole.npz", tmp_path / "parts.npz"
    assert replay(whole, "--max-steps", "900")[0] == 0
    assert replay(parts, "--max-steps", "400")[0] == 0
    rc, text = replay(parts, "--resume", "--max-steps", "900")
    assert rc == 0, text
    assert "(396 samples learnt, continuing at sample 400)" in text
    a, _ = OnlineLoop.resume_any(str(whole))
    b, _ = OnlineLoop.resume_any(str(parts))
    sa, sb = full_state(a), full_state(b)
    assert sa.keys() == sb.keys()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_single_model_flags_on_an_auto_checkpoint_are_refused(tmp_path):
    ck = tmp_path / "ck.npz"
    assert replay(ck, "--max-steps", "100")[0] == 0
    before = ck.read_bytes()
    rc, text = replay(ck, "--resume", "--learner", "snap1", "--hidden", "8")
    assert rc == 2
    assert "--learner: the checkpoint holds the auto mixture (no such setting), command " \
           "line snap1" in text
    assert "--hidden: checkpoint 16, command line 8" in text
    assert ck.read_bytes() == before


def test_the_demo_uses_auto_by_default_and_reports_its_members():
    out = io.StringIO()
    args = cli.build_parser().parse_args(["demo", "--quiet"])
    assert cli.demo.main(args, out=out) == 0
    text = out.getvalue()
    assert "model: Forecaster.auto" in text and "members at the end" in text
    ratio = float(re.search(r"second half\s+[\d.]+\s+[\d.]+\s+([\d.]+)", text).group(1))
    assert ratio < 0.5      # recorded 0.35 (one RTRL model: 0.59)
