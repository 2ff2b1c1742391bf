"""Plants, controllers and predictors of ``bench_control.py``: MuJoCo robot
simulators through gymnasium, commands that reach them `delay` steps late,
and the predictors a controller can act on.

Every plant is a gymnasium MuJoCo environment stepped through its model and
data (``mujoco.mj_step`` frame_skip times per step, as the environment's own
``step`` does), with a fixed linear controller tuned once at zero delay:

  InvertedPendulum-v5   cart-pole; LQR on the finite-difference linearisation
                        at the upright (Q = diag(30, 10, 0.1, 0.1), R = 0.1);
                        the cart tracks 0.25 sin(2 pi t / 10 s); 250 steps
                        (10 s).  Success: the pole never passes 0.2 rad (the
                        environment's termination).  Error: RMS of the cart's
                        distance to the reference, a fall counting 1 m (the
                        rail's half-length) for every step it did not live.
  Reacher-v5            2-link arm reaching the environment's random target;
                        PD on the joint angles towards the target's inverse
                        kinematics (kp = 1.0, 0.6; kd = 0.12, 0.06); 100
                        steps (2 s).  Success: the fingertip within 2 cm of
                        the target over the last 10 steps.  Error: RMS of
                        the fingertip's distance to the target.
  Pusher-v5             7-joint arm; PD towards a random posture in the middle
                        60 % of every joint's range (kp = 2, kd = 0.5); 100
                        steps (5 s).  Success: the joints' RMS error below
                        0.05 rad over the last 10 steps.  Error: RMS over the
                        episode of the joints' RMS error (rad).

  Reacher-v5/angles     the same Reacher measured by its joint angles alone
                        (no velocity sensor): the PD law's damping term
                        differentiates the angles it is given (the
                        prediction, or the measurement).  A predictor must
                        remember to know the velocity.

The state the controller and the predictors read: qpos and qvel of the
actuated joints (the cart and pole; the arm's joints), in SI units (qpos
only for Reacher-v5/angles).  The
controller acts on a predictor's estimate of the state `delay` steps ahead;
its command reaches the plant `delay` steps later (a queue that starts each
episode full of zeros).

Predictors (``update(state) -> predicted state``, ``command(u)``,
``reset()``):

  measurement           the state now (no compensation);
  extrapolation         s_t + d (s_t - s_{t-1});
  RLS lam               recursive least squares on [s_t, commands in flight,
                        1] predicting s_{t+d} - s_t (``rtrl_edge.members.
                        rls_update``, raw values, P0 = I / 1e-6, the
                        covariance's trace bounded);
  DelayCompensator      ``rtrl_edge.DelayCompensator`` with its defaults, and
                        with ``hidden=0`` (its linear members alone: what the
                        RNN members add);
  oracle                a copy of the true simulator state stepped forward
                        with the commands in flight (the best any predictor
                        can do; acting on it is acting with no delay, except
                        for the commands already queued).
"""
from __future__ import annotations

import numpy as np

ENVS = ("InvertedPendulum-v5", "Reacher-v5", "Pusher-v5", "Reacher-v5/angles")
#: the plants of the issue's targets; Reacher-v5/angles is a harder variant
STANDARD = ENVS[:3]


def require_gymnasium():
    """(gymnasium, mujoco), or SystemExit saying how to get them."""
    try:
        import gymnasium
        import mujoco
    except ImportError as exc:
        raise SystemExit(f"bench_control needs gymnasium and MuJoCo ({exc.name} is missing): "
                         f"pip install '.[control]'") from None
    return gymnasium, mujoco


def dlqr(A, B, Q, R, iters=10000):
    """Gain K of the discrete-time LQR u = -K x (Riccati iteration)."""
    P = Q.copy()
    for _ in range(iters):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        nxt = Q + A.T @ P @ (A - B @ K)
        done = np.abs(nxt - P).max() < 1e-10 * max(1.0, np.abs(P).max())
        P = nxt
        if done:
            break
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)


