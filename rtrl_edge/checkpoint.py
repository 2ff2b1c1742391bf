"""Checkpoint files: written atomically, read as a validator.

A checkpoint is a plain ``.npz`` (a zip of ``.npy`` members, stored, never
compressed, no pickles) holding a model's configuration, parameters, state
and caller-provided ``extra:*`` arrays, with

- ``format_version``;
- ``checksum``: SHA-256 over every other member's name, dtype, shape and
  bytes.  It detects accidents -- truncation, flipped bits, an edit by a tool
  that does not recompute it -- but anyone can recompute it;
- ``mac`` (when written with a key): HMAC-SHA-256 of the same bytes under a
  secret key.  Reading with the key refuses a file without a valid ``mac``,
  so a file that was not written by a holder of the key cannot load.

Reading never trusts the file.  In order:

1. the path must be a regular file (a FIFO, device or folder is refused
   before it is opened: nothing blocks);
2. the zip directory is checked before any member is read: at most
   ``MAX_MEMBERS`` members, known names, stored (a compressed member is
   refused, so nothing is ever inflated: a zip bomb cannot expand), not
   encrypted, and declared sizes that add up to no more than the file;
3. the small members (version, configuration, counters, mask) are read and
   the configuration is checked; the layout it implies gives every other
   member's exact dtype and shape, checked against each ``.npy`` header
   before its data is read.  Memory therefore stays bounded by the file's
   own size, which is the model's;
4. the checksum (and the ``mac``, with a key) over everything read;
5. values: parameters and state finite, variances and counters not negative.

Anything else that goes wrong while parsing is reported as `CheckpointError`
too: loading raises only `CheckpointError` or `FileNotFoundError`.

Temporary files are named ``.<name>.<pid>.<random>.tmp`` beside the
checkpoint, so that `remove_stale_temporaries` can remove those of this
checkpoint left by a process that was killed mid-write, and no others.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import stat
import tempfile
import zipfile
from typing import Callable, Dict, Optional, Tuple

import numpy as np

__all__ = ["CheckpointError", "FORMAT_VERSION", "read", "write", "read_key",
           "remove_stale_temporaries", "MIN_KEY_BYTES"]

FORMAT_VERSION = 1
MAX_MEMBERS = 256            # a model has at most ~25 arrays, a loop ~10 more
SMALL_MEMBER_BYTES = 1 << 16  # version, configuration, counters, checksum, mac
MIN_KEY_BYTES = 16
EXTRA = "extra:"             # prefix of caller-provided arrays
_RESERVED = ("format_version", "checksum", "mac")
_NAME = re.compile(r"^[A-Za-z0-9_:]{1,64}$")
# dtypes a checkpoint may hold (little-endian as np.save writes them)
_DTYPES = {"<f4", "<f8", "<i8", "<i4", "|b1", "|u1"}


class CheckpointError(ValueError):
    """A checkpoint file is truncated, tampered with, forged (with a key), of
    another format version, or does not describe a valid model."""


# -- keys ------------------------------------------------------------------

def read_key(path) -> bytes:
    """The secret key in the file at `path` (a trailing newline is dropped).

    Raises FileNotFoundError, or CheckpointError if it is not a regular file
    or holds fewer than MIN_KEY_BYTES bytes (e.g. ``head -c 32 /dev/urandom
    > key``).
    """
    path = os.fspath(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"key file {path!r} is not a regular file")
    if st.st_size > 1 << 20:
        raise CheckpointError(f"key file {path!r} is {st.st_size:,} bytes; a key is "
                              f"at most 1 MiB")
    with open(path, "rb") as f:
        key = f.read(1 << 20).rstrip(b"\r\n")
    if len(key) < MIN_KEY_BYTES:
        raise CheckpointError(f"key file {path!r} holds {len(key)} bytes; a key needs at "
                              f"least {MIN_KEY_BYTES} (e.g. head -c 32 /dev/urandom > key)")
    return key


# -- writing -----------------------------------------------------------------

def _digest(arrays: Dict[str, np.ndarray], h) -> None:
    """Feed every array's name, dtype, shape and bytes, in name order, to h."""
    for name in sorted(arrays):
        if name in ("checksum", "mac"):
            continue
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())


def checksum(arrays: Dict[str, np.ndarray]) -> str:
    """SHA-256 over every array but ``checksum`` and ``mac``."""
    h = hashlib.sha256()
    _digest(arrays, h)
    return h.hexdigest()


def mac(arrays: Dict[str, np.ndarray], key: bytes) -> str:
    """HMAC-SHA-256 under `key` over every array but ``checksum`` and ``mac``."""
    h = hmac.new(key, digestmod=hashlib.sha256)
    _digest(arrays, h)
    return h.hexdigest()


