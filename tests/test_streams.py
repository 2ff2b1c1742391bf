"""Many streams in one process: `rtrl_edge.streams` (the configuration file,
`MultiLoop`) and `rtrl-edge run --split-channels / --streams`.

The reference for `MultiLoop` is each stream run alone by its own
`OnlineLoop`: serving several streams from one thread must change no
forecast of any of them (bitwise), and the memory is exactly the sum of the
models'."""
import io
import json
import os
import subprocess

import pytest

from rtrl_edge import OnlineRNN, cli, data
from rtrl_edge.adapters import ReplaySource
from rtrl_edge.forecast import Forecaster
from rtrl_edge.loop import OnlineLoop
from rtrl_edge.streams import MultiLoop, load_config
from support import launcher_dir, readme_block

RECORDING = data.list_recordings()[0]
SMALL = ("--learner", "rtrl", "--hidden", "6")


def make_loop(source, inputs, seed, collected=None):
    fc = Forecaster(OnlineRNN(len(inputs), 6, 1, seed=seed, normalize=True, clip=1.0), 3,
                    delta=True)
    loop = OnlineLoop(fc, source, inputs=inputs, targets=(inputs[0],))
    if collected is not None:
        loop.on_forecast = lambda f: collected.append(float(f[0]))
    return loop


def test_multiloop_changes_no_forecast_and_sums_memory():
    values = data.load_recording(RECORDING).xyz[:600]
    shared = ReplaySource(values)
    got = {c: [] for c in range(3)}
    multi = MultiLoop({f"ch{c}": make_loop(shared, [c], seed=c, collected=got[c])
                       for c in range(3)})
    summary = multi.run()
    assert summary["stop_reason"] == "source exhausted"
    assert summary["samples"] == 3 * 600 and summary["n_streams"] == 3
    for c in range(3):
        alone = []
        loop = make_loop(ReplaySource(values), [c], seed=c, collected=alone)
        loop.run()
        assert len(alone) == len(got[c]) > 500
        assert alone == got[c], f"stream ch{c} differs from the same stream run alone"
        assert summary["streams"][f"ch{c}"]["forecast_rmse"] == loop.summary()["forecast_rmse"]
    # each stream's forecaster (model and forecast window), as if built alone
    alone = [make_loop(ReplaySource(values), [c], seed=c).fc.memory_bytes for c in range(3)]
    assert summary["memory_bytes"] == multi.memory_bytes == sum(alone)
    # the merged latency histogram holds every sample of every stream
    assert summary["latency"]["samples"] == 3 * 600


def test_multiloop_streams_with_sources_of_their_own_and_max_steps():
    values = data.load_recording(RECORDING).xyz[:300]
    loops = {"a": make_loop(ReplaySource(values[:, :2]), [0, 1], seed=1),
             "b": make_loop(ReplaySource(values[:100, 2:]), [0], seed=2)}
    summary = MultiLoop(loops).run(max_steps=250)
    assert summary["streams"]["a"]["samples"] == 250
    assert summary["streams"]["b"]["samples"] == 100      # its source ran out first
    # b's source is exhausted; a stops at max_steps with samples left in its source
    assert summary["stop_reason"] == "max steps"
    with pytest.raises(ValueError, match="at least one stream"):
        MultiLoop({})


def test_multiloop_checkpoints_every_stream_together(tmp_path):
    values = data.load_recording(RECORDING).xyz[:200]
    shared = ReplaySource(values)
    loops = {}
    for c in range(2):
        loops[f"s{c}"] = make_loop(shared, [c], seed=c)
        loops[f"s{c}"].checkpoint = str(tmp_path / f"s{c}.npz")
    MultiLoop(loops).run()
    for c in range(2):
        _, extra = OnlineLoop.resume(str(tmp_path / f"s{c}.npz"))
        assert int(extra["loop_source_position"][0]) == 200


# -- the configuration file ----------------------------------------------------

