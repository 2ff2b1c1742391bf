"""Tests of rtrl_edge.bridge.link.SerialLink over real pyserial: ``loop://``
and real pseudo-terminals, with a fake device written in Python that talks to
the pty's master end from a thread.

No part of pyserial is mocked.  A pty ignores the baud rate and rejects the
DTR/RTS ioctls, so every pty test also proves that the link opens and works
there anyway.  Waits are deadlines on conditions, never fixed sleeps followed
by timing asserts; every thread is joined and every fd closed by the `rig`
fixture's teardown.
"""
import dataclasses
import errno
import gc
import os
import random
import re
import select
import struct
import threading
import time

import pytest

from rtrl_edge.bridge import (FrameDecoder, LinkError, ProtocolError, SerialLink, cobs_decode,
                              cobs_encode, crc16_ccitt, encode_frame, frame_check)
from rtrl_edge.bridge import messages as m
from support import Pty, read_pty, wait_for

LIMIT = 68                               # PROTOCOL §1: longest encoded block
OTHER_VERSION = m.VERSION + 1


def decoded_frame(payload):
    """len || payload || check: a frame before COBS (PROTOCOL §1)."""
    body = bytes([len(payload) & 0xFF]) + payload
    return body + frame_check(body).to_bytes(2, "big")


def wire_v1(payload):
    """A frame of protocol version 1 (no length byte, no final XOR)."""
    return cobs_encode(payload + crc16_ccitt(payload).to_bytes(2, "big")) + b"\x00"


# -- helpers -------------------------------------------------------------------


class FakeDevice(threading.Thread):
    """Writes the chunks of `script` to the pty master, one every `period`
    seconds (0: as fast as the pty takes them), while decoding what the host
    sends; answers HELLO_REQUEST with `hello` if one is given (from the
    `answer_from`-th request on)."""

    def __init__(self, master, script=(), period=0.001, hello=None, answer_from=1):
        super().__init__(daemon=True)
        self.master = master
        self.script = script
        self.period = period
        self.hello = hello
        self.answer_from = answer_from   # answer only the n-th request and later ones
        self.stop_event = threading.Event()
        self.script_done = threading.Event()
        self.decoder = FrameDecoder()
        self.received = []               # messages from the host
        self.requests = 0
        self.hellos_sent = 0
        self.bytes_written = 0
        self.error = None
        self._seq = 0

    def run(self):
        try:
            next_t = time.monotonic()
            for chunk in self.script:
                if self.stop_event.is_set():
                    return
                self._write(chunk)
                self._service()
                if self.period:
                    next_t += self.period
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            self.script_done.set()
            while not self.stop_event.is_set():
                self._service(0.01)
        except Exception as exc:         # reported by the test, never swallowed
            self.error = exc

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)
        assert not self.is_alive(), "fake device thread did not stop"

    def _write(self, data):
        view = memoryview(data)
        while view and not self.stop_event.is_set():
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                self._service()
                select.select([], [self.master], [], 0.01)
                continue
            view = view[n:]
            self.bytes_written += n

    def _service(self, timeout=0.0):
        for payload in self.decoder.feed(read_pty(self.master, timeout)):
            msg = m.decode(payload)
            self.received.append(msg)
            if isinstance(msg, m.HelloRequest):
                self.requests += 1
                if self.hello is not None and self.requests >= self.answer_from:
                    frame = encode_frame(m.encode(self.hello, seq=self._seq))
                    self._seq += 1
                    self.hellos_sent += 1
                    self._write(frame)


class Rig:
    """Owns ptys, fake devices and links; `close()` stops and closes all."""

    def __init__(self):
        self.ptys, self.devices, self.links = [], [], []

    def pty(self):
        p = Pty()
        self.ptys.append(p)
        return p

    def device(self, *args, **kw):
        d = FakeDevice(*args, **kw)
        self.devices.append(d)
        d.start()
        return d

    def link(self, *args, **kw):
        kw.setdefault("timeout", 0.01)
        kw.setdefault("baudrate", 921600)          # meaningless on a pty: must not matter
        link = SerialLink(*args, **kw)
        self.links.append(link)
        return link

    def close(self):
        try:
            for d in self.devices:
                d.stop()
        finally:
            for link in self.links:
                link.close()
            for p in self.ptys:
                p.close()


