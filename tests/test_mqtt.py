"""Tests of rtrl_edge.adapters.mqtt against a real Mosquitto broker.

Each broker test starts its own ``mosquitto`` on a free loopback port (config,
log and, for TLS, a throw-away CA and server certificate made with
``openssl`` in tmp_path) and stops it in the fixture's teardown.  What the
link sends is observed by a second, independent paho client; samples are
published by a third.  Nothing is mocked; all traffic stays on 127.0.0.1.
Waits are deadlines on conditions; back-offs are short (0.1 to 0.5 s).

The URL, credentials and payload tests need neither paho nor mosquitto; the
rest skip, saying why, if either is missing (CI installs both).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rtrl_edge

from rtrl_edge.adapters.mqtt import (EXPECTED, INSTALL, MAX_SAMPLE_BYTES, MqttUrl, parse_sample,
                                     parse_url, read_credentials)
from mqtt_broker import MOSQUITTO_PASSWD, Broker
from support import wait_for

# a child process imports the rtrl_edge under test (installed or built in
# place), never the uncompiled sources of the folder it starts in
CHILD_ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))
FAST = dict(min_backoff=0.1, max_backoff=0.5, connect_timeout=3.0)


# -- URL, credentials, payloads (no broker) ------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("mqtt://localhost/plant", MqttUrl("mqtt", "localhost", 1883, "plant", False)),
    ("mqtts://broker.example/a/b", MqttUrl("mqtts", "broker.example", 8883, "a/b", True)),
    ("mqtts://10.0.0.2:8884/site/pump-1", MqttUrl("mqtts", "10.0.0.2", 8884, "site/pump-1", True)),
    ("mqtt://[::1]:1884/p", MqttUrl("mqtt", "::1", 1884, "p", False)),
    ("MQTT://Host/p", MqttUrl("mqtt", "Host", 1883, "p", False)),
])
def test_parse_url(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize("url, why", [
    ("http://h/p", "unsupported scheme 'http'"),
    ("h:1883/p", "no scheme"),
    ("mqtt://h", "no PREFIX"),
    ("mqtt://h/", "no PREFIX"),
    ("mqtt:///p", "no host"),
    ("mqtt://:1883/p", "no host"),
    ("mqtt://h:abc/p", "port 'abc' is not a number"),
    ("mqtt://h:/p", "port '' is not a number"),
    ("mqtt://h:0/p", "port 0 is out of range 1-65535"),
    ("mqtt://h:70000/p", "port 70000 is out of range 1-65535"),
    ("mqtt://::1/p", "an IPv6 address must be in brackets"),
    ("mqtt://[::1/p", "unclosed '['"),
    ("mqtt://[::1]x/p", "unexpected 'x' after the IPv6 address"),
    ("mqtt://h/a/+/b", "the prefix 'a/+/b' contains a wildcard"),
    ("mqtt://h/a/#", "the prefix 'a/#' contains a wildcard"),
    ("mqtt://h/a/", "the prefix 'a/' starts or ends with '/'"),
    ("mqtt://h//a", "the prefix '/a' starts or ends with '/'"),
    ("mqtt://h/a//b", "the prefix 'a//b' has an empty level"),
    ("mqtt://h/$SYS/x", "reserved for the broker"),
    ("mqtt://h/p?x=1", "a query ('?') is not allowed"),
    ("mqtt://user:s3cret@h/p", "credentials do not belong in the URL"),
])
def test_parse_url_rejects(url, why):
    with pytest.raises(ValueError) as info:
        parse_url(url)
    msg = str(info.value)
    assert why in msg and msg.endswith(f"expected {EXPECTED}") and "\n" not in msg
    assert "s3cret" not in msg          # a password in a URL is not repeated into logs


def test_read_credentials(tmp_path):
    f = tmp_path / "cred"
    for text, expected in [("user:pa:ss\n", ("user", "pa:ss")),
                           ("\ufeffuser:p w\r\nsecond:line\n", ("user", "p w")),
                           ("u:", ("u", ""))]:
        f.write_text(text, encoding="utf-8")
        assert read_credentials(f) == expected


@pytest.mark.parametrize("content, error, why", [
    (None, FileNotFoundError, "cannot read the MQTT credentials file"),
    (b"", ValueError, "has an empty first line"),
    (b"\nuser:pw\n", ValueError, "has an empty first line"),
    (b"justapassword\n", ValueError, "has no ':' on its first line"),
    (b":pw\n", ValueError, "has an empty USERNAME"),
    (b"\xffuser:pw\n", ValueError, "is not UTF-8 text"),
])
def test_read_credentials_errors(tmp_path, content, error, why):
    f = tmp_path / "cred"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(error) as info:
        read_credentials(f)
    msg = str(info.value)
    assert why in msg and str(f) in msg and "\n" not in msg
    assert "justapassword" not in msg and "pw" not in msg.replace(str(f), "")
    if content is None:
        assert info.value.errno == 2


def test_parse_sample_forms():
    values, t, seq = parse_sample(b"[1, 2.5, -3e2]")
    assert values.dtype == np.float64 and values.tolist() == [1.0, 2.5, -300.0]
    assert (t, seq) == (None, None)
    values, t, seq = parse_sample(b'{"values": [4, 5], "t": 12.25, "seq": 7, "unit": "V"}', 2)
    assert (values.tolist(), t, seq) == ([4.0, 5.0], 12.25, 7)
    values, t, seq = parse_sample(b"3.5", 1)
    assert (values.tolist(), t, seq) == ([3.5], None, None)


# (payload, why) for a 2-channel stream: every kind of malformed sample
MALFORMED = [
    (b"", "empty payload"),
    (b"not json", "not JSON"),
    (b"\xff\xfe[1, 2]", "not UTF-8"),
    (b'"1, 2"', "got a string"),
    (b"null", "got null"),
    (b"[]", "no values"),
    (b"[1, 2, 3]", "3 values, the stream has 2 channels"),
    (b"7", "1 values, the stream has 2 channels"),
    (b"[1, NaN]", "non-finite number NaN"),
    (b"[-Infinity, 1]", "non-finite number -Infinity"),
    (b"[1, 1e999]", "value 1 is not finite"),
    (b"[1, " + b"9" * 400 + b"]", "value 1 is not finite"),
    (b"[1, true]", "value 1 is true/false"),
    (b"[1, [2]]", "value 1 is a list"),
    (b'[1, "2"]', "value 1 is a string"),
    (b'{"t": 1}', 'needs "values"'),
    (b'{"values": [1, 2], "t": "noon"}', '"t" must be a finite number'),
    (b'{"values": [1, 2], "seq": 1.5}', '"seq" must be an integer >= 0'),
    (b'{"values": [1, 2], "seq": -1}', '"seq" must be an integer >= 0'),
    (b"[" + b"1," * (MAX_SAMPLE_BYTES // 2) + b"1]", "-byte limit"),
]


@pytest.mark.parametrize("payload, why", MALFORMED, ids=range(len(MALFORMED)))
def test_parse_sample_rejects(payload, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_sample(payload, 2)


def test_imports_without_paho(tmp_path):
    """The module imports without paho; making a link says how to install it."""
    code = ("import sys; sys.modules['paho'] = None\n"
            "from rtrl_edge.adapters import mqtt\n"
            "mqtt.parse_url('mqtt://h/p')\n"
            "try:\n    mqtt.MqttLink('mqtt://h/p')\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=CHILD_ENV, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert INSTALL in out.stdout and "paho-mqtt >= 2" in out.stdout


# -- a real broker ----------------------------------------------------------------

@pytest.fixture
def links(mqtt):
    from rtrl_edge.adapters.mqtt import MqttLink
    made = []

    def make(url, **kw):
        made.append(MqttLink(url, **{**FAST, **kw}))
        return made[-1]
    yield make
    for link in made:
        link.close()


def test_forecasts_arrive(broker, links, peers):
    link = links(broker.url("site/a"))
    link.start()
    obs = peers(broker.port, "site/a/#")
    assert link.connected
    assert link.publish_forecast({"t": 1.5, "forecast": np.array([0.25, -1.0]), "h": np.int64(3)})
    doc, retain = obs.next("site/a/forecast")
    assert doc == {"t": 1.5, "forecast": [0.25, -1.0], "h": 3} and not retain
    assert link.publish_forecast({"t": 2.0, "forecast": [float("nan"), np.float32(2.0)]},
                                 stream="pump2")
    doc, _ = obs.next("site/a/pump2/forecast")
    assert doc == {"t": 2.0, "forecast": [None, 2.0]}      # JSON has no NaN
    before = link.stats()
    with pytest.raises(ValueError, match="bad MQTT stream name 'a/#'"):
        link.publish_forecast({"t": 3.0}, stream="a/#")
    with pytest.raises(TypeError):
        link.publish_forecast({"t": object()})
    assert link.stats() == before
    assert before["published"] == 2 and before["dropped_offline"] == 0


def test_status_retained_and_clean_close(broker, links, peers):
    link = links(broker.url("st"), client_id="edge-1")
    obs = peers(broker.port, "st/status")
    link.start()
    doc, _ = obs.next("st/status")
    assert doc == {"state": "online", "client_id": "edge-1"}    # on connecting
    link.publish_status({"step": 10, "rmse": np.float64(0.5)})
    obs.next("st/status", lambda d: d.get("step") == 10)         # it went out ...
    late = peers(broker.port, "st/status")                      # ... and is retained
    doc, retain = late.next("st/status")
    assert retain and doc == {"state": "online", "client_id": "edge-1", "step": 10, "rmse": 0.5}
    with pytest.raises(TypeError):
        link.publish_status(["not", "a", "dict"])
    src = link.source(channels=1)
    link.close()
    doc, _ = obs.next("st/status", lambda d: d["state"] == "offline")
    assert doc == {"state": "offline", "reason": "stopped", "client_id": "edge-1"}
    doc, retain = peers(broker.port, "st/status").next("st/status")
    assert retain and doc["reason"] == "stopped"
    link.close()                                                # idempotent
    assert not link.connected and not link.publish_forecast({"t": 1})
    assert link.stats()["dropped_offline"] == 1 and link.stats()["disconnects"] == 0
    assert src.read() == [] and src.exhausted


def test_context_manager_reports_the_error(broker, mqtt, peers):
    from rtrl_edge.adapters.mqtt import MqttLink
    obs = peers(broker.port, "cm/status")
    with pytest.raises(KeyError):
        with MqttLink(broker.url("cm"), **FAST) as link:
            assert link.connected
            raise KeyError("boom")
    doc, _ = obs.next("cm/status", lambda d: d["state"] == "offline")
    assert doc["reason"] == "error: KeyError"


def test_last_will_when_the_process_dies(broker, peers, tmp_path):
    obs = peers(broker.port, "lw/status")
    code = ("import time\nfrom rtrl_edge.adapters.mqtt import MqttLink\n"
            f"link = MqttLink({broker.url('lw')!r}, client_id='doomed')\n"
            "link.start()\nlink.publish_status({'step': 1})\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=CHILD_ENV, cwd=tmp_path)
    try:
        obs.next("lw/status", lambda d: d.get("step") == 1, timeout=20)
        proc.kill()                                  # SIGKILL: no DISCONNECT is sent
        proc.wait(5)
        doc, _ = obs.next("lw/status", lambda d: d["state"] == "offline")
        assert doc == {"state": "offline", "reason": "connection lost", "client_id": "doomed"}
    finally:
        proc.kill()
        proc.wait()


def test_broker_restart_is_survived(broker, links, peers):
    link = links(broker.url("rs"), client_id="edge-rs")
    src = link.source(channels=2)
    link.start()
    link.publish_status({"note": "before"})
    pub = peers(broker.port, None)
    assert src.wait_subscribed(3)
    pub.publish("rs/sample", b'{"values": [1, 2], "seq": 0}')
    assert wait_for(lambda: src.wait(0.05), 3)
    assert [v.tolist() for v in src.read()] == [[1.0, 2.0]] and not src.gap
    pub.close()

    broker.stop()
    assert wait_for(lambda: not link.connected, 3)
    assert link.publish_forecast({"t": 1.0, "forecast": [0.0]}) is False   # dropped, no raise
    link.publish_status({"note": "while down"})                             # kept for later
    stats = link.stats()
    assert stats["dropped_offline"] == 1 and stats["disconnects"] == 1
    assert "lost the connection" in link.last_error
    assert src.read() == [] and not src.gap and not src.exhausted

    broker.start()                                   # same port, empty: no retained status
    obs = peers(broker.port, "rs/#")
    assert wait_for(lambda: link.connected, 3)       # within the back-off (<= 0.5 s)
    doc, retain = obs.next("rs/status")              # the last status, republished
    assert doc == {"state": "online", "client_id": "edge-rs", "note": "while down"}
    assert wait_for(lambda: src.subscribed, 3)       # re-subscribed: samples flow again
    pub = peers(broker.port, None)
    pub.publish("rs/sample", b'{"values": [3, 4], "seq": 1}')
    assert src.wait(3)
    assert [v.tolist() for v in src.read()] == [[3.0, 4.0]]
    assert src.gap                                   # samples may have been lost meanwhile
    assert link.publish_forecast({"t": 2.0, "forecast": [1.0]})
    assert obs.next("rs/forecast")[0]["t"] == 2.0
    stats = src.stats()
    assert stats["connects"] == 2 and stats["disconnects"] == 1 and stats["seq_gaps"] == 0


def test_latest_status_is_retained_after_a_reconnect(broker, links, peers):
    """A status in flight when the broker dies is not resent over a newer one."""
    link = links(broker.url("ls"))
    link.start()
    broker.proc.send_signal(signal.SIGSTOP)          # unread, unacknowledged ...
    link.publish_status({"n": 1})
    broker.proc.kill()                               # ... and lost with the broker
    broker.proc.wait(5)
    assert wait_for(lambda: not link.connected, 3)
    link.publish_status({"n": 2})                    # kept while down
    broker.start()
    assert wait_for(lambda: link.connected, 3)
    assert wait_for(lambda: link.stats()["statuses"] == 3, 3)
    time.sleep(0.2)                                  # room for any resend to land
    doc, retain = peers(broker.port, "ls/status").next("ls/status")
    assert retain and doc["n"] == 2


def test_malformed_samples_are_counted_and_the_rest_come_through(broker, links, peers):
    link = links(broker.url("mf"))
    src = link.source(channels=2)
    link.start()
    assert src.wait_subscribed(3)
    pub = peers(broker.port, None)
    good = []
    for i, (payload, why) in enumerate(MALFORMED):
        sample = {"values": [i, -i], "t": i / 10}
        good.append(sample)
        pub.publish("mf/sample", json.dumps(sample))
        pub.publish("mf/sample", payload)
        assert wait_for(lambda: src.stats()["malformed"] == i + 1, 3), (i, src.last_error)
        assert why in src.last_error and "'mf/sample'" in src.last_error
    pub.publish("mf/sample", b"[100, 200]")
    assert wait_for(lambda: src.stats()["received"] == 2 * len(MALFORMED) + 1, 3)
    got = src.read()
    assert [v.tolist() for v in got] == [[s["t"] * 10, -s["t"] * 10] for s in good] + [[100, 200]]
    assert src.last_t is None and src.channels == 2 and not src.gap
    stats = src.stats()
    assert stats["malformed"] == len(MALFORMED) and stats["read"] == len(MALFORMED) + 1
    assert link.stats()["malformed"] == len(MALFORMED) and link.connected


def test_seq_gap_and_overflow(broker, links, peers):
    link = links(broker.url("sq"), queue=5)
    src = link.source(channels=1)
    link.start()
    assert src.wait_subscribed(3)
    pub = peers(broker.port, None)
    for seq in (0, 1, 3):
        pub.publish("sq/sample", json.dumps({"values": [seq], "seq": seq, "t": seq}))
    assert wait_for(lambda: src.stats()["received"] == 3, 3)
    assert [v[0] for v in src.read()] == [0, 1] and not src.gap and src.last_t == 1.0
    assert [v[0] for v in src.read()] == [3] and src.gap and src.last_t == 3.0
    assert src.read() == [] and not src.gap and src.last_t == 3.0
    assert src.stats()["seq_gaps"] == 1

    for i in range(12):                              # 12 into a queue of 5
        pub.publish("sq/sample", str(10 + i))
    assert wait_for(lambda: src.stats()["received"] == 15, 3)
    assert [v[0] for v in src.read()] == [17, 18, 19, 20, 21] and src.gap
    assert src.stats()["overflows"] == 7 and link.stats()["overflows"] == 7


def test_wait_for_first(broker, links, peers):
    link = links(broker.url("wf"))
    src = link.source()
    quiet = link.source("quiet")
    fixed = link.source("fixed", channels=4)
    with pytest.raises(ValueError, match="there is a source on 'wf/sample' already"):
        link.source()
    with pytest.raises(ValueError, match="channels must be an int >= 1"):
        link.source("other", channels=0)
    link.start()
    assert fixed.wait_for_first(0) == 4 and src.channels is None and src.rate_hz is None
    assert wait_for(lambda: src.subscribed and quiet.subscribed, 3)
    pub = peers(broker.port, None)
    pub.publish("wf/sample", b"[1, oops]")
    pub.publish("wf/sample", b"[1, 2, 3]")
    assert src.wait_for_first(3) == 3 and src.channels == 3
    assert [v.tolist() for v in src.read()] == [[1, 2, 3]]      # not consumed by waiting
    t0 = time.monotonic()
    assert not quiet.wait(0.1)
    pub.publish("wf/quiet/sample", b"not json")
    with pytest.raises(TimeoutError) as info:
        quiet.wait_for_first(0.3)
    assert 0.25 < time.monotonic() - t0 < 2
    msg = str(info.value)
    assert msg.startswith("no well-formed sample on 'wf/quiet/sample' within 0.3 s")
    assert "1 malformed" in msg and "not JSON" in msg and "connected" in msg
    assert quiet.channels is None


def test_forecast_backlog_is_bounded(broker, links, peers):
    """A broker that stops reading (SIGSTOP) cannot make the link hoard forecasts."""
    link = links(broker.url("bl"), queue=20)
    link.start()
    obs = peers(broker.port, "bl/forecast")
    pad = "x" * 60000
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        sent = sum(link.publish_forecast({"t": i, "pad": pad}) for i in range(400))
        stats = link.stats()
        assert stats["dropped_backlog"] > 0 and sent == stats["published"]
        assert stats["published"] + stats["dropped_backlog"] == 400
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    assert link.connected
    assert wait_for(lambda: link.publish_forecast({"t": -1.0, "forecast": [0]}), 5, lambda: time.sleep(0.05))
    assert obs.next("bl/forecast", lambda d: d["t"] == -1.0, timeout=10)


def test_start_fails_clearly_when_nothing_listens(mqtt):
    from rtrl_edge.adapters.mqtt import MqttLink
    with socket.socket() as held:       # bound, not listening: refused, and no other
        held.bind(("127.0.0.1", 0))     # socket (the link's own) can take the port
        port = held.getsockname()[1]
        link = MqttLink(f"mqtt://127.0.0.1:{port}/x", **{**FAST, "connect_timeout": 0.5})
        t0 = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            link.start()
        elapsed = time.monotonic() - t0
    assert elapsed < 2, elapsed
    assert re.fullmatch(rf"cannot connect to MQTT broker 127\.0\.0\.1:{port} within 0\.5 s: "
                        r"connection refused \(.*\)", str(info.value)), str(info.value)
    assert not link.connected and link.stats()["connects"] == 0
    link.close()


def test_link_argument_errors(mqtt, tmp_path):
    from rtrl_edge.adapters.mqtt import MqttLink
    with pytest.raises(ValueError, match="a CA file is for mqtts:// only"):
        MqttLink("mqtt://h/p", ca_file=tmp_path / "ca.pem")
    with pytest.raises(FileNotFoundError, match="cannot read the CA file .*ca.pem"):
        MqttLink("mqtts://h/p", ca_file=tmp_path / "ca.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="holds no usable certificate"):
        MqttLink("mqtts://h/p", ca_file=tmp_path / "junk.pem")
    with pytest.raises(FileNotFoundError, match="credentials file"):
        MqttLink("mqtt://h/p", credentials_file=tmp_path / "none")
    with pytest.raises(ValueError, match="min_backoff <= max_backoff"):
        MqttLink("mqtt://h/p", min_backoff=2, max_backoff=1)


# -- TLS and passwords ------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=rtrl-edge test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return d / f"{name}.crt"


@pytest.fixture
def tls_broker(mqtt, tmp_path):
    """A TLS listener with a password file and no anonymous access; yields
    (broker, the CA file, another CA's file, (user, password))."""
    if shutil.which("openssl") is None or MOSQUITTO_PASSWD is None:
        pytest.skip("openssl or mosquitto_passwd is not installed")
    d = tmp_path / "pki"
    d.mkdir()
    ca = make_ca(d, "ca")
    other = make_ca(d, "other")
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
            cwd=d)
    user = ("edge", "c0rrect horse:battery")
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(d / "passwd"), *user], check=True,
                   capture_output=True, timeout=30)
    b = Broker(tmp_path / "broker", [
        f"cafile {ca}", f"certfile {d / 'server.crt'}", f"keyfile {d / 'server.key'}",
        f"password_file {d / 'passwd'}", "allow_anonymous false"])
    b.start()
    yield b, ca, other, user
    b.stop()


