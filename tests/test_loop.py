"""OnlineLoop: source -> forecast and learn -> controller -> sink, with a
latency histogram, deadlines, the late-sample policy, rejection of bad
samples, the divergence guard and atomic checkpoints; and the loop on a
serial link to a fake device on a real pty that vanishes and comes back.

Time is never asserted from the wall clock: latencies are checked with a fake
clock, and waits are deadlines on conditions.  Every thread is joined and
every fd closed (the `board` fixture's teardown).
"""
import errno
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections import deque

import numpy as np
import pytest

import rtrl_edge
import rtrl_edge.loop as loop_mod
from rtrl_edge import CheckpointError, OnlineRNN
from rtrl_edge.bridge import FrameDecoder, SerialLink, encode_frame
from rtrl_edge.bridge import messages as m
from rtrl_edge.cli.run import _DelayLine, _on_measurement
from rtrl_edge.forecast import Forecaster
from rtrl_edge.adapters import ReplaySource, SerialSource, SyntheticSource
from rtrl_edge.loop import LatencyHistogram, OnlineLoop, PIController
from support import Pty, read_pty, wait_for

BIN = 10 ** (1 / LatencyHistogram.PER_DECADE)        # one bin: a factor of 1.049
# subprocesses run outside the source tree, on the rtrl_edge this process imported
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(rtrl_edge.__file__)))


# -- helpers -------------------------------------------------------------------


class ListSource:
    """A Python source: returns the given batches, one per read; `gaps`
    (optional) is the `gap` flag of each read, as a SerialSource sets it."""

    def __init__(self, batches, channels=3, gaps=None):
        self.batches = deque(batches)
        self.gaps = deque(gaps) if gaps is not None else None
        self.channels = channels
        self.gap = False
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.gaps is not None:
            self.gap = self.gaps.popleft() if self.gaps else False
        return list(self.batches.popleft()) if self.batches else []

    @property
    def exhausted(self):
        return not self.batches


def signal_rows(n, seed=0):
    return SyntheticSource(n=n, seed=seed).values.copy()


def cli_like_net(hidden=6, seed=0, **kw):
    """The model `rtrl-edge run` builds for a 3-channel source."""
    cfg = dict(learner="rtrl", optimizer="sgd", lr=1e-2, clip=1.0, normalize=True, seed=seed)
    cfg.update(kw)
    return OnlineRNN(3, hidden, 1, **cfg)


def make_loop(source, horizon=3, net=None, **kw):
    fc = Forecaster(net if net is not None else cli_like_net(), horizon, delta=True)
    return OnlineLoop(fc, source, inputs=[0, 1, 2], targets=[0], **kw)


def same_model(a, b):
    sa, sb = a.snapshot(), b.snapshot()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


class FakeTime:
    """Stands in for the `time` module inside rtrl_edge.loop: process() reads
    perf_counter_ns at its start and its end; the end reads the next of
    `durations` later than the start."""

    def __init__(self, durations):
        self.durations = iter(durations)
        self.now = 10 ** 12
        self.at_start = True
        self.monotonic = time.monotonic
        self.sleep = time.sleep

    def perf_counter_ns(self):
        if not self.at_start:
            self.now += next(self.durations)
        self.at_start = not self.at_start
        return self.now


# -- the latency histogram -----------------------------------------------------------

def assert_within_a_bin(got_ns, values, q):
    """`got_ns` is within one bin (5 %) above numpy's q-th percentile (the
    upper edge of the bin holding it); the order statistics either side of
    the percentile bound the rounding of q * n."""
    lo = np.percentile(values, 100 * q, method="lower")
    hi = np.percentile(values, 100 * q, method="higher")
    assert lo * (1 - 1e-6) <= got_ns <= hi * BIN * (1 + 1e-6), (q, got_ns, lo, hi)


def test_histogram_quantiles_match_numpy_percentiles_within_one_bin():
    rng = np.random.default_rng(1)
    values = np.round(np.exp(rng.normal(np.log(20_000), 1.2, size=20_001))).astype(np.int64)
    values = np.concatenate([values, [50, 3, 7 * 10 ** 9]])     # below 100 ns, and 7 s
    hist = LatencyHistogram()
    counts = hist.counts
    for v in values:
        hist.record(int(v))
    assert hist.counts is counts and counts.sum() == len(values) == hist.total
    for q in (0.01, 0.25, 0.5, 0.9, 0.99, 0.999):
        assert_within_a_bin(hist.quantile(q), values, q)
    s = hist.summary_us()
    assert s["max_us"] == values.max() / 1e3 and s["samples"] == len(values)
    assert_within_a_bin(s["median_us"] * 1e3, values, 0.5)
    assert_within_a_bin(s["p99_us"] * 1e3, values, 0.99)
    assert np.isnan(LatencyHistogram().quantile(0.5))


