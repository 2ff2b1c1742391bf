"""`rtrl-edge run` never loses what was learnt and never shows a traceback
for a user's mistake.

Each test reproduces a finding against the earlier `run`: a checkpoint
holding 4,178 learnt steps silently replaced by a 50-step run; a resumed
replay starting the recording over; differing flags ignored or refused
without their values; `recent nan (nan)`; tracebacks for absurd sizes; a
summary lost after the run because its folder did not exist; a forged NaN
checkpoint resuming with rc 0; a FIFO hanging the run.
"""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import OnlineRNN, checkpoint, cli, data
from rtrl_edge.loop import OnlineLoop

ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))
RECORDING = data.DEFAULT_RECORDING
KEY = b"a-key-of-at-least-16-bytes"


def run(*argv):
    """`rtrl-edge run ARGV` in this process: (exit code, output)."""
    out = io.StringIO()
    args = cli.build_parser().parse_args(["run", *argv])
    return cli.run.main(args, out=out), out.getvalue()


def replay(ck, *argv):
    """A single model (--learner rtrl) unless the test names one; auto
    checkpoints are tested in tests/test_run_auto.py."""
    plain = [] if "--resume" in argv or "--learner" in argv else ["--learner", "rtrl"]
    return run("--replay", RECORDING, "--hidden", "6", "--horizon", "4", "--quiet",
               "--checkpoint", str(ck), *plain, *argv)


def same_model(a, b):
    sa, sb = a.snapshot(), b.snapshot()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def files(folder):
    return sorted(p.name for p in folder.iterdir())


# -- an existing checkpoint ----------------------------------------------------

@pytest.mark.parametrize("kind", ["valid", "corrupt"])
def test_an_existing_checkpoint_is_never_replaced_without_resume_or_fresh(tmp_path, kind):
    ck = tmp_path / "good.npz"
    assert replay(ck, "--max-steps", "400")[0] == 0
    if kind == "corrupt":
        ck.write_bytes(ck.read_bytes()[:-100])
    before = ck.read_bytes()
    rc, text = replay(ck, "--max-steps", "50")
    assert rc == 2
    what = "a checkpoint (396 samples learnt)" if kind == "valid" else \
        "a file that is not a valid checkpoint"
    assert text == (f"rtrl-edge run: {ck} already holds {what}; continue it with --resume, "
                    f"or start over with --fresh (which keeps it as .bak)\n")
    assert ck.read_bytes() == before and files(tmp_path) == ["good.npz"]


def test_fresh_starts_over_and_keeps_the_old_file_as_bak(tmp_path):
    ck = tmp_path / "run.npz"
    assert replay(ck, "--max-steps", "400")[0] == 0
    first = ck.read_bytes()
    rc, text = replay(ck, "--max-steps", "30", "--fresh")
    assert rc == 0, text
    assert f"the previous checkpoint is kept as {ck}.bak" in text
    assert (tmp_path / "run.npz.bak").read_bytes() == first
    assert OnlineRNN.load(ck).stats["steps"] == 26
    second = ck.read_bytes()
    assert replay(ck, "--max-steps", "30", "--fresh")[0] == 0      # .bak is taken
    assert (tmp_path / "run.npz.bak").read_bytes() == first
    assert (tmp_path / "run.npz.bak2").read_bytes() == second
    assert files(tmp_path) == ["run.npz", "run.npz.bak", "run.npz.bak2"]


def test_resume_and_fresh_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--synthetic", "--checkpoint", "x.npz", "--resume", "--fresh"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# -- resuming ------------------------------------------------------------------

