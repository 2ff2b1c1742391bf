"""`rtrl_edge.DelayCompensator`: the predictor for delayed control.

Causality (perturbing future states changes no prediction), the commands in
flight (a plant whose response depends on nothing else), bounded memory,
bad input changing nothing, persistence, the budgets, and its linear member
against an independent reference (batch weighted least squares)."""
import tracemalloc

import numpy as np
import pytest

from rtrl_edge import AutoForecaster, CheckpointError, DelayCompensator
from rtrl_edge.compensator import estimate_bytes
from rtrl_edge.members import LinearRLS
from rtrl_edge.mixture import Hedge


def snapshot(comp):
    """Everything mutable: the mixture's arrays, the models', the counters."""
    out = {k: np.array(v) for k, v in comp.state().items()}
    for i, m in enumerate(comp.members):
        if hasattr(m, "net"):
            out.update({f"net{i}:{k}": np.array(v) for k, v in m.net._state_arrays().items()
                        if k != "config"})
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def delayed_plant(comp, steps, rng, *, delay, gain=0.9, perturb_after=None):
    """Drive `comp` on s_{t+1} = gain s_t + u_{t-d} with random commands;
    returns the predictions.  With `perturb_after`, the states from that
    step on are shifted by a random amount (what comes later)."""
    d = delay
    s = np.zeros(comp.n_state)
    flight = [np.zeros(comp.n_command) for _ in range(d)]
    preds, us = [], rng.standard_normal((steps, comp.n_command))
    shift = rng.standard_normal((steps, comp.n_state))
    for t in range(steps):
        seen = s + (shift[t] if perturb_after is not None and t > perturb_after else 0.0)
        preds.append(comp.update(seen))
        comp.command(us[t])
        flight.append(us[t])
        landed = flight.pop(0)
        s = gain * s + landed.sum() * np.ones(comp.n_state) / comp.n_command
    return np.array(preds)


def test_update_returns_a_new_prediction_of_the_whole_state():
    comp = DelayCompensator(3, 2, 4, hidden=4)
    a = comp.update([0.1, 0.2, 0.3])
    comp.command([0.5, -0.5])
    b = comp.update(np.array([0.1, 0.2, 0.4]))
    assert a.shape == b.shape == (3,) and a.dtype == np.float64
    assert a is not b and not np.shares_memory(a, b)
    assert comp.in_flight.shape == (4, 2)
    np.testing.assert_array_equal(comp.in_flight[-2], [0.5, -0.5])


def test_in_flight_after_updates_without_commands_holds_the_last_command():
    comp = DelayCompensator(1, 1, 3, hidden=0)
    for u in (1.0, 2.0, 3.0):
        comp.update([0.0])
        comp.command([u])
    assert comp.in_flight[:, 0].tolist() == [1.0, 2.0, 3.0]
    comp.update([0.0])
    assert comp.in_flight[:, 0].tolist() == [2.0, 3.0, 3.0]
    comp.update([0.0])
    assert comp.in_flight[:, 0].tolist() == [3.0, 3.0, 3.0]


def test_reset_zeroes_or_sets_the_commands_in_flight_and_keeps_what_was_learnt():
    comp = DelayCompensator(2, 1, 2, hidden=0)
    rng = np.random.default_rng(0)
    delayed_plant(comp, 300, rng, delay=2)
    W = comp.members[2].W.copy()
    comp.reset()
    assert not comp.in_flight.any()
    np.testing.assert_array_equal(comp.members[2].W, W)
    comp.reset(in_flight=[[1.0], [2.0]])
    assert comp.in_flight[:, 0].tolist() == [1.0, 2.0]


def test_causality_perturbing_future_states_changes_no_prediction():
    """Two runs agree on every state up to step 150 and differ after it:
    every prediction up to 150 is bitwise the same, and later ones differ."""
    a = delayed_plant(DelayCompensator(2, 1, 3, hidden=4), 300, np.random.default_rng(1),
                      delay=3)
    b = delayed_plant(DelayCompensator(2, 1, 3, hidden=4), 300, np.random.default_rng(1),
                      delay=3, perturb_after=150)
    np.testing.assert_array_equal(a[:151], b[:151])
    assert not np.allclose(a[151:], b[151:])