def test_reported_quantiles_never_exceed_the_reported_max():
    """The summary prints 'median, p99, max': a p99 above the max is a
    contradiction (the quantile is a bin's upper edge, which can lie above
    every recorded value)."""
    hist = LatencyHistogram()
    for v in (50_000, 50_100, 50_200, 50_300, 50_407):
        hist.record(v)
    s = hist.summary_us()
    assert s["median_us"] <= s["max_us"] and s["p99_us"] <= s["max_us"], s


def test_loop_latency_and_deadline_misses_with_a_fake_clock(monkeypatch):
    rng = np.random.default_rng(2)
    n = 3000
    durations = np.round(np.exp(rng.normal(np.log(40_000), 0.8, size=n))).astype(np.int64)
    monkeypatch.setattr(loop_mod, "time", FakeTime(durations))
    loop = make_loop(ReplaySource(signal_rows(n)), deadline_ms=0.05)
    s = loop.run()
    assert s["samples"] == n and s["latency"]["samples"] == n
    assert loop.hist.counts.sum() == n
    assert_within_a_bin(s["latency"]["median_us"] * 1e3, durations, 0.5)
    assert_within_a_bin(s["latency"]["p99_us"] * 1e3, durations, 0.99)
    assert s["latency"]["max_us"] == durations.max() / 1e3
    # a miss is a sample slower than the deadline (50 us), exactly
    assert s["deadline_misses"] == int(np.sum(durations > 50_000)) > 0


def test_deadline_misses_on_the_real_clock():
    rows = signal_rows(300)
    tiny = make_loop(ReplaySource(rows), deadline_ms=1e-6).run()      # 1 ns
    assert tiny["deadline_misses"] == tiny["samples"] == 300
    huge = make_loop(ReplaySource(rows), deadline_ms=1e6).run()       # 1000 s
    assert huge["deadline_misses"] == 0 and huge["samples"] == 300
    none = make_loop(ReplaySource(rows)).run()
    assert none["deadline_misses"] == 0


# -- late samples: the backlog policy --------------------------------------------------

def test_a_backlog_is_cut_to_its_newest_samples_and_only_the_newest_acted_on():
    rows = signal_rows(40)
    calls = []
    sent = []

    def controller(y, t):
        calls.append(y)
        return 0.1 * len(calls)

    source = ListSource([rows[0:3], rows[3:28], rows[28:29], [], rows[29:31]])
    loop = make_loop(source, controller=controller, sink=sent.append, max_backlog=10)
    s = loop.run()
    assert s["dropped_late"] == 15                       # 25 arrived at once, 10 kept
    assert s["gaps"] == 1 and loop.fc.stats["resets"] == 1
    assert s["samples"] == 3 + 10 + 1 + 2
    assert len(calls) == 4 == s["commands"]              # once per non-empty read
    assert sent == pytest.approx([0.1, 0.2, 0.3, 0.4])   # the sink got each command

    # the same by hand: the first read, then a gap, then only rows 18..27
    fc = Forecaster(cli_like_net(), 3, delta=True)
    acted = []
    for r in rows[0:3]:
        f = fc.update(r, r[:1])
    acted.append(f[0])
    fc.reset()
    for batch in (rows[18:28], rows[28:29], rows[29:31]):
        for r in batch:
            f = fc.update(r, r[:1])
        acted.append(f[0])
    assert calls == acted                               # the controller saw the newest forecast
    assert same_model(loop.net, fc.net)


def test_backlog_up_to_the_limit_is_all_learnt_without_a_gap():
    rows = signal_rows(30)
    loop = make_loop(ListSource([rows[:10], rows[10:20]]), max_backlog=10)
    s = loop.run()
    assert s["dropped_late"] == 0 and s["gaps"] == 0 and s["samples"] == 20


def test_a_source_gap_restarts_the_window():
    rows = signal_rows(30)
    loop = make_loop(ListSource([rows[:8], rows[8:16], rows[16:24]],
                                gaps=[False, True, False]))
    s = loop.run()
    assert s["gaps"] == 1 and loop.fc.stats["resets"] == 1 and s["samples"] == 24
    # 8 - 3 pairs before the gap, 8 - 3 + 8 after it
    assert s["learned"] == 5 + 13


