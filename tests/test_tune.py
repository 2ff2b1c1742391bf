"""`rtrl_edge.tuning` and `rtrl-edge tune`: the score against a forecast
loop written out here, exact budgets, identical results in this process, in
local worker processes and on a real Dask cluster (a scheduler and two
workers started by the fixture on 127.0.0.1), the command end to end, and
every error it reports."""
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import Forecaster, OnlineRNN, cli, data, executors, tuning
from rtrl_edge.cli import _preflight
from rtrl_edge.cli import tune as tune_cli
from support import launcher_dir, readme_block

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = data.list_recordings()
C = tuning.Candidate
#: a small grid with every learner of the full one
SMALL = [C("snap1", "elman", 8, 0.01), C("rtrl", "diag", 16, 0.01),
         C("uoro", "elman", 8, 0.03), C("rtrl", "elman", 8, 0.01)]


@pytest.fixture(scope="module")
def short():
    """Two short pieces of shipped recordings (300 samples each, 3 channels)."""
    return {"lac": data.load_recording(NAMES[0]).xyz[:300],
            "uac": data.load_recording(NAMES[1]).xyz[300:600]}


@pytest.fixture(scope="module")
def serial(short):
    return tuning.tune(short, 5, candidates=SMALL, executor=tuning.SerialExecutor())


def write_csv(path, xyz):
    """An ExtMarker CSV file as the recorder writes it: a quoted header,
    ';'-separated fields, decimal commas, CRLF line ends."""
    rows = ['"Frame";"Timestamp";"x";"y";"z"']
    rows += [f"{6 * i};{100 * i};" + ";".join(f"{v:.2f}".replace(".", ",") for v in row)
             for i, row in enumerate(xyz)]
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return str(path)


def tune(*argv, out=None):
    """`rtrl-edge tune ARGV` through the parser: (exit code, stdout)."""
    out = out or io.StringIO()
    args = cli.build_parser().parse_args(["tune", *argv])
    return tune_cli.main(args, out=out), out.getvalue()


# -- the grid, the score, the budgets --------------------------------------

def test_the_model_tune_scores_is_the_one_run_builds():
    assert (tuning.OPTIMIZER, tuning.SEED) == (_preflight.DEFAULTS["optimizer"],
                                               _preflight.DEFAULTS["seed"])
    full, quick = tuning.grid(), tuning.grid(quick=True)
    assert {(c.learner, c.cell) for c in full} == {(c.learner, c.cell) for c in quick} \
        == {("rtrl", "elman"), ("snap1", "elman"), ("uoro", "elman"), ("rtrl", "diag")}
    assert len(quick) == 8 < len(full) == 45 and set(quick) < set(full)
    assert all(c.hidden % 2 == 0 for c in full if c.cell == "diag")
    flags = tune_cli.run_flags(dict(learner="rtrl", cell="diag", hidden=64, lr=0.003), 7)
    args = cli.build_parser().parse_args(["run", "--replay", NAMES[0], *flags.split()])
    settings = _preflight.model_settings(args)
    assert (settings["kind"], settings["learner"], settings["cell"], settings["hidden"],
            settings["lr"], settings["horizon"], settings["optimizer"], settings["seed"]) \
        == ("plain", "rtrl", "diag", 64, 0.003, 7, tuning.OPTIMIZER, tuning.SEED)


def _ratio_written_out(xyz, target, candidate, h):
    """RMSE(forecast) / RMSE(last value) after the warm-up, with the model
    `rtrl-edge run` builds, fed target first."""
    order = [target] + [k for k in range(xyz.shape[1]) if k != target]
    x = xyz[:, order]
    net = OnlineRNN(x.shape[1], candidate.hidden, 1, learner=candidate.learner,
                    cell=candidate.cell, optimizer="sgd", lr=candidate.lr, clip=1.0,
                    normalize=True, seed=0)
    fc = Forecaster(net, h, delta=True)
    made = np.array([fc.update(row, row[:1])[0] for row in x])      # forecast of t + h
    start = max(h, math.ceil(0.2 * len(x)))
    t = np.arange(start, len(x))
    return np.sqrt(np.mean((made[t - h] - x[t, 0]) ** 2)) / \
        np.sqrt(np.mean((x[t - h, 0] - x[t, 0]) ** 2))