@pytest.fixture
def rig():
    r = Rig()
    try:
        yield r
    finally:
        r.close()


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def core(hello):
    """A Hello without its frame's seq and t_us."""
    return dataclasses.replace(hello, seq=0, t_us=0)


def as_stored(hello):
    """What a receiver holds after decoding (scales rounded to float32)."""
    return core(m.decode(m.encode(hello)))


HELLO = m.Hello(m.VERSION, 3, 2, m.MODE_PLANT, 1000, (0.001, 0.001, 0.002), (0.0, 0.5, -1.0))


def sample_stream(hello, seq0=0, marker=0, count=None):
    """HELLO then samples forever (or `count` of them): channel 0 carries
    `marker`, channel 1 a counter."""
    seq = seq0
    yield encode_frame(m.encode(hello, seq=seq, t_us=0))
    i = 0
    while count is None or i < count:
        seq = (seq + 1) & 0xFFFF
        raw = (marker, i & 0x7FFF) + (0,) * (hello.n_channels - 2)
        yield encode_frame(m.encode(m.Sample(raw), seq=seq, t_us=1000 * i))
        i += 1


# -- loop:// -------------------------------------------------------------------

def test_loop_commands_come_back_decoded_with_increasing_seq():
    clock = lambda: 4321.000123                     # t_us = clock * 1e6, wrapped
    link = SerialLink("loop://", timeout=0.01, clock=clock)
    try:
        assert link.connected
        for k in range(20):
            assert link.command(k, -k, 2 * k)
        with pytest.raises(ProtocolError, match="at most 4"):
            link.command(1, 2, 3, 4, 5)             # refused: not sent, no seq used
        assert link.request_hello() and link.configure(5000, 1) and link.heartbeat()
        got = []
        assert wait_for(lambda: len(got) >= 23, 5, lambda: got.extend(link.poll()))
        assert len(got) == 23
        assert [msg.seq for msg in got] == list(range(23))
        assert [msg.values for msg in got[:20]] == [(k, -k, 2 * k) for k in range(20)]
        assert all(isinstance(msg, m.Command) for msg in got[:20])
        assert got[20:] == [m.HelloRequest(20, got[20].t_us), m.Configure(5000, 1, 21, got[21].t_us),
                            m.Heartbeat(22, got[22].t_us)]
        assert {msg.t_us for msg in got} == {int(4321.000123 * 1e6) & 0xFFFFFFFF}
        assert link.stats["sent"] == 23 and link.stats["write_errors"] == 0
        assert link.all_stats()["frames"] == 23 and link.stats["seq_gaps"] == 0
        assert link.decoder_stats["bytes"] == sum(
            len(encode_frame(m.encode(msg))) for msg in got)
    finally:
        link.close()
    assert not link.connected


def test_loop_send_seq_wraps():
    link = SerialLink("loop://", timeout=0.01)
    try:
        link._tx_seq = 65533                # white-box: skip 65533 sends over loop://
        for _ in range(5):
            assert link.heartbeat()
        got = []
        assert wait_for(lambda: len(got) >= 5, 5, lambda: got.extend(link.poll()))
        assert [msg.seq for msg in got] == [65533, 65534, 65535, 0, 1]
        assert link.stats["sent"] == 5 and link.stats["seq_gaps"] == 0
    finally:
        link.close()


def test_loop_full_write_buffer_is_a_counted_write_error():
    """loop:// holds 4096 bytes; when nobody reads, a write times out.  send()
    must report that as False and count it, like any failed write."""
    link = SerialLink("loop://", timeout=0.01, write_timeout=0.05)
    try:
        fits = 4096 // len(encode_frame(m.encode(m.Heartbeat())))
        results = []
        for _ in range(fits + 3):
            results.append(link.heartbeat())          # must not raise
        assert results[:fits] == [True] * fits
        assert results[fits:] == [False] * 3
        assert link.stats["write_errors"] == 3 and link.stats["sent"] == fits
    finally:
        link.close()


