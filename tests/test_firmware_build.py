"""The board firmware (firmware_bridge/) builds, fits the ATmega328P, and runs
in simavr through build/simboard, talking PROTOCOL.md over the pty it prints.

Needs avr-gcc/avr-libc, make and a host gcc (the firmware's frame codec is
also built for the host and driven byte by byte); the simboard tests need simavr's
headers and libraries (Debian: gcc-avr avr-libc simavr libsimavr-dev).  Each
test skips with the reason when its tools are missing.  Everything is built
into a temporary BUILD= directory, so a build in firmware_bridge/build is
never touched.  The protocol is decoded here with a few lines of its own (not
rtrl_edge.bridge), so a failure points at the firmware.
"""
import binascii
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
import tty

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRIDGE = os.path.join(ROOT, "firmware_bridge")
SIMAVR_INC = "/usr/include/simavr"

FLASH_BYTES = 32 * 1024 - 512   # ATmega328P flash less the Uno's Optiboot loader
RAM_BYTES = 2 * 1024

HAVE_AVR = all(shutil.which(tool) for tool in ("avr-gcc", "avr-size", "avr-objcopy", "make", "gcc"))
HAVE_SIMAVR = os.path.exists(os.path.join(SIMAVR_INC, "sim_avr.h")) and \
    os.path.exists(os.path.join(SIMAVR_INC, "parts", "uart_pty.h"))

pytestmark = pytest.mark.skipif(
    not HAVE_AVR, reason="avr-gcc, binutils-avr, make or gcc missing "
                         "(apt-get install gcc-avr avr-libc binutils-avr make gcc)")
needs_simavr = pytest.mark.skipif(
    not HAVE_SIMAVR, reason="simavr headers missing (apt-get install simavr libsimavr-dev)")

HELLO, SAMPLE, COMMAND, HEARTBEAT, ERROR, HELLO_REQUEST, CONFIGURE = range(1, 8)
BAD_CRC, BAD_COBS, OVERFLOW, UNKNOWN_TYPE, BAD_LENGTH, SAMPLE_LATE = range(1, 7)


