"""`rtrl-edge run --mqtt` and `--source mqtt` against a real Mosquitto that
each test starts on a free loopback port (tests/mqtt_broker.py): forecasts
and the retained status arrive, a broker restart in the middle of a run is
survived while the loop keeps learning, samples read over MQTT are learnt
and malformed ones rejected and counted, a checkpoint continues, the
many-stream forms publish per stream, and the README's commands run as
written.  An independent paho client watches and feeds the broker."""
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rtrl_edge import cli, data
from support import launcher_dir, readme_block, wait_for

RECORDING = data.list_recordings()[0]
SMALL = ("--learner", "rtrl", "--hidden", "4")
ENV = dict(os.environ)


def run_inproc(*argv):
    out = io.StringIO()
    args = cli.build_parser().parse_args(["run", *argv])
    return cli.run.main(args, out=out), out.getvalue()


def drain(peer, topic, timeout=2.0):
    """Every JSON message on `topic` that arrives until `timeout` of quiet."""
    got = []
    while True:
        try:
            got.append(peer.next(topic, timeout=timeout)[0])
        except AssertionError:
            return got


_STARTED = []


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    """A run a failed test left running is killed (it would otherwise keep
    reconnecting to a broker that is gone, as a service should)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def start(tmp_path, *argv):
    env = dict(os.environ, PATH=launcher_dir(tmp_path) + os.pathsep + os.environ["PATH"])
    proc = subprocess.Popen(["rtrl-edge", "run", *argv], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _STARTED.append(proc)
    return proc


def read_until(proc, pattern, timeout=30):
    """Lines of `proc` up to the first matching `pattern` (fails on EOF or timeout)."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r}; got {''.join(lines)!r}")


def stop(proc, timeout=30):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def test_forecasts_and_status_arrive(broker, peers, tmp_path):
    peer = peers(broker.port, "home/breath/#")
    summary = tmp_path / "s.json"
    code, out = run_inproc("--replay", RECORDING, *SMALL, "--max-steps", "300",
                           "--mqtt", broker.url("home/breath"), "--summary-json", str(summary))
    assert code == 0, out
    assert "MQTT connected to 127.0.0.1" in out and "published 300" in out
    forecasts = drain(peer, "home/breath/forecast")
    s = json.loads(summary.read_text())
    assert len(forecasts) == s["forecasts"] == s["mqtt"]["published"] == 300
    assert [f["sample"] for f in forecasts] == list(range(1, 301))
    assert all(f["horizon"] == 10 and len(f["forecast"]) == 1 and isinstance(f["t"], float)
               for f in forecasts)
    # the retained status a late subscriber finds: the run stopped cleanly
    late = peers(broker.port, "home/breath/status")
    status, retained = late.next("home/breath/status")
    assert retained and status["state"] == "offline" and status["reason"] == "stopped"


def test_status_carries_the_run(broker, peers, tmp_path):
    peer = peers(broker.port, "p/status")
    code, out = run_inproc("--replay", RECORDING, *SMALL, "--max-steps", "500",
                           "--mqtt", broker.url("p"), "--status-every", "0.01")
    assert code == 0, out
    statuses = [s for s in drain(peer, "p/status") if s["state"] == "online"]
    assert statuses, "no online status"
    last = statuses[-1]
    assert last["samples"] == 500 and last["memory_bytes"] > 0
    assert last["latency_median_us"] > 0 and "mqtt" in last
    assert last["recent_forecast_rmse"] is not None


def test_broker_restart_is_survived_and_the_loop_keeps_learning(broker, peers, tmp_path):
    summary = tmp_path / "s.json"
    proc = start(tmp_path, "--synthetic", "--realtime", *SMALL, "--max-steps", "600",
                 "--mqtt", broker.url("r"), "--summary-json", str(summary))
    read_until(proc, "MQTT connected")
    peer = peers(broker.port, "r/forecast")
    peer.next("r/forecast", timeout=5)              # forecasts flow
    broker.stop()
    time.sleep(1.0)                                 # 100 samples learnt without a broker
    broker.start()
    peer = peers(broker.port, "r/forecast")
    peer.next("r/forecast", timeout=10)             # ... and flow again after reconnecting
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    s = json.loads(summary.read_text())
    assert s["samples"] == 600 and s["learned"] == 590
    assert s["mqtt"]["connects"] >= 2 and s["mqtt"]["disconnects"] >= 1
    assert s["mqtt"]["dropped_offline"] > 0            # made while away: dropped, counted
    assert s["mqtt"]["published"] + s["mqtt"]["dropped_offline"] == s["forecasts"]


