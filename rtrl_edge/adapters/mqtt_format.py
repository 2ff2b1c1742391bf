"""What goes over MQTT and into an `mqtt.MqttLink`, without paho: the
broker URL (`parse_url`), the credentials file (`read_credentials`), the
sample payloads read (`parse_sample`) and the JSON written (`_dumps`).
Each bad input is a ValueError (or OSError) whose one line names the
problem; a password is never echoed."""
from __future__ import annotations

import json
import math
import os
from typing import NamedTuple, Optional, Tuple

import numpy as np

EXPECTED = "mqtt://HOST[:PORT]/PREFIX or mqtts://HOST[:PORT]/PREFIX"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MAX_SAMPLE_BYTES = 65536          # a longer sample payload is malformed


# -- URL and credentials -------------------------------------------------------

class MqttUrl(NamedTuple):
    """A parsed broker URL; ``host`` without the brackets of an IPv6 address."""
    scheme: str
    host: str
    port: int
    prefix: str
    tls: bool


def _topic_problem(text: str) -> Optional[str]:
    """Why `text` cannot be a topic prefix or a stream name, or None."""
    if not text:
        return "is empty"
    if "+" in text or "#" in text:
        return "contains a wildcard ('+' or '#')"
    if text.startswith("/") or text.endswith("/"):
        return "starts or ends with '/'"
    if "//" in text:
        return "has an empty level ('//')"
    if text.startswith("$"):
        return "starts with '$' (reserved for the broker's own topics)"
    if "\0" in text:
        return "contains a NUL character"
    return None