def test_closed_link_stays_closed():
    """close() is final: a poll() or send() afterwards must not reopen the
    port behind the caller's back (nor count that as a reconnect)."""
    states = []
    with SerialLink("loop://", timeout=0.01, on_state=states.append) as link:
        assert link.connected
    assert not link.connected
    assert link.poll() == []
    link.heartbeat()
    assert not link.connected
    assert link.stats["reconnects"] == 0 and link.stats["sent"] == 0
    assert states.count("connected") == 1, states


# -- opening -------------------------------------------------------------------

def test_missing_port_without_reconnect_raises_linkerror_naming_it(tmp_path):
    path = str(tmp_path / "ttyNOPE")
    with pytest.raises(LinkError, match=re.escape(path)):
        SerialLink(path, reconnect=False, timeout=0.01)
    assert issubclass(LinkError, OSError)


@pytest.mark.parametrize("reconnect", [True, False])
def test_missing_port_fails_at_once_with_the_os_error(tmp_path, reconnect):
    """A port that is not there when the link is made is a mistake to report,
    not a disconnection to wait out (reconnecting is for ports that vanish
    after they were opened): LinkError, an OSError, with the system's words."""
    path = str(tmp_path / "ttyNOPE")
    t0 = time.monotonic()
    with pytest.raises(LinkError) as err:
        SerialLink(path, reconnect=reconnect, timeout=0.01)
    assert time.monotonic() - t0 < 0.5
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOENT
    assert str(err.value) == f"cannot open {path!r}: No such file or directory"


def test_a_path_that_is_no_port_fails_at_once(tmp_path):
    with pytest.raises(LinkError, match=re.escape(f"cannot open {str(tmp_path)!r}: ")) as err:
        SerialLink(str(tmp_path), timeout=0.01)              # a folder
    assert err.value.errno == errno.EISDIR


# -- a pty with a fake device at ~1 kHz ------------------------------------------

