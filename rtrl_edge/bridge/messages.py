"""Payloads of the serial protocol (firmware_bridge/PROTOCOL.md §2-3).

A payload is a 7-byte header (type u8, seq u16, t_us u32, little-endian)
and a body.  `decode` turns a checked payload into one of the message
classes below, or raises `ProtocolError`; `encode` does the reverse.  A
HELLO of this version with a value no device can mean (PROTOCOL.md §3:
period 0, a scale of 0 or NaN, ...) raises `HelloError`, which names the
field and the value.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Optional, Tuple, Union


VERSION = 2
HEADER = struct.Struct("<BHI")
MAX_CHANNELS = 6
MAX_ACTUATORS = 4

# What a HELLO of this version may announce (PROTOCOL.md §3); channel and
# actuator counts are the limits above.
MODES = (0, 1)
PERIOD_US_RANGE = (100, 60_000_000)        # 10 kHz .. one sample a minute
SCALE_RANGE = (1e-9, 1e9)                  # |scale|
OFFSET_MAX = 1e9                           # |offset|

HELLO, SAMPLE, COMMAND, HEARTBEAT, ERROR, HELLO_REQUEST, CONFIGURE = range(1, 8)
TYPE_NAMES = {HELLO: "HELLO", SAMPLE: "SAMPLE", COMMAND: "COMMAND",
              HEARTBEAT: "HEARTBEAT", ERROR: "ERROR", HELLO_REQUEST: "HELLO_REQUEST",
              CONFIGURE: "CONFIGURE"}
ERROR_NAMES = {1: "BAD_CRC", 2: "BAD_COBS", 3: "OVERFLOW", 4: "UNKNOWN_TYPE",
               5: "BAD_LENGTH", 6: "SAMPLE_LATE"}
MODE_ANALOG, MODE_PLANT = 0, 1


class ProtocolError(ValueError):
    """A CRC-valid payload that does not follow the protocol."""


class HelloError(ProtocolError):
    """A HELLO of this version announcing a value outside PROTOCOL.md §3;
    `field` and `value` say which."""

    def __init__(self, field: str, value, allowed: str):
        super().__init__(f"impossible HELLO: {field} = {value!r} (the protocol allows "
                         f"{allowed})")
        self.field, self.value, self.allowed = field, value, allowed


@dataclass(frozen=True)
class Hello:
    """The device's schema: channel count, scaling, sample period."""
    version: int
    n_channels: int
    n_actuators: int
    mode: int
    period_us: int
    scale: Tuple[float, ...]
    offset: Tuple[float, ...]
    seq: int = 0
    t_us: int = 0

    @property
    def sample_rate_hz(self) -> float:
        return 1e6 / self.period_us if self.period_us else float("nan")


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


# the bounds as float32, so that a device sending exactly 1e-9 passes
_SCALE_LO, _SCALE_HI, _OFFSET_HI = _f32(SCALE_RANGE[0]), _f32(SCALE_RANGE[1]), _f32(OFFSET_MAX)


def check_hello(hello: "Hello") -> None:
    """Raise `HelloError` for the first value of `hello` (of this `VERSION`)
    that PROTOCOL.md §3 rules out; channel and actuator counts included."""
    lo, hi = PERIOD_US_RANGE
    if not 1 <= hello.n_channels <= MAX_CHANNELS:
        raise HelloError("n_channels", hello.n_channels, f"1..{MAX_CHANNELS}")
    if not 0 <= hello.n_actuators <= MAX_ACTUATORS:
        raise HelloError("n_actuators", hello.n_actuators, f"0..{MAX_ACTUATORS}")
    if hello.mode not in MODES:
        raise HelloError("mode", hello.mode, "0 (analog inputs) or 1 (simulated plant)")
    if not lo <= hello.period_us <= hi:
        raise HelloError("period_us", hello.period_us, f"{lo}..{hi}")
    for k, (s, o) in enumerate(zip(hello.scale, hello.offset)):
        if not (math.isfinite(s) and _SCALE_LO <= abs(s) <= _SCALE_HI):
            raise HelloError(f"scale[{k}]", s, f"{SCALE_RANGE[0]:g} <= |scale| <= "
                                               f"{SCALE_RANGE[1]:g}")
        if not (math.isfinite(o) and abs(o) <= _OFFSET_HI):
            raise HelloError(f"offset[{k}]", o, f"|offset| <= {OFFSET_MAX:g}")


@dataclass(frozen=True)
class Sample:
    raw: Tuple[int, ...]
    seq: int = 0
    t_us: int = 0

    def values(self, hello: Hello) -> Tuple[float, ...]:
        """Channel values in the device's units (raw * scale + offset)."""
        return tuple(r * s + o for r, s, o in zip(self.raw, hello.scale, hello.offset))


@dataclass(frozen=True)
class Command:
    values: Tuple[int, ...]
    seq: int = 0
    t_us: int = 0


@dataclass(frozen=True)
class Heartbeat:
    seq: int = 0
    t_us: int = 0


@dataclass(frozen=True)
class Error:
    code: int
    count: int
    seq: int = 0
    t_us: int = 0

    @property
    def name(self) -> str:
        return ERROR_NAMES.get(self.code, f"code {self.code}")


@dataclass(frozen=True)
class HelloRequest:
    seq: int = 0
    t_us: int = 0


@dataclass(frozen=True)
class Configure:
    period_us: int = 0              # 0: keep
    mode: int = 0xFF                # 0xFF: keep
    seq: int = 0
    t_us: int = 0


Message = Union[Hello, Sample, Command, Heartbeat, Error, HelloRequest, Configure]


