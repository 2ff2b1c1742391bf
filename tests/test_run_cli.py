"""`rtrl-edge run`: the online loop from the command line -- sources, the
summary and its JSON, live progress only on a terminal, checkpoints and
--resume, a clean stop on SIGTERM/SIGINT, and resume after SIGKILL losing
nothing learnt before the last checkpoint.

Subprocesses run `python -m rtrl_edge` outside the source tree, on the
rtrl_edge this process imported; waits are deadlines on conditions (a file
appearing, a process exiting), never sleeps followed by timing asserts.
"""
import errno
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import tty

import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import OnlineRNN, cli, data
from rtrl_edge.forecast import Forecaster
from rtrl_edge.adapters import SyntheticSource
from rtrl_edge.loop import _COUNTERS, OnlineLoop
from support import wait_for

ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))
RECORDING = data.list_recordings()[0]
SUMMARY_KEYS = set(_COUNTERS) | {
    "horizon", "forecast_rmse", "baseline_rmse", "recent_forecast_rmse",
    "recent_baseline_rmse", "loss", "latency", "divergence_recoveries", "memory_bytes",
    "elapsed_s", "source", "stop_reason"}
# long enough (about 100+ us a sample) that a run is still going when it is
# signalled or killed a fraction of a second after its first checkpoint
SLOW_HIDDEN = "48"


PLAIN = ("--learner", "--lr", "--cell", "--optimizer", "--window", "--rec-density")


def single_model(argv):
    """These tests are about the loop around one model: without a model flag
    `run` would build the auto mixture (tests/test_run_auto.py), so a fresh
    run gets --learner rtrl (which a resumed rtrl checkpoint matches)."""
    if any(flag in argv for flag in PLAIN):
        return list(argv)
    return [*argv, "--learner", "rtrl"]


def run_inproc(*argv):
    """`rtrl-edge run ARGV` in this process: (exit code, output)."""
    out = io.StringIO()
    args = cli.build_parser().parse_args(["run", *single_model(argv)])
    return cli.run.main(args, out=out), out.getvalue()


class Procs:
    def __init__(self, cwd):
        self.cwd, self.procs = cwd, []

    def start(self, *argv, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen([sys.executable, "-m", "rtrl_edge", "run", *single_model(argv)],
                             cwd=self.cwd,
                             env=ENV, text=True, **kw)
        self.procs.append(p)
        return p

    def run(self, *argv, timeout=60):
        p = self.start(*argv)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)


@pytest.fixture
def procs(tmp_path):
    ps = Procs(tmp_path)
    try:
        yield ps
    finally:
        ps.close()


