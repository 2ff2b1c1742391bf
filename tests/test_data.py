"""Tests for rtrl_edge.data: the ExtMarker CSV loader, the shipped recordings,
and as_supervised."""

import re

import numpy as np
import pytest

from rtrl_edge import data
from rtrl_edge.data import (
    DEFAULT_RECORDING,
    Recording,
    as_supervised,
    list_recordings,
    load_extmarker_csv,
    load_recording,
)

HEADER = '"Frame";"Timestamp";"x";"y";"z"'


def write_csv(tmp_path, body, name="rec.csv", header=HEADER, newline="\r\n"):
    """Write an ExtMarker-style CSV (CRLF line ends, like the source files)."""
    lines = ([header] if header is not None else []) + body
    path = tmp_path / name
    path.write_bytes("".join(line + newline for line in lines).encode("ascii"))
    return path


# --------------------------------------------------------------------------
# load_extmarker_csv: parsing


def test_parses_decimal_commas_semicolons_and_header(tmp_path):
    path = write_csv(tmp_path, ["0;0;-541,6;-13,6;147,6", "7;117;-490,7;2;0,05"])
    rec = load_extmarker_csv(path)
    assert rec.name == "rec"
    assert rec.t_ms.dtype == np.float64 and rec.t_ms.shape == (2,)
    assert rec.xyz.dtype == np.float64 and rec.xyz.shape == (2, 3)
    np.testing.assert_array_equal(rec.t_ms, [0.0, 117.0])
    np.testing.assert_array_equal(rec.xyz, [[-541.6, -13.6, 147.6], [-490.7, 2.0, 0.05]])
    assert rec.dropped == ()


def test_accepts_lf_line_ends_decimal_points_exponents_and_bom(tmp_path):
    # Some source files write round timestamps as '1e+05'.
    path = tmp_path / "lf.csv"
    path.write_bytes(
        b"\xef\xbb\xbf" + (HEADER + "\n0;99900;1.5;-2,25;3\n6000;1e+05;1;2;3\n").encode()
    )
    rec = load_extmarker_csv(path)
    np.testing.assert_array_equal(rec.t_ms, [99900.0, 100000.0])
    np.testing.assert_array_equal(rec.xyz[0], [1.5, -2.25, 3.0])


def test_first_row_at_frame_zero_time_zero_is_kept(tmp_path):
    # '0;0;x;y;z' with a real position is data, not the all-zero terminator.
    path = write_csv(tmp_path, ["0;0;-1;0;0", "6;100;-1;0;0"])
    rec = load_extmarker_csv(path)
    assert len(rec) == 2 and rec.dropped == ()


def test_accepts_str_path(tmp_path):
    path = write_csv(tmp_path, ["0;0;1;2;3"])
    assert len(load_extmarker_csv(str(path))) == 1


# --------------------------------------------------------------------------
# load_extmarker_csv: dropped rows are dropped and reported


def test_all_zero_terminator_row_dropped_and_reported(tmp_path):
    path = write_csv(tmp_path, ["0;0;1;2;3", "6;100;4;5;6", "0;0;0;0;0"])
    rec = load_extmarker_csv(path)
    np.testing.assert_array_equal(rec.t_ms, [0.0, 100.0])
    np.testing.assert_array_equal(rec.xyz, [[1, 2, 3], [4, 5, 6]])
    assert rec.dropped == (
        "line 4: all-zero terminator row '0;0;0;0;0' dropped (recorder artefact)",
    )


def test_all_zero_row_inside_the_data_dropped_and_reported(tmp_path):
    path = write_csv(tmp_path, ["0;0;1;2;3", "0;0;0;0;0", "6;100;4;5;6"])
    rec = load_extmarker_csv(path)
    assert len(rec) == 2
    assert rec.dropped == (
        "line 3: all-zero row inside the data '0;0;0;0;0' dropped (recorder artefact)",
    )


def test_blank_lines_dropped_and_reported(tmp_path):
    path = write_csv(tmp_path, ["0;0;1;2;3", "", "6;100;4;5;6", "   ", ""])
    rec = load_extmarker_csv(path)
    assert len(rec) == 2
    assert rec.dropped == (
        "line 3: blank line dropped",
        "line 5: blank line dropped",
        "line 6: blank line dropped",
    )