def _expect(kind, body, size):
    if len(body) != size:
        raise ProtocolError(f"{TYPE_NAMES[kind]} body must be {size} bytes, got {len(body)}")


def decode(payload: bytes) -> Message:
    """One message from a CRC-checked payload."""
    if len(payload) < HEADER.size:
        raise ProtocolError(f"payload of {len(payload)} bytes is shorter than the "
                            f"{HEADER.size}-byte header")
    kind, seq, t_us = HEADER.unpack_from(payload)
    body = bytes(payload[HEADER.size:])
    if kind == SAMPLE:
        if len(body) % 2 or not 2 <= len(body) <= 2 * MAX_CHANNELS:
            raise ProtocolError(f"SAMPLE body must hold 1..{MAX_CHANNELS} int16, got "
                                f"{len(body)} bytes")
        return Sample(struct.unpack(f"<{len(body) // 2}h", body), seq, t_us)
    if kind == HELLO:
        if len(body) < 8:
            raise ProtocolError(f"HELLO body must be at least 8 bytes, got {len(body)}")
        version, n_ch, n_act, mode, period = struct.unpack_from("<BBBBI", body)
        if not 1 <= n_ch <= MAX_CHANNELS:       # the layout itself depends on these
            raise HelloError("n_channels", n_ch, f"1..{MAX_CHANNELS}")
        if n_act > MAX_ACTUATORS:
            raise HelloError("n_actuators", n_act, f"0..{MAX_ACTUATORS}")
        _expect(kind, body, 8 + 8 * n_ch)
        pairs = struct.unpack_from(f"<{2 * n_ch}f", body, 8)
        hello = Hello(version, n_ch, n_act, mode, period, pairs[0::2], pairs[1::2], seq, t_us)
        if version == VERSION:          # another version's bounds are not ours to judge
            check_hello(hello)
        return hello
    if kind == COMMAND:
        if len(body) % 2 or len(body) > 2 * MAX_ACTUATORS:
            raise ProtocolError(f"COMMAND body must hold 0..{MAX_ACTUATORS} int16, got "
                                f"{len(body)} bytes")
        return Command(struct.unpack(f"<{len(body) // 2}h", body), seq, t_us)
    if kind == HEARTBEAT:
        _expect(kind, body, 0)
        return Heartbeat(seq, t_us)
    if kind == ERROR:
        _expect(kind, body, 3)
        code, count = struct.unpack("<BH", body)
        return Error(code, count, seq, t_us)
    if kind == HELLO_REQUEST:
        _expect(kind, body, 0)
        return HelloRequest(seq, t_us)
    if kind == CONFIGURE:
        _expect(kind, body, 5)
        period, mode = struct.unpack("<IB", body)
        return Configure(period, mode, seq, t_us)
    raise ProtocolError(f"unknown message type 0x{kind:02x}")


def encode(msg: Message, seq: int = None, t_us: int = None) -> bytes:
    """The payload of `msg`; `seq` and `t_us` default to the message's own.
    Raises ProtocolError for a message `decode` would refuse (a field out of
    its range, a wrong count), TypeError for anything but a message."""
    if not isinstance(msg, (Hello, Sample, Command, Heartbeat, Error, HelloRequest,
                            Configure)):
        raise TypeError(f"not a protocol message: {msg!r}")
    seq = (msg.seq if seq is None else seq) & 0xFFFF
    t_us = (msg.t_us if t_us is None else t_us) & 0xFFFFFFFF
    try:
        kind, body = _body(msg)
    except struct.error as exc:
        raise ProtocolError(f"{type(msg).__name__} field out of range ({exc}): int16 values "
                            f"are -32768..32767, u8 0..255, u32 0..4294967295") from None
    return HEADER.pack(kind, seq, t_us) + body


def _body(msg: Message):
    if isinstance(msg, Sample):
        if not 1 <= len(msg.raw) <= MAX_CHANNELS:
            raise ProtocolError(f"a SAMPLE carries 1..{MAX_CHANNELS} values, got "
                                f"{len(msg.raw)}")
        return SAMPLE, struct.pack(f"<{len(msg.raw)}h", *msg.raw)
    if isinstance(msg, Hello):
        if not 1 <= msg.n_channels <= MAX_CHANNELS or not 0 <= msg.n_actuators <= MAX_ACTUATORS:
            raise ProtocolError(f"HELLO allows 1..{MAX_CHANNELS} channels and "
                                f"0..{MAX_ACTUATORS} actuators")
        if len(msg.scale) != msg.n_channels or len(msg.offset) != msg.n_channels:
            raise ProtocolError("HELLO needs one scale and one offset per channel")
        if msg.version == VERSION:
            check_hello(msg)
        body = struct.pack("<BBBBI", msg.version, msg.n_channels, msg.n_actuators,
                           msg.mode, msg.period_us)
        body += struct.pack(f"<{2 * msg.n_channels}f",
                            *[v for pair in zip(msg.scale, msg.offset) for v in pair])
        return HELLO, body
    if isinstance(msg, Command):
        if len(msg.values) > MAX_ACTUATORS:
            raise ProtocolError(f"a COMMAND carries at most {MAX_ACTUATORS} values")
        return COMMAND, struct.pack(f"<{len(msg.values)}h", *msg.values)
    if isinstance(msg, Heartbeat):
        return HEARTBEAT, b""
    if isinstance(msg, Error):
        return ERROR, struct.pack("<BH", msg.code, msg.count)
    if isinstance(msg, HelloRequest):
        return HELLO_REQUEST, b""
    return CONFIGURE, struct.pack("<IB", msg.period_us, msg.mode)