def strict_json(path):
    """Parse as JSON proper: NaN and Infinity are not JSON."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    with open(path, encoding="utf-8") as f:
        return json.loads(f.read(), parse_constant=refuse)


def load_checkpoint(path):
    net, extra = OnlineLoop.resume(str(path))
    return net, extra, dict(zip(_COUNTERS, (int(v) for v in extra["loop_counters"])))


def cli_loop(hidden, horizon=10, seed=0):
    """In process, the loop `rtrl-edge run --synthetic` builds."""
    net = OnlineRNN(3, hidden, 1, learner="rtrl", cell="elman", optimizer="sgd", lr=1e-2,
                    clip=1.0, normalize=True, seed=seed)
    return OnlineLoop(Forecaster(net, horizon, delta=True), SyntheticSource(seed=seed),
                      inputs=[0, 1, 2], targets=(0,))


def same_model(a, b):
    sa, sb = a.snapshot(), b.snapshot()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


# -- sources, summary, JSON, plot ----------------------------------------------------

@pytest.mark.parametrize("source", [["--replay", RECORDING], ["--synthetic"]],
                         ids=["replay", "synthetic"])
def test_run_with_max_steps_prints_a_summary_and_writes_the_same_as_json(source, tmp_path):
    path = tmp_path / "summary.json"
    rc, text = run_inproc(*source, "--max-steps", "700", "--hidden", "8", "--horizon", "3",
                          "--summary-json", str(path))
    assert rc == 0, text
    s = strict_json(path)
    assert SUMMARY_KEYS <= set(s), SUMMARY_KEYS - set(s)
    assert s["samples"] == 700 and s["stop_reason"] == "max steps" and s["horizon"] == 3
    assert s["learned"] == 697 and s["source"] == {"replayed": 700}
    assert set(s["latency"]) == {"median_us", "p99_us", "max_us", "samples"}
    assert "\r" not in text                      # not a terminal: no live progress
    # the printed summary and the JSON are the same numbers
    assert "stopped: max steps after 700 samples" in text
    assert f"forecast RMSE {s['forecast_rmse']:.4g} (repeat last value " \
           f"{s['baseline_rmse']:.4g})" in text
    assert f"median {s['latency']['median_us']:.1f} us" in text
    assert f"deadline misses {s['deadline_misses']}" in text
    assert f"memory_bytes {s['memory_bytes']:,}" in text


def test_summary_json_is_valid_json_when_nothing_has_been_scored_yet(tmp_path):
    """Fewer samples than the horizon: no forecast has met its target, the
    RMSEs are undefined -- and the file must still be JSON (no NaN token)."""
    path = tmp_path / "summary.json"
    rc, text = run_inproc("--synthetic", "--max-steps", "5", "--horizon", "10", "--hidden", "4",
                          "--summary-json", str(path))
    assert rc == 0, text
    s = strict_json(path)
    assert s["samples"] == 5


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "run.png"
    rc, text = run_inproc("--replay", RECORDING, "--max-steps", "400", "--hidden", "8",
                          "--plot", str(png))
    assert rc == 0, text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert f"plot: {png}" in text


# -- bad arguments ------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["run"], "one of the arguments --port --replay --synthetic --source is required"),
    (["run", "--synthetic", "--replay", RECORDING], "not allowed with argument"),
    (["run", "--synthetic", "--horizon", "0"], "expected a positive integer"),
    (["run", "--synthetic", "--hidden", "-3"], "expected an integer >= 0, got -3"),
    (["run", "--synthetic", "--max-steps", "0"], "expected a positive integer"),
    (["run", "--synthetic", "--deadline-ms", "0"], "expected a positive number"),
    (["run", "--synthetic", "--checkpoint-every", "nan"], "expected a positive number"),
    (["run", "--synthetic", "--lr", "inf"], "expected a positive number"),
    (["run", "--replay", "nope"], "invalid choice"),
    (["run", "--synthetic", "--learner", "bogus"], "invalid choice"),
    (["run", "--synthetic", "--baud", "fast"], "expected a positive integer"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--synthetic", "--target", "3"], "--target 3 but the source has 3 channels"),
    (["--synthetic", "--target", "-1"], "--target -1 but the source has 3 channels"),
    (["--synthetic", "--cell", "diag", "--hidden", "5"], "n_hidden must be even"),
    (["--synthetic", "--resume"], "--resume needs --checkpoint PATH"),
])
def test_impossible_runs_exit_2_with_a_message(argv, message):
    rc, text = run_inproc(*argv, "--max-steps", "10")
    assert rc == 2 and message in text, text
    assert "summary" not in text


# -- checkpoints and --resume ----------------------------------------------------------

def test_resume_with_a_missing_checkpoint_starts_fresh(tmp_path):
    ck = tmp_path / "ck.npz"
    rc, text = run_inproc("--synthetic", "--hidden", "4", "--max-steps", "200",
                          "--checkpoint", str(ck), "--resume", "--quiet")
    assert rc == 0, text
    assert "resumed" not in text and "stopped: max steps after 200 samples" in text
    net, extra, counters = load_checkpoint(ck)
    assert counters["samples"] == 200 and net.stats["steps"] == 190


def test_resume_continues_the_counts_and_the_model(tmp_path):
    ck, js = tmp_path / "ck.npz", tmp_path / "s.json"
    assert run_inproc("--synthetic", "--hidden", "6", "--max-steps", "300",
                      "--checkpoint", str(ck))[0] == 0
    net0, _, c0 = load_checkpoint(ck)
    rc, text = run_inproc("--synthetic", "--hidden", "6", "--max-steps", "500", "--checkpoint",
                          str(ck), "--resume", "--summary-json", str(js))
    assert rc == 0, text
    assert f"resumed from {ck} ({net0.stats['steps']:,} samples learnt, continuing at sample " \
           f"{c0['samples']:,})" in text
    s = strict_json(js)
    assert s["samples"] == 500 and c0["samples"] == 300
    net1, _, c1 = load_checkpoint(ck)
    assert c1["samples"] == 500 and c1["learned"] == s["learned"] >= 290 + 200 - 10
    # the model went on from the checkpoint's, not from a fresh one
    assert net1.stats["steps"] == net0.stats["steps"] + (c1["learned"] - c0["learned"])


def test_resume_from_a_checkpoint_of_another_horizon_is_refused(tmp_path):
    ck = tmp_path / "ck.npz"
    assert run_inproc("--synthetic", "--hidden", "4", "--max-steps", "50", "--horizon", "5",
                      "--checkpoint", str(ck))[0] == 0
    before = ck.read_bytes()
    rc, text = run_inproc("--synthetic", "--max-steps", "50", "--horizon", "7",
                          "--checkpoint", str(ck), "--resume")
    assert rc == 2 and "cannot resume" in text, text
    assert ck.read_bytes() == before


@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage"])
def test_resume_from_a_corrupt_checkpoint_exits_2_and_leaves_it_alone(tmp_path, how):
    ck = tmp_path / "ck.npz"
    assert run_inproc("--synthetic", "--hidden", "4", "--max-steps", "100",
                      "--checkpoint", str(ck))[0] == 0
    raw = bytearray(ck.read_bytes())
    if how == "truncated":
        raw = raw[:len(raw) * 2 // 3]
    elif how == "flipped":
        raw[len(raw) // 2] ^= 0x40
    else:
        raw = bytearray(b"not a checkpoint at all\n" * 10)
    ck.write_bytes(bytes(raw))
    mtime = ck.stat().st_mtime_ns
    rc, text = run_inproc("--synthetic", "--hidden", "4", "--max-steps", "100",
                          "--checkpoint", str(ck), "--resume")
    assert rc == 2, text
    assert "cannot resume" in text and str(ck) in text and "left as it is" in text
    assert "summary" not in text
    assert ck.read_bytes() == bytes(raw) and ck.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def test_a_checkpoint_that_cannot_be_written_is_reported_and_the_run_completes(
        tmp_path, monkeypatch):
    """Every write fails (disk full): the run completes, reports each failure,
    and exits 1 -- it used to exit 0 with nothing saved."""
    ck = tmp_path / "ck.npz"

    def full(self, path, extra=None, *, key=None):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(OnlineRNN, "save", full)
    rc, text = run_inproc("--synthetic", "--hidden", "4", "--max-steps", "300",
                          "--checkpoint", str(ck), "--checkpoint-every", "0.001")
    assert rc == 1, text
    assert "stopped: max steps after 300 samples" in text
    assert re.search(r"checkpoints written 0, failed [1-9]", text), text
    assert re.search(rf"checkpoint to '{re.escape(str(ck))}' failed: No space left on "
                     rf"device; the previous one is intact", text), text
    assert "the last checkpoint could not be written; what was learnt since the start " \
           "is lost" in text
    assert not ck.exists()


def test_a_checkpoint_into_a_missing_folder_is_refused_before_the_run(tmp_path):
    ck = tmp_path / "missing-dir" / "ck.npz"
    rc, text = run_inproc("--synthetic", "--hidden", "4", "--max-steps", "300",
                          "--checkpoint", str(ck))
    assert rc == 2, text
    assert text.strip() == (f"rtrl-edge run: --checkpoint {ck}: the folder "
                            f"{ck.parent} does not exist")


def test_a_diverging_model_does_not_end_the_run(tmp_path):
    ck = tmp_path / "ck.npz"
    rc, text = run_inproc("--synthetic", "--hidden", "8", "--lr", "3e38", "--max-steps",
                          "2000", "--checkpoint", str(ck), "--quiet")
    assert rc == 0, text
    assert "stopped: max steps after 2000 samples" in text
    assert int(re.search(r"divergence recoveries (\d+)", text).group(1)) > 0
    assert load_checkpoint(ck)[2]["samples"] == 2000


# -- live progress only on a terminal -------------------------------------------------

def _stop_after_first_checkpoint(p, ck, sig=signal.SIGINT):
    """The loop is running once its first checkpoint exists (at least
    --checkpoint-every seconds into it): stop it with `sig`."""
    assert wait_for(lambda: ck.exists() or p.poll() is not None, 30)
    assert p.poll() is None, "the run ended before it could be signalled"
    p.send_signal(sig)


@pytest.mark.parametrize("terminal", [True, False], ids=["tty", "pipe"])
def test_live_progress_on_a_terminal_only(procs, tmp_path, terminal):
    ck = tmp_path / "ck.npz"
    # the first checkpoint comes 0.8 s into the loop: progress (every 0.5 s)
    # has been due at least once by then
    argv = ["--synthetic", "--hidden", SLOW_HIDDEN, "--checkpoint", str(ck),
            "--checkpoint-every", "0.8"]
    if terminal:
        master, slave = os.openpty()
        tty.setraw(slave)                       # no '\n' -> '\r\n' translation
        try:
            p = procs.start(*argv, stdout=slave)
        finally:
            os.close(slave)
        chunks = []
        try:
            _stop_after_first_checkpoint(p, ck)
            while True:                         # read to EOF (EIO once the child exits)
                ready, _, _ = select.select([master], [], [], 20)
                assert ready, "no output from the run"
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(master)
        out = b"".join(chunks).decode()
        assert p.wait(timeout=20) == 0
    else:
        p = procs.start(*argv)
        _stop_after_first_checkpoint(p, ck)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
    assert "summary" in out and "stopped: stopped after" in out
    if terminal:
        lines = re.findall(r"\rsamples +\d+ +loss", out)
        assert len(lines) >= 1, out[:500]
    else:
        assert "\r" not in out and "samples  " not in out.split("summary")[0]


# -- stopping: SIGTERM, SIGINT; SIGKILL and resume -------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_cleanly_with_a_final_checkpoint(procs, tmp_path, sig):
    ck, js = tmp_path / "ck.npz", tmp_path / "s.json"
    p = procs.start("--synthetic", "--hidden", SLOW_HIDDEN, "--checkpoint", str(ck),
                    "--checkpoint-every", "0.3", "--summary-json", str(js), "--quiet")
    assert wait_for(lambda: ck.exists() or p.poll() is not None, 30)
    assert p.poll() is None, p.communicate()
    first = load_checkpoint(ck)[2]["samples"]
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert "summary" in out and "stopped: stopped after" in out
    s = strict_json(js)
    assert s["stop_reason"] == "stopped"
    assert first <= s["samples"] < 20000            # stopped early, not at the end
    net, extra, counters = load_checkpoint(ck)       # the final checkpoint: the last sample
    assert counters["samples"] == s["samples"] and counters["learned"] == s["learned"]
    assert net.stats["steps"] == s["learned"]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["ck.npz", "s.json"]


def _killed_run(procs, ck):
    """Start a slow synthetic run, SIGKILL it once a checkpoint exists; the
    checkpoint's (net, extra, counters)."""
    p = procs.start("--synthetic", "--hidden", SLOW_HIDDEN, "--checkpoint", str(ck),
                    "--checkpoint-every", "0.2", "--quiet")
    assert wait_for(lambda: ck.exists() or p.poll() is not None, 30)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGKILL, "the run ended before it was killed"
    return load_checkpoint(ck)