def make(build_dir, *args, timeout=300):
    return subprocess.run(["make", "-C", BRIDGE, "BUILD=" + str(build_dir), *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A clean build of the defaults into a fresh directory."""
    build_dir = tmp_path_factory.mktemp("fw") / "build"
    result = make(build_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return build_dir


def section_sizes(elf):
    out = subprocess.run(["avr-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


# ---- the protocol, just enough to check the firmware ------------------------

def cobs_encode(data):
    out = bytearray()
    for segment in data.split(b"\x00"):
        out.append(len(segment) + 1)    # every block here is shorter than 254
        out += segment
    return bytes(out)


def cobs_decode(data):
    out, i = bytearray(), 0
    while i < len(data):
        code = data[i]
        if code == 0 or i + code > len(data):
            raise ValueError("bad COBS")
        out += data[i + 1:i + code]
        i += code
        if code < 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def framed(payload, length=None):
    """len || payload || check (PROTOCOL.md §1, version 2), before COBS."""
    body = bytes([len(payload) if length is None else length]) + payload
    return body + struct.pack(">H", binascii.crc_hqx(body, 0xFFFF) ^ 0xFFFF)


def unframed(decoded):
    """The payload of an intact decoded frame, or None."""
    if len(decoded) < 4 or decoded[0] != len(decoded) - 3:
        return None
    check = binascii.crc_hqx(decoded[:-2], 0xFFFF) ^ 0xFFFF
    return decoded[1:-2] if check == struct.unpack(">H", decoded[-2:])[0] else None


def wire_frame(kind, body=b"", seq=0, corrupt_crc=False):
    frame = bytearray(framed(struct.pack("<BHI", kind, seq, 0) + body))
    if corrupt_crc:
        frame[-1] ^= 0xFF
    return cobs_encode(bytes(frame)) + b"\x00"


class Pty:
    """The simboard's pty, raw, read frame by frame."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        # TCSANOW: the default TCSAFLUSH would drop bytes already queued,
        # possibly in the middle of the stream
        tty.setraw(self.fd, termios.TCSANOW)
        self.buf = b""

    def close(self):
        os.close(self.fd)

    def write(self, data):
        os.write(self.fd, data)

    def frames(self, timeout):
        """Yields (type, seq, t_us, body) of intact frames for at most
        timeout seconds.  Only the very first frame may be damaged (the port
        may open in the middle of one); it is skipped."""
        first = True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return
            self.buf += os.read(self.fd, 4096)
            *chunks, self.buf = self.buf.split(b"\x00")
            for chunk in chunks:
                if not chunk:
                    continue
                try:
                    payload = unframed(cobs_decode(chunk))
                except ValueError:
                    payload = None
                intact = payload is not None and len(payload) >= 7
                was_first, first = first, False
                if not intact and was_first:
                    continue
                assert intact, chunk
                kind, seq, t_us = struct.unpack("<BHI", payload[:7])
                yield kind, seq, t_us, payload[7:]


def start_simboard(build_dir, *args):
    proc = subprocess.Popen([str(build_dir / "simboard"), *args, str(build_dir / "firmware.elf")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline()


# ---- tests ----------------------------------------------------------------

def test_clean_build_makes_elf_and_hex(build):
    assert (build / "firmware.elf").is_file()
    hex_lines = (build / "firmware.hex").read_text().split()
    assert hex_lines[-1] == ":00000001FF"
    # flash image only: every data record lies below the end of flash
    for line in hex_lines:
        if line[7:9] == "00":
            assert int(line[3:7], 16) + int(line[1:3], 16) <= FLASH_BYTES


def test_firmware_fits_the_atmega328p(build):
    sizes = section_sizes(build / "firmware.elf")
    flash = sizes[".text"] + sizes.get(".data", 0)
    ram = sizes.get(".data", 0) + sizes.get(".bss", 0)
    assert 0 < flash <= FLASH_BYTES, sizes
    # leave at least half the RAM to the stack
    assert 0 < ram <= RAM_BYTES // 2, sizes


@pytest.mark.parametrize("config", [
    ("MODE=0", "N_CHANNELS=6", "N_ACTUATORS=4", "PERIOD_US=5000"),
    ("MODE=1", "N_CHANNELS=1", "N_ACTUATORS=0", "PERIOD_US=4000000"),
])
def test_configured_builds(tmp_path, config):
    result = make(tmp_path / "build", "firmware", *config)
    assert result.returncode == 0, result.stdout + result.stderr
    sizes = section_sizes(tmp_path / "build" / "firmware.elf")
    assert sizes[".text"] + sizes.get(".data", 0) <= FLASH_BYTES


@pytest.mark.parametrize("setting, message", [
    ("N_CHANNELS=7", "RTRL_N_CHANNELS must be 1..6"),
    ("MODE=2", "RTRL_MODE must be 0"),
    ("PERIOD_US=100", "RTRL_PERIOD_US must be within"),
])
def test_bad_configuration_is_a_compile_error(tmp_path, setting, message):
    result = make(tmp_path / "build", "firmware", setting)
    assert result.returncode != 0
    assert message in result.stderr


# ---- the firmware's codec, built for the host (build/hostcodec) -------------

def codec_build(build, kind, seq, t_us, body):
    result = subprocess.run([str(build / "hostcodec"), "build", str(kind), str(seq), str(t_us), body.hex()],
                            capture_output=True, text=True, timeout=30)
    return result.returncode, bytes.fromhex(result.stdout.strip() or "")


def codec_parse(build, wire):
    result = subprocess.run([str(build / "hostcodec"), "parse"], input=wire, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    events = []
    for line in result.stdout.decode().splitlines():
        word, *rest = line.split()
        if word == "FRAME":
            kind, seq, t_us = (int(x) for x in rest[:3])
            events.append(("FRAME", kind, seq, t_us, bytes.fromhex(rest[3] if len(rest) > 3 else "")))
        else:
            events.append(("ERROR", int(rest[0])))
    return events


def reference_wire(kind, seq, t_us, body):
    return cobs_encode(framed(struct.pack("<BHI", kind, seq, t_us) + body)) + b"\x00"


@pytest.mark.parametrize("kind, seq, t_us, body", [
    (HEARTBEAT, 0, 0, b""),
    (SAMPLE, 0xFFFF, 0xFFFFFFFF, struct.pack("<3h", 1000, -1, 0)),
    (HELLO, 258, 123456, bytes(range(57))),              # longest body, zeros inside
    (COMMAND, 7, 1 << 31, b"\x00" * 57),
    (ERROR, 1, 2, bytes(range(1, 58))),                  # longest body, no zeros
])
def test_codec_builds_what_the_protocol_says(build, kind, seq, t_us, body):
    rc, wire = codec_build(build, kind, seq, t_us, body)
    assert rc == 0
    assert wire == reference_wire(kind, seq, t_us, body)
    assert len(wire) <= 69 and wire.index(b"\x00") == len(wire) - 1
    assert codec_parse(build, wire) == [("FRAME", kind, seq, t_us, body)]


def test_codec_refuses_a_body_over_57_bytes(build):
    rc, wire = codec_build(build, SAMPLE, 0, 0, bytes(58))
    assert rc == 1 and wire == b""


def test_codec_decodes_a_stream_and_resynchronises(build):
    good = [reference_wire(SAMPLE, n, 10000 * n, struct.pack("<h", n)) for n in range(3)]
    bad_crc = bytearray(reference_wire(HEARTBEAT, 9, 0, b""))
    bad_crc[-2] ^= 0x01                                  # last CRC byte
    stream = (b"\x00\x00" + good[0] + b"\x01\x02\x03\x00"  # empty frames; 2-byte junk
              + bytes(bad_crc) + b"\x05\x01\x00"            # bad CRC; block cut short
              + b"\x11" * 100 + good[1]                      # overflow swallows good[1]
              + good[2])
    events = codec_parse(build, stream)
    assert events == [
        ("FRAME", SAMPLE, 0, 0, struct.pack("<h", 0)),
        ("ERROR", BAD_CRC),                              # junk decodes to 2 bytes
        ("ERROR", BAD_CRC),
        ("ERROR", BAD_COBS),
        ("ERROR", OVERFLOW),                             # reported once
        ("FRAME", SAMPLE, 2, 20000, struct.pack("<h", 2)),
    ]


def test_codec_size_limit_is_68_encoded_bytes(build):
    # a 64-byte payload encodes to 68 bytes (length byte, check, one COBS
    # code): accepted
    body = bytes(range(1, 58))
    wire = reference_wire(0x7F, 0x0101, 0x01010101, body)
    assert len(wire) == 69
    assert codec_parse(build, wire)[0][0] == "FRAME"
    # one byte more before the delimiter is an overflow
    assert codec_parse(build, wire[:-1] + b"\x01\x00") == [("ERROR", OVERFLOW)]


def test_codec_short_frames(build):
    # one or two decoded bytes: no room for a length byte and a check
    assert codec_parse(build, b"\x02\x07\x00") == [("ERROR", BAD_CRC)]
    assert codec_parse(build, b"\x03\x07\x07\x00") == [("ERROR", BAD_CRC)]
    # intact, payload shorter than the 7-byte header
    wire = cobs_encode(framed(b"\x04\x00\x00")) + b"\x00"
    assert codec_parse(build, wire) == [("ERROR", BAD_LENGTH)]


def test_codec_length_byte_must_match_whatever_the_check(build):
    """A frame whose check matches but whose length byte is off is refused:
    what makes a frame run on into the next one always fail."""
    payload = struct.pack("<BHI", HEARTBEAT, 5, 6)
    for length in (len(payload) - 1, len(payload) + 1, 0, 255):
        wire = cobs_encode(framed(payload, length)) + b"\x00"
        assert codec_parse(build, wire) == [("ERROR", BAD_CRC)], length


@pytest.mark.parametrize("bit", range(8))
def test_codec_refuses_a_frame_whose_delimiter_flipped(build, bit):
    """The delimiter of a frame flips (0x00 -> 0x01, ... 0x80) and a 0x00
    follows: under version 1 the first case delivered the payload plus a CRC
    byte; now every case is an error, and the next frame comes through."""
    sample = reference_wire(SAMPLE, 7, 70000, struct.pack("<3h", 1000, -3, 0))
    after = reference_wire(HEARTBEAT, 8, 80000, b"")
    stream = sample[:-1] + bytes([1 << bit]) + b"\x00" + after
    events = codec_parse(build, stream)
    assert events[-1] == ("FRAME", HEARTBEAT, 8, 80000, b"")
    assert len(events) == 2 and events[0][0] == "ERROR", events


# ---- the firmware in simavr ----------------------------------------------------

@needs_simavr
def test_simboard_prints_port_first_and_stops_at_seconds(build):
    proc, first = start_simboard(build, "--fast", "--seconds", "2")
    try:
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert re.fullmatch(r"PORT /dev/pts/\d+\n", first), (first, err)
    assert rest == "", "only the PORT line goes to stdout"
    assert proc.returncode == 0, err


@needs_simavr
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_simboard_port_line_comes_first_with_stderr_on_the_same_stream(build, terminal):
    """simavr's notes ("Loaded ...", uart_pty's messages) are made before the
    pty exists; simboard holds them back until the PORT line is out, so it
    is the first line even when stdout and stderr are one terminal (where
    stdio is line-buffered) or one pipe."""
    cmd = [str(build / "simboard"), "--fast", "--seconds", "0.5", str(build / "firmware.elf")]
    if terminal:
        master, slave = os.openpty()
        proc = subprocess.Popen(cmd, stdout=slave, stderr=slave)
        os.close(slave)
        text = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:                     # EIO: the other end is closed
                break
            if not chunk:
                break
            text += chunk
        os.close(master)
        assert proc.wait(timeout=60) == 0
        text = text.decode().replace("\r\n", "\n")
    else:
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout
        text = result.stdout
    first, *rest = text.splitlines()
    assert re.fullmatch(r"PORT /dev/pts/\d+", first), text
    assert any(line.startswith("Loaded ") for line in rest), text


@needs_simavr
def test_simboard_rejects_a_missing_elf(tmp_path, build):
    result = subprocess.run([str(build / "simboard"), "--fast", str(tmp_path / "nothing.elf")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "cannot read" in result.stderr


@needs_simavr
def test_simboard_reports_a_firmware_that_stops(tmp_path, build):
    source = tmp_path / "stop.c"
    source.write_text("#include <avr/interrupt.h>\n#include <avr/sleep.h>\n"
                      "int main(void) { cli(); sleep_enable(); sleep_cpu(); for (;;); }\n")
    elf = tmp_path / "stop.elf"
    subprocess.run(["avr-gcc", "-Os", "-mmcu=atmega328p", str(source), "-o", str(elf)], check=True)
    result = subprocess.run([str(build / "simboard"), "--fast", str(elf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stdout.startswith("PORT ")
    assert "stopped (sleep with interrupts off)" in result.stderr


@needs_simavr
def test_firmware_speaks_the_protocol_over_the_pty(build):
    proc, first = start_simboard(build, "--fast")
    assert first.startswith("PORT "), first
    port = Pty(first.split(" ", 1)[1].strip())
    try:
        port.write(wire_frame(HELLO_REQUEST))
        hello, samples, errors = None, [], []
        for kind, seq, t_us, body in port.frames(timeout=20):
            if kind == HELLO:
                hello = struct.unpack("<BBBBI", body[:8])
                samples = []                    # count samples after the schema
            elif kind == SAMPLE and hello:
                samples.append((t_us, struct.unpack("<%dh" % (len(body) // 2), body)))
                if len(samples) == 20:
                    port.write(wire_frame(COMMAND, struct.pack("<h", 1000), seq=1))
                    port.write(wire_frame(HEARTBEAT, seq=2, corrupt_crc=True))
            elif kind == ERROR:
                errors.append(struct.unpack("<BH", body))
            if errors and len(samples) > 300:
                break
        assert hello == (2, 3, 1, 1, 10000), "version, channels, actuators, mode, period"
        steps = {b[0] - a[0] for a, b in zip(samples, samples[1:])}
        assert steps == {10000}, "one SAMPLE every period_us of device time"
        assert all(len(raw) == 3 for _, raw in samples)
        assert samples[-1][1][1] == 1000, "channel 1 shows the command as applied"
        assert errors == [(BAD_CRC, 1)]
    finally:
        port.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0


ARDUINO_HW = "/usr/share/arduino/hardware"


@pytest.mark.skipif(not (shutil.which("arduino-builder") and os.path.isdir(ARDUINO_HW)),
                    reason="arduino-builder and the Arduino AVR core missing "
                           "(apt-get install arduino-builder arduino-core-avr)")
def test_arduino_sketch_compiles(tmp_path):
    sketch = os.path.join(BRIDGE, "arduino", "rtrl_edge_board", "rtrl_edge_board.ino")
    cmd = ["arduino-builder", "-compile", "-hardware", ARDUINO_HW,
           "-hardware", "/usr/share/arduino-builder", "-tools", "/usr/bin",
           "-fqbn", "arduino:avr:uno", "-build-path", str(tmp_path),
           # Debian's AVR core and avr-gcc 5.4 disagree about DECIMAL_DIG in
           # the core's WString.cpp; nothing of ours depends on it
           "-prefs", "compiler.cpp.extra_flags=-DDECIMAL_DIG=17",
           sketch]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Sketch uses" in result.stdout