def parse_url(url: str) -> MqttUrl:
    """Parse ``mqtt://HOST[:PORT]/PREFIX`` (port 1883) or
    ``mqtts://HOST[:PORT]/PREFIX`` (port 8883, TLS).  HOST may be an IPv6
    address in brackets; PREFIX may hold '/' but no wildcard, no empty level,
    no leading or trailing '/'.  Credentials are refused in the URL (they
    would show in process lists and logs): use a credentials file.  Raises
    ValueError naming what is wrong and the expected form."""
    if not isinstance(url, str):
        raise TypeError(f"an MQTT URL is a str, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    netloc, slash, prefix = rest.partition("/")
    shown = f"{scheme}://***@{rest.partition('@')[2]}" if "@" in netloc else url

    def bad(what):
        return ValueError(f"bad MQTT URL {shown!r}: {what}; expected {EXPECTED}")
    if not sep:
        raise bad("no scheme")
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise bad(f"unsupported scheme {scheme!r}")
    if "?" in rest:
        raise bad("a query ('?') is not allowed")
    if "@" in netloc:
        raise bad("credentials do not belong in the URL (they would show in process lists "
                  "and logs); put USERNAME:PASSWORD in a credentials file")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise bad("unclosed '[' around the IPv6 address")
        host, tail = netloc[1:end], netloc[end + 1:]
        if tail and not tail.startswith(":"):
            raise bad(f"unexpected {tail!r} after the IPv6 address")
        port_text = tail[1:] if tail else None
    else:
        if netloc.count(":") > 1:
            raise bad("an IPv6 address must be in brackets, e.g. [::1]")
        host, colon, port_text = netloc.partition(":")
        port_text = port_text if colon else None
    if not host:
        raise bad("no host")
    if port_text is None:
        port = DEFAULT_PORTS[scheme]
    elif not port_text.isdigit():
        raise bad(f"port {port_text!r} is not a number")
    elif not 1 <= int(port_text) <= 65535:
        raise bad(f"port {int(port_text)} is out of range 1-65535")
    else:
        port = int(port_text)
    if not slash or not prefix:
        raise bad("no PREFIX (the topic prefix after the host, e.g. /plant/pump1)")
    why = _topic_problem(prefix)
    if why:
        raise bad(f"the prefix {prefix!r} {why}")
    return MqttUrl(scheme, host, port, prefix, scheme == "mqtts")


def read_credentials(path) -> Tuple[str, str]:
    """(username, password) from a file holding ``USERNAME:PASSWORD`` on its
    first line (split at the first ':', so the password may hold ':'; the line
    ending is stripped, nothing else; the password may be empty).  Raises
    OSError (the file cannot be read) or ValueError (empty, not UTF-8, no ':',
    empty username); the messages never quote the file's contents."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            first = f.readline()
    except OSError as exc:
        err = type(exc)(f"cannot read the MQTT credentials file {name!r}: "
                        f"{exc.strerror or exc}")
        err.errno = exc.errno
        raise err from None
    form = "expected USERNAME:PASSWORD on its first line"
    try:
        line = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"the MQTT credentials file {name!r} is not UTF-8 text; {form}") from None
    if not line:
        raise ValueError(f"the MQTT credentials file {name!r} has an empty first line; {form}")
    user, colon, password = line.partition(":")
    if not colon:
        raise ValueError(f"the MQTT credentials file {name!r} has no ':' on its first line; {form}")
    if not user:
        raise ValueError(f"the MQTT credentials file {name!r} has an empty USERNAME; {form}")
    return user, password


# -- payloads -----------------------------------------------------------------

class _Reject(ValueError):
    pass


def _no_constant(name: str):
    raise _Reject(f"non-finite number {name}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind(v) -> str:
    return {bool: "true/false", str: "a string", list: "a list", dict: "an object",
            type(None): "null"}.get(type(v), type(v).__name__)


def parse_sample(payload: bytes, channels: Optional[int] = None
                 ) -> Tuple[np.ndarray, Optional[float], Optional[int]]:
    """One sample payload -> (values float64 (n,), t or None, seq or None).

    UTF-8 JSON, at most `MAX_SAMPLE_BYTES`: a list of numbers ``[v0, v1, ...]``;
    an object ``{"values": [...], "t": number, "seq": integer >= 0}`` ("t" and
    "seq" optional, other keys ignored); or one number (a 1-channel sample).
    Raises ValueError saying why for anything else: not UTF-8, not JSON, no
    values, a value that is not a finite number (true/false included), or
    not `channels` values when `channels` is given."""
    if len(payload) > MAX_SAMPLE_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes is over the {MAX_SAMPLE_BYTES}-byte limit")
    if not payload:
        raise ValueError("empty payload")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("payload is not UTF-8 text") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except _Reject:
        raise
    except ValueError as exc:   # JSONDecodeError
        raise ValueError(f"not JSON ({exc})") from None
    t = seq = None
    if isinstance(doc, dict):
        if "values" not in doc:
            raise ValueError('an object sample needs "values": [numbers]')
        values, t, seq = doc["values"], doc.get("t"), doc.get("seq")
        if t is not None and not (_is_number(t) and math.isfinite(t)):
            raise ValueError(f'"t" must be a finite number, got {_kind(t) if not _is_number(t) else t}')
        if seq is not None and not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0):
            raise ValueError(f'"seq" must be an integer >= 0, got {seq!r}')
    elif _is_number(doc):
        values = [doc]
    else:
        values = doc
    if not isinstance(values, list):
        raise ValueError(f"a sample is a list of numbers, an object with \"values\" or one "
                         f"number, got {_kind(values)}")
    if not values:
        raise ValueError("no values")
    for i, v in enumerate(values):
        if not _is_number(v):
            raise ValueError(f"value {i} is {_kind(v)}, not a number")
    try:
        arr = np.array(values, dtype=np.float64)
    except OverflowError:           # an integer beyond float64's range
        arr = np.array([float("inf") if abs(v) > 1e308 else v for v in values], np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(f"value {int(np.argmin(finite))} is not finite")
    if channels is not None and arr.size != channels:
        raise ValueError(f"{arr.size} values, the stream has {channels} channels")
    return arr, (None if t is None else float(t)), seq


def _plain(obj):
    """`obj` with numpy arrays and scalars as lists and Python numbers, and
    non-finite floats as None (JSON has no spelling for them)."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _dumps(payload) -> str:
    if not isinstance(payload, dict):
        raise TypeError(f"an MQTT payload is a dict, got {type(payload).__name__}")
    return json.dumps(_plain(payload), separators=(",", ":"), allow_nan=False)