# -- bad samples -------------------------------------------------------------------

def test_bad_samples_are_rejected_counted_and_the_loop_goes_on():
    rows = signal_rows(60)
    bad = [np.array([0.1, 0.2]),                       # too few channels
           np.array([np.nan, 0.0, 1.0]),               # target not finite
           np.array([0.0, np.inf, 1.0]),               # an input not finite
           np.zeros((1, 3)),                           # not a row
           np.array([0.0, 0.0, -np.inf])]
    batches = [[rows[i]] for i in range(30)] + [[b] for b in bad] + \
        [[rows[i]] for i in range(30, 60)]
    loop = make_loop(ListSource(batches))
    s = loop.run()
    assert s["rejected"] == len(bad)
    assert s["samples"] == 60 and s["stop_reason"] == "source exhausted"
    # a rejected sample changes nothing: the same as the stream without it
    ref = make_loop(ListSource([[r] for r in rows]))
    ref.run()
    assert same_model(loop.net, ref.net)


@pytest.mark.parametrize("row", [
    np.array([1e300, 0.0, 0.0]),          # finite as float64, beyond float32
    np.array([0.0, -1e39, 0.0]),
], ids=["target-1e300", "input-1e39"])
def test_a_value_beyond_float32_is_rejected_not_fatal(row):
    rows = signal_rows(20)
    batches = [[r] for r in rows[:10]] + [[row]] + [[r] for r in rows[10:]]
    loop = make_loop(ListSource(batches))
    s = loop.run()                        # must not raise
    assert s["rejected"] == 1 and s["samples"] == 20


def test_a_sample_wider_than_the_source_is_rejected():
    rows = signal_rows(20)
    wide = np.array([0.5, 0.1, 0.2, 99.0])              # 4 values from a 3-channel source
    loop = make_loop(ListSource([[r] for r in rows[:10]] + [[wide]] +
                                [[r] for r in rows[10:]], channels=3))
    s = loop.run()
    assert s["rejected"] == 1 and s["samples"] == 20


# -- divergence ----------------------------------------------------------------------

@pytest.mark.parametrize("lr", [1e30, 3e38])
def test_a_diverging_model_is_recovered_and_forecasts_stay_finite(lr):
    seen = []
    net = cli_like_net(hidden=8, lr=lr)
    loop = make_loop(ReplaySource(signal_rows(2000)), horizon=5, net=net,
                     controller=lambda y, t: seen.append(y) or 0.0)
    s = loop.run()                         # must not raise
    # a sample the model cannot turn into a finite state even after the
    # guard's recovery is rejected and counted; every other one is processed
    assert s["samples"] + s["rejected"] == 2000
    assert s["samples"] > 1000
    assert s["divergence_recoveries"] > 0
    # the controller only ever sees finite forecasts
    assert len(seen) == s["samples"] - s["nonfinite_forecasts"] and np.isfinite(seen).all()
    assert all(np.isfinite(v).all() for v in net.params.values())


# -- checkpoints ---------------------------------------------------------------------

class SlowSource(ReplaySource):
    """One row per read, after a short nap (so that wall-clock checkpoints
    fall between samples)."""

    def read(self):
        time.sleep(0.001)
        return super().read()


def test_periodic_checkpoints_are_atomic_and_resume_exactly(tmp_path):
    path = str(tmp_path / "ck.npz")
    rows = signal_rows(400)
    loop = make_loop(SlowSource(rows), checkpoint=path, checkpoint_every=0.005)
    seen, errors = [], []
    done = threading.Event()

    def reader():                         # a concurrent reader never sees a torn file
        while not done.is_set():
            if not os.path.exists(path):
                continue
            try:
                net, extra = OnlineLoop.resume(path)
            except Exception as exc:      # noqa: BLE001 -- reported below
                errors.append(repr(exc))
                return
            counters = dict(zip(loop_mod._COUNTERS, extra["loop_counters"]))
            seen.append(counters["samples"])
            # model and loop state were taken at the same sample
            if net.stats["updates"] != counters["learned"]:
                errors.append(("inconsistent", net.stats["updates"], counters))

    t = threading.Thread(target=reader)
    t.start()
    try:
        s = loop.run()
    finally:
        done.set()
        t.join(10)
    assert not t.is_alive()
    assert errors == []
    assert s["checkpoints"] >= 3 and s["checkpoint_failures"] == 0
    assert len(set(seen)) >= 2, seen                       # it saw several checkpoints
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]      # no temporary file left
    # the last checkpoint is the final state: resume continues exactly
    net, extra = OnlineLoop.resume(path)
    assert same_model(net, loop.net)
    resumed = OnlineLoop(Forecaster(net, 3, delta=True), ListSource([]), inputs=[0, 1, 2],
                         targets=[0])
    resumed.restore(extra)
    # (the checkpoint holds the counters as they were just before it was written)
    assert {k: v for k, v in resumed.counters.items() if k != "checkpoints"} == \
        {k: v for k, v in loop.counters.items() if k != "checkpoints"}
    assert np.array_equal(resumed.hist.counts, loop.hist.counts)
    assert resumed.fc.stats == loop.fc.stats
    more = signal_rows(450)[400:]
    for r in more:
        assert np.array_equal(resumed.process(r), loop.process(r))
    assert same_model(resumed.net, loop.net)