def test_resume_after_sigkill_loses_nothing_before_the_last_checkpoint(procs, tmp_path):
    ck, js = tmp_path / "ck.npz", tmp_path / "s.json"
    net, extra, counters = _killed_run(procs, ck)
    n = counters["samples"]
    assert 0 < n < 20000
    # the checkpoint holds exactly what an uninterrupted run has after n samples
    ref = cli_loop(int(SLOW_HIDDEN))
    ref.run(max_steps=n)
    assert same_model(net, ref.net)
    state = ref.fc.state()
    assert all(np.array_equal(extra[k], state[k]) for k in state)
    assert {k: counters[k] for k in ("samples", "learned", "forecasts", "rejected", "gaps")} \
        == {k: ref.counters[k] for k in ("samples", "learned", "forecasts", "rejected", "gaps")}
    # and --resume goes on from it: the counts continue from the checkpoint's
    rc, out, err = procs.run("--synthetic", "--hidden", SLOW_HIDDEN, "--checkpoint", str(ck),
                             "--resume", "--max-steps", str(n + 300), "--summary-json",
                             str(js), "--quiet")
    assert rc == 0, err
    assert f"resumed from {ck} ({net.stats['steps']:,} samples learnt, continuing at sample " \
           f"{n:,})" in out
    s = strict_json(js)
    assert s["samples"] == n + 300 and s["stop_reason"] == "max steps"
    net2, _, c2 = load_checkpoint(ck)
    assert c2["samples"] == n + 300
    assert net2.stats["steps"] == net.stats["steps"] + c2["learned"] - counters["learned"]