def write(tmp_path, text, name="streams.json"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_json_and_toml(tmp_path):
    doc = {"streams": [{"name": "bed", "inputs": [0, 1], "target": 1, "horizon": 5,
                        "lr": 0.003},
                       {"name": "hall.2", "learner": "snap1", "hidden": 32, "seed": 0}]}
    assert load_config(write(tmp_path, json.dumps(doc))) == doc["streams"]
    toml = ('[[streams]]\nname = "bed"\ninputs = [0, 1]\ntarget = 1\nhorizon = 5\n'
            'lr = 0.003\n\n[[streams]]\nname = "hall.2"\nlearner = "snap1"\nhidden = 32\n'
            'seed = 0\n')
    assert load_config(write(tmp_path, toml, "streams.toml")) == doc["streams"]


@pytest.mark.parametrize("doc, message", [
    ("{", "not valid JSON"),
    ('{"streams": []}', "non-empty list 'streams'"),
    ('[1]', "non-empty list 'streams'"),
    ('{"streams": [3]}', "stream 1: must be an object"),
    ('{"streams": [{"inputs": [0]}]}', "'name' must be 1-64"),
    ('{"streams": [{"name": "a/b"}]}', "'name' must be 1-64"),
    ('{"streams": [{"name": "a"}, {"name": "a"}]}', "stream 'a': the name is used twice"),
    ('{"streams": [{"name": "a", "colour": 1}]}', "unknown setting(s) colour"),
    ('{"streams": [{"name": "a", "inputs": []}]}', "'inputs' must be a non-empty list"),
    ('{"streams": [{"name": "a", "inputs": [0, 0]}]}', "distinct"),
    ('{"streams": [{"name": "a", "inputs": [-1]}]}', "distinct channel numbers"),
    ('{"streams": [{"name": "a", "target": "x"}]}', "'target' must be a channel"),
    ('{"streams": [{"name": "a", "inputs": [1], "target": 0}]}', "must be one of its inputs"),
    ('{"streams": [{"name": "a", "hidden": 0}]}', "'hidden' has the wrong type or sign"),
    ('{"streams": [{"name": "a", "lr": "fast"}]}', "'lr' has the wrong type or sign"),
    ('{"streams": [{"name": "a", "horizon": true}]}', "'horizon' has the wrong type"),
    ('{"streams": [{"name": "a", "channels": 0}]}', "'channels' (values per sample"),
])
def test_config_errors_name_the_stream_and_the_fault(tmp_path, doc, message):
    path = write(tmp_path, doc)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert message in str(err.value) and path in str(err.value)


def test_config_bad_toml(tmp_path):
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(write(tmp_path, "[[streams]\nname=", "bad.toml"))


# -- the command line ------------------------------------------------------------

def run(*argv):
    out = io.StringIO()
    args = cli.build_parser().parse_args(["run", *argv])
    return cli.run.main(args, out=out), out.getvalue()


def test_split_channels_checkpoints_and_resumes(tmp_path):
    folder = tmp_path / "ck"
    summary = tmp_path / "s.json"
    code, out = run("--replay", RECORDING, "--split-channels", *SMALL, "--max-steps", "400",
                    "--checkpoint", str(folder), "--summary-json", str(summary))
    assert code == 0, out
    assert "3 streams" in out and "memory_bytes" in out
    s = json.loads(summary.read_text())
    assert sorted(s["streams"]) == ["ch0", "ch1", "ch2"]
    assert all(one["samples"] == 400 for one in s["streams"].values())
    nets = [OnlineRNN.load(str(folder / f"ch{c}.npz")) for c in range(3)]
    assert all(net.n_in == 1 for net in nets)
    fcs = [Forecaster(net, 10, delta=True) for net in nets]
    assert s["memory_bytes"] == sum(fc.memory_bytes for fc in fcs)
    assert s["memory_bytes"] == sum(one["memory_bytes"] for one in s["streams"].values())
    before = {c: (folder / f"ch{c}.npz").read_bytes() for c in range(3)}
    # an existing checkpoint is never replaced without --resume or --fresh
    code, out = run("--replay", RECORDING, "--split-channels", *SMALL,
                    "--checkpoint", str(folder))
    assert code == 2 and "already holds a checkpoint (390 samples learnt)" in out
    assert all((folder / f"ch{c}.npz").read_bytes() == before[c] for c in range(3))
    code, out = run("--replay", RECORDING, "--split-channels", "--resume", "--max-steps",
                    "600", "--checkpoint", str(folder), "--summary-json", str(summary))
    assert code == 0, out
    assert out.count("resumed from") == 3 and "continuing at sample 400" in out
    s = json.loads(summary.read_text())
    assert all(one["samples"] == 600 for one in s["streams"].values())
    code, out = run("--replay", RECORDING, "--split-channels", *SMALL, "--fresh",
                    "--max-steps", "10", "--checkpoint", str(folder))
    assert code == 0 and out.count("previous checkpoint is kept as") == 3
    assert (folder / "ch0.npz.bak").exists()


def test_streams_file_with_its_own_settings(tmp_path):
    cfg = write(tmp_path, json.dumps({"streams": [
        {"name": "xyz", "inputs": [0, 1, 2], "target": 2, "learner": "snap1", "hidden": 12},
        {"name": "z", "inputs": [2], "horizon": 4}]}))
    summary = tmp_path / "s.json"
    code, out = run("--replay", RECORDING, "--streams", cfg, "--learner", "rtrl", "--hidden",
                    "5", "--max-steps", "300", "--checkpoint", str(tmp_path / "ck"),
                    "--summary-json", str(summary))
    assert code == 0, out
    xyz = OnlineRNN.load(str(tmp_path / "ck" / "xyz.npz"))
    z = OnlineRNN.load(str(tmp_path / "ck" / "z.npz"))
    assert (xyz.config["learner"], xyz.n_hidden, xyz.n_in) == ("snap1", 12, 3)
    assert (z.config["learner"], z.n_hidden, z.n_in) == ("rtrl", 5, 1)
    s = json.loads(summary.read_text())
    assert s["streams"]["z"]["horizon"] == 4 and s["streams"]["xyz"]["horizon"] == 10


@pytest.mark.parametrize("extra, message", [
    (("--split-channels", "--target", "1"), "--target is for one stream"),
    (("--split-channels", "--plot", "x.png"), "--plot is for one stream"),
    (("--split-channels", "--actuation-delay", "2"), "--actuation-delay is for one stream"),
    (("--streams", "missing.json"), "--streams missing.json: No such file"),
])
def test_streams_refusals(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    code, out = run("--replay", RECORDING, *SMALL, *extra)
    assert code == 2 and message in out, out


def test_streams_refuse_channels_the_source_lacks_and_a_checkpoint_file(tmp_path):
    cfg = write(tmp_path, json.dumps({"streams": [{"name": "a", "inputs": [0, 5]}]}))
    code, out = run("--replay", RECORDING, "--streams", cfg, *SMALL)
    assert code == 2 and "stream 'a' reads channel 5; the source has 3 channels" in out
    afile = tmp_path / "ck"
    afile.write_text("mine")
    code, out = run("--replay", RECORDING, "--split-channels", *SMALL, "--checkpoint",
                    str(afile))
    assert code == 2 and "--checkpoint names a folder" in out
    assert afile.read_text() == "mine"


def test_streams_resumed_at_different_places_are_refused(tmp_path):
    folder = tmp_path / "ck"
    for steps, name in (("100", "a"), ("200", "b")):
        cfg = write(tmp_path, json.dumps({"streams": [{"name": name, "inputs": [0]}]}))
        assert run("--replay", RECORDING, "--streams", cfg, *SMALL, "--max-steps", steps,
                   "--checkpoint", str(folder))[0] == 0
    both = write(tmp_path, json.dumps({"streams": [{"name": "a", "inputs": [0]},
                                                   {"name": "b", "inputs": [0]}]}))
    before = {n: (folder / f"{n}.npz").read_bytes() for n in "ab"}
    code, out = run("--replay", RECORDING, "--streams", both, "--resume", "--checkpoint",
                    str(folder))
    assert code == 2 and "stand at different samples of the recording (100, 200)" in out
    assert all((folder / f"{n}.npz").read_bytes() == before[n] for n in "ab")
    assert os.path.isdir(folder)


def test_the_readme_commands_run_as_written(tmp_path):
    block = readme_block("### Many sensors in one process")
    env = dict(os.environ, PATH=launcher_dir(tmp_path) + os.pathsep + os.environ["PATH"])
    done = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(tmp_path / "streams")) == ["ch0.npz", "ch1.npz", "ch2.npz"]
    assert sorted(os.listdir(tmp_path / "streams2")) == ["chest.npz", "z.npz"]
    assert done.stdout.count("summary: 3 streams") == 1
    assert done.stdout.count("summary: 2 streams") == 1


def test_streams_refuse_a_bad_file_and_a_checkpoint_folder_without_parent(tmp_path):
    cfg = write(tmp_path, '{"streams": [{"name": "a", "hidden": -1}]}')
    code, out = run("--replay", RECORDING, "--streams", cfg, *SMALL)
    assert code == 2 and out == (f"rtrl-edge run: --streams {cfg}: stream 'a': 'hidden' has "
                                 f"the wrong type or sign: -1\n")
    missing = tmp_path / "no" / "ck"
    code, out = run("--replay", RECORDING, "--split-channels", *SMALL, "--checkpoint",
                    str(missing))
    assert code == 2 and f"the folder {tmp_path / 'no'} does not exist" in out
    assert not (tmp_path / "no").exists()