def _flip(data, bit):
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def build_faulty_stream(rng, n_events=1500):
    """The device's byte stream with injected faults, and what the host must
    make of it.  Every chunk is whole frames / damage ending in 0x00, so each
    fault is isolated and its counter is determined."""
    hello = HELLO
    seq = 65300                      # wraps at 65536 during the stream
    t_us = 2 ** 32 - 600_000         # and so does the device clock
    chunks, samples, seqs_seen, hello_seqs = [], [], [], set()
    want = dict(crc_errors=0, cobs_errors=0, overflows=0, old_frames=0, rejected_samples=0,
                protocol_errors=0, heartbeats=0)

    def payload(msg):
        nonlocal seq
        p = m.encode(msg, seq=seq, t_us=t_us)
        seq = (seq + 1) & 0xFFFF
        return p

    p = payload(hello)
    seqs_seen.append(m.decode(p).seq)
    hello_seqs.add(len(seqs_seen) - 1)
    chunks.append(encode_frame(p))
    kinds = ["sample"] * 70 + ["heartbeat"] * 3 + ["garbage_long"] * 3 + ["garbage_cobs"] * 3 + \
        ["crc_flip"] * 4 + ["cobs_flip"] * 3 + ["drop"] * 4 + ["wrong_channels"] * 4 + \
        ["oversized"] * 2 + ["hello_other"] * 1
    events = sorted(set(kinds)) + [rng.choice(kinds) for _ in range(n_events)]
    rng.shuffle(events)
    for kind in events:
        t_us = (t_us + 1000) & 0xFFFFFFFF
        raw = tuple(rng.randint(-32768, 32767) for _ in range(hello.n_channels))
        if kind == "sample":
            p = payload(m.Sample(raw))
            samples.append(m.Sample(raw, *struct.unpack_from("<HI", p, 1)))
            seqs_seen.append(samples[-1].seq)
            chunks.append(encode_frame(p))
        elif kind == "heartbeat":
            p = payload(m.Heartbeat())
            seqs_seen.append(m.decode(p).seq)
            want["heartbeats"] += 1
            chunks.append(encode_frame(p))
        elif kind == "garbage_long":                    # > 68 bytes without a zero
            g = rng.randbytes(rng.randint(LIMIT + 1, 400)).replace(b"\x00", b"\x11")
            chunks.append(g + b"\x00")
            want["overflows"] += 1
        elif kind == "garbage_cobs":                    # 0xFF block needs 254 bytes
            g = rng.randbytes(rng.randint(1, 60)).replace(b"\x00", b"\x22")
            chunks.append(b"\xff" + g + b"\x00")
            want["cobs_errors"] += 1
        elif kind == "crc_flip":                        # one bit of length, payload or check
            p = payload(m.Sample(raw))                  # its seq is lost: a gap follows
            body = decoded_frame(p)
            chunks.append(cobs_encode(_flip(body, rng.randrange(8 * len(body)))) + b"\x00")
            want["crc_errors"] += 1
        elif kind == "cobs_flip":                       # one bit of the encoded frame
            p = payload(m.Sample(raw))
            enc = encode_frame(p)[:-1]
            while True:
                bad = _flip(enc, rng.randrange(8 * len(enc)))
                if 0 in bad:
                    continue                            # would split it: choose again
                try:
                    d = cobs_decode(bad)
                except ValueError:
                    want["cobs_errors"] += 1
                    break
                if len(d) < 4:
                    want["cobs_errors"] += 1
                    break
                check = int.from_bytes(d[-2:], "big")
                if d[0] != len(d) - 3 or frame_check(d[:-2]) != check:
                    old = crc16_ccitt(d[:-2]) == check      # by chance a version-1 frame
                    want["old_frames" if old else "crc_errors"] += 1
                    break
            chunks.append(bad + b"\x00")
        elif kind == "drop":                            # the frame never leaves the device
            payload(m.Sample(raw))
        elif kind == "wrong_channels":
            p = payload(m.Sample(raw[:2] if rng.random() < 0.5 else raw + (7,)))
            seqs_seen.append(m.decode(p).seq)
            want["rejected_samples"] += 1
            chunks.append(encode_frame(p))
        elif kind == "oversized":                       # a correct frame, too long
            big = rng.randbytes(rng.randint(65, 120))
            chunks.append(cobs_encode(decoded_frame(big)) + b"\x00")
            want["overflows"] += 1
        elif kind == "hello_other":                     # another protocol version,
            p = payload(dataclasses.replace(hello, version=OTHER_VERSION, period_us=5))
            seqs_seen.append(m.decode(p).seq)
            hello_seqs.add(len(seqs_seen) - 1)
            want["protocol_errors"] += 1
            chunks.append(encode_frame(p))
            p = payload(hello)                          # then it speaks this one again:
            seqs_seen.append(m.decode(p).seq)           # samples in between would be refused
            hello_seqs.add(len(seqs_seen) - 1)
            chunks.append(encode_frame(p))
    want["frames"] = len(seqs_seen)
    # a HELLO starts a new sequence: it is never a gap (PROTOCOL §2)
    want["seq_gaps"] = sum(b != (a + 1) & 0xFFFF for i, (a, b) in
                           enumerate(zip(seqs_seen, seqs_seen[1:])) if i + 1 not in hello_seqs)
    want["samples"] = len(samples)
    return chunks, samples, want