def test_resumed_stream_is_contiguous_or_a_gap(tmp_path):
    """After --resume the loop must not learn from pairs that straddle the
    restart as if the stream had gone on: (x_{t-h} from before the
    checkpoint, y_t from the restarted source).  Either the replay continues
    where the checkpoint left it (the model then equals an uninterrupted run)
    or the restart is a gap (the window restarts)."""
    ck = tmp_path / "ck.npz"
    n, k, hidden = 400, 150, 6
    assert run_inproc("--synthetic", "--hidden", str(hidden), "--max-steps", str(n),
                      "--checkpoint", str(ck))[0] == 0
    net0, extra0, _ = load_checkpoint(ck)
    assert run_inproc("--synthetic", "--hidden", str(hidden), "--max-steps", str(n + k),
                      "--checkpoint", str(ck), "--resume")[0] == 0
    resumed, _, _ = load_checkpoint(ck)

    contiguous = cli_loop(hidden)                    # as if never stopped
    contiguous.run(max_steps=n + k)
    gap = OnlineLoop(Forecaster(net0, 10, delta=True), SyntheticSource(seed=0),
                     inputs=[0, 1, 2], targets=(0,))
    gap.restore(extra0)                              # restored, a gap, the stream anew
    gap.gap()
    gap.run(max_steps=n + k)
    assert same_model(resumed, contiguous.net) or same_model(resumed, gap.net), \
        "the resumed run learnt across the restart as if the stream were contiguous"