def test_source_mqtt_learns_rejects_malformed_and_resumes(broker, peers, tmp_path):
    summary, ck = tmp_path / "s.json", tmp_path / "ck.npz"
    argv = ("--source", "mqtt", "--mqtt", broker.url("k"), *SMALL, "--horizon", "2",
            "--checkpoint", str(ck), "--resume", "--summary-json", str(summary))
    proc = start(tmp_path, *argv)
    read_until(proc, "waiting for the first sample on 'k/sample'|waiting for the first sample")
    pub = peers(broker.port, "k/forecast")
    bad = [b"not json", b"[1.0]", b"[1.0, NaN]", b'{"values": "x"}', b"[]"]
    for i in range(200):
        pub.publish("k/sample", json.dumps([float(i % 7), float(i % 5)]))
        if i % 40 == 39:
            pub.publish("k/sample", bad[i // 40])
    pub.next("k/forecast", lambda f: f["sample"] == 200, timeout=15)   # all learnt
    code, out = stop(proc)
    assert code == 0, out
    s = json.loads(summary.read_text())
    assert s["samples"] == 200 and s["source"]["malformed"] == 5
    assert s["source"]["received"] == 205
    # the next start continues the checkpoint: the width comes from it
    proc = start(tmp_path, *argv)
    lines = read_until(proc, "resumed from")
    assert not any("waiting for the first sample" in line for line in lines)
    pub2 = peers(broker.port, "k/forecast")
    for i in range(50):
        pub2.publish("k/sample", json.dumps([1.0, 2.0]))
    pub2.next("k/forecast", lambda f: f["sample"] == 250, timeout=15)
    code, out = stop(proc)
    assert code == 0, out
    assert json.loads(summary.read_text())["samples"] == 250


def test_channels_fix_the_width_beforehand(broker, peers, tmp_path):
    summary = tmp_path / "s.json"
    proc = start(tmp_path, "--source", "mqtt", "--channels", "2", "--mqtt", broker.url("w"),
                 *SMALL, "--horizon", "1", "--summary-json", str(summary))
    lines = read_until(proc, "MQTT connected")
    pub = peers(broker.port, "w/forecast")
    pub.publish("w/sample", json.dumps([1.0, 2.0, 3.0]))         # three: rejected
    for i in range(10):
        pub.publish("w/sample", json.dumps({"values": [i, 1.0], "t": 100.0 + i}))
    last = pub.next("w/forecast", lambda f: f["sample"] == 10, timeout=15)[0]
    assert last["t"] == 109.0                 # the sample's own time travels with its forecast
    code, out = stop(proc)
    assert code == 0, out
    assert not any("waiting for the first sample" in line for line in lines + [out])
    s = json.loads(summary.read_text())
    assert s["samples"] == 10 and s["source"]["malformed"] == 1


def test_split_channels_publish_per_stream(broker, peers, tmp_path):
    watch = [peers(broker.port, f"b/ch{c}/forecast") for c in range(3)]
    code, out = run_inproc("--replay", RECORDING, *SMALL, "--split-channels", "--max-steps",
                           "100", "--mqtt", broker.url("b"))
    assert code == 0, out
    for c, peer in enumerate(watch):      # each stream's forecasts, in order, on its own topic
        samples = [peer.next(f"b/ch{c}/forecast", timeout=3)[0]["sample"]
                   for _ in range(100)]
        assert samples == list(range(1, 101))


def test_streams_with_topics_of_their_own(broker, peers, tmp_path):
    cfg = tmp_path / "streams.json"
    cfg.write_text(json.dumps({"streams": [{"name": "kitchen", "inputs": [0, 1]},
                                           {"name": "hall"}]}))
    summary = tmp_path / "s.json"
    proc = start(tmp_path, "--source", "mqtt", "--streams", str(cfg), "--mqtt",
                 broker.url("h"), *SMALL, "--horizon", "1", "--summary-json", str(summary))
    read_until(proc, "2 streams")
    pub = peers(broker.port, "h/hall/forecast")
    kitchen = peers(broker.port, "h/kitchen/forecast")
    for i in range(30):
        pub.publish("h/kitchen/sample", json.dumps([i * 0.1, 1.0]))
        pub.publish("h/hall/sample", json.dumps(i * 0.2))
    pub.publish("h/hall/sample", json.dumps([1.0, 2.0]))        # the wrong width: rejected
    pub.next("h/hall/forecast", lambda f: f["sample"] == 30, timeout=15)
    kitchen.next("h/kitchen/forecast", lambda f: f["sample"] == 30, timeout=15)
    code, out = stop(proc)
    assert code == 0, out
    s = json.loads(summary.read_text())
    assert s["streams"]["kitchen"]["samples"] == 30 and s["streams"]["hall"]["samples"] == 30
    assert s["streams"]["hall"]["source"]["malformed"] == 1


@pytest.mark.parametrize("argv, message, code", [
    (("--source", "mqtt"), "--source mqtt needs --mqtt", 2),
    (("--replay", RECORDING, "--mqtt-ca", "ca.pem"), "--mqtt-ca goes with --mqtt", 2),
    (("--replay", RECORDING, "--channels", "2", "--mqtt", "mqtt://h/p"),
     "--channels is for --source mqtt", 2),
    (("--replay", RECORDING, "--mqtt", "http://h/p"), "--mqtt: ", 2),
    (("--replay", RECORDING, "--mqtt", "mqtt://127.0.0.1:1/p"), "--mqtt mqtt://127.0.0.1:1/p",
     1),
    (("--port", "loop://", "--realtime"), "--realtime paces --replay or --synthetic", 2),
])
def test_refusals(mqtt, tmp_path, monkeypatch, argv, message, code):
    monkeypatch.chdir(tmp_path)
    got, out = run_inproc(*argv, *SMALL)
    assert got == code and message in out, out
    assert out.count("\n") == 1 and not list(tmp_path.iterdir())


def test_the_readme_commands_run_as_written(broker, peers, tmp_path):
    """The README's MQTT block with the broker's port for 1883; the line that
    starts a broker is this test's broker instead."""
    if not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")):
        if os.environ.get("CI"):
            pytest.fail("mosquitto_pub/_sub are missing: .ci/run installs mosquitto-clients")
        pytest.skip("mosquitto_pub/_sub are not installed (apt-get install mosquitto-clients)")
    lines = [re.split(r"\s+# ", line)[0].strip() for line in
             readme_block("### MQTT: forecasts to the rest of the system").splitlines()]
    lines = [line.replace("1883", str(broker.port)) for line in lines if line]
    assert lines[0].startswith("mosquitto -p")
    replay, live, pub, sub = lines[1:]
    env = dict(os.environ, PATH=launcher_dir(tmp_path) + os.pathsep + os.environ["PATH"])
    watch = subprocess.Popen(shlex.split(sub) + ["-C", "5"], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE)
    _STARTED.append(watch)
    # mosquitto_sub has subscribed when the broker logs its SUBSCRIBE
    assert wait_for(lambda: "home/#" in broker.log.read_text(), 10), broker.log.read_text()
    done = subprocess.run(["bash", "-c", replay], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out, _ = watch.communicate(timeout=10)
    assert out.count("home/breath/forecast {") >= 4, out
    forecasts = peers(broker.port, "home/kitchen/forecast")
    proc = subprocess.Popen(["bash", "-c", "exec " + live], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _STARTED.append(proc)
    read_until(proc, "waiting for the first sample")
    for _ in range(5):
        assert subprocess.run(["bash", "-c", pub], env=env, timeout=10).returncode == 0
    for _ in range(5):
        assert forecasts.next("home/kitchen/forecast", timeout=5)[0]["horizon"] == 10
    code, out = stop(proc)
    assert code == 0, out
    assert "stopped: stopped after 5 samples" in out
    assert os.path.exists(tmp_path / "kitchen.npz")


if __name__ == "__main__":     # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