def test_corrupt_timestamp_rows_dropped_and_reported(tmp_path):
    # As in the source files: the timestamp holds frame / 30 instead of ms.
    path = write_csv(
        tmp_path,
        [
            "18428;307133;-541;-15,8;127,3",
            "18434;307233;-541,2;-15,7;128,4",
            "18440;614,666666666667;-541,4;-15,8;129,65",
            "18447;307450;-541,9;-15,9;131,4",
        ],
    )
    rec = load_extmarker_csv(path)
    np.testing.assert_array_equal(rec.t_ms, [307133.0, 307233.0, 307450.0])
    assert len(rec.dropped) == 1
    note = rec.dropped[0]
    assert note.startswith("line 4: timestamp 614,666666666667 ms (frame 18440)")
    assert "307233" in note and "dropped" in note


def test_duplicate_timestamp_and_repeated_frame_dropped_and_reported(tmp_path):
    rows = ["0;0;1;2;3", "6;0;1;2;3", "6;100;1;2;3", "6;200;1;2;3", "12;300;1;2;3"]
    rec = load_extmarker_csv(write_csv(tmp_path, rows))
    np.testing.assert_array_equal(rec.t_ms, [0.0, 100.0, 300.0])
    assert rec.dropped == (
        "line 3: timestamp 0 ms (frame 6) is not after the previous row's 0 ms; "
        "row dropped (corrupt recorder timestamp)",
        "line 5: frame 6 is not after the previous row's frame 6; row dropped",
    )


# --------------------------------------------------------------------------
# load_extmarker_csv: malformed files raise, naming the file and the line


@pytest.mark.parametrize(
    "bad_row, expected",
    [
        ("6;100;1;2", r"expected 5 ';'-separated fields .* got 4"),
        ("6;100;1;2;3;4", r"expected 5 ';'-separated fields .* got 6"),
        ("6,100,1,2,3", r"expected 5 ';'-separated fields .* got 1"),
        ("6;100;abc;2;3", r"field 'x' is not a number: 'abc'"),
        ("6;100;1;;3", r"field 'y' is not a number: ''"),
        ("6;100;1;2;nan", r"field 'z' is not a number: 'nan'"),
        ("6;100;1;2;inf", r"field 'z' is not a number: 'inf'"),
        ("6;1.000,5;1;2;3", r"field 'Timestamp' is not a number: '1.000,5'"),
        ("6;100;1;2;1e999", r"field 'z' is not finite: '1e999'"),
    ],
)
def test_malformed_row_raises_with_file_and_line(tmp_path, bad_row, expected):
    path = write_csv(tmp_path, ["0;0;1;2;3", bad_row, "12;200;1;2;3"], name="bad.csv")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 3: ")) as info:
        load_extmarker_csv(path)
    assert re.search(expected, str(info.value)), str(info.value)


def test_wrong_header_raises(tmp_path):
    path = write_csv(tmp_path, ["0;0;1;2;3"], header="0;0;1;2;3", name="nohdr.csv")
    with pytest.raises(ValueError, match=r"nohdr\.csv, line 1: expected the header"):
        load_extmarker_csv(path)


def test_header_only_raises_no_data_rows(tmp_path):
    path = write_csv(tmp_path, [], name="empty_body.csv")
    with pytest.raises(ValueError, match=r"empty_body\.csv: no data rows after the header"):
        load_extmarker_csv(path)


def test_only_terminator_row_raises_no_data_rows_and_says_what_was_dropped(tmp_path):
    path = write_csv(tmp_path, ["0;0;0;0;0"], name="only_zero.csv")
    with pytest.raises(ValueError, match=r"only_zero\.csv: no data rows") as info:
        load_extmarker_csv(path)
    assert "line 2: all-zero terminator row" in str(info.value)


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.csv: empty file, expected the header"):
        load_extmarker_csv(path)