def test_mqtts_with_ca_and_credentials(tls_broker, links, peers, tmp_path):
    broker, ca, _, user = tls_broker
    cred = tmp_path / "cred"
    cred.write_text(f"{user[0]}:{user[1]}\n")
    link = links(f"mqtts://127.0.0.1:{broker.port}/tls", ca_file=ca, credentials_file=cred)
    src = link.source(channels=1)
    link.start()
    obs = peers(broker.port, "tls/#", ca=ca, user=user)
    assert link.publish_forecast({"t": 5.0, "forecast": [1.0]})
    assert obs.next("tls/forecast")[0] == {"t": 5.0, "forecast": [1.0]}
    assert src.wait_subscribed(3)
    obs.publish("tls/sample", b"42")
    assert src.wait(3) and [v.tolist() for v in src.read()] == [[42.0]]


@pytest.mark.parametrize("case", ["wrong password", "no credentials", "wrong CA", "plain mqtt"])
def test_mqtts_refusals(tls_broker, mqtt, tmp_path, case):
    from rtrl_edge.adapters.mqtt import MqttLink
    broker, ca, other, user = tls_broker
    cred = tmp_path / "cred"
    cred.write_text(f"{user[0]}:{'wrong' if case == 'wrong password' else user[1]}\n")
    kw = dict(FAST, ca_file=other if case == "wrong CA" else ca, credentials_file=cred)
    scheme = "mqtts"
    if case == "no credentials":
        del kw["credentials_file"]
    elif case == "plain mqtt":
        scheme = "mqtt"
        del kw["ca_file"]
    link = MqttLink(f"{scheme}://127.0.0.1:{broker.port}/tls", **kw)
    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        link.start()
    assert time.monotonic() - t0 < 2                 # refused at once, not timed out
    msg = str(info.value)
    assert "\n" not in msg and f"127.0.0.1:{broker.port}" in msg and "wrong" not in msg
    if case in ("wrong password", "no credentials"):
        assert re.search(r"refused the connection: (not authorised|bad user name or password)", msg)
    elif case == "wrong CA":
        assert "TLS certificate" in msg and "not trusted" in msg and "certificate verify failed" in msg
    else:
        assert "closed the connection before accepting it" in msg and "mqtts://" in msg
    assert not link.connected
    link.close()