def _temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def write(path, arrays: Dict[str, np.ndarray], *, key: Optional[bytes] = None) -> None:
    """Write `arrays` (plus version, checksum and, with `key`, mac) to `path`
    atomically: a temporary file in the same folder, flushed to disk, then
    renamed over `path`.  An existing file is replaced whole or not at all;
    on any failure the temporary file is removed and the error raised."""
    path = os.fspath(path)
    arrays = dict(arrays)
    arrays["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
    arrays["checksum"] = np.array(checksum(arrays))
    if key is not None:
        arrays["mac"] = np.array(mac(arrays, key))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f"{_temporary_prefix(path)}{os.getpid()}.",
                               suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:   # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temporaries(path) -> int:
    """Remove the temporary files of checkpoint `path` left by processes that
    no longer run (killed while writing); returns how many were removed.
    Those of a running process, and every other file, are left alone."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _temporary_prefix(path)
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


# -- reading -----------------------------------------------------------------

Spec = Dict[str, Tuple[str, tuple]]   # member name -> (dtype str, shape)


class _Member:
    """One ``.npy`` member: its header checked, its data read only on demand."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str):
        self.zf, self.info, self.where = zf, info, where
        with zf.open(info) as f:
            head = f.read(min(info.file_size, 4096))
        buf = io.BytesIO(head)
        try:
            version = np.lib.format.read_magic(buf)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
            else:
                raise ValueError(f"npy version {version}")
        except Exception as exc:   # any malformed header
            raise CheckpointError(f"{where}: member {info.filename!r} is not a valid .npy "
                                  f"array ({exc})") from None
        if fortran or dtype.str not in _DTYPES and dtype.kind != "U":
            raise CheckpointError(f"{where}: member {info.filename!r} holds {dtype} "
                                  f"{'(Fortran order) ' if fortran else ''}data; a checkpoint "
                                  f"holds plain numbers")
        self.offset = buf.tell()
        self.shape, self.dtype = tuple(shape), dtype
        if any(d < 0 for d in self.shape):
            raise CheckpointError(f"{where}: member {info.filename!r} has shape {shape}")
        count = 1
        for d in self.shape:
            count *= d
        if self.offset + count * dtype.itemsize != info.file_size:
            raise CheckpointError(f"{where}: member {info.filename!r} declares "
                                  f"{info.file_size:,} bytes but its header describes "
                                  f"{self.offset + count * dtype.itemsize:,}")

    def read(self) -> np.ndarray:
        with self.zf.open(self.info) as f:
            raw = f.read(self.info.file_size + 1)
        if len(raw) != self.info.file_size:
            raise CheckpointError(f"{self.where}: member {self.info.filename!r} is "
                                  f"truncated")
        a = np.frombuffer(raw, dtype=self.dtype, offset=self.offset)
        return a.reshape(self.shape).copy()


def read(path, build_spec: Callable[..., Spec], *,
         key: Optional[bytes] = None) -> Dict[str, np.ndarray]:
    """Validate and read the checkpoint at `path`; returns its arrays (less
    version, checksum and mac).

    ``build_spec(config, file_size, load)`` receives the configuration (a
    dict from the ``config`` member), the file's size, and
    ``load(name, dtype, shape, max_items=None)``, which reads one member
    after checking its header against that dtype and shape (e.g. a mask the
    layout depends on; ``shape=None``: any 1-d length up to ``max_items``).
    It returns the exact dtype and shape of every other member the
    configuration implies, and raises CheckpointError or ValueError for an
    invalid configuration.  Members named ``extra:*`` may have any plain
    numeric dtype and shape (their size is still bounded by the file's); the
    caller checks them.

    Raises FileNotFoundError, or CheckpointError for anything else.
    """
    path = os.fspath(path)
    where = repr(path)
    st = os.stat(path)                 # FileNotFoundError passes through
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO"
                if stat.S_ISFIFO(st.st_mode) else "a device or socket")
        raise CheckpointError(f"{where} is {kind}, not a checkpoint file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CheckpointError(f"{where} cannot be read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):   # replaced since the stat
            raise CheckpointError(f"{where} is not a regular file")
        try:
            return _read_zip(f, where, build_spec, key)
        except CheckpointError:
            raise
        except Exception as exc:
            # A backstop: every check above names what it found; whatever a
            # crafted file still trips in the zip or npy parsers is reported
            # the same way, never as another exception type.
            raise CheckpointError(f"{where} is not a readable rtrl_edge checkpoint "
                                  f"({type(exc).__name__}: {exc})") from exc


