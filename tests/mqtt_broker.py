"""A real Mosquitto broker for the MQTT tests, and an independent paho
client to watch and feed it (the fixtures ``mqtt``, ``broker`` and
``peers`` in conftest.py).  Each broker runs on a free loopback port with a
config and log of its own, restartable on the same port; all traffic stays
on 127.0.0.1."""
import json
import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto", path=os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd", path=os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin"]))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto of our own on 127.0.0.1:`port`, restartable on the same port."""

    def __init__(self, workdir: Path, settings=("allow_anonymous true",)):
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir, self.port, self.proc = workdir, free_port(), None
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1", *settings, "persistence false",
            f"log_dest file {self.log}", "log_type all",
            # as root it would switch to user "mosquitto", who cannot read tmp_path
            f"user {pwd.getpwuid(os.getuid()).pw_name}", ""]))

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.01)
        log = self.log.read_text() if self.log.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"mosquitto did not come up on port {self.port}:\n{log}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def url(self, prefix):
        return f"mqtt://127.0.0.1:{self.port}/{prefix}"


class Peer:
    """An independent paho client: collects what arrives on `topic` and
    publishes at QoS 1, waiting for the broker's PUBACK."""

    def __init__(self, mqtt, port, topic="#", *, ca=None, user=None):
        self.messages = queue.Queue()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                      client_id=f"peer-{uuid.uuid4().hex[:8]}")
        if ca:
            c.tls_set(ca_certs=str(ca))
        if user:
            c.username_pw_set(*user)
        subscribed = queue.Queue()
        c.on_message = lambda cl, u, m: self.messages.put((m.topic, m.payload, m.retain))
        c.on_subscribe = lambda *a: subscribed.put(True)
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        if topic is not None:
            c.subscribe(topic, qos=1)
            subscribed.get(timeout=5)

    def next(self, topic, pred=lambda doc: True, timeout=3.0):
        """The next JSON message on `topic` that satisfies `pred`, and its retain flag."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                t, payload, retain = self.messages.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"nothing on {topic!r} within {timeout} s; saw {seen}") from None
            seen.append((t, payload))
            if t == topic:
                doc = json.loads(payload)
                if pred(doc):
                    return doc, retain

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish(3)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
