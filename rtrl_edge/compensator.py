"""`DelayCompensator`: the predictor for a control loop whose commands reach
the plant `delay` steps after they are sent.

A command computed from the state measured at t lands at t + d.  The state
then is a function of the state now and of the d commands already in flight
(sent at t - d ... t - 1, landing at t ... t + d - 1), all known at t.  A
controller that acts on a prediction of that state instead of the
measurement works as if there were no delay (a Smith predictor, learnt).

It is a mixture (`rtrl_edge.mixture.Mixture`, the machinery of
`Forecaster.auto`) of predictors of s_{t+d} from s_t and the commands in
flight, weighted by `Hedge` on their recent error (each state channel
normalised by its own mean squared change over d steps, so positions and
velocities count alike):

  ============================  ==============================================
  no prediction                 s_t: acting on the measurement
  linear extrapolation          s_t + d (s_t - s_{t-1})
  RLS, memory ~1000/~100/~50    recursive least squares on
                                [s_t, u_{t-d} ... u_{t-1}, 1], raw values,
                                predicting s_{t+d} - s_t; the covariance is
                                bounded (plain forgetting blows up while the
                                inputs barely vary)
  RNN x 2 on the RLS residual   OnlineRNN (exact RTRL, Adam at two learning
                                rates) learning what the longest-memory RLS
                                misses: the plant's nonlinearity
  ============================  ==============================================

The linear members learn a plant's local dynamics within tens of samples, so
the mixture is good from the first seconds; the RNN members earn their
weight as they learn what is not linear.  Three memories because closed-loop
data cut both ways: a short memory follows a plant whose local dynamics
change as it moves (an arm), a long one keeps what it learnt while a
regulated plant sits still and its data say little (the samples are then
nearly collinear, and a short memory drifts).  The weights are per state
channel: the best member for a position need not be the best for a
velocity.

What is learnt, and when: every sample's state is the target of the
prediction made d samples earlier, and is learnt from when it arrives --
unless ``update(state, learn=False)``: the documented way to keep learning on
informative data is to pass an operating-region predicate there, e.g.
``learn=abs(angle) < 0.5`` for a pendulum that has fallen and lies on its
stop, where the dynamics are not the ones the controller needs.  The sample
still advances the state and is still scored, so the weights stay honest.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from . import planning
from .checkpoint import CheckpointError
from .members import Extrapolation, LastValue, LinearRLS, RNNMember
from .mixture import (Mixture, _check_vector, check_budgets, largest_hidden, measure_us,
                      rnn_member_net)

__all__ = ["DelayCompensator"]

_KIND = "rtrl_edge.DelayCompensator"
#: forgetting factors of the linear members (memory ~1/(1 - lam) samples)
LAMBDAS = (0.999, 0.99, 0.98)
#: prior of the linear members: raw values need a weak one to be free of units
RIDGE = 1e-6
#: Adam learning rates of the RNN members
RNN_LRS = (3e-4, 1e-3)
DEFAULT_HIDDEN = 16
_RLS = 2                          # index of the long-memory RLS member: the RNNs' base


def _positive_int(name, v, low=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


class DelayCompensator(Mixture):
    """Predicts the state of a plant at the time a command sent now lands.

    Parameters
    ----------
    n_state : int
        Width of the state the controller reads (positions, velocities, ...).
    n_command : int
        Width of the command it sends.
    delay : int
        Steps between sending a command and its reaching the plant (>= 1).
    seed : int
        Seed of the RNN members' initialisation.
    memory_bytes, step_us : optional
        Budgets: the RNN members are the largest that fit (`plan`'s formulas
        and cost model on this machine); none if none fits (the linear
        mixture), ValueError if not even that fits.
    hidden : int, optional
        Hidden units of each RNN member, instead of the budgets' choice
        (0: no RNN members).  Default 16.

    Per step: ``s_hat = comp.update(state)`` then ``comp.command(u)``::

        comp = DelayCompensator(n_state=4, n_command=1, delay=4)
        s = env_reset()
        for t in range(T):
            s_hat = comp.update(s)          # the state when u will land
            u = controller(s_hat)
            comp.command(u)                 # the command sent now
            s = plant_step(u)               # u reaches the plant 4 steps later

    ``comp.reset()`` at an episode's start (commands in flight: zero, or
    ``reset(in_flight=...)``); ``update(state, learn=False)`` for samples
    outside the region the controller works in (module doc); `save`/`load`
    keep everything; `weights` says which members carry the prediction.
    """

    _KIND = _KIND
    PER_CHANNEL = True
    #: The weights follow the last ~20 targets and one target costs a member
    #: at most 4x the last value's average: a linear member's wild first
    #: predictions (fitted on a handful of samples) are forgotten within the
    #: episode in which it becomes good, instead of hundreds of steps later.
    HEDGE_WINDOW = 20
    LOSS_CAP = 4.0
    #: head start in loss of each kind of member (see `_prior`)
    PRIOR = {"none": 3.0, "extrapolation": 3.0, "rls": 0.0, "rnn": 1.0}

    def __init__(self, n_state: int, n_command: int, delay: int, *, seed: int = 0,
                 memory_bytes: Optional[int] = None, step_us: Optional[float] = None,
                 hidden: Optional[int] = None):
        n, m, d = (_positive_int(k, v) for k, v in
                   (("n_state", n_state), ("n_command", n_command), ("delay", delay)))
        seed = _positive_int("seed", seed, 0)
        check_budgets(memory_bytes, step_us)
        if hidden is not None:
            if memory_bytes is not None or step_us is not None:
                raise ValueError("give either hidden or the budgets (memory_bytes, step_us), "
                                 "not both")
            hidden = _positive_int("hidden", hidden, 0)
        elif memory_bytes is None and step_us is None:
            hidden = DEFAULT_HIDDEN
        else:
            hidden = _fit_hidden(n, m, d, seed, memory_bytes, step_us)
        self.n_state, self.n_command, self.delay = n, m, d
        self.seed, self.hidden = seed, hidden
        self.members: List = [LastValue(n), Extrapolation(n, d)]
        self.names: List[str] = ["no prediction", "linear extrapolation"]
        for lam in LAMBDAS:
            self.members.append(LinearRLS(d * m, n, d, 1, lam=lam, ridge=RIDGE,
                                          standardise=False))
            self.names.append(f"RLS, memory ~{round(1 / (1 - lam))} steps")
        width = 2 * n + d * m                    # [RLS forecast, s_t, commands in flight]
        for i, lr in enumerate(RNN_LRS if hidden else ()):
            net = rnn_member_net(width, hidden, n, lr, seed * 16 + i)
            self.members.append(RNNMember(net, d, base=_RLS))
            self.names.append(f"RNN {hidden} on the RLS residual, lr {lr:g}")
        self._cmd = np.zeros((d, m))             # in flight: u_{t-d} ... u_{t-1}
        self._start(d * m, n, d)

    # -- per step ----------------------------------------------------------------

    def update(self, state, *, learn: bool = True) -> np.ndarray:
        """Take the state measured now (s_t), learn from it as the target of
        the prediction made `delay` steps ago (unless `learn` is False), and
        return the predicted state at t + delay given the commands in flight
        (a new float64 array of shape (n_state,)).

        Raises ValueError, changing nothing, for a state of the wrong shape
        or with non-finite values."""
        try:
            s = _check_vector(state, self.n_state, "state")
        except ValueError:
            self.counters["rejected"] += 1
            raise
        out = self._advance(self._cmd.reshape(-1), s, teach=bool(learn)).copy()
        # the next step's commands in flight: drop the one that has landed,
        # and hold the last one until `command` says what is sent now
        self._cmd[:-1] = self._cmd[1:].copy()
        return out

    def command(self, u) -> None:
        """Record the command sent now (it reaches the plant `delay` steps
        later).  Until it is called after an `update`, the command sent is
        taken to be the previous one (an actuator holds its last value).
        Raises ValueError, changing nothing, for a bad command."""
        try:
            u = _check_vector(u, self.n_command, "command")
        except ValueError:
            self.counters["rejected"] += 1
            raise
        self._cmd[-1] = u

    def reset(self, in_flight=None) -> None:
        """An episode's start (or any break in the stream): forget the
        pending predictions and the members' windows; what was learnt is
        kept.  The commands in flight become `in_flight` (shape
        (delay, n_command), oldest first), by default zero."""
        if in_flight is None:
            new = np.zeros_like(self._cmd)
        else:
            new = np.asarray(in_flight, dtype=np.float64)
            if new.shape != self._cmd.shape or not np.isfinite(new).all():
                raise ValueError(f"in_flight must be a finite array of shape "
                                 f"{self._cmd.shape} (delay, n_command), oldest first; got "
                                 f"shape {new.shape}")
        super().reset()
        self._cmd[...] = new

    def _prior(self) -> np.ndarray:
        """The linear members start with the weight: they learn a plant's
        local dynamics within a few dozen samples, while the RNN members
        start as noise and the first two rarely beat them after a delay."""
        kinds = ["none", "extrapolation"] + ["rls"] * len(LAMBDAS)
        kinds += ["rnn"] * (len(self.members) - len(kinds))
        return np.array([self.PRIOR[k] for k in kinds])

    @property
    def in_flight(self) -> np.ndarray:
        """The commands in flight for the next `update`, oldest first (a
        copy, shape (delay, n_command))."""
        return self._cmd.copy()

    # -- persistence ----------------------------------------------------------------

    def _arrays(self) -> Dict[str, np.ndarray]:
        arrays = super()._arrays()
        arrays["commands_in_flight"] = self._cmd
        return arrays

    def _config(self) -> dict:
        return dict(kind=_KIND, n_state=self.n_state, n_command=self.n_command,
                    delay=self.delay, seed=self.seed, hidden=self.hidden)

    @classmethod
    def _from_config(cls, config, file_size, where):
        sizes = [config[k] for k in ("n_state", "n_command", "delay", "hidden", "seed")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes) or \
                min(sizes[:3]) < 1 or min(sizes[3:]) < 0:
            raise ValueError(f"n_state, n_command, delay, hidden, seed = {sizes}")
        if estimate_bytes(*sizes[:4]) > 4 * file_size + (1 << 20):
            raise CheckpointError(f"{where} claims a compensator larger than the file")
        return cls(*sizes[:3], seed=sizes[4], hidden=sizes[3])

    def __repr__(self) -> str:
        return (f"DelayCompensator(n_state={self.n_state}, n_command={self.n_command}, "
                f"delay={self.delay}, hidden={self.hidden}, "
                f"memory_bytes={self.memory_bytes:,})")


def estimate_bytes(n_state: int, n_command: int, delay: int, hidden: int = DEFAULT_HIDDEN
                   ) -> int:
    """Bytes a DelayCompensator of this shape allocates, computed without
    building it (within a few hundred bytes of `memory_bytes`)."""
    n, d, x = n_state, delay, delay * n_command
    width = 2 * n + x
    rnn = len(RNN_LRS) * (
        planning.memory_bytes(width, hidden, n, learner="rtrl", optimizer="adam")
        + 4 * (2 * d * width + n) + 8 * width) if hidden else 0
    linear = len(LAMBDAS) * LinearRLS.bytes_for(x, n, d, 1)
    k = 2 + len(LAMBDAS) + (len(RNN_LRS) if hidden else 0)
    mixture = 8 * (d * k * n + 2 * d * n + 4 * k + 6 * (x + n) + 2 * n + 1 + d * n_command)
    return rnn + linear + mixture


def _fit_hidden(n: int, m: int, d: int, seed: int, memory_bytes, step_us) -> int:
    """The RNN members' hidden units for the budgets (0: none fits)."""
    base = DelayCompensator(n, m, d, seed=seed, hidden=0)
    base_us = 0.0
    if step_us is not None:
        scratch = DelayCompensator(n, m, d, seed=seed, hidden=0)
        rng = np.random.default_rng(0)

        def step(s, u):
            scratch.update(s)
            scratch.command(u)
        base_us = measure_us(step, rng.standard_normal((60, n)), rng.standard_normal((60, m)))
    hidden = largest_hidden(base.memory_bytes, base_us, 2 * n + d * m, n, d, len(RNN_LRS),
                            memory_bytes, step_us)
    return hidden or 0

