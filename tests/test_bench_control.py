"""benchmarks/bench_control.py on the real MuJoCo simulators (gymnasium):
the oracle's look-ahead is what the simulator then does, the benchmark's
smoke run reports every contender, and acting on the oracle beats acting on
the measurement.  Nothing here is about speed."""
import math

import numpy as np
import pytest

from support import load_benchmark

pytest.importorskip("gymnasium", reason="bench_control needs gymnasium (pip install '.[control]')")
pytest.importorskip("mujoco", reason="bench_control needs MuJoCo (pip install '.[control]')")


@pytest.mark.parametrize("env", ["InvertedPendulum-v5", "Reacher-v5", "Pusher-v5",
                                 "Reacher-v5/angles"])
def test_the_oracle_sees_what_the_simulator_then_does(monkeypatch, env):
    cp = load_benchmark(monkeypatch, "control_plants")
    plant = cp.PLANTS[env]()
    rng = np.random.default_rng(0)
    plant.reset(rng)
    commands = rng.uniform(-0.5, 0.5, (4, plant.n_command))
    ahead = plant.simulate_ahead(commands)
    for u in commands:
        s, _ = plant.step(u)
    np.testing.assert_array_equal(ahead, s)


def test_smoke_run_reports_every_contender(monkeypatch):
    bench = load_benchmark(monkeypatch, "bench_control")
    result = bench.main(["--quick", "--no-write"])
    assert set(result["summary"]) == {f"{e} d=2" for e in bench.cp.ENVS}
    for key, s in result["summary"].items():
        assert set(s["rows"]) == set(bench.cp.CONTENDERS)
        for name, row in s["rows"].items():
            assert 0.0 <= row["first_success"] <= 1.0
            assert math.isfinite(row["first_error"]) and row["first_error"] >= 0
            assert row["us_median"] > 0
        assert s["best_linear"] in bench.cp.LINEAR
        # acting on where the plant will be beats acting on where it was
        assert s["rows"]["oracle"]["first_error"] < s["rows"]["measurement"]["first_error"]