def test_commands_in_flight_are_used():
    """The state is the last command that landed, so s_{t+d} = u_{t-1}:
    only the commands in flight tell it.  Learnt, the prediction follows it
    (an error far below the commands' variance, what ignoring them costs),
    and changing the newest command in flight changes the prediction by as
    much."""
    d = 4
    comp = DelayCompensator(1, 1, d, hidden=0)
    us = np.random.default_rng(2).standard_normal(1500)
    flight = [0.0] * d
    s, preds = 0.0, []
    for u in us:
        preds.append(comp.update([s])[0])
        comp.command([u])
        flight.append(u)
        s = flight.pop(0)                       # the command landing now
    target = np.concatenate([[0.0], us[:-1]])   # u_{t-1} (none before the first)
    err = np.array(preds[1000:]) - target[1000:]
    assert np.mean(err ** 2) < 1e-6 * np.var(us)
    before = comp.update([s])[0]
    flight_now = comp.in_flight
    comp.reset(in_flight=flight_now)
    same = comp.update([s])[0]
    flight_now[-1] += 1.0
    comp.reset(in_flight=flight_now)
    moved = comp.update([s])[0]
    assert abs(same - before) < 1e-9
    assert abs(moved - before - 1.0) < 1e-3


def test_no_prediction_wins_nothing_once_the_linear_members_have_learnt():
    comp = DelayCompensator(2, 1, 3, hidden=0)
    delayed_plant(comp, 800, np.random.default_rng(3), delay=3)
    w = comp.weights
    assert w["no prediction"] < 0.01
    assert sum(v for k, v in w.items() if k.startswith("RLS")) > 0.95


def test_learn_false_advances_and_scores_but_learns_nothing():
    comp = DelayCompensator(2, 1, 2, hidden=4)
    rng = np.random.default_rng(4)
    delayed_plant(comp, 100, rng, delay=2)
    W = comp.members[2].W.copy()
    rnn = next(m for m in comp.members if hasattr(m, "net"))
    params = rnn.net.params["W_rec"].copy()
    learned, scored = comp.counters["learned"], comp.counters["scored"]
    for t in range(50):
        comp.update(rng.standard_normal(2), learn=False)
        comp.command([0.1])
    np.testing.assert_array_equal(comp.members[2].W, W)
    np.testing.assert_array_equal(rnn.net.params["W_rec"], params)
    assert comp.counters["learned"] == learned
    assert comp.counters["scored"] == scored + 50
    assert comp.counters["samples"] == 150


@pytest.mark.parametrize("call, message", [
    (lambda c: c.update([1.0, 2.0]), "state must have shape (3,)"),
    (lambda c: c.update([1.0, np.nan, 2.0]), "state must be finite"),
    (lambda c: c.update("abc"), "state must be a numeric array"),
    (lambda c: c.command([1.0, 2.0]), "command must have shape (1,)"),
    (lambda c: c.command([np.inf]), "command must be finite"),
    (lambda c: c.reset(in_flight=np.zeros((3, 1))), "in_flight must be a finite array of "
                                                    "shape (2, 1)"),
    (lambda c: c.reset(in_flight=[[np.nan], [0.0]]), "in_flight must be a finite array"),
])
def test_bad_input_is_refused_and_changes_nothing(call, message):
    comp = DelayCompensator(3, 1, 2, hidden=4)
    delayed_plant(comp, 40, np.random.default_rng(5), delay=2)
    before = snapshot(comp)
    with pytest.raises(ValueError) as err:
        call(comp)
    assert message in str(err.value)
    after = snapshot(comp)
    rejected = "counters"
    assert_same({k: v for k, v in before.items() if k != rejected},
                {k: v for k, v in after.items() if k != rejected})


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_state=0, n_command=1, delay=2), "n_state must be an integer >= 1"),
    (dict(n_state=2, n_command=1.5, delay=2), "n_command must be an integer >= 1"),
    (dict(n_state=2, n_command=1, delay=0), "delay must be an integer >= 1"),
    (dict(n_state=2, n_command=1, delay=2, seed=-1), "seed must be an integer >= 0"),
    (dict(n_state=2, n_command=1, delay=2, hidden=-1), "hidden must be an integer >= 0"),
    (dict(n_state=2, n_command=1, delay=2, hidden=4, memory_bytes=10 ** 6),
     "either hidden or the budgets"),
    (dict(n_state=2, n_command=1, delay=2, memory_bytes=0), "memory_bytes must be > 0"),
    (dict(n_state=2, n_command=1, delay=2, memory_bytes=100), "nothing fits"),
])
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError) as err:
        DelayCompensator(**kwargs)
    assert message in str(err.value)


