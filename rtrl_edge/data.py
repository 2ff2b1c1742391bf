"""Real respiratory-motion recordings shipped with ``rtrl_edge``, and their loader.

The package ships three recordings from the ExtMarker data set (Krilavicius et
al.; CC BY 4.0 -- the full attribution is in ``rtrl_edge/data/README.md``, which
travels with the files): the 3-D positions of three external markers on the
chest and abdomen of one person breathing normally for 320 s, sampled at about
10 Hz. They are real, slightly messy sensor streams, which is what an online
learner has to cope with.

Layers, top to bottom:

- ``list_recordings()`` / ``load_recording(name)``: the shipped files, found with
  ``importlib.resources`` so that they load from an installed wheel.
- ``load_extmarker_csv(path)``: the parser for one ExtMarker CSV file, shipped
  or not. It keeps every good row, drops rows that are recorder artefacts and
  says which and why in ``Recording.dropped``, and refuses malformed files with
  a ``ValueError`` naming the file and the line.
- ``as_supervised(series, horizon)``: turns a series into (input, target) pairs
  for ``OnlineRNN.step`` / ``OnlineRNN.gradient``.

The ExtMarker CSV format, as found in every file of the data set::

    "Frame";"Timestamp";"x";"y";"z"        header, always line 1
    0;0;-541,6;-13,6;147,6                 frame, time (ms), x, y, z (mm)
    7;117;-541,5;-13,6;146,5               decimal commas, CRLF line ends
    ...
    6000;1e+05;-488,5;0,5;65,7             some files: exponent notation
    0;0;0;0;0                              some files: an all-zero last row

Oddities of the source files that the loader handles (see the data README):

- an all-zero row ``0;0;0;0;0`` at the end of most files: dropped, reported;
- a few rows whose timestamp is corrupt (it equals frame / 30 instead of the
  time in ms, e.g. ``18440;614,666666666667;...`` between rows at 307233 ms and
  307450 ms): a row whose frame or timestamp is not strictly after the previous
  kept row's is dropped and reported, so ``t_ms`` is always strictly increasing;
- blank lines (none in the source files, but a hand-edited copy may have them):
  dropped, reported.

Line numbers in messages are 1-based file lines, the header being line 1, as
an editor shows them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = [
    "DEFAULT_RECORDING",
    "Recording",
    "as_supervised",
    "list_recordings",
    "load_extmarker_csv",
    "load_recording",
]

#: Name of the recording ``load_recording()`` returns by default: marker LAC of
#: the 320 s normal-breathing session of 2012-05-18 12:11. Of the three shipped
#: markers it moves the most with breathing (standard deviation along its main
#: axis of motion 7.2 mm, against 5.9 mm for UAC and 2.6 mm for UCC; peak to
#: peak 30 mm along z), so it is the clearest signal to learn.
DEFAULT_RECORDING = "201205181211-LAC-1-N-320-6"

_PACKAGE = "rtrl_edge"
_DATA_DIR = "data"
_SUFFIX = ".csv"
_COLUMNS = ("Frame", "Timestamp", "x", "y", "z")
_HEADER_TEXT = ";".join(f'"{c}"' for c in _COLUMNS)
# A decimal number, with a comma (as in the source files) or a point as the
# decimal separator and an optional exponent (some source files write the
# round timestamps 100000 and 300000 ms as '1e+05' and '3e+05'). Deliberately
# strict otherwise: no thousands separators, no 'nan'/'inf', no underscores.
_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)?(?:[eE][+-]?\d+)?\Z")


@dataclass(frozen=True, eq=False)
class Recording:
    """One marker's recording: timestamps and 3-D positions, artefacts removed.

    Attributes
    ----------
    name : str
        The recording's name: the CSV file name without ``.csv``.
    t_ms : numpy.ndarray, float64, shape (T,)
        Time of each sample in milliseconds since the recording started, as
        written by the recorder; strictly increasing. The spacing is about
        100 ms (10 Hz) but not uniform: the recorder takes every 6th or 7th
        frame of a 60 Hz clock (100 or 117 ms), and a dropped row leaves a gap.
    xyz : numpy.ndarray, float64, shape (T, 3)
        Marker position (x, y, z) at each sample, in millimetres.
    dropped : tuple of str
        One human-readable note for every line of the file that was dropped,
        in file order, e.g. ``"line 3201: all-zero terminator row '0;0;0;0;0'
        dropped (recorder artefact)"``. Empty if no line was dropped.

    Both arrays are read-only: copy them (``rec.xyz.copy()``) to modify. The
    object compares by identity (``eq=False``): numpy arrays have no single
    truth value, so a field-wise ``==`` would be meaningless.
    """

    name: str
    t_ms: np.ndarray
    xyz: np.ndarray
    dropped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        t_ms = np.array(self.t_ms, dtype=np.float64)  # a private copy
        xyz = np.array(self.xyz, dtype=np.float64)
        if t_ms.ndim != 1:
            raise ValueError(f"t_ms must have shape (T,), got {t_ms.shape}")
        if xyz.shape != (t_ms.shape[0], 3):
            raise ValueError(
                f"xyz must have shape ({t_ms.shape[0]}, 3) to match t_ms, got {xyz.shape}"
            )
        if not isinstance(self.dropped, tuple) or not all(
            isinstance(note, str) for note in self.dropped
        ):
            raise ValueError("dropped must be a tuple of str")
        t_ms.setflags(write=False)
        xyz.setflags(write=False)
        object.__setattr__(self, "t_ms", t_ms)
        object.__setattr__(self, "xyz", xyz)

    def __len__(self) -> int:
        """Number of samples T."""
        return int(self.t_ms.shape[0])

    @property
    def sample_rate_hz(self) -> float:
        """Sampling rate in Hz, 1000 / median(diff(t_ms)).

        The median ignores the occasional longer step and the gaps that dropped
        rows leave. About 10.0 for every ExtMarker recording. Raises
        ``ValueError`` for a recording of fewer than 2 samples.
        """
        if len(self) < 2:
            raise ValueError(
                f"recording {self.name!r} has {len(self)} sample(s); "
                "a sample rate needs at least 2"
            )
        return 1000.0 / float(np.median(np.diff(self.t_ms)))

    def __repr__(self) -> str:
        return (
            f"Recording(name={self.name!r}, samples={len(self)}, "
            f"dropped={len(self.dropped)})"
        )


def load_extmarker_csv(path: str | os.PathLike[str]) -> Recording:
    """Read one ExtMarker CSV file into a :class:`Recording`.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file: header ``"Frame";"Timestamp";"x";"y";"z"``, then one row
        per sample, fields separated by ``;``, decimal commas (a decimal point
        is accepted too), optional exponents (``1e+05``), any line ending (the
        source files use CRLF), UTF-8 or ASCII, with or without a byte-order
        mark.

    Returns
    -------
    Recording
        ``name`` is the file name without its extension; ``t_ms`` float64
        (T,) in ms and ``xyz`` float64 (T, 3) in mm hold the kept rows in file
        order; ``dropped`` has one note per dropped line.

    Dropped, each with a note in ``Recording.dropped``:

    - blank (empty or whitespace-only) lines;
    - all-zero rows ``0;0;0;0;0`` (the recorder's end-of-file artefact);
    - rows whose frame or timestamp is not strictly greater than that of the
      previous kept row (the source files have a few rows whose timestamp is
      frame / 30 instead of ms).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file and the 1-based line number, for: a file that is not
        UTF-8 text; a missing or wrong header; a row without exactly 5 fields;
        a field that is not a decimal number or is not finite; and (file
        name only) a file that has no data row left once the dropped lines are
        removed.
    """
    source = os.fspath(path)
    with open(source, "rb") as fh:
        raw = fh.read()
    name = os.path.splitext(os.path.basename(source))[0]
    return _parse_extmarker(raw, source=source, name=name)


def _parse_extmarker(raw: bytes, *, source: str, name: str) -> Recording:
    """Parse the bytes of an ExtMarker CSV file; see :func:`load_extmarker_csv`.

    ``source`` names the file in error messages, ``name`` becomes
    ``Recording.name``.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # The line of the offending byte: count the line ends before it.
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{source}, line {line}: not UTF-8 text ({exc.reason})") from None
    # Universal newlines: CRLF, CR and LF all end a line. A final line end
    # does not start a (blank) line of its own.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()

    dropped: list[tuple[int, str]] = []  # (line number, note)
    zero_rows: list[int] = []  # line numbers of all-zero rows, noted at the end
    times: list[float] = []
    positions: list[tuple[float, float, float]] = []
    last_frame = last_t = -math.inf
    last_data_line = 0
    header_seen = False

    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            dropped.append((lineno, f"line {lineno}: blank line dropped"))
            continue
        if not header_seen:
            names = [f.strip().strip('"').strip().lower() for f in line.split(";")]
            if names != [c.lower() for c in _COLUMNS]:
                raise ValueError(
                    f"{source}, line {lineno}: expected the header {_HEADER_TEXT}, "
                    f"got {line!r}"
                )
            header_seen = True
            continue

        fields = [f.strip() for f in line.split(";")]
        if len(fields) != len(_COLUMNS):
            raise ValueError(
                f"{source}, line {lineno}: expected {len(_COLUMNS)} ';'-separated "
                f"fields ({';'.join(_COLUMNS)}), got {len(fields)}: {line!r}"
            )
        values = []
        for column, field in zip(_COLUMNS, fields):
            if not _NUMBER.match(field):
                raise ValueError(
                    f"{source}, line {lineno}: field {column!r} is not a number: "
                    f"{field!r} in {line!r}"
                )
            value = float(field.replace(",", "."))
            if not math.isfinite(value):
                raise ValueError(
                    f"{source}, line {lineno}: field {column!r} is not finite: {field!r}"
                )
            values.append(value)
        frame, t, x, y, z = values

        if not any(values):
            zero_rows.append(lineno)
            continue
        if frame <= last_frame:
            dropped.append((
                lineno,
                f"line {lineno}: frame {fields[0]} is not after the previous "
                f"row's frame {last_frame:g}; row dropped",
            ))
            continue
        if t <= last_t:
            dropped.append((
                lineno,
                f"line {lineno}: timestamp {fields[1]} ms (frame {fields[0]}) is "
                f"not after the previous row's {last_t:g} ms; row dropped "
                "(corrupt recorder timestamp)",
            ))
            continue
        last_frame, last_t = frame, t
        last_data_line = lineno
        times.append(t)
        positions.append((x, y, z))

    if not header_seen:
        raise ValueError(f"{source}: empty file, expected the header {_HEADER_TEXT}")

    for lineno in zero_rows:
        kind = "terminator row" if lineno > last_data_line else "row inside the data"
        dropped.append((
            lineno,
            f"line {lineno}: all-zero {kind} '0;0;0;0;0' dropped (recorder artefact)",
        ))
    dropped.sort(key=lambda item: item[0])
    notes = tuple(note for _, note in dropped)

    if not times:
        detail = f"; dropped: {'; '.join(notes)}" if notes else ""
        raise ValueError(f"{source}: no data rows after the header{detail}")

    return Recording(
        name=name,
        t_ms=np.array(times, dtype=np.float64),
        xyz=np.array(positions, dtype=np.float64).reshape(len(times), 3),
        dropped=notes,
    )


def _data_dir():
    """The shipped data folder, as an ``importlib.resources`` Traversable."""
    return resources.files(_PACKAGE).joinpath(_DATA_DIR)


def list_recordings() -> list[str]:
    """Names of the shipped recordings, sorted, without the ``.csv`` suffix.

    Each name can be passed to :func:`load_recording`.
    """
    return sorted(
        entry.name[: -len(_SUFFIX)]
        for entry in _data_dir().iterdir()
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    )


def load_recording(name: str | None = None) -> Recording:
    """Load a shipped recording by name.

    Parameters
    ----------
    name : str or None
        One of :func:`list_recordings` (a trailing ``.csv`` is accepted).
        ``None`` (the default) loads :data:`DEFAULT_RECORDING`, the marker of
        the shipped session that moves most with breathing.

    Returns
    -------
    Recording
        As :func:`load_extmarker_csv` returns it: ``t_ms`` float64 (T,) in ms,
        ``xyz`` float64 (T, 3) in mm, notes on dropped rows in ``dropped``.

    Raises
    ------
    ValueError
        If ``name`` is not the name of a shipped recording; the message lists
        the available names. To load a CSV file of your own, use
        :func:`load_extmarker_csv`.
    """
    if name is None:
        name = DEFAULT_RECORDING
    if not isinstance(name, str):
        raise ValueError(
            f"recording name must be a str, got {type(name).__name__}; "
            "to load a file by path use load_extmarker_csv(path)"
        )
    if name.endswith(_SUFFIX):
        name = name[: -len(_SUFFIX)]
    available = list_recordings()
    if name not in available:
        raise ValueError(
            f"unknown recording {name!r}; available: {', '.join(available)} "
            "(to load a file by path use load_extmarker_csv(path))"
        )
    # Read the bytes through importlib.resources rather than a file path, so
    # that this works from any installed form of the package (even a zip).
    resource = _data_dir().joinpath(name + _SUFFIX)
    return _parse_extmarker(resource.read_bytes(), source=str(resource), name=name)


def as_supervised(series, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pair each sample with the one ``horizon`` steps later: (inputs, targets).

    ``xs[t] = series[t]`` and ``ys[t] = series[t + horizon]`` for
    ``t = 0 .. T - horizon - 1``: the pairs for training a forecaster one
    sample at a time (``net.step(xs[t], ys[t])``) or for
    ``net.gradient(xs, ys)``. For a forecast horizon h with delayed targets
    (DESIGN section 3.8) this is the lagged stream: input x_{t-h}, target y_t.

    Parameters
    ----------
    series : array_like of real numbers, shape (T,) or (T, d)
        The samples in time order, e.g. ``Recording.xyz`` (T, 3) or one of its
        columns (T,). A 1-D series is treated as one channel, d = 1. Must be
        finite and representable in float32.
    horizon : int, default 1
        How many samples ahead the target is; >= 1.

    Returns
    -------
    xs, ys : numpy.ndarray, float32, C-contiguous, shape (T - horizon, d) each
        Fresh arrays that share memory neither with ``series`` nor with each
        other. Always 2-D, so ``xs[t]`` has shape (d,), which is what
        ``OnlineRNN(n_in=d, ..., n_out=d).step`` expects.

    Raises
    ------
    ValueError
        If ``horizon`` is not an integer >= 1; if ``series`` is not a real
        numeric array of shape (T,) or (T, d) with d >= 1; if it has fewer than
        ``horizon + 1`` samples; or if it holds NaN, inf or values beyond the
        float32 range.
    """
    if isinstance(horizon, (bool, np.bool_)) or not isinstance(horizon, (int, np.integer)):
        raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
    horizon = int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")

    arr = np.asarray(series)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"series must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(
            f"series must have shape (T,) or (T, d) with d >= 1, got {np.shape(series)}"
        )
    n = arr.shape[0]
    if n <= horizon:
        raise ValueError(
            f"series has {n} sample(s); horizon={horizon} needs at least "
            f"{horizon + 1}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        arr32 = arr.astype(np.float32)
    if not np.isfinite(arr32).all():
        bad = int(np.argmin(np.isfinite(arr32).all(axis=1)))
        raise ValueError(
            f"series must be finite and within the float32 range; sample {bad} is "
            f"{arr[bad].tolist()}"
        )
    xs = arr32[:-horizon].copy()
    ys = arr32[horizon:].copy()
    return xs, ys