def test_pty_stream_with_faults_delivers_exactly_the_intact_samples(rig):
    chunks, samples, want = build_faulty_stream(random.Random(20240611))
    assert want["seq_gaps"] > 0 and want["crc_errors"] > 0 and want["cobs_errors"] > 0
    total = sum(map(len, chunks))
    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    assert link.connected
    dev = rig.device(pty.master, chunks, period=0.001)

    got, sent = [], []

    def step():
        before = sum(isinstance(x, m.Sample) for x in got)
        got.extend(link.poll())
        after = sum(isinstance(x, m.Sample) for x in got)
        if after // 100 > before // 100:            # a command every 100 samples
            k = len(sent)
            assert link.command(k, -k)
            sent.append((k, -k))

    assert wait_for(lambda: dev.script_done.is_set() and link.decoder_stats["bytes"] == total,
                    20, step), (link.all_stats(), total, dev.error)
    assert dev.error is None
    got.extend(link.poll(timeout=0))

    assert [x for x in got if isinstance(x, m.Sample)] == samples
    assert isinstance(got[0], m.Hello) and core(got[0]) == as_stored(HELLO)
    assert sum(isinstance(x, m.Heartbeat) for x in got) == want["heartbeats"]
    assert not any(isinstance(x, m.Hello) and x.version != m.VERSION for x in got)
    assert core(link.hello) == as_stored(HELLO)     # the other version's HELLO was refused

    stats = link.all_stats()
    for key in ("frames", "crc_errors", "cobs_errors", "overflows", "old_frames", "seq_gaps",
                "rejected_samples", "protocol_errors", "samples"):
        assert stats[key] == want[key], (key, stats, want)
    assert stats["bytes"] == total
    assert stats["disconnects"] == stats["reconnects"] == stats["write_errors"] == 0

    # the host's commands reached the device intact, in order, seq 0, 1, ...
    assert len(sent) >= 5
    assert stats["sent"] == len(sent)
    assert wait_for(lambda: len(dev.received) >= len(sent), 5)
    assert [c.values for c in dev.received] == sent
    assert [c.seq for c in dev.received] == list(range(len(sent)))
    assert all(isinstance(c, m.Command) for c in dev.received)
    assert dev.decoder.stats["crc_errors"] == dev.decoder.stats["cobs_errors"] == 0


def test_hello_with_another_version_is_refused(rig):
    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    other = dataclasses.replace(HELLO, version=OTHER_VERSION)
    stream = [encode_frame(m.encode(other, seq=0)),
              encode_frame(m.encode(m.Sample((1, 2, 3)), seq=1))]
    rig.device(pty.master, stream, period=0)
    got = []
    assert wait_for(lambda: link.decoder_stats["frames"] == 2, 5, lambda: got.extend(link.poll()))
    assert link.hello is None
    assert link.stats["protocol_errors"] == 1
    assert re.search(rf"version {OTHER_VERSION}\b.*\b{m.VERSION}\b", link.last_error), \
        link.last_error
    assert link.stats["bad_hello"] == 0                 # not ours to judge
    assert not any(isinstance(x, m.Hello) for x in got)
    # the stream is refused: its samples are rejected until a HELLO of this version
    assert not any(isinstance(x, m.Sample) for x in got)
    assert link.stats["rejected_samples"] == 1 and link.refused


def test_a_device_reset_is_not_a_sequence_gap(rig):
    """A HELLO starts a new sequence (PROTOCOL §2): seq 500 -> HELLO seq 0 -> 1."""
    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    stream = [encode_frame(m.encode(HELLO, seq=499)),
              encode_frame(m.encode(m.Sample((1, 2, 3)), seq=500)),
              encode_frame(m.encode(HELLO, seq=0)),
              encode_frame(m.encode(m.Sample((4, 5, 6)), seq=1)),
              encode_frame(m.encode(m.Sample((7, 8, 9)), seq=3))]      # one real gap
    rig.device(pty.master, stream, period=0)
    got = []
    assert wait_for(lambda: link.decoder_stats["frames"] == 5, 5, lambda: got.extend(link.poll()))
    assert link.stats["seq_gaps"] == 1
    assert [x.raw for x in got if isinstance(x, m.Sample)] == [(1, 2, 3), (4, 5, 6), (7, 8, 9)]


# -- the port vanishes and comes back -------------------------------------------

def _point(symlink, target):
    tmp = symlink.with_name(symlink.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, symlink)