def _read_zip(f, where, build_spec, key) -> Dict[str, np.ndarray]:
    size = os.fstat(f.fileno()).st_size
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{where} is not a readable rtrl_edge checkpoint (truncated "
                              f"or not an .npz file): {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise CheckpointError(f"{where} has {len(infos)} members; a checkpoint has at "
                                  f"most {MAX_MEMBERS}")
        members: Dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else None
            if name is None or not _NAME.match(name) or name in members:
                raise CheckpointError(f"{where} is not an rtrl_edge checkpoint: member "
                                      f"{info.filename[:80]!r}")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise CheckpointError(f"{where}: member {info.filename!r} is compressed or "
                                      f"encrypted; checkpoints are stored plain, and this "
                                      f"one is refused without inflating it")
            if info.file_size != info.compress_size:
                raise CheckpointError(f"{where}: member {info.filename!r} declares "
                                      f"{info.file_size:,} bytes stored in "
                                      f"{info.compress_size:,}")
            declared += info.file_size
            members[name] = info
        if declared > size:
            raise CheckpointError(f"{where} declares {declared:,} bytes of arrays in a "
                                  f"{size:,}-byte file (truncated or crafted)")
        for name in ("format_version", "config", "checksum"):
            if name not in members:
                raise CheckpointError(f"{where} is not an rtrl_edge checkpoint: missing "
                                      f"{name!r}")

        def member(name):
            return _Member(zf, members[name], where)

        arrays: Dict[str, np.ndarray] = {}
        for name in ("format_version", "config", "checksum", "mac"):
            if name not in members:
                continue
            if members[name].file_size > SMALL_MEMBER_BYTES:
                raise CheckpointError(f"{where}: {name!r} is {members[name].file_size:,} "
                                      f"bytes; at most {SMALL_MEMBER_BYTES:,} expected")
            arrays[name] = member(name).read()
        version = arrays["format_version"]
        if version.shape != () or version.dtype.kind != "i":
            raise CheckpointError(f"{where}: format_version is not an integer")
        if int(version) != FORMAT_VERSION:
            raise CheckpointError(f"{where} has checkpoint format version {int(version)}; "
                                  f"this rtrl_edge reads version {FORMAT_VERSION}")
        for name in ("config", "checksum", "mac"):
            if name in arrays and (arrays[name].shape != () or arrays[name].dtype.kind != "U"):
                raise CheckpointError(f"{where}: {name!r} is not a string")
        def checked(name, dtype, shape, max_items=None) -> _Member:
            if name not in members:
                raise CheckpointError(f"{where} lacks {name!r} for this configuration")
            m = member(name)
            if shape is None:       # any 1-d length up to max_items
                if len(m.shape) == 1 and m.shape[0] <= max_items:
                    shape = m.shape
                else:
                    shape = (f"at most {max_items}",)
            if m.shape != tuple(shape) or m.dtype != np.dtype(dtype):
                raise CheckpointError(f"{where}: {name!r} has shape {m.shape} ({m.dtype}), "
                                      f"the configuration needs {tuple(shape)} "
                                      f"({np.dtype(dtype)})")
            return m

        def load(name, dtype, shape, max_items=None):
            arrays[name] = checked(name, dtype, shape, max_items).read()
            return arrays[name]

        try:
            spec = build_spec(config_of(arrays, where), size, load)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{where} holds an invalid configuration: {exc}") from None
        for name in members:
            if name in arrays or name in spec or name.startswith(EXTRA):
                continue
            raise CheckpointError(f"{where} has an unexpected member {name!r} for its "
                                  f"configuration")
        # every header against the layout first, then the data
        pending = [checked(name, dtype, shape) for name, (dtype, shape) in spec.items()
                   if name not in arrays]
        for m in pending:
            arrays[m.info.filename[:-4]] = m.read()
        for name in members:        # extra:* members, bounded by the file's size
            if name not in arrays:
                arrays[name] = member(name).read()
        stored = str(arrays.pop("checksum"))
        stored_mac = arrays.pop("mac", None)
        if not hmac.compare_digest(checksum(arrays).encode(), stored.encode()):
            raise CheckpointError(f"{where} failed its checksum: the file was modified or "
                                  f"corrupted after it was written")
        if key is not None:
            if stored_mac is None:
                raise CheckpointError(f"{where} is not signed: it was written without a "
                                      f"key, and a key was given")
            if not hmac.compare_digest(mac(arrays, key).encode(), str(stored_mac).encode()):
                raise CheckpointError(f"{where} failed authentication: it was not written "
                                      f"with this key (forged, or another key)")
        arrays.pop("format_version")
        return arrays


def config_of(arrays: Dict[str, np.ndarray], where: str) -> dict:
    """The JSON configuration member, as a dict."""
    try:
        config = json.loads(str(arrays["config"]))
    except ValueError as exc:
        raise CheckpointError(f"{where}: the configuration is not valid JSON ({exc})") \
            from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: the configuration is not a JSON object")
    return config