def test_a_memory_budget_picks_the_largest_rnn_members_that_fit():
    small = DelayCompensator(4, 1, 4, hidden=0).memory_bytes
    roomy = DelayCompensator(4, 1, 4, memory_bytes=10 ** 7)
    assert roomy.hidden == 32 and roomy.memory_bytes <= 10 ** 7
    tight = DelayCompensator(4, 1, 4, memory_bytes=small + 20_000)
    assert 0 <= tight.hidden < 32 and tight.memory_bytes <= small + 20_000
    none = DelayCompensator(4, 1, 4, memory_bytes=small + 10)
    assert none.hidden == 0 and none.names[-1].startswith("RLS")


def test_memory_is_fixed_and_estimated_without_building():
    comp = DelayCompensator(4, 2, 5, hidden=8)
    assert abs(comp.memory_bytes - estimate_bytes(4, 2, 5, 8)) < 512
    assert abs(DelayCompensator(4, 2, 5, hidden=0).memory_bytes
               - estimate_bytes(4, 2, 5, 0)) < 512
    rng = np.random.default_rng(6)
    delayed_plant(comp, 200, rng, delay=5)
    before = comp.memory_bytes
    tracemalloc.start()
    try:
        delayed_plant(comp, 50, rng, delay=5)
        base, _ = tracemalloc.get_traced_memory()
        delayed_plant(comp, 2000, rng, delay=5)
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert comp.memory_bytes == before
    assert grown - base < 16_384          # nothing kept per step (2000 steps)


def test_save_and_load_continue_exactly(tmp_path):
    rng = np.random.default_rng(7)
    comp = DelayCompensator(2, 1, 3, hidden=4, seed=3)
    delayed_plant(comp, 200, rng, delay=3)
    comp.save(tmp_path / "c.npz")
    twin = DelayCompensator.load(tmp_path / "c.npz")
    assert twin.hidden == 4 and twin.seed == 3 and twin.delay == 3
    assert_same(snapshot(comp), snapshot(twin))
    a = delayed_plant(comp, 50, np.random.default_rng(8), delay=3)
    b = delayed_plant(twin, 50, np.random.default_rng(8), delay=3)
    np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_kind_is_refused(tmp_path):
    DelayCompensator(2, 1, 3, hidden=0).save(tmp_path / "c.npz")
    AutoForecaster(1, 1, 3, hidden=4).save(tmp_path / "a.npz")
    with pytest.raises(CheckpointError, match="is not an AutoForecaster checkpoint"):
        AutoForecaster.load(tmp_path / "c.npz")
    with pytest.raises(CheckpointError, match="is not a DelayCompensator checkpoint"):
        DelayCompensator.load(tmp_path / "a.npz")


def test_the_linear_member_is_weighted_least_squares():
    """Independent reference: after N samples with forgetting lam (the
    trace bound not reached), RLS's weights minimise
    sum_k lam^(N-1-k) |y_k - phi_k W|^2 + lam^N ridge |W|^2, solved here in
    closed form (float64 numpy).  Tolerance 1e-6 relative."""
    rng = np.random.default_rng(9)
    n_in, n_out, h, lam, ridge = 3, 2, 1, 0.98, 1e-3
    m = LinearRLS(n_in, n_out, h, 1, lam=lam, ridge=ridge, standardise=False)

    class Ctx:
        pass
    ctx = Ctx()
    ctx.x_stats = ctx.y_stats = None
    out = np.zeros(n_out)
    ys = rng.standard_normal((60, n_out))
    xs = rng.standard_normal((60, n_in))
    phis, targets = [], []
    for t in range(60):
        ctx.t, ctx.x, ctx.y = t, xs[t], ys[t]
        ctx.learn = t >= h
        ctx.y_ago = ys[t - h] if t >= h else None
        if ctx.learn:
            targets.append(ys[t] - ys[t - h])
        m.step(ctx, out)
        phis.append(np.concatenate([ys[t], xs[t], [1.0]]))
    X, Y = np.array(phis[:len(targets)]), np.array(targets)
    N = len(Y)
    w = lam ** np.arange(N - 1, -1, -1)
    A = (X * w[:, None]).T @ X + lam ** N * ridge * np.eye(X.shape[1])
    W = np.linalg.solve(A, (X * w[:, None]).T @ Y)
    np.testing.assert_allclose(m.W, W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out, ys[-1] + phis[-1] @ W, rtol=1e-6)


def test_per_channel_weights_take_the_best_member_for_each_channel():
    """Member A is right on channel 0 and wrong on 1, B the other way: the
    per-channel mixture takes each from the right one."""
    hedge = Hedge(2, 1, window=20, channels=2)
    F = np.array([[1.0, 5.0], [5.0, 2.0]])
    y = np.array([1.0, 2.0])
    for _ in range(30):
        hedge.observe((F - y) ** 2)
    out = hedge.combine(F, np.zeros(2))
    np.testing.assert_allclose(out, y, atol=1e-6)