def test_port_vanishes_and_comes_back(rig, tmp_path):
    fds_before = open_fds()
    sym = tmp_path / "ttyFAKE"
    pty1 = rig.pty()
    _point(sym, pty1.path)
    states = []
    link = rig.link(str(sym), backoff=(0.02, 0.2), on_state=states.append)
    assert link.connected and states == ["connected"]
    hello1 = dataclasses.replace(HELLO, period_us=1000)
    dev1 = rig.device(pty1.master, sample_stream(hello1, seq0=100, marker=1))
    got = []
    n1 = lambda: sum(isinstance(x, m.Sample) and x.raw[0] == 1 for x in got)
    assert wait_for(lambda: n1() >= 20, 5, lambda: got.extend(link.poll()))
    assert core(link.hello) == as_stored(hello1)

    # the device goes away mid-frame: half a frame arrives, then both ends
    # of the pty close
    dev1.stop()
    half = encode_frame(m.encode(m.Sample((1, 1, 1)), seq=7))[:6]
    seen = link.decoder_stats["bytes"] + len(half)
    os.write(pty1.master, half)
    assert wait_for(lambda: link.decoder_stats["bytes"] >= seen, 5,
                    lambda: got.extend(link.poll()))
    pty1.close()
    assert wait_for(lambda: link.stats["disconnects"] == 1, 5,
                    lambda: got.extend(link.poll()))    # poll() never raises
    assert not link.connected and states == ["connected", "disconnected"]
    assert link.command(1) is False and link.stats["write_errors"] == 1
    _point(sym, str(tmp_path / "gone"))                 # still missing for a while
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.15:
        assert link.poll() == []
    assert link.stats["reconnects"] == 0 and not link.connected

    # it comes back under the same name: the link reconnects by itself
    pty2 = rig.pty()
    _point(sym, pty2.path)
    assert wait_for(lambda: link.stats["reconnects"] == 1, 5, lambda: got.extend(link.poll()))
    assert link.connected
    assert states == ["connected", "disconnected", "connected"]
    hello2 = dataclasses.replace(HELLO, period_us=2000)
    dev2 = rig.device(pty2.master, sample_stream(hello2, seq0=40000, marker=2))
    n2 = lambda: sum(isinstance(x, m.Sample) and x.raw[0] == 2 for x in got)
    assert wait_for(lambda: n2() >= 20, 5, lambda: got.extend(link.poll()))
    # the half frame was forgotten: the new device's first frame (HELLO) counts
    assert core(link.hello) == as_stored(hello2)
    # seq restarts with the new device: the first frame after a reconnect is no gap
    assert link.stats["seq_gaps"] == 0
    assert link.stats["disconnects"] == 1 and link.stats["reconnects"] == 1
    assert link.command(5) is True
    assert wait_for(lambda: any(isinstance(c, m.Command) for c in dev2.received), 5)
    assert dev2.error is None and dev1.error is None

    rig.close()
    assert open_fds() == fds_before, "file descriptors leaked"


class FakeClock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def test_reconnect_backs_off_doubling_up_to_the_cap(rig, tmp_path):
    """With a fake clock: the link retries exactly at t_lost + b0, then after
    2*b0, 4*b0, ... capped at b1, and not a moment before."""
    sym = tmp_path / "ttyFAKE"
    gone = str(tmp_path / "gone")
    clock = FakeClock(1000.0)
    states = []
    pty = rig.pty()
    _point(sym, pty.path)
    link = rig.link(str(sym), backoff=(0.5, 2.0), clock=clock, on_state=states.append)
    assert link.connected

    def lose(current):
        current.close()
        _point(sym, gone)
        assert wait_for(lambda: not link.connected, 5, link.poll)

    def check_not_before(t_retry, reconnects):
        """A live port appears; the link must wait until t_retry for it."""
        live = rig.pty()
        _point(sym, live.path)
        clock.t = t_retry - 0.01
        for _ in range(3):
            link.poll()
        assert not link.connected
        clock.t = t_retry
        link.poll()
        assert link.connected and link.stats["reconnects"] == reconnects
        return live

    def fail_at(t):
        clock.t = t
        link.poll()                     # an attempt on a missing path
        assert not link.connected

    lose(pty)                           # lost at 1000: retry at +0.5
    pty = check_not_before(1000.5, 1)

    clock.t = 1001.0
    lose(pty)                           # lost at 1001 (delay back to 0.5)
    fail_at(1001.5)                     # fails: next after 1.0
    pty = check_not_before(1002.5, 2)

    clock.t = 1003.0
    lose(pty)
    fail_at(1003.5)                     # next after 1.0
    fail_at(1004.5)                     # next after 2.0
    fail_at(1006.5)                     # next after 2.0 (capped, not 4.0)
    check_not_before(1008.5, 3)
    assert link.stats["disconnects"] == 3
    assert states == ["connected"] + ["disconnected", "connected"] * 3


