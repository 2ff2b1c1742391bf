"""rtrl_edge.plan: exact memory without building, budgets respected, CLI."""
import io

import numpy as np
import pytest

import rtrl_edge
from rtrl_edge import cli
from rtrl_edge import planning


def _kwargs(learner, cell):
    kw = dict(learner=learner, cell=cell, optimizer="adam")
    if learner == "tbptt":
        kw["window"] = 16
    if learner == "snap2":
        kw["rec_density"] = 0.1
    return kw


@pytest.mark.parametrize("learner,cell", [(l, c) for l, c, _ in planning.CANDIDATES])
@pytest.mark.parametrize("n_in,n_hidden,n_out", [(1, 2, 1), (8, 24, 1), (3, 40, 3)])
def test_memory_bytes_is_exact_without_building(learner, cell, n_in, n_hidden, n_out):
    net = rtrl_edge.OnlineRNN(n_in, n_hidden, n_out, **_kwargs(learner, cell))
    assert planning.memory_bytes(n_in, n_hidden, n_out, learner=learner, cell=cell,
                                 optimizer="adam", window=16,
                                 rec_density=0.1) == net.memory_bytes


def test_memory_budget_gives_the_largest_size_that_fits():
    budget = 300_000
    options = rtrl_edge.plan(8, 1, memory_bytes=budget)
    assert {(o.learner, o.cell) for o in options} == {(l, c) for l, c, _ in planning.CANDIDATES}
    for o in options:
        assert o.memory_bytes <= budget
        assert np.isnan(o.step_us)
        bigger = [n for n in planning.SIZES if n > o.n_hidden and not (o.cell == "diag" and n % 2)]
        if bigger:
            assert planning.memory_bytes(8, bigger[0], 1, learner=o.learner, cell=o.cell,
                                         optimizer="adam") > budget
    exact = [o for o in options if (o.learner, o.cell) == ("rtrl", "elman")][0]
    cheap = [o for o in options if (o.learner, o.cell) == ("rtrl", "diag")][0]
    assert cheap.n_hidden > 8 * exact.n_hidden     # n^3 against n*m memory


def test_time_budget_uses_the_fitted_cost_model(monkeypatch):
    """With a known cost model (a = 1 us, b = 1 ns per multiply-add), the
    chosen size is the largest whose predicted time is within the budget."""
    monkeypatch.setattr(planning, "_CALIBRATION", {})
    key = ("snap1", "elman", 4, 2, "adam", 16, 0.1, 1)     # ..., threads
    planning._CALIBRATION[key] = (1.0, 1e-3)
    options = rtrl_edge.plan(4, 2, step_us=40.0, candidates=[("snap1", "elman")])
    assert len(options) == 1
    o = options[0]
    predicted = lambda n: 1.0 + 1e-3 * planning.work(4, n, 2, learner="snap1", cell="elman")
    assert o.step_us == pytest.approx(predicted(o.n_hidden)) and o.step_us <= 40.0
    nxt = planning.SIZES[planning.SIZES.index(o.n_hidden) + 1]
    assert predicted(nxt) > 40.0


def test_nothing_fits_is_an_empty_list():
    assert rtrl_edge.plan(8, 1, memory_bytes=100) == []


@pytest.mark.parametrize("kwargs,match", [
    ({}, "budget"),
    ({"memory_bytes": 0}, "memory_bytes must be > 0"),
    ({"step_us": -1.0}, "step_us must be > 0"),
])
def test_bad_budgets(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rtrl_edge.plan(8, 1, **kwargs)


def test_cli_plan_prints_a_table():
    out = io.StringIO()
    args = cli.build_parser().parse_args(["plan", "--n-in", "8", "--n-out", "1",
                                          "--memory", "256KiB"])
    assert cli.plan.main(args, out=out) == 0
    text = out.getvalue()
    assert "262,144 bytes" in text and "snap1" in text and "diag" in text


@pytest.mark.parametrize("size,expected", [("200000", 200000), ("512KiB", 524288),
                                           ("4MB", 4_000_000), ("1.5 MiB", 1572864)])
def test_byte_sizes(size, expected):
    assert cli._common.byte_size(size) == expected


@pytest.mark.parametrize("argv,message", [
    (["plan", "--n-in", "8", "--n-out", "1", "--memory", "lots"], "expected a size"),
    (["plan", "--n-in", "8"], "required"),
])
def test_cli_plan_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_cli_plan_needs_a_budget(capsys):
    assert cli.main(["plan", "--n-in", "8", "--n-out", "1"]) == 2
    assert "--memory and/or --step-us" in capsys.readouterr().err