def test_non_utf8_file_raises_with_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes((HEADER + "\r\n0;0;1;2;3\r\n").encode() + b"6;100;\xb5;2;3\r\n")
    with pytest.raises(ValueError, match=r"latin1\.csv, line 3: not UTF-8 text"):
        load_extmarker_csv(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_extmarker_csv(tmp_path / "nope.csv")


# --------------------------------------------------------------------------
# Recording


def test_recording_arrays_are_read_only_copies():
    t = np.array([0.0, 100.0])
    xyz = np.zeros((2, 3))
    rec = Recording("r", t, xyz)
    t[0] = 5.0
    assert rec.t_ms[0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        rec.xyz[0, 0] = 1.0


def test_recording_validates_shapes():
    expected = "xyz must have shape (2, 3) to match t_ms, got (2, 2)"
    with pytest.raises(ValueError, match=re.escape(expected)):
        Recording("r", np.zeros(2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"t_ms must have shape \(T,\), got \(2, 1\)"):
        Recording("r", np.zeros((2, 1)), np.zeros((2, 3)))


def test_sample_rate_needs_two_samples():
    rec = Recording("one", np.zeros(1), np.zeros((1, 3)))
    expected = "recording 'one' has 1 sample(s); a sample rate needs at least 2"
    with pytest.raises(ValueError, match=re.escape(expected)):
        rec.sample_rate_hz


def test_sample_rate_uses_the_median_step():
    rec = Recording("r", np.array([0.0, 100, 200, 317, 417, 517]), np.zeros((6, 3)))
    assert rec.sample_rate_hz == pytest.approx(10.0)


# --------------------------------------------------------------------------
# The shipped recordings


def test_shipped_recordings_are_listed():
    names = list_recordings()
    assert names == sorted(names)
    assert DEFAULT_RECORDING in names
    assert all(not n.endswith(".csv") for n in names)
    assert len(names) >= 1


@pytest.mark.parametrize("name", list_recordings())
def test_every_shipped_recording_loads_clean(name):
    rec = load_recording(name)
    assert isinstance(rec, Recording)
    assert rec.name == name
    assert rec.t_ms.dtype == np.float64 and rec.xyz.dtype == np.float64
    assert rec.xyz.shape == (rec.t_ms.shape[0], 3)
    assert len(rec) > 1000
    assert np.isfinite(rec.t_ms).all() and np.isfinite(rec.xyz).all()
    assert (np.diff(rec.t_ms) > 0).all()
    assert 9.0 <= rec.sample_rate_hz <= 11.0
    # No step of more than a few dropped samples.
    assert np.diff(rec.t_ms).max() < 400.0
    # Every dropped line is reported with its line number.
    assert all(re.match(r"line \d+: ", note) for note in rec.dropped)
    # Breathing moves every marker, by millimetres, not metres or microns.
    assert 1.0 < np.ptp(rec.xyz, axis=0).max() < 100.0


def test_default_recording_is_the_shipped_session_with_its_known_artefacts():
    rec = load_recording()
    assert rec.name == DEFAULT_RECORDING == "201205181211-LAC-1-N-320-6"
    # 3200 data lines (lines 2..3201) less two dropped artefacts.
    assert len(rec) == 3198
    np.testing.assert_array_equal(rec.xyz[0], [-541.6, -13.6, 147.6])
    assert rec.t_ms[0] == 0.0 and rec.t_ms[-1] == 319983.0
    assert rec.dropped == (
        "line 3074: timestamp 614,666666666667 ms (frame 18440) is not after the "
        "previous row's 307233 ms; row dropped (corrupt recorder timestamp)",
        "line 3201: all-zero terminator row '0;0;0;0;0' dropped (recorder artefact)",
    )


def test_default_recording_is_the_marker_that_moves_most():
    def motion(rec):  # standard deviation along the main axis of motion, mm
        centred = rec.xyz - rec.xyz.mean(axis=0)
        return np.linalg.svd(centred, compute_uv=False)[0] / np.sqrt(len(rec))

    session = DEFAULT_RECORDING.split("-")[0]
    same_session = [n for n in list_recordings() if n.startswith(session)]
    assert len(same_session) == 3
    best = max(same_session, key=lambda n: motion(load_recording(n)))
    assert best == DEFAULT_RECORDING


def test_load_recording_accepts_csv_suffix():
    assert load_recording(DEFAULT_RECORDING + ".csv").name == DEFAULT_RECORDING


def test_unknown_recording_name_lists_the_available_ones():
    with pytest.raises(ValueError) as info:
        load_recording("no-such-recording")
    message = str(info.value)
    assert message.startswith("unknown recording 'no-such-recording'; available: ")
    for name in list_recordings():
        assert name in message


def test_recording_name_must_be_a_str(tmp_path):
    path = tmp_path / "x.csv"
    expected = f"recording name must be a str, got {type(path).__name__}; to load a file"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_recording(path)


def test_shipped_data_has_its_attribution():
    from importlib import resources

    readme = resources.files("rtrl_edge").joinpath("data").joinpath("README.md").read_text("utf-8")
    assert "CC BY 4.0" in readme
    assert "https://creativecommons.org/licenses/by/4.0/" in readme
    assert "Krilavicius" in readme
    for name in list_recordings():
        assert name + ".csv" in readme


def test_module_exports():
    assert set(data.__all__) == {
        "DEFAULT_RECORDING",
        "Recording",
        "as_supervised",
        "list_recordings",
        "load_extmarker_csv",
        "load_recording",
    }


# --------------------------------------------------------------------------
# as_supervised


def test_as_supervised_pairs_each_sample_with_the_next():
    series = np.arange(12, dtype=np.float64).reshape(4, 3)
    xs, ys = as_supervised(series)
    assert xs.dtype == ys.dtype == np.float32
    assert xs.shape == ys.shape == (3, 3)
    assert xs.flags.c_contiguous and ys.flags.c_contiguous
    np.testing.assert_array_equal(xs, series[:-1])
    np.testing.assert_array_equal(ys, series[1:])


def test_as_supervised_horizon_and_1d_series():
    series = np.arange(10.0)
    xs, ys = as_supervised(series, horizon=3)
    assert xs.shape == ys.shape == (7, 1)
    np.testing.assert_array_equal(xs[:, 0], series[:7])
    np.testing.assert_array_equal(ys[:, 0], series[3:])
    # Exactly horizon + 1 samples is enough for one pair.
    xs, ys = as_supervised([1.0, 2.0], horizon=np.int64(1))
    np.testing.assert_array_equal(xs, [[1.0]])
    np.testing.assert_array_equal(ys, [[2.0]])


def test_as_supervised_returns_independent_arrays():
    series = np.arange(5, dtype=np.float32)
    xs, ys = as_supervised(series)
    assert not np.shares_memory(xs, series) and not np.shares_memory(ys, series)
    assert not np.shares_memory(xs, ys)
    xs[:] = -1
    np.testing.assert_array_equal(series, np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(ys[:, 0], [1, 2, 3, 4])


def test_as_supervised_on_a_shipped_recording():
    rec = load_recording()
    xs, ys = as_supervised(rec.xyz)
    assert xs.shape == ys.shape == (len(rec) - 1, 3)
    np.testing.assert_allclose(ys[:-1], xs[1:])
    np.testing.assert_allclose(xs, rec.xyz[:-1], rtol=1e-6)


@pytest.mark.parametrize(
    "horizon, expected",
    [
        (0, "horizon must be >= 1, got 0"),
        (-2, "horizon must be >= 1, got -2"),
        (1.0, "horizon must be an int >= 1, got 1.0"),
        (True, "horizon must be an int >= 1, got True"),
        ("1", "horizon must be an int >= 1, got '1'"),
    ],
)
def test_as_supervised_rejects_bad_horizon(horizon, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        as_supervised(np.arange(10.0), horizon=horizon)


BAD_SHAPE = "series must have shape (T,) or (T, d) with d >= 1, got "
NOT_FINITE = "series must be finite and within the float32 range; "


@pytest.mark.parametrize(
    "series, horizon, expected",
    [
        (np.arange(3.0), 3, "series has 3 sample(s); horizon=3 needs at least 4"),
        (np.zeros((1, 3)), 1, "series has 1 sample(s); horizon=1 needs at least 2"),
        (np.zeros(0), 1, "series has 0 sample(s); horizon=1 needs at least 2"),
        (np.zeros((4, 0)), 1, BAD_SHAPE + "(4, 0)"),
        (np.zeros((4, 3, 1)), 1, BAD_SHAPE + "(4, 3, 1)"),
        (np.float64(3.0), 1, BAD_SHAPE + "()"),
        (np.array(["a", "b", "c"]), 1, "series must hold real numbers, got dtype <U1"),
        (np.ones(3, dtype=complex), 1, "series must hold real numbers, got dtype complex128"),
        (np.ones(3, dtype=bool), 1, "series must hold real numbers, got dtype bool"),
        (np.array([0.0, np.nan, 1.0]), 1, NOT_FINITE + "sample 1 is [nan]"),
        (np.array([[0.0, 0.0], [0.0, np.inf]]), 1, NOT_FINITE + "sample 1 is [0.0, inf]"),
        (np.array([0.0, 1e39]), 1, NOT_FINITE + "sample 1 is [1e+39]"),
    ],
)
def test_as_supervised_rejects_bad_series(series, horizon, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        as_supervised(series, horizon=horizon)


def test_as_supervised_leaves_its_input_unchanged():
    series = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    before = series.copy()
    as_supervised(series, horizon=2)
    np.testing.assert_array_equal(series, before)