# -- memory ----------------------------------------------------------------------

def test_memory_stays_bounded_under_megabytes_of_garbage(rig):
    rng = random.Random(99)
    warm, total = 512 * 1024, 3 * 1024 * 1024 + 512 * 1024
    garbage = rng.randbytes(total)
    go = threading.Event()

    def script():
        view = memoryview(garbage)
        for i in range(0, warm, 4096):
            yield view[i:i + 4096]
        go.wait(10)
        for i in range(warm, total, 4096):
            yield view[i:i + 4096]

    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    dev = rig.device(pty.master, script(), period=0)
    assert wait_for(lambda: link.decoder_stats["bytes"] == warm, 10, link.poll)
    gc.collect()
    before = rss_kib()
    go.set()
    assert wait_for(lambda: link.decoder_stats["bytes"] == total, 20, link.poll), \
        link.decoder_stats
    gc.collect()
    grown = rss_kib() - before
    assert grown < 256, f"RSS grew by {grown} KiB while reading {total} bytes of garbage"
    assert dev.error is None

    # and every byte was accounted for: runs between zeros (a short first
    # run is the tail of a frame sent before the port opened: a resync)
    runs = garbage.split(b"\x00")
    stats = link.all_stats()
    assert stats["overflows"] == sum(len(r) > LIMIT for r in runs)
    short = sum(0 < len(r) <= LIMIT for r in runs[:-1])
    assert (stats["cobs_errors"] + stats["crc_errors"] + stats["old_frames"] + stats["frames"]
            + stats["resyncs"]) == short
    assert stats["resyncs"] == (0 < len(runs[0]) <= LIMIT)
    assert stats["overflows"] > 1000 and stats["cobs_errors"] > 100


# -- HELLO on request ------------------------------------------------------------

def test_wait_for_hello_asks_and_gets_it(rig):
    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    dev = rig.device(pty.master, (), hello=HELLO)
    got = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.2:             # unasked, the device says nothing
        got.extend(link.poll())
    assert got == [] and dev.hellos_sent == 0 and link.hello is None

    hello = link.wait_for_hello(timeout=5, ask_every=0.2)
    assert hello is not None and core(hello) == as_stored(HELLO)
    assert link.hello is hello
    assert wait_for(lambda: dev.requests == link.stats["sent"], 5)
    assert dev.requests >= 1 and dev.hellos_sent == dev.requests
    assert [r.seq for r in dev.received] == list(range(link.stats["sent"]))
    assert all(isinstance(r, m.HelloRequest) for r in dev.received)
    assert link.wait_for_hello(timeout=0.01) is hello          # already known: no asking
    assert dev.error is None


def test_wait_for_hello_asks_again_until_answered(rig):
    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    dev = rig.device(pty.master, (), hello=HELLO, answer_from=3)   # ignores the first two
    hello = link.wait_for_hello(timeout=10, ask_every=0.05)
    assert hello is not None and core(hello) == as_stored(HELLO)
    assert wait_for(lambda: dev.requests == link.stats["sent"], 5)
    assert dev.requests >= 3 and dev.hellos_sent == dev.requests - 2
    assert dev.error is None


def test_wait_for_hello_from_a_silent_device_times_out(rig):
    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    dev = rig.device(pty.master, ())
    t0 = time.monotonic()
    assert link.wait_for_hello(timeout=0.3, ask_every=0.1) is None
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.3 and link.hello is None
    # it asked at once and then every ask_every, not on every poll
    assert 1 <= link.stats["sent"] <= elapsed / 0.1 + 2
    assert wait_for(lambda: dev.requests == link.stats["sent"], 5)
    assert dev.hellos_sent == 0 and dev.error is None


# -- a HELLO this host must refuse ------------------------------------------------