def test_run_over_mqtts_with_the_cli_flags(tls_broker, peers, tmp_path):
    """`rtrl-edge run --mqtt mqtts://... --mqtt-ca CA --mqtt-credentials FILE`:
    forecasts arrive; with the wrong password the run stops at the start, in
    one line, exit 1, having written nothing."""
    import io
    from rtrl_edge import cli, data
    broker, ca, _, user = tls_broker
    cred = tmp_path / "cred"
    cred.write_text(f"{user[0]}:{user[1]}\n")
    cred.chmod(0o600)
    obs = peers(broker.port, "site/pi/forecast", ca=ca, user=user)
    argv = ["run", "--replay", data.list_recordings()[0], "--learner", "rtrl", "--hidden",
            "4", "--max-steps", "50", "--mqtt", f"mqtts://127.0.0.1:{broker.port}/site/pi",
            "--mqtt-ca", str(ca), "--mqtt-credentials", str(cred)]
    out = io.StringIO()
    assert cli.run.main(cli.build_parser().parse_args(argv), out=out) == 0, out.getvalue()
    assert [obs.next("site/pi/forecast")[0]["sample"] for _ in range(50)] == list(range(1, 51))
    cred.write_text(f"{user[0]}:wrong\n")
    out = io.StringIO()
    assert cli.run.main(cli.build_parser().parse_args(argv + ["--summary-json",
                                                              str(tmp_path / "s.json")]),
                        out=out) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "not authorised" in lines[0] and "wrong" not in lines[0], lines
    assert not (tmp_path / "s.json").exists()


def test_wait_subscribed_ends_when_the_link_closes(broker, links):
    """A source on a link that closes before any SUBACK: the wait ends at
    once with False, not at its timeout."""
    link = links(broker.url("ws"))
    src = link.source(channels=1)
    link.close()
    t0 = time.monotonic()
    assert src.wait_subscribed(5) is False
    assert time.monotonic() - t0 < 1