class Plant:
    """One MuJoCo environment, stepped `frame_skip` physics steps per step
    (`name`: the gymnasium id; `label`: the plant's name here)."""

    name = label = ""
    steps = 100
    joints = 0                       # actuated joints: state = qpos, qvel of these

    def __init__(self):
        gym, self.mj = require_gymnasium()
        self.env = gym.make(self.name).unwrapped
        self.model, self.data = self.env.model, self.env.data
        self.frame_skip = self.env.frame_skip
        self.dt = self.env.dt
        self.n_state, self.n_command = 2 * self.joints, self.model.nu
        self.t = 0

    def state(self) -> np.ndarray:
        j = self.joints
        return np.concatenate([self.data.qpos[:j], self.data.qvel[:j]])

    def physics(self, u) -> None:
        self.data.ctrl[:] = u
        self.mj.mj_step(self.model, self.data, nstep=self.frame_skip)

    def reset(self, rng) -> np.ndarray:
        self.env.reset(seed=int(rng.integers(2 ** 31)))
        self.t = 0
        return self.state()

    def step(self, u):
        """Apply `u` (the command landing now); (state, failed)."""
        self.physics(u)
        self.mj.mj_forward(self.model, self.data)
        self.t += 1
        return self.state(), self.failed()

    def failed(self) -> bool:
        return False

    def simulate_ahead(self, commands) -> np.ndarray:
        """The state after applying `commands` in turn, the simulator left
        as it was (the oracle)."""
        d = self.data
        saved = d.qpos.copy(), d.qvel.copy(), d.act.copy(), d.time
        for u in commands:
            self.physics(u)
        s = self.state()
        d.qpos[:], d.qvel[:], d.act[:], d.time = saved
        self.mj.mj_forward(self.model, d)
        return s

    def linearise(self, eps=1e-5):
        """(A, B) of one step about the zero state and command."""
        m, d, nq = self.model, self.data, self.joints
        nx = 2 * nq

        def f(x, u):
            self.mj.mj_resetData(m, d)
            d.qpos[:nq], d.qvel[:nq] = x[:nq], x[nq:]
            self.physics(u)
            return self.state()
        A, B = np.zeros((nx, nx)), np.zeros((nx, m.nu))
        x0, u0 = np.zeros(nx), np.zeros(m.nu)
        for i in range(nx):
            e = np.zeros(nx)
            e[i] = eps
            A[:, i] = (f(x0 + e, u0) - f(x0 - e, u0)) / (2 * eps)
        for i in range(m.nu):
            e = np.zeros(m.nu)
            e[i] = eps
            B[:, i] = (f(x0, u0 + e) - f(x0, u0 - e)) / (2 * eps)
        self.mj.mj_resetData(m, d)
        return A, B


class Pendulum(Plant):
    name = label = "InvertedPendulum-v5"
    steps, joints = 250, 2
    AMPLITUDE, PERIOD_S, FALL_COST = 0.25, 10.0, 1.0

    def __init__(self):
        super().__init__()
        A, B = self.linearise()
        self.K = dlqr(A, B, np.diag([30.0, 10.0, 0.1, 0.1]), np.eye(1) * 0.1)
        self.limit = self.model.actuator_ctrlrange[0, 1]

    def reference(self, t) -> float:
        return self.AMPLITUDE * np.sin(2 * np.pi * t * self.dt / self.PERIOD_S)

    def control(self, s, ahead):
        r = np.zeros(4)
        r[0] = self.reference(self.t + ahead)
        return np.clip(-self.K @ (s - r), -self.limit, self.limit)

    def failed(self):
        return not abs(self.data.qpos[1]) <= 0.2

    def error(self):
        return self.data.qpos[0] - self.reference(self.t)

    def success(self, errors, failed):
        return not failed