def raw_hello(version=m.VERSION, n_ch=3, n_act=1, mode=1, period=10000, scale=0.001,
              offset=0.0, seq=0):
    """A HELLO payload packed here with struct (encode refuses impossible ones)."""
    body = struct.pack("<BBBBI", version, n_ch, n_act, mode, period)
    body += struct.pack("<2f", scale, offset) * min(n_ch, 6)
    return struct.pack("<BHI", m.HELLO, seq, 0) + body


class HelloAnswer(FakeDevice):
    """A fake device answering every HELLO_REQUEST with a fixed payload."""

    def __init__(self, master, payload):
        super().__init__(master, ())
        self.payload = payload

    def _service(self, timeout=0.0):
        for p in self.decoder.feed(read_pty(self.master, timeout)):
            if isinstance(m.decode(p), m.HelloRequest):
                self.requests += 1
                self._write(encode_frame(self.payload))


BAD_HELLOS = [
    (dict(period=0), "period_us = 0"),
    (dict(n_ch=0), "n_channels = 0"),
    (dict(n_ch=7), "n_channels = 7"),
    (dict(n_act=9), "n_actuators = 9"),
    (dict(mode=7), "mode = 7"),
    (dict(scale=float("nan")), "scale[0] = nan"),
    (dict(scale=0.0), "scale[0] = 0.0"),
    (dict(offset=float("inf")), "offset[0] = inf"),
    (dict(period=2 ** 32 - 1), "period_us = 4294967295"),
]


@pytest.mark.parametrize("kw,named", BAD_HELLOS, ids=[n for _, n in BAD_HELLOS])
def test_impossible_hello_is_counted_and_refused_never_raised(rig, kw, named):
    """A device answering HELLO_REQUEST with impossible values (a real pty,
    the host's real pyserial): wait_for_hello returns None at once, without
    raising; bad_hello counts it; last_error names the field and value; the
    samples that follow are rejected, until an acceptable HELLO."""
    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    dev = HelloAnswer(pty.master, raw_hello(**kw))
    rig.devices.append(dev)
    dev.start()
    t0 = time.monotonic()
    assert link.wait_for_hello(timeout=5, ask_every=0.1) is None
    assert time.monotonic() - t0 < 2.5                     # refused: no waiting it out
    assert link.hello is None and link.stats["bad_hello"] >= 1
    assert named in link.last_error and link.refused == link.last_error
    assert "HELLO" in link.last_error
    assert link.stats["protocol_errors"] == 0
    for _ in range(5):                                    # poll() never raises either
        link.poll()
    # samples of the refused stream are not delivered; a good HELLO ends it
    dev.payload = m.encode(HELLO, seq=1)
    os.write(pty.master, encode_frame(m.encode(m.Sample((1, 2, 3)), seq=2)))
    assert wait_for(lambda: link.stats["rejected_samples"] == 1, 5, link.poll)
    assert link.wait_for_hello(timeout=5, ask_every=0.1) is not None
    assert link.refused is None and core(link.hello) == as_stored(HELLO)
    assert dev.error is None


def test_device_with_protocol_version_1_firmware_is_named(rig):
    """Old firmware frames without the length byte: its HELLO cannot even be
    read, but its frames are recognised (old_frames, never delivered) and the
    link says what is wrong instead of timing out in silence."""
    pty = rig.pty()
    link = rig.link(pty.path, reconnect=False)
    old_hello = dataclasses.replace(HELLO, version=1)
    frames = [wire_v1(m.encode(old_hello, seq=0))] + [
        wire_v1(m.encode(m.Sample((i, 0, 0)), seq=i + 1)) for i in range(200)]
    dev = rig.device(pty.master, frames, period=0.002)
    t0 = time.monotonic()
    assert link.wait_for_hello(timeout=5, ask_every=0.2) is None
    assert time.monotonic() - t0 < 2.5
    assert link.decoder_stats["old_frames"] >= 3 and link.decoder_stats["frames"] == 0
    assert link.refused == link.last_error
    assert re.search(r"protocol version 1\b.*\bversion 2\b", link.refused), link.refused
    assert link.stats["samples"] == 0
    assert dev.error is None