def test_a_resumed_replay_continues_after_the_last_sample_learnt(tmp_path):
    """Stopped after 1,000 samples and resumed, the model ends bit-identical
    to one uninterrupted run (it used to learn the first 1,000 twice)."""
    whole, parts = tmp_path / "whole.npz", tmp_path / "parts.npz"
    assert replay(whole)[0] == 0
    assert replay(parts, "--max-steps", "1000")[0] == 0
    rc, text = replay(parts, "--resume")
    assert rc == 0, text
    assert f"(996 samples learnt, continuing at sample 1,000)" in text
    a, ea = OnlineLoop.resume(str(whole))
    b, eb = OnlineLoop.resume(str(parts))
    assert same_model(a, b)
    assert np.array_equal(ea["loop_source_position"], eb["loop_source_position"])
    n = len(data.load_recording(RECORDING))
    assert int(eb["loop_source_position"][0]) == n and b.stats["steps"] == n - 4


def test_resume_refuses_differing_flags_naming_each_with_both_values(tmp_path):
    ck = tmp_path / "ck.npz"
    assert replay(ck, "--max-steps", "100")[0] == 0
    before = ck.read_bytes()
    rc, text = run("--replay", RECORDING, "--checkpoint", str(ck), "--resume",
                   "--hidden", "64", "--horizon", "3", "--learner", "snap1", "--lr", "0.5",
                   "--target", "1", "--seed", "4", "--optimizer", "adam")
    assert rc == 2
    for part in ("--horizon: checkpoint 4, command line 3",
                 "--target: checkpoint 0, command line 1",
                 "--learner: checkpoint rtrl, command line snap1",
                 "--hidden: checkpoint 6, command line 64",
                 "--optimizer: checkpoint sgd, command line adam",
                 "--lr: checkpoint 0.01, command line 0.5",
                 "--seed: checkpoint 0, command line 4"):
        assert part in text, (part, text)
    assert text.count("\n") == 1 and "summary" not in text and "resumed" not in text
    assert ck.read_bytes() == before


def test_flags_left_out_are_taken_from_the_checkpoint(tmp_path):
    ck = tmp_path / "ck.npz"
    assert replay(ck, "--max-steps", "100", "--learner", "snap1", "--lr", "0.003")[0] == 0
    rc, text = run("--replay", RECORDING, "--checkpoint", str(ck), "--resume",
                   "--max-steps", "200", "--quiet", "--hidden", "6")
    assert rc == 0, text
    assert "horizon 4" in text
    net = OnlineRNN.load(ck)
    assert net.learner == "snap1" and net.config["lr"] == 0.003 and net.stats["steps"] == 196


def test_a_resumed_run_with_nothing_left_prints_no_nan(tmp_path):
    ck = tmp_path / "ck.npz"
    assert replay(ck)[0] == 0
    rc, text = replay(ck, "--resume")
    assert rc == 0, text
    assert "nan" not in text.lower()
    assert "recent n/a (n/a)" in text
    assert "nothing left to do: the checkpoint had already learnt the whole recording" in text


def test_stale_temporaries_of_the_checkpoint_are_removed_at_start(tmp_path):
    ck = tmp_path / "ck.npz"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for i in range(3):
        (tmp_path / f".ck.npz.{dead.pid}.x{i}.tmp").write_bytes(b"half a checkpoint")
    rc, text = replay(ck, "--max-steps", "20")
    assert rc == 0
    assert "removed 3 temporary file(s) of" in text
    assert files(tmp_path) == ["ck.npz"]


# -- forged and odd checkpoints ----------------------------------------------------

def forge(path, change):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k].copy() for k in f.files}
    change(arrays)
    arrays.pop("checksum")
    arrays.pop("mac", None)
    arrays["checksum"] = np.array(checkpoint.checksum(arrays))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_a_forged_nan_checkpoint_is_refused_and_left_alone(tmp_path):
    """It used to resume with rc 0, never learn again and write NaN back."""
    ck = tmp_path / "ck.npz"
    assert replay(ck, "--max-steps", "100")[0] == 0
    forge(ck, lambda a: a["theta"].__setitem__(slice(None), np.nan))
    before = ck.read_bytes()
    rc, text = replay(ck, "--resume")
    assert rc == 2 and "non-finite" in text and "left as it is" in text
    assert ck.read_bytes() == before