class Reacher(Plant):
    name = label = "Reacher-v5"
    steps, joints = 100, 2
    KP, KD = np.array([1.0, 0.6]), np.array([0.12, 0.06])
    LINKS = (0.1, 0.11)
    FALL_COST = 0.0

    def reset(self, rng):
        s = super().reset(rng)
        gx, gy = self.data.qpos[2], self.data.qpos[3]
        self.goal = np.array([gx, gy])
        l1, l2 = self.LINKS
        c2 = np.clip((gx * gx + gy * gy - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0)
        q2 = np.arccos(c2)
        q1 = np.arctan2(gy, gx) - np.arctan2(l2 * np.sin(q2), l1 + l2 * np.cos(q2))
        q1 = s[0] + (q1 - s[0] + np.pi) % (2 * np.pi) - np.pi      # the nearest turn
        self.target = np.array([q1, q2])
        return s

    def control(self, s, ahead):
        return np.clip(self.KP * (self.target - s[:2]) - self.KD * s[2:], -1.0, 1.0)

    def error(self):
        return float(np.linalg.norm(self.data.body("fingertip").xpos[:2] - self.goal))

    def success(self, errors, failed):
        return bool(np.max(errors[-10:]) < 0.02)


class ReacherPositions(Reacher):
    """The Reacher measured by its joint angles alone (no velocity sensor):
    the PD law's damping term differentiates its input, the predicted angles
    (the measurement, for the measurement contender)."""

    label = "Reacher-v5/angles"

    def __init__(self):
        super().__init__()
        self.n_state = 2

    def state(self):
        return self.data.qpos[:2].copy()

    def reset(self, rng):
        super().reset(rng)
        self.previous = None
        return self.state()

    def control(self, s, ahead):
        rate = np.zeros(2) if self.previous is None else (s - self.previous) / self.dt
        self.previous = s.copy()
        return np.clip(self.KP * (self.target - s) - self.KD * rate, -1.0, 1.0)


class Pusher(Plant):
    name = label = "Pusher-v5"
    steps, joints = 100, 7
    KP, KD = 2.0, 0.5
    FALL_COST = 0.0

    def __init__(self):
        super().__init__()
        r = self.model.jnt_range[:7]
        span = r[:, 1] - r[:, 0]
        self.low, self.high = r[:, 0] + 0.2 * span, r[:, 1] - 0.2 * span
        self.limit = self.model.actuator_ctrlrange[:, 1]

    def reset(self, rng):
        s = super().reset(rng)
        self.target = rng.uniform(self.low, self.high)
        return s

    def control(self, s, ahead):
        return np.clip(self.KP * (self.target - s[:7]) - self.KD * s[7:], -self.limit,
                       self.limit)

    def error(self):
        return float(np.sqrt(np.mean((self.data.qpos[:7] - self.target) ** 2)))

    def success(self, errors, failed):
        return bool(np.max(errors[-10:]) < 0.05)


PLANTS = {p.label: p for p in (Pendulum, Reacher, Pusher, ReacherPositions)}


# -- predictors ---------------------------------------------------------------

class Measurement:
    """Acts on the state as measured."""

    def __init__(self, plant, delay):
        pass

    def reset(self):
        pass

    def update(self, s):
        return s

    def command(self, u):
        pass


class Extrapolation(Measurement):
    """s_t + d (s_t - s_{t-1})."""

    def __init__(self, plant, delay):
        self.d, self.prev = delay, None

    def reset(self):
        self.prev = None

    def update(self, s):
        prev = s if self.prev is None else self.prev
        self.prev = s.copy()
        return s + self.d * (s - prev)


class RLS(Measurement):
    """Recursive least squares on [s_t, u_{t-d} ... u_{t-1}, 1] predicting
    s_{t+d} - s_t, with forgetting factor `lam` and a bounded covariance."""

    RIDGE = 1e-6

    def __init__(self, plant, delay, lam):
        from rtrl_edge.members import rls_update
        self._update = rls_update
        n, m = plant.n_state, plant.n_command
        self.n, self.d, self.lam = n, delay, lam
        f = self.f = n + delay * m + 1
        self.P, self.W = np.eye(f) / self.RIDGE, np.zeros((f, n))
        self.Px = np.zeros(f)
        self.flight = np.zeros((delay, m))
        self.ring = np.zeros((delay, f + n))          # features and state of t-d ... t-1
        self.seen = 0

    def reset(self):
        self.flight[...] = 0.0
        self.seen = 0

    def update(self, s):
        slot = self.seen % self.d
        if self.seen >= self.d:
            past = self.ring[slot]
            self._update(self.P, self.W, past[:self.f], s - past[self.f:], self.lam,
                         self.f / self.RIDGE, self.Px)
        phi = np.concatenate([s, self.flight.reshape(-1), [1.0]])
        self.ring[slot, :self.f], self.ring[slot, self.f:] = phi, s
        self.seen += 1
        self.flight[:-1] = self.flight[1:].copy()
        return s + phi @ self.W

    def command(self, u):
        self.flight[-1] = u


class Compensator(Measurement):
    """rtrl_edge.DelayCompensator with its defaults, or with `hidden` units
    per RNN member (0: its linear members alone); `weights`: its members'
    weights, the mean over the state channels."""

    def __init__(self, plant, delay, hidden=None, seed=0):
        from rtrl_edge import DelayCompensator
        self.comp = DelayCompensator(plant.n_state, plant.n_command, delay, seed=seed,
                                     hidden=hidden)

    def reset(self):
        self.comp.reset()

    def update(self, s):
        return self.comp.update(s)

    def command(self, u):
        self.comp.command(u)

    @property
    def weights(self):
        return self.comp.weights


class Oracle(Measurement):
    """The true simulator state, stepped forward with the commands in flight."""

    def __init__(self, plant, delay):
        self.plant = plant
        self.queue = None

    def update(self, s):
        return self.plant.simulate_ahead(self.queue)


CONTENDERS = {
    "measurement": Measurement,
    "extrapolation": Extrapolation,
    "RLS 0.99": lambda plant, d: RLS(plant, d, 0.99),
    "RLS 0.999": lambda plant, d: RLS(plant, d, 0.999),
    "DelayCompensator": Compensator,
    "DelayCompensator, hidden=0": lambda plant, d: Compensator(plant, d, hidden=0),
    "oracle": Oracle,
}
LINEAR = ("extrapolation", "RLS 0.99", "RLS 0.999")


def run_episodes(plant, predictor, delay, episodes, seed, timer=None):
    """Per episode: (success, tracking error); the predictor's time per
    step (update + command, ns) into `timer` (a list) if given."""
    import time
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        s = plant.reset(rng)
        queue = [np.zeros(plant.n_command) for _ in range(delay)]
        predictor.reset()
        if isinstance(predictor, Oracle):
            predictor.queue = queue
        errors, failed = [], False
        for _ in range(plant.steps):
            t0 = time.perf_counter_ns()
            s_hat = predictor.update(s)
            t1 = time.perf_counter_ns()
            u = plant.control(s_hat, delay)
            t2 = time.perf_counter_ns()
            predictor.command(u)
            if timer is not None:
                timer.append(t1 - t0 + time.perf_counter_ns() - t2)
            queue.append(u)
            s, failed = plant.step(queue.pop(0))
            errors.append(plant.error())
            if failed:
                break
        errors = np.asarray(errors, dtype=float)
        missed = plant.steps - len(errors)
        rms = np.sqrt((np.sum(errors ** 2) + missed * plant.FALL_COST ** 2) / plant.steps)
        out.append((bool(plant.success(np.abs(errors), failed)), float(rms)))
    return out
