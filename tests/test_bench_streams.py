"""benchmarks/bench_streams.py: its smoke run serves every stream every row,
reports positive finite figures, and finds memory_bytes equal to the sum of
the same models built alone.  Nothing here is about speed."""
import math

from support import load_benchmark


def test_smoke_run_serves_every_stream_every_row(monkeypatch, capsys):
    bench = load_benchmark(monkeypatch, "bench_streams")
    result = bench.main(["--quick", "--no-write", "--rows", "40", "--streams", "1", "3",
                         "--models", "rtrl n=16", "auto"])
    rows = result["rows"]
    assert [(r["model"], r["streams"]) for r in rows] == [
        ("rtrl n=16", 1), ("rtrl n=16", 3), ("auto", 1), ("auto", 3)]
    for r in rows:
        assert r["samples"] == 40 * r["streams"]
        assert r["memory_exact"], r
        for key in ("samples_per_cpu_s", "samples_per_wall_s", "sample_median_us",
                    "sample_p99_us", "row_median_us", "row_p99_us"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["sample_p99_us"] >= r["sample_median_us"]
    three = [r for r in rows if r["streams"] == 3]
    one = [r for r in rows if r["streams"] == 1]
    assert all(t["memory_bytes"] == 3 * o["memory_bytes"] for t, o in zip(three, one))
    assert "memory_bytes equals the sum" in capsys.readouterr().out


def test_sensors_are_distinct_recorded_series(monkeypatch):
    bench = load_benchmark(monkeypatch, "bench_streams")
    values = bench.sensors(30, 50)
    assert values.shape == (50, 30)
    assert len({tuple(values[:, i]) for i in range(27)}) == 27
    assert (values[:, 27] == values[:, 0]).all()      # cycled after the 27 series


def test_mqtt_rows_publish_every_forecast(monkeypatch, mqtt):
    bench = load_benchmark(monkeypatch, "bench_streams")
    result = bench.main(["--quick", "--no-write", "--rows", "30", "--streams", "2",
                         "--models", "rtrl n=16 + MQTT"])
    (row,) = result["rows"]
    assert row["samples"] == 60 and row["memory_exact"]
    assert row["mqtt"]["published"] == 60 and row["mqtt"]["dropped_offline"] == 0