def test_threads_split_the_model_and_a_resumed_run_may_change_them(tmp_path, monkeypatch):
    """--threads runs exact RTRL's n^4 term on K cores: the checkpoint is the
    one a single thread writes, bit for bit, and stores no thread count, so
    --resume may carry on with another K (it is not a model flag)."""
    built = []
    init = OnlineRNN.__init__

    def recording_init(self, *a, **kw):
        init(self, *a, **kw)
        built.append(self.threads)
    monkeypatch.setattr(OnlineRNN, "__init__", recording_init)
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    base = ("--synthetic", "--hidden", "9", "--max-steps", "150", "--quiet", "--checkpoint")
    assert run_inproc(*base, str(one))[0] == 0
    assert run_inproc(*base, str(two), "--threads", "2")[0] == 0
    assert built == [1, 2]
    net1, _, _ = load_checkpoint(one)
    net2, _, _ = load_checkpoint(two)
    assert net2.threads == 1          # not stored: loaded with the default
    for name, value in net1.params.items():
        np.testing.assert_array_equal(net2.params[name], value, err_msg=name)
    more = ("--synthetic", "--hidden", "9", "--max-steps", "300", "--quiet", "--checkpoint")
    rc, text = run_inproc(*more, str(one), "--resume")
    assert rc == 0, text
    built.clear()
    rc, text = run_inproc(*more, str(two), "--resume", "--threads", "3")
    assert rc == 0, text
    assert built == [3]               # the resumed model, on 3 cores
    for name, value in load_checkpoint(one)[0].params.items():
        np.testing.assert_array_equal(load_checkpoint(two)[0].params[name], value,
                                      err_msg=name)


def test_threads_must_be_a_positive_count(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(["run", "--synthetic", "--threads", "0"])
    assert stop.value.code == 2
    assert "--threads" in capsys.readouterr().err