def test_resume_rejects_a_model_without_loop_state(tmp_path):
    path = tmp_path / "plain.npz"
    cli_like_net().save(path)
    with pytest.raises(CheckpointError, match="no loop state"):
        OnlineLoop.resume(str(path))
    with pytest.raises(FileNotFoundError):
        OnlineLoop.resume(str(tmp_path / "missing.npz"))


def _good_checkpoint(path, n=50):
    loop = make_loop(ReplaySource(signal_rows(n)), checkpoint=str(path))
    loop.run()
    assert loop.counters["checkpoints"] == 1
    return loop


def _check_failed_but_intact(loop, path, before, message):
    s = loop.summary()
    assert loop.counters["checkpoint_failures"] >= 1
    assert message in s["last_checkpoint_error"] and str(path) in s["last_checkpoint_error"]
    assert "previous one is intact" in s["last_checkpoint_error"]
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]   # no temp file
    net, extra = OnlineLoop.resume(str(path))                             # still loadable
    assert int(extra["loop_counters"][0]) == 50


def test_checkpoint_into_a_missing_directory_is_counted_and_the_loop_goes_on(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "ck.npz"
    loop = make_loop(SlowSource(signal_rows(60)), checkpoint=str(path), checkpoint_every=0.01)
    s = loop.run()
    assert s["samples"] == 60 and s["stop_reason"] == "source exhausted"
    assert s["checkpoints"] == 0 and s["checkpoint_failures"] >= 2    # periodic and final
    assert "No such file or directory" in s["last_checkpoint_error"]
    assert str(path) in s["last_checkpoint_error"]
    assert not path.parent.exists()


def test_checkpoint_into_a_read_only_directory_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    loop = _good_checkpoint(path)
    before = path.read_bytes()
    loop.source = ReplaySource(signal_rows(80)[50:])
    if os.geteuid() == 0:
        # root writes through a chmod: fail the temporary file's creation as a
        # read-only mount would
        import tempfile

        def mkstemp(*a, **kw):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        message = "Read-only file system"
    else:
        os.chmod(tmp_path, 0o555)
        message = "Permission denied"
    try:
        s = loop.run()
    finally:
        os.chmod(tmp_path, 0o755)
        monkeypatch.undo()
    assert s["samples"] == 80
    _check_failed_but_intact(loop, path, before, message)
    # writable again: the next checkpoint succeeds and clears the message
    assert loop.save_checkpoint()
    assert "last_checkpoint_error" not in loop.summary()
    assert int(OnlineLoop.resume(str(path))[1]["loop_counters"][0]) == 80


def test_disk_full_mid_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    loop = _good_checkpoint(path)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_disk_full(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")      # some bytes reach the disk, then ENOSPC
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(np, "savez", savez_disk_full)
    loop.source = ReplaySource(signal_rows(70)[50:])
    s = loop.run()
    assert s["samples"] == 70 and s["checkpoint_failures"] == 1
    _check_failed_but_intact(loop, path, before, "No space left on device")
    monkeypatch.setattr(np, "savez", real_savez)
    assert loop.save_checkpoint()
    assert int(OnlineLoop.resume(str(path))[1]["loop_counters"][0]) == 70


def test_rename_failing_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    loop = _good_checkpoint(path)
    before = path.read_bytes()

    def replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", replace)
    assert loop.save_checkpoint() is False
    monkeypatch.undo()
    _check_failed_but_intact(loop, path, before, "No space left on device")


def _member_data_offset(path, name):
    """File offset of the raw bytes of member `name` of an uncompressed .npz."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        n_name, n_extra = np.frombuffer(f.read(4), dtype="<u2")
    return info.header_offset + 30 + int(n_name) + int(n_extra), info.file_size


@pytest.mark.parametrize("how", ["truncated-half", "truncated-last-byte", "empty",
                                 "flip-theta", "flip-loop-counters", "flip-forecast-window",
                                 "flip-directory", "tamper-loop-counters"])
def test_a_corrupt_checkpoint_is_reported_and_left_untouched(tmp_path, how):
    path = tmp_path / "ck.npz"
    _good_checkpoint(path)
    data = bytearray(path.read_bytes())
    if how.startswith("truncated") or how == "empty":
        data = data[:{"truncated-half": len(data) // 2, "truncated-last-byte": len(data) - 1,
                      "empty": 0}[how]]
    elif how == "flip-directory":
        directory = int.from_bytes(data[-6:-2], "little")     # from the end record
        data[directory + 46] ^= 0xFF       # a member's name in the zip's central directory
    elif how == "tamper-loop-counters":
        # rewritten as a valid zip (its CRCs match) with one counter changed:
        # only the checkpoint's own checksum can tell
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["extra:loop_counters"] = arrays["extra:loop_counters"].copy()
        arrays["extra:loop_counters"][0] += 1
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        data = bytearray(path.read_bytes())
    else:
        member = {"flip-theta": "theta.npy", "flip-loop-counters": "extra:loop_counters.npy",
                  "flip-forecast-window": "extra:forecast_x.npy"}[how]
        start, size = _member_data_offset(path, member)
        data[start + size - 3] ^= 0x01     # one bit of the array's last element
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    with pytest.raises(CheckpointError) as exc:
        OnlineLoop.resume(str(path))
    assert str(path) in str(exc.value)
    if how.startswith("tamper"):
        assert "checksum" in str(exc.value)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


# -- the summary -------------------------------------------------------------------

def test_summary_keys_and_json():
    loop = make_loop(ReplaySource(signal_rows(500)), controller=PIController(),
                     deadline_ms=50.0)
    s = loop.run()
    want = set(loop_mod._COUNTERS) | {
        "horizon", "forecast_rmse", "baseline_rmse", "recent_forecast_rmse",
        "recent_baseline_rmse", "loss", "latency", "divergence_recoveries", "memory_bytes",
        "elapsed_s", "source", "stop_reason", "tracking_rmse", "recent_tracking_rmse"}
    assert want <= set(s), want - set(s)
    assert set(s["latency"]) == {"median_us", "p99_us", "max_us", "samples"}
    text = json.dumps(s, allow_nan=False)               # strict JSON
    assert json.loads(text)["samples"] == 500
    assert s["source"] == {"replayed": 500}
    assert s["commands"] == 500 and s["horizon"] == 3


def test_forecast_error_is_scored_against_the_target_h_samples_later():
    """The loop's RMSE is the forecast made at t against y_{t+h} and the
    baseline is y_t against y_{t+h}: recompute both from the forecasts."""
    h, n = 4, 300
    rows = signal_rows(n)
    forecasts = []
    loop = make_loop(ReplaySource(rows), horizon=h,
                     controller=lambda y, t: forecasts.append(y) or 0.0)
    s = loop.run()
    f = np.array(forecasts)
    y = rows[:, 0]
    err = np.sqrt(np.mean((f[:n - h] - y[h:]) ** 2))
    base = np.sqrt(np.mean((y[:n - h] - y[h:]) ** 2))
    assert s["forecast_rmse"] == pytest.approx(err, rel=1e-9)
    assert s["baseline_rmse"] == pytest.approx(base, rel=1e-9)


def test_the_loop_learns_to_beat_the_last_value_on_the_synthetic_signal():
    net = cli_like_net(hidden=8)
    loop = make_loop(SyntheticSource(n=6000), horizon=10, net=net)
    s = loop.run()
    assert s["samples"] == 6000 and s["learned"] == 5990
    # recorded: recent RMSE about 0.06 against 0.23 for repeating the last value
    assert s["recent_forecast_rmse"] < 0.5 * s["recent_baseline_rmse"], s


# -- sources, controller ---------------------------------------------------------------

def test_replay_source_paces_in_real_time_and_synthetic_is_deterministic():
    with pytest.raises(ValueError, match=r"\(T, channels\)"):
        ReplaySource(np.zeros(5))
    src = ReplaySource(np.arange(30.0).reshape(10, 3), rate_hz=100.0, realtime=True)
    got, empty, t0 = [], 0, time.monotonic()
    while not src.exhausted:
        batch = src.read()
        empty += not batch
        got += batch
    assert time.monotonic() - t0 >= 0.09 * (1 - 1e-3)    # 10 rows at 100 Hz: >= 9 periods
    assert empty > 0 and np.array_equal(np.array(got), np.arange(30.0).reshape(10, 3))
    assert src.read() == [] and src.stats() == {"replayed": 10}
    a, b, c = SyntheticSource(n=100, seed=3), SyntheticSource(n=100, seed=3), \
        SyntheticSource(n=100, seed=4)
    assert a.channels == 3 and a.rate_hz == 100.0
    assert np.array_equal(a.values, b.values) and not np.array_equal(a.values, c.values)


def test_pi_controller_law_saturation_and_anti_windup():
    pi = PIController(kp=0.8, ki=0.4, setpoint=0.0, dt=0.01, limit=1.0)
    assert pi(0.5, 0.0) == pytest.approx(-0.4)
    assert pi(0.5, 0.01) == pytest.approx(-0.4 + 0.4 * (-0.005))
    integral = pi._i
    assert pi(10.0, 0.02) == -1.0                      # saturated ...
    assert pi._i == integral                           # ... and not winding up
    moving = PIController(kp=1.0, ki=0.0, setpoint=lambda t: 2 * t)
    assert moving(0.0, 0.25) == pytest.approx(0.5)


def test_the_controller_acts_on_the_forecast_or_on_the_measurement():
    rows = signal_rows(50)
    got = []
    inner = lambda y, t: got.append(y) or 0.0                        # noqa: E731
    inner.setpoint = lambda t: 0.0
    ctl = _on_measurement(inner)
    loop = make_loop(ListSource([[r] for r in rows]), controller=ctl)
    ctl.loop = loop
    loop.run()
    assert got == list(rows[:, 0])            # the measured target, not the forecast


def test_delay_line_holds_commands_a_fixed_number_of_calls():
    out = []
    d = _DelayLine(3, out.append)
    ring = d.ring
    for u in range(10):
        d(u)
    assert out == list(range(7)) and d.ring is ring and len(ring) == 3
    out.clear()
    d0 = _DelayLine(0, out.append)
    d0(1.5)
    assert out == [1.5]


# -- on a serial link: a fake board on a real pty --------------------------------------

HELLO = m.Hello(m.VERSION, 3, 1, m.MODE_PLANT, 2000, (0.001, 0.001, 0.001), (0.0, 0.0, 0.0))


class FakeBoard(threading.Thread):
    """A device with 3 channels and 1 actuator on the master end of a pty:
    HELLO at reset and on request, then a SAMPLE every `period` s (channel 0
    a slow wave, 1 the command as applied, 2 a second tone); every
    `bad_every`-th frame has 2 channels instead of 3.  Decodes the host's
    COMMANDs into `commands`."""

    def __init__(self, master, period=0.002, bad_every=0, seq0=0, phase=0.0):
        super().__init__(daemon=True)
        self.master, self.period, self.bad_every = master, period, bad_every
        self.seq, self.phase = seq0, phase
        self.stop_event = threading.Event()
        self.decoder = FrameDecoder()
        self.commands = []
        self.good = self.bad = 0
        self.u = 0
        self.error = None

    def run(self):
        try:
            self._send(HELLO)
            next_t = time.monotonic()
            i = 0
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_t:
                    i += 1
                    if self.bad_every and i % self.bad_every == 0:
                        raw = (7, 7)
                        self.bad += 1
                    else:
                        t = self.phase + i * self.period
                        raw = (int(800 * np.sin(2 * np.pi * 0.7 * t)), self.u,
                               int(500 * np.cos(2 * np.pi * 1.9 * t)))
                        self.good += 1
                    self._send(m.Sample(raw))
                    next_t = max(next_t + self.period, now - 0.05)
                self._service(max(0.0, next_t - time.monotonic()))
        except Exception as exc:          # reported by the test
            self.error = exc

    def stop(self):
        self.stop_event.set()
        self.join(5)
        assert not self.is_alive(), "fake board thread did not stop"

    def _send(self, msg):
        view = memoryview(encode_frame(m.encode(msg, seq=self.seq & 0xFFFF, t_us=0)))
        self.seq += 1
        while view and not self.stop_event.is_set():
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                self._service(0.005)

    def _service(self, timeout=0.0):
        for payload in self.decoder.feed(read_pty(self.master, timeout)):
            msg = m.decode(payload)
            if isinstance(msg, m.HelloRequest):
                self._send(HELLO)
            elif isinstance(msg, m.Command):
                self.commands.append(msg.values[0])
                self.u = msg.values[0]


class Board:
    """Owns ptys, boards, links and threads; `close()` releases them all."""

    def __init__(self):
        self.ptys, self.boards, self.links, self.threads, self.procs = [], [], [], [], []

    def pty(self):
        p = Pty()
        self.ptys.append(p)
        return p

    def start(self, master, **kw):
        b = FakeBoard(master, **kw)
        self.boards.append(b)
        b.start()
        return b

    def close(self):
        """Idempotent: processes killed, threads joined, links and fds closed."""
        try:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                p.communicate(timeout=10)
            for b in self.boards:
                b.stop()
            for t in self.threads:
                t.join(10)
                assert not t.is_alive(), "loop thread did not stop"
        finally:
            for link in self.links:
                link.close()
            for p in self.ptys:
                p.close()
            self.procs, self.boards, self.threads, self.links = [], [], [], []


@pytest.fixture
def board():
    b = Board()
    try:
        yield b
    finally:
        b.close()


def point(symlink, target):
    tmp = symlink.with_name(symlink.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, symlink)


class Recorder:
    """Wraps a source: remembers every batch and gap flag the loop got."""

    def __init__(self, source):
        self.source = source
        self.channels = source.channels
        self.batches, self.gaps = [], []
        self.gap = False

    def read(self):
        batch = self.source.read()
        self.gap = self.source.gap
        if batch or self.gap:
            self.batches.append([np.array(v) for v in batch])
            self.gaps.append(self.gap)
        return batch

    @property
    def exhausted(self):
        return self.source.exhausted

    def stats(self):
        return self.source.stats()


def _serial_loop(board, path, n_steps, **link_kw):
    link = SerialLink(str(path), timeout=0.01, backoff=(0.02, 0.2), **link_kw)
    board.links.append(link)
    source = Recorder(SerialSource(link, hello_timeout=5))
    assert source.channels == 3 and link.hello.n_actuators == 1
    sent = []

    def sink(u):
        value = int(round(u * 1000))
        ok = link.command(value)
        sent.append((link.stats["reconnects"], value, ok))
    loop = make_loop(source, horizon=5, net=cli_like_net(hidden=8), controller=PIController(
        dt=HELLO.period_us / 1e6), sink=sink, max_backlog=1000)
    result = {}

    def run():
        try:
            result["summary"] = loop.run(max_steps=n_steps)
        except BaseException as exc:      # reported by the test
            result["error"] = exc
    t = threading.Thread(target=run)
    board.threads.append(t)
    return link, source, loop, sent, t, result


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_serial_loop_rejects_bad_frames_reconnects_and_keeps_learning(board, tmp_path):
    fds_before = open_fds()
    sym = tmp_path / "ttyBOARD"
    pty1 = board.pty()
    point(sym, pty1.path)
    dev1 = board.start(pty1.master, bad_every=10)
    link, source, loop, sent, t, result = _serial_loop(board, sym, 500)
    t.start()
    assert wait_for(lambda: loop.counters["samples"] >= 150 or not t.is_alive(), 10)
    assert "error" not in result, result
    assert link.stats["rejected_samples"] > 0                 # the 2-channel frames

    # the device goes away: its pty closes and, for a while, nothing is there
    dev1.stop()
    pty1.close()
    point(sym, str(tmp_path / "gone"))
    assert wait_for(lambda: link.stats["disconnects"] == 1, 5)
    time.sleep(0.05)                    # the loop polls a missing port meanwhile
    assert t.is_alive() and loop.counters["samples"] < 500
    before = loop.net.snapshot()         # nothing arrives: the model is at rest
    samples_before = loop.counters["samples"]
    assert before["counters"][0] > 0

    # it comes back (another pty under the same name): the loop reconnects by
    # itself and keeps learning on the same model
    pty2 = board.pty()
    dev2 = board.start(pty2.master, bad_every=10, seq0=30000, phase=5.0)
    point(sym, pty2.path)
    t.join(20)
    assert not t.is_alive() and "error" not in result, result
    s = result["summary"]
    assert s["samples"] == 500 and s["stop_reason"] == "max steps"
    assert link.stats["reconnects"] == 1 and link.stats["disconnects"] == 1
    assert samples_before < 500 and loop.net.stats["steps"] > before["counters"][0]
    assert s["rejected"] == 0                  # the link filtered the bad frames ...
    assert all(len(v) == 3 for b in source.batches for v in b)
    # ... one in ten: the link counted every wrong frame it got between good ones
    assert abs(link.stats["rejected_samples"] - link.stats["samples"] / 9) <= 3, \
        link.all_stats()
    assert link.stats["seq_gaps"] == 0 and link.all_stats()["crc_errors"] == 0

    # the learning state went on across the reconnect: the same samples fed
    # to a fresh loop (no reconnect) give exactly the same model
    twin = make_loop(ListSource(source.batches, gaps=source.gaps), horizon=5,
                     net=cli_like_net(hidden=8), max_backlog=1000)
    twin.run(max_steps=500)
    assert twin.counters["samples"] == 500
    assert same_model(twin.net, loop.net)
    assert not same_model(cli_like_net(hidden=8), loop.net)

    # commands reached the devices, in order: everything the first got was
    # sent to it; everything sent after the reconnect reaches the second
    to1 = [v for r, v, ok in sent if r == 0 and ok]
    to2 = [v for r, v, ok in sent if r == 1 and ok]
    assert len(to1) >= 50 and len(to2) >= 50
    assert dev1.commands == to1[:len(dev1.commands)] and len(dev1.commands) >= 50
    assert wait_for(lambda: len(dev2.commands) >= len(to2), 5)
    assert dev2.commands == to2
    assert all(-1000 <= v <= 1000 for v in to1 + to2)
    assert dev1.error is None and dev2.error is None
    board.close()
    assert open_fds() == fds_before, "file descriptors leaked"


def test_a_reconnect_is_a_gap_in_the_stream(board, tmp_path):
    """Samples after a reconnect do not follow the ones before it: the
    forecaster must restart its window (as after any gap), not learn
    (x_{t-h} from the old device, y_t from the new one) as if contiguous."""
    sym = tmp_path / "ttyBOARD"
    pty1 = board.pty()
    point(sym, pty1.path)
    dev1 = board.start(pty1.master)
    link, source, loop, sent, t, result = _serial_loop(board, sym, 300)
    t.start()
    assert wait_for(lambda: loop.counters["samples"] >= 100 or not t.is_alive(), 10)
    dev1.stop()
    pty1.close()
    assert wait_for(lambda: link.stats["disconnects"] == 1, 5)
    pty2 = board.pty()
    board.start(pty2.master, seq0=1000, phase=3.0)
    point(sym, pty2.path)
    t.join(20)
    assert not t.is_alive() and "error" not in result, result
    assert link.stats["reconnects"] == 1
    assert result["summary"]["gaps"] >= 1 and loop.fc.stats["resets"] >= 1, result["summary"]


def test_rtrl_edge_run_on_a_board_that_vanishes_and_comes_back(board, tmp_path):
    """The command line on the fake board: bad frames rejected and counted,
    the port gone for a while and back under the same name, the run goes on
    with its model, and commands reach both devices."""
    sym = tmp_path / "ttyBOARD"
    ck, js = tmp_path / "ck.npz", tmp_path / "s.json"
    pty1 = board.pty()
    point(sym, pty1.path)
    dev1 = board.start(pty1.master, bad_every=10)
    p = subprocess.Popen(
        [sys.executable, "-m", "rtrl_edge", "run", "--learner", "rtrl", "--port", str(sym), "--max-steps", "800",
         "--hidden", "8", "--horizon", "5", "--checkpoint", str(ck), "--summary-json", str(js),
         "--quiet"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    board.procs.append(p)
    # the run is in its loop once commands come back
    assert wait_for(lambda: len(dev1.commands) >= 50 or p.poll() is not None, 30), \
        dev1.error
    assert p.poll() is None, p.communicate()
    dev1.stop()
    pty1.close()
    point(sym, str(tmp_path / "gone"))
    time.sleep(0.2)                          # the port is missing for a while
    pty2 = board.pty()
    dev2 = board.start(pty2.master, bad_every=10, seq0=50000, phase=2.0)
    point(sym, pty2.path)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "3 channels at 500 Hz, 1 actuator(s)" in out
    s = json.loads(js.read_text())
    assert s["samples"] == 800 and s["stop_reason"] == "max steps"
    link = s["source"]
    assert link["disconnects"] == 1 and link["reconnects"] == 1, link
    assert link["rejected_samples"] > 0 and s["rejected"] == 0
    assert link["seq_gaps"] == 0 and link["crc_errors"] == 0 and link["cobs_errors"] == 0
    assert s["commands"] > 0 and len(dev2.commands) > 0       # the new device is driven
    # one model all along: every sample learnt is in the final checkpoint's steps
    net, extra = OnlineLoop.resume(str(ck))
    assert net.stats["steps"] == s["learned"] > 0
    assert dev1.error is None and dev2.error is None