def test_score_is_the_forecast_error_over_the_last_value_error(short, serial):
    for row in serial.rows:
        c = C(row["learner"], row["cell"], row["hidden"], row["lr"])
        for name, xyz in short.items():
            expected = np.mean([_ratio_written_out(xyz, k, c, 5) for k in range(3)])
            assert row["per_recording"][name] == pytest.approx(expected, rel=1e-9)
        assert row["score"] == pytest.approx(np.mean(list(row["per_recording"].values())))
    scores = [r["score"] for r in serial.rows]
    assert scores == sorted(scores) and serial.chosen == serial.rows[0]
    assert 0 < serial.score < 1.2
    auto = serial.references["auto"]
    assert auto["hidden"] == 16 and 0 < auto["score"] < 1.2
    assert serial.references["last value"]["score"] == 1.0
    assert [r["scored_from"] for r in serial.recordings] == [60, 60]


def test_memory_is_exact_and_budgets_skip_before_evaluation(short):
    sized = tuning.check_budgets(tuning.grid(), 3, 5)
    for s in sized:
        c = s.candidate
        net = OnlineRNN(3, c.hidden, 1, learner=c.learner, cell=c.cell, optimizer="sgd")
        assert s.memory_bytes == Forecaster(net, 5, delta=True).memory_bytes, c
    sizes = sorted({s.memory_bytes for s in tuning.check_budgets(tuning.grid(quick=True), 3, 5)})
    budget = sizes[len(sizes) // 2]

    class Recording(tuning.SerialExecutor):
        def map(self, fn, tasks, progress=None):
            self.tasks = list(tasks)
            return super().map(fn, tasks, progress)
    ex = Recording()
    pieces = {"lac": short["lac"][:120]}
    result = tuning.tune(pieces, 5, memory_bytes=budget, quick=True, executor=ex)
    ran = {t.what for t in ex.tasks}
    assert ("auto", 16) in ran
    for row in result.rows:
        c = C(row["learner"], row["cell"], row["hidden"], row["lr"])
        if row["memory_bytes"] > budget:
            assert row["skipped"] == "memory" and row["score"] is None and c not in ran
        else:
            assert not row["skipped"] and row["score"] > 0 and c in ran
    assert any(r["skipped"] for r in result.rows) and result.chosen["memory_bytes"] <= budget
    assert result.budgets == dict(memory_bytes=budget, step_us=None)


def test_time_budget_uses_the_cost_model_of_this_machine(monkeypatch):
    pair = [C("snap1", "elman", 8, 0.01), C("snap1", "elman", 256, 0.01)]
    free = tuning.check_budgets(pair, 3, 5, step_us=1e9)
    small, big = (s.step_us for s in free)
    assert 0 < small < big
    budget = (small + big) / 2
    kept, cut = tuning.check_budgets(pair, 3, 5, step_us=budget)
    assert (kept.skipped, cut.skipped) == ("", "time")
    with pytest.raises(tuning.NothingFits, match=r"the fastest step is predicted at .* "
                                                 r"\(budget 0\.001 us\)"):
        tuning.check_budgets(pair, 3, 5, step_us=0.001)
    out = io.StringIO()                             # the command names the skipped figures
    quick = sorted(s.step_us for s in tuning.check_budgets(tuning.grid(quick=True), 3, 5,
                                                           step_us=1e9))
    budget = (quick[3] + quick[4]) / 2
    args = cli.build_parser().parse_args(["tune", NAMES[0], "--horizon", "5", "--quick",
                                          "--step-us", f"{budget:.3f}", "--jobs", "1"])
    monkeypatch.setattr(tuning, "evaluate", lambda task: tuning.Outcome(1.0, 4.0, 10, 0))
    assert tune_cli.main(args, out=out) == 0
    assert re.search(r"^  \w+/\w+ hidden \d+ \([\d.]+ us\)(, \d+ \([\d.]+ us\))*: over "
                     r"the time budget$", out.getvalue(), re.M)


def _smallest(horizon):
    return min(s.memory_bytes for s in tuning.check_budgets(tuning.grid(), 3, horizon))


def test_nothing_fits_names_the_smallest():
    smallest = _smallest(10)
    with pytest.raises(tuning.NothingFits,
                       match=rf"no candidate of the grid fits the budgets: the smallest needs "
                             rf"{smallest:,} bytes \(budget 1,000\)"):
        tuning.check_budgets(tuning.grid(), 3, 10, memory_bytes=1000)


def test_recordings_are_checked(short):
    for recordings, message in (
            ({"a": short["lac"][:20]}, "has 20 samples: horizon 5 and the warm-up"),
            ({"a": np.ones((300, 3))}, "never changes over 5 samples"),
            ({"a": np.full((300, 3), np.nan)}, "holds NaN or inf"),
            ({"a": short["lac"], "b": short["uac"][:, :2]}, "different numbers of channels"),
            ({}, "no recording")):
        with pytest.raises(ValueError, match=message):
            tuning.check_recordings(recordings, 5)
    flat = short["lac"].copy()
    flat[:, 1] = 7.0                                       # a constant channel is left out
    assert tuning.check_recordings({"a": flat}, 5)["a"][1] == [0, 2]


# -- identical results on every executor ------------------------------------

def test_local_processes_give_the_serial_results(short, serial):
    with tuning.LocalExecutor(2) as ex:
        local = tuning.tune(short, 5, candidates=SMALL, executor=ex)
    assert local.to_dict() == serial.to_dict()
    assert json.dumps(local.to_dict()) == json.dumps(serial.to_dict())
    assert isinstance(tuning.executor(1), tuning.SerialExecutor)
    assert tuning.executor().jobs == (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        tuning.LocalExecutor(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(argv, folder, procs):
    """`python ARGV` with this rtrl_edge importable, logging to the folder."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(rtrl_edge.__file__))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    log = open(folder / f"process-{len(procs)}.log", "wb")
    procs.append(subprocess.Popen([sys.executable, *argv], cwd=folder, env=env,
                                  stdout=log, stderr=subprocess.STDOUT))
    log.close()


def _worker(address, name, blocked=False):
    """A single-thread worker, no nanny, on loopback; `blocked`: one that
    cannot import rtrl_edge."""
    flags = [address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--name", name]
    if blocked:
        return ["-c", "import sys; sys.modules['rtrl_edge'] = None; "
                      "from distributed.cli.dask_worker import main; main()", *flags]
    return ["-m", "distributed.cli.dask_worker", *flags]


def _scheduler(folder, procs):
    """Start a scheduler on a free loopback port; its address."""
    path = folder / "scheduler.json"
    _start(["-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
            "--no-dashboard", "--scheduler-file", str(path)], folder, procs)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists():
            try:
                return json.loads(path.read_text())["address"]
            except (ValueError, KeyError):
                pass
        if procs[-1].poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError("the Dask scheduler did not start: "
                       + (folder / f"process-{len(procs) - 1}.log").read_text())


def _stop(procs):
    """Workers first, then the scheduler (a worker whose scheduler has gone
    waits to reconnect)."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real Dask scheduler and two single-thread workers, each its own
    process, on 127.0.0.1; all terminated at the end of the module."""
    distributed = pytest.importorskip("distributed")
    folder = tmp_path_factory.mktemp("dask")
    procs = []
    try:
        address = _scheduler(folder, procs)
        for i in range(2):
            _start(_worker(address, f"w{i}"), folder, procs)
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def cluster_without_rtrl_edge(tmp_path_factory):
    """A scheduler and one worker that cannot import rtrl_edge."""
    distributed = pytest.importorskip("distributed")
    folder = tmp_path_factory.mktemp("dask-blocked")
    procs = []
    try:
        address = _scheduler(folder, procs)
        _start(_worker(address, "blocked", blocked=True), folder, procs)
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def lonely_scheduler(tmp_path_factory):
    """A scheduler without workers."""
    pytest.importorskip("distributed")
    folder = tmp_path_factory.mktemp("dask-alone")
    procs = []
    try:
        yield _scheduler(folder, procs)
    finally:
        _stop(procs)


def test_dask_workers_give_the_serial_results(short, serial, dask_cluster):
    from distributed import get_task_stream
    with tuning.executor(scheduler=dask_cluster) as ex:
        assert isinstance(ex, tuning.DaskExecutor) and ex.jobs == 2
        assert ex.describe() == f"Dask at {dask_cluster} (2 workers)"
        with get_task_stream(client=ex.client) as stream:
            on_dask = tuning.tune(short, 5, candidates=SMALL, executor=ex)
    assert on_dask.to_dict() == serial.to_dict()
    ran_on = {task["worker"] for task in stream.data}
    assert len(ran_on) == 2                      # both workers took tasks


def test_a_scripts_function_reaches_the_workers_by_name(tmp_path, dask_cluster):
    (tmp_path / "tune_probe_module.py").write_text(
        "import os\n\ndef square(x):\n    return x * x, os.getpid()\n")
    fn = tuning.ByName("tune_probe_module", "square", (str(tmp_path),))
    with tuning.DaskExecutor(dask_cluster) as ex:
        done = []
        out = ex.map(fn, list(range(6)), progress=lambda d, n: done.append((d, n)))
    assert [v for v, _ in out] == [0, 1, 4, 9, 16, 25]
    assert os.getpid() not in {pid for _, pid in out}
    assert done == [(i, 6) for i in range(1, 7)]
    assert "tune_probe_module" not in sys.modules          # imported there, not here


def test_the_command_on_dask_writes_the_local_results(tmp_path, short, dask_cluster):
    csv = write_csv(tmp_path / "marker.csv", short["lac"])
    local, remote = tmp_path / "local.json", tmp_path / "dask.json"
    assert tune(csv, "--horizon", "4", "--quick", "--jobs", "1", "--quiet",
                "--summary-json", str(local))[0] == 0
    code, text = tune(csv, "--horizon", "4", "--quick", "--quiet", "--scheduler", dask_cluster,
                      "--summary-json", str(remote))
    assert code == 0 and "pass to rtrl-edge run: --learner" in text
    a, b = json.loads(local.read_text()), json.loads(remote.read_text())
    assert (a.pop("executor"), b.pop("executor")) == ("this process",
                                                      f"Dask at {dask_cluster} (2 workers)")
    assert a == b


def test_an_unreachable_scheduler_fails_in_one_line(monkeypatch, capsys):
    pytest.importorskip("distributed")
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{_free_port()}"
    code, text = tune(NAMES[0], "--horizon", "5", "--scheduler", address)
    err = capsys.readouterr().err
    assert code == 1 and text == ""
    assert re.fullmatch(rf"rtrl-edge tune: cannot use the Dask scheduler at {address} "
                        r"within 1 s: .+\n", err)


def test_a_scheduler_without_workers_fails_in_one_line(monkeypatch, capsys, lonely_scheduler):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    code, _ = tune(NAMES[0], "--horizon", "5", "--scheduler", lonely_scheduler)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"rtrl-edge tune: cannot use the Dask scheduler at "
                                        f"{lonely_scheduler} within 1 s")
    assert err.count("\n") == 1


def test_a_worker_without_rtrl_edge_is_found_before_the_run(capsys,
                                                            cluster_without_rtrl_edge):
    code, _ = tune(NAMES[0], "--horizon", "5", "--scheduler", cluster_without_rtrl_edge)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert re.fullmatch(rf"rtrl-edge tune: the Dask cluster at {cluster_without_rtrl_edge} "
                        r"cannot run these tasks: worker tcp://127\.0\.0\.1:\d+: .*rtrl_edge"
                        r".* \(install rtrl_edge [\d.]+, the same build as here, there\)\n", err)


def test_another_version_on_the_cluster_is_refused(monkeypatch, dask_cluster):
    monkeypatch.setattr(rtrl_edge, "__version__", "0.0.0-not-theirs")
    with pytest.raises(tuning.SchedulerError,
                       match=r"cannot run these tasks: the scheduler: it has rtrl_edge "
                             r"[\d.]+ \(install rtrl_edge 0\.0\.0-not-theirs"):
        tuning.DaskExecutor(dask_cluster)


def test_without_distributed_the_message_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)       # import fails
    code, _ = tune(NAMES[0], "--horizon", "5", "--scheduler", "tcp://127.0.0.1:8786")
    assert code == 2
    assert capsys.readouterr().err == ("rtrl-edge tune: --scheduler needs Dask's distributed: "
                                       "pip install 'rtrl-edge[dask]'\n")


# -- the command ------------------------------------------------------------

def test_the_command_on_a_shipped_recording(tmp_path, capsys):
    summary = tmp_path / "tune.json"
    code = cli.main(["tune", NAMES[0], "--horizon", "10", "--memory", "16KiB", "--quick",
                     "--jobs", "2", "--summary-json", str(summary)])
    out, err = capsys.readouterr()
    assert code == 0
    assert re.search(r"rtrl-edge tune: 7 of 8 candidates within the budgets, on 1 "
                     r"recording\(s\); running on 2 local processes", err)
    assert re.search(r"rtrl-edge tune: 24/24 tasks, \d+ s", err)        # 7 + auto, 3 channels
    rows = re.findall(r"^\s+(\d+)  (\w+)\s+(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+)\s+-$",
                      out, re.M)
    assert [int(r[0]) for r in rows] == list(range(1, 8))
    assert "rtrl/elman hidden 16 (29,368 bytes): over the memory budget" in out
    s = json.loads(summary.read_text())
    best = s["candidates"][0]
    assert s["chosen"] == {k: best[k] for k in ("learner", "cell", "hidden", "lr")}
    assert s["score"] == best["score"] == pytest.approx(float(rows[0][5]), abs=5e-4)
    assert s["budgets"] == {"memory_bytes": 16384, "step_us": None}
    assert s["references"]["auto"]["within_memory"] is False
    assert len(s["candidates"]) == 8 and s["grid"] == "quick"
    assert sum(c["skipped"] == "memory" for c in s["candidates"]) == 1
    assert s["run_flags"] == tune_cli.run_flags(best, 10)
    assert f"pass to rtrl-edge run: {s['run_flags']}\n" in out


def test_the_command_on_a_csv_file(tmp_path, short):
    csv = write_csv(tmp_path / "my-marker.csv", short["uac"])
    code, text = tune(csv, "--horizon", "3", "--quick", "--jobs", "1", "--quiet")
    assert code == 0
    assert "forecast 3 samples ahead on my-marker (no budget)" in text
    assert "rank" not in text                     # --quiet: the choice and references only
    assert re.search(r"best: \w+/\w+, hidden \d+, lr 0.01: score "
                     r"[\d.]+, [\d,]+ bytes", text)


def test_errors_are_one_line_and_write_nothing(tmp_path, capsys, short):
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,time,x,y,z\n1,2,3,4,5\n")
    csv = write_csv(tmp_path / "ok.csv", short["lac"])
    summary = tmp_path / "s.json"
    for argv, message in (
            (["no-such-recording"], "no-such-recording: neither a shipped recording ("),
            ([str(bad)], f"{bad}, line 1: expected the header"),
            ([str(tmp_path)], f"{tmp_path}: Is a directory"),
            ([csv, csv], f"{csv}: a recording named ok is given twice"),
            ([write_csv(tmp_path / "tiny.csv", short["lac"][:20])],
             "recording 'tiny' has 20 samples"),
            ([csv, "--memory", "1000"], "no candidate of the grid fits the budgets: the "
                                        f"smallest needs {_smallest(5):,} bytes (budget 1,000)"),
            ([csv, "--scheduler", "http://127.0.0.1:8786"], "--scheduler: expected "
                                                            "tcp://HOST:PORT, got"),
            ([csv, "--scheduler", "tcp://127.0.0.1"], "--scheduler: expected tcp://HOST:PORT"),
            ([csv, "--summary-json", str(tmp_path / "nowhere" / "s.json")],
             f"--summary-json {tmp_path / 'nowhere' / 's.json'}: the folder "
             f"{tmp_path / 'nowhere'} does not exist")):
        output = [] if "--summary-json" in argv else ["--summary-json", str(summary)]
        code, out = tune(*argv, "--horizon", "5", *output)
        err = capsys.readouterr().err
        assert code == 2 and out == "", argv
        assert err.startswith("rtrl-edge tune: " + message) and err.count("\n") == 1, err
        assert not summary.exists()
    with pytest.raises(SystemExit):
        tune(csv, "--horizon", "5", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:8786")
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_failure_after_the_run_is_one_line(tmp_path, capsys, short, monkeypatch):
    csv = write_csv(tmp_path / "ok.csv", short["lac"][:150])

    def no_space(path, obj):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(tune_cli, "write_json", no_space)
    code, _ = tune(csv, "--horizon", "5", "--quick", "--jobs", "1", "--quiet",
                   "--summary-json", str(tmp_path / "s.json"))
    assert (code, capsys.readouterr().err) == (
        1, f"rtrl-edge tune: --summary-json {tmp_path / 's.json'}: No space left on device\n")
    monkeypatch.setattr(tuning, "evaluate", lambda task: tuning.Outcome(math.inf, 1.0, 10, 0))
    monkeypatch.undo()          # write_json back, evaluate too: set it again
    monkeypatch.setattr(tuning, "evaluate", lambda task: tuning.Outcome(math.inf, 1.0, 10, 0))
    summary = tmp_path / "diverged.json"
    code, out = tune(csv, "--horizon", "5", "--quick", "--jobs", "1", "--quiet",
                     "--summary-json", str(summary))
    assert code == 1 and "diverged" in out and "pass to rtrl-edge run" not in out
    assert capsys.readouterr().err == ("rtrl-edge tune: every candidate within the budgets "
                                       "diverged (non-finite forecasts)\n")
    s = json.loads(summary.read_text())          # what was found is kept all the same
    assert s["chosen"] is None and s["run_flags"] is None
    assert all(c["diverged"] and c["score"] is None for c in s["candidates"])


def test_the_readme_commands_run_as_written(tmp_path):
    """Both README blocks through bash, as written; the Dask block on a free
    port instead of 8786, its scheduler and workers ended afterwards."""
    pytest.importorskip("distributed")
    env = dict(os.environ, PATH=os.pathsep.join(
        [launcher_dir(tmp_path), os.path.dirname(sys.executable), os.environ["PATH"]]))
    local = readme_block("### Tuning for your recordings", 0)
    done = subprocess.run(["bash", "-e", "-c", local], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    chosen = json.loads((tmp_path / "tune.json").read_text())["chosen"]
    assert "pass to rtrl-edge run: --learner" in done.stdout and chosen is not None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cluster = readme_block("### Tuning for your recordings", 1).replace("8786", port)
    script = f"set -e\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{cluster}"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pass to rtrl-edge run: --learner {chosen['learner']}" in done.stdout