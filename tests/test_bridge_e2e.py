"""End to end: the real firmware, running in simavr with its UART on a pty,
talks to the host's SerialLink through real pyserial.

Built with the firmware's own Makefile (skipped with a reason where avr-gcc
or simavr are missing; .ci/run installs them).  The simulator runs in real
time here, so the stream has the device's true pacing; nothing below reads
wall-clock latency from it.
"""
import time

import pytest

from rtrl_edge.bridge import SerialLink, encode_frame, messages
from support import needs_simavr, simulated_board

pytestmark = needs_simavr


@pytest.fixture(scope="module")
def board(firmware_build):
    """A running simulated board; yields the pty path."""
    with simulated_board(firmware_build) as port:
        yield port


@pytest.fixture
def link(board):
    with SerialLink(board, timeout=0.05) as ln:
        assert ln.wait_for_hello(timeout=10) is not None, ln.all_stats()
        yield ln


def collect(link, seconds, kinds=(messages.Sample,)):
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        out += [m for m in link.poll() if isinstance(m, kinds)]
    return out


def test_hello_describes_the_plant(link):
    h = link.hello
    assert h.version == messages.VERSION
    assert (h.n_channels, h.n_actuators, h.mode) == (3, 1, messages.MODE_PLANT)
    assert h.period_us == 10_000
    assert h.scale == pytest.approx((0.001, 0.001, 0.001))


def test_samples_are_timer_paced_without_gaps(link):
    gaps = link.stats["seq_gaps"]
    samples = collect(link, 1.5, kinds=(messages.Sample, messages.Heartbeat))
    assert link.stats["seq_gaps"] == gaps         # every frame's seq is the last one's + 1
    assert any(isinstance(m, messages.Heartbeat) for m in samples)
    samples = [m for m in samples if isinstance(m, messages.Sample)]
    assert len(samples) >= 100, len(samples)
    steps = {(b.t_us - a.t_us) & 0xFFFFFFFF for a, b in zip(samples, samples[1:])}
    assert steps == {link.hello.period_us}       # device clock: exactly one period apart
    stats = link.all_stats()
    assert stats["crc_errors"] == stats["cobs_errors"] == stats["rejected_samples"] == 0


def test_plant_follows_the_command(link):
    link.command(0)
    collect(link, 1.0)
    link.command(1000)                                       # u = 1.0: p settles near 1
    samples = collect(link, 4.0)
    values = [s.values(link.hello) for s in samples]
    assert values[-1][1] == pytest.approx(1.0)               # channel 1: u as applied
    late = [v[0] for v in values[-100:]]                     # p over the last second
    assert 0.6 < sum(late) / len(late) < 1.4, late[-5:]      # 1 +- the 0.3 disturbance
    link.command(-1000)
    values = [s.values(link.hello) for s in collect(link, 4.0)]
    late = [v[0] for v in values[-100:]]
    assert -1.4 < sum(late) / len(late) < -0.6


def test_device_counts_damaged_frames_and_keeps_working(link):
    link.poll()
    port = link._port
    frame = bytearray(encode_frame(messages.encode(messages.Command((250,)), seq=1)))
    frame[2] ^= 0x10                                          # one flipped bit: bad CRC
    port.write(bytes(frame))
    port.write(b"\x00\xff\x13\x37 noise \x00")                 # garbage between delimiters
    errors = collect(link, 2.5, kinds=(messages.Error,))
    names = {e.name for e in errors}
    assert "BAD_CRC" in names, errors
    assert names & {"BAD_COBS", "BAD_LENGTH", "UNKNOWN_TYPE"}, errors
    link.command(500)                                         # and valid frames still work
    values = [s.values(link.hello) for s in collect(link, 0.5)]
    assert values[-1][1] == pytest.approx(0.5)


def test_configure_changes_the_period(link):
    link.configure(period_us=20_000)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and link.hello.period_us != 20_000:
        link.poll()
    assert link.hello.period_us == 20_000
    samples = collect(link, 1.0)
    steps = {(b.t_us - a.t_us) & 0xFFFFFFFF for a, b in zip(samples, samples[1:])}
    assert steps == {20_000}
    link.configure(period_us=10_000)