def test_a_checkpoint_key_signs_and_refuses_forgeries(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(KEY)
    ck = tmp_path / "ck.npz"
    assert replay(ck, "--max-steps", "100", "--checkpoint-key", str(key))[0] == 0
    assert OnlineRNN.load(ck, key=KEY).stats["steps"] == 96
    rc, text = replay(ck, "--max-steps", "200", "--resume", "--checkpoint-key", str(key))
    assert rc == 0, text
    forge(ck, lambda a: a["theta"].__setitem__(0, 1.5))       # finite: passes the checksum
    before = ck.read_bytes()
    rc, text = replay(ck, "--resume", "--checkpoint-key", str(key))
    assert rc == 2 and "not signed" in text, text
    assert ck.read_bytes() == before


def test_a_short_key_file_is_refused_before_the_run(tmp_path):
    key = tmp_path / "key"
    key.write_text("secret\n")
    rc, text = replay(tmp_path / "ck.npz", "--checkpoint-key", str(key))
    assert rc == 2 and "holds 6 bytes; a key needs at least 16" in text
    assert files(tmp_path) == ["key"]


def test_a_fifo_as_checkpoint_is_refused_at_once(tmp_path):
    fifo = tmp_path / "ck.npz"
    os.mkfifo(fifo)
    for extra in ([], ["--resume"]):
        p = subprocess.run([sys.executable, "-m", "rtrl_edge", "run", "--synthetic",
                            "--checkpoint", str(fifo), "--max-steps", "10", *extra],
                           env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "is not a regular file" in p.stdout


# -- mistakes caught before anything runs ---------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["--hidden", "100000", "--learner", "rtrl"],
     "--hidden 100000 --learner rtrl needs at least 3.6 PiB for the model"),
    (["--hidden", "100000"], "--hidden 100000 (the auto mixture's RNN members) needs 14.2 PiB"),
    (["--horizon", str(10 ** 10)], "--horizon 10000000000 needs 372.5 GiB for the forecast "
                                   "window"),
    (["--learner", "tbptt", "--window", str(3 * 10 ** 9)],
     "--hidden 32 --learner tbptt --window 3000000000 needs at least 760.0 GiB for the model"),
])
def test_absurd_sizes_are_refused_with_the_bytes_they_need(argv, needle, tmp_path):
    """They used to end in MemoryError / OverflowError tracebacks.  (Run
    outside the source tree, whose uncompiled package would shadow the
    installed one.)"""
    p = subprocess.run([sys.executable, "-m", "rtrl_edge", "run", "--synthetic", *argv],
                       env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert needle in p.stdout and "of memory is available" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


@pytest.mark.parametrize("flag", ["--summary-json", "--plot"])
def test_output_paths_are_checked_before_the_run(tmp_path, flag):
    """A summary into a missing folder used to fail after the run, losing it."""
    ck = tmp_path / "ck.npz"
    target = tmp_path / "no" / "such" / "summary.json"
    rc, text = replay(ck, flag, str(target))
    assert rc == 2
    assert text == f"rtrl-edge run: {flag} {target}: the folder {target.parent} does not exist\n"
    assert files(tmp_path) == []


def test_the_cli_turns_an_unexpected_error_into_one_line(monkeypatch, capsys):
    def boom(args, out=sys.stdout):
        raise RuntimeError("something inside broke")
    monkeypatch.setattr(cli.plan, "main", boom)
    assert cli.main(["plan", "--n-in", "2", "--n-out", "1", "--memory", "1MB"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("rtrl-edge plan: RuntimeError: something inside broke")
    assert "RTRL_EDGE_TRACEBACK=1" in err
    monkeypatch.setenv("RTRL_EDGE_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        cli.main(["plan", "--n-in", "2", "--n-out", "1", "--memory", "1MB"])