def test_a_delayed_pd_loop_holds_on_the_prediction_and_not_on_the_measurement():
    """The README's robotics example: a cart pushed to 0 by a PD law whose
    force lands 5 steps (0.25 s) late.  Acting on the measurement, the loop
    oscillates (recorded: mean |position| 1.0); on the compensator's
    prediction it settles from the first episode (0.08) and better still
    after eight (0.07)."""
    def episode(comp, delay=5, steps=200, dt=0.05):
        x, in_flight, errors = np.array([1.0, 0.0]), [0.0] * delay, []
        if comp is not None:
            comp.reset()
        for _ in range(steps):
            s_hat = comp.update(x) if comp is not None else x
            u = float(np.clip(-10.0 * s_hat[0] - 5.0 * s_hat[1], -20.0, 20.0))
            if comp is not None:
                comp.command([u])
            in_flight.append(u)
            x = x + dt * np.array([x[1], in_flight.pop(0)])
            errors.append(abs(x[0]))
        return np.mean(errors)

    on_measurement = episode(None)
    comp = DelayCompensator(2, 1, 5)
    first = episode(comp)
    for _ in range(8):
        last = episode(comp)
    assert on_measurement > 0.5
    assert first < 0.2 * on_measurement and last < first


def numpy_rls_update(P, W, phi, target, lam, bound):
    """The RLS step in float64 numpy, written from the formulas (reference)."""
    Px = P @ phi
    denom = lam + phi @ Px
    W += np.outer(Px / denom, target - phi @ W)
    P -= np.outer(Px, Px) / denom
    P /= lam
    tr = np.trace(P)
    if tr > bound:
        P *= bound / tr


def test_the_compiled_rls_update_matches_numpy_over_a_long_run_and_stays_symmetric():
    """31,000 steps with the shortest memory (lam = 0.98) on inputs that
    barely vary every other thousand steps: the compiled update keeps P
    exactly symmetric (an asymmetric rounding would grow by 1/lam per step),
    agrees with the numpy reference to 1e-6 relative, and after the last
    varied stretch holds the true weights."""
    from rtrl_edge.members import rls_update
    rng = np.random.default_rng(10)
    f, o, lam = 8, 3, 0.98
    bound = f / 1e-6
    P, W = np.eye(f) / 1e-6, np.zeros((f, o))
    P_ref, W_ref = P.copy(), W.copy()
    true = rng.standard_normal((f, o))
    Px = np.zeros(f)
    for t in range(31_000):
        quiet = (t // 1000) % 2 == 1
        phi = np.concatenate([(1e-3 if quiet else 1.0) * rng.standard_normal(f - 1), [1.0]])
        target = phi @ true + 1e-3 * rng.standard_normal(o)
        rls_update(P, W, phi, target, lam, bound, Px)
        numpy_rls_update(P_ref, W_ref, phi, target, lam, bound)
    np.testing.assert_array_equal(P, P.T)
    assert np.isfinite(P).all() and np.trace(P) <= bound * (1 + 1e-12)
    np.testing.assert_allclose(W, W_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(W, true, atol=1e-2)


def test_the_loop_sends_the_held_command_for_samples_it_does_not_act_on():
    """A backlog's older samples are learnt from but not acted on; the
    compensator holds the last command for them, so the loop sends it again:
    a delay line behind the sink advances once per sample, in step with the
    compensator's commands in flight."""
    from rtrl_edge.loop import OnlineLoop, PIController

    class Batches:
        channels = 2

        def __init__(self):
            self.rows = np.random.default_rng(11).standard_normal((60, 2))
            self.i = 0

        @property
        def exhausted(self):
            return self.i >= len(self.rows)

        def read(self):
            batch = list(self.rows[self.i:self.i + 3])          # three at a time
            self.i += 3
            return batch

    sent = []
    comp = DelayCompensator(2, 1, 4, hidden=0)
    loop = OnlineLoop(comp, Batches(), inputs=[0, 1], targets=(0,),
                      controller=PIController(), sink=sent.append)
    summary = loop.run()
    assert summary["samples"] == 60 and summary["commands"] == 20
    assert len(sent) == 60 - 2                   # every sample after the first command
    # each command, then held for the two older samples of the next batch
    assert all(sent[3 * j] == sent[3 * j + 1] == sent[3 * j + 2] for j in range(19))
    # what the compensator holds in flight is what the sink sent, step by step
    np.testing.assert_array_equal(comp.in_flight[:, 0], sent[-4:])
