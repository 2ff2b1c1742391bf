# Compiled float32 kernels of rtrl_edge.
#
# Layers, bottom up:
#   1. `noexcept nogil` kernels over an `RNN*` (declared in _kernels.pxd):
#      input normalisation, the Elman forward pass, the exact RTRL sensitivity
#      update with the gradient contraction fused in, the readout gradient,
#      the optimisers and the divergence guard (its scheme: see "Divergence
#      guard" below).  They never allocate, never
#      raise and never touch a Python object; they report through a status.
#   2. `rnn_step`: one sample, composing the kernels.
#   3. `Core`: an extension type that owns the two arenas (all memory of one
#      model, allocated once in __cinit__), checks every input at the
#      boundary and makes exactly one call into layer 2 per sample.
#   4. `rtrl_edge.model.OnlineRNN`: the Python API, holding a `Core`.
#
# Mathematics: DESIGN §3.1 (Elman cell) and §3.2 (exact RTRL, Williams &
# Zipser 1989); notation n hidden units, m inputs, o outputs, K = n + m + 1.

from libc.math cimport tanhf, sqrt, isfinite, pow, ldexp, exp, log, floor
from libc.string cimport memcpy, memset

from rtrl_edge._types cimport *
from rtrl_edge._parts cimport parts_total, run_parts
from rtrl_edge._rtrl cimport part_scratch, sens_columns
from rtrl_edge._learners cimport (snap1_update, snap2_update, uoro_update, tbptt_update,
                                  reset_learner)
from rtrl_edge._diag cimport diag_forward, diag_traces
from rtrl_edge._gru cimport gru_forward, gru_advance

import os
import time

import numpy as np
cimport numpy as cnp

cnp.import_array()

CELLS = {"elman": CELL_ELMAN, "diag": CELL_DIAG, "gru": CELL_GRU}
LOSSES = {"mse": LOSS_MSE, "softmax": LOSS_SOFTMAX}
LEARNERS = {"rtrl": LEARNER_RTRL, "snap1": LEARNER_SNAP1, "snap2": LEARNER_SNAP2,
            "uoro": LEARNER_UORO, "tbptt": LEARNER_TBPTT}
OPTIMIZERS = {"sgd": OPT_SGD, "momentum": OPT_MOMENTUM, "adam": OPT_ADAM}

cdef enum:
    # Release the GIL around a step when it does at least this many
    # multiply-adds (releasing and retaking it costs ~0.1 us).
    GIL_RELEASE_MACS = 200000
    # With threads > 1, the Elman cell's O(n K) passes (forward, SnAp-1 and
    # UORO traces, optimiser step) are split too from this many parameters
    # on: below it three hand-offs per step cost more than they save
    # (benchmarks/bench_learners.py, "threads").
    SPLIT_MIN_PARAMS = 65536

# The divergence guard's constants (documented at "Divergence guard" below).
cdef enum:
    GUARD_SLOW = 1024        # window of loss_slow, in learning steps
    GUARD_PATIENCE = 16      # consecutive alarms that trip the guard
    GUARD_EVERY = 64         # calm updates between refreshes of `good`
    GUARD_REGROW = 8192      # alarm-free updates that take back one halving of lr
    GUARD_MAX_BACKOFF = 160  # at most this many halvings (2**-160: lr is dead)
cdef double GUARD_FAST = 1.0 / 16.0      # weight of loss_fast and base_fast
cdef double GUARD_FACTOR = 30.0          # alarm: loss_fast above this times the scale
cdef double GUARD_CALM = 4.0             # `good` is refreshed only below this times it
cdef double GUARD_MOVED = 1e-3           # a trip recovers if ||theta - good|| > this ||good||
cdef double GUARD_FLOOR = 1e-6           # least scale, in the loss's units
cdef double GUARD_MAX_NORM = 16777216.0  # 2**24: bound on ||theta||_2

GUARD = dict(fast=GUARD_FAST, slow=GUARD_SLOW, factor=GUARD_FACTOR, calm=GUARD_CALM,
             floor=GUARD_FLOOR, moved=GUARD_MOVED,

             patience=GUARD_PATIENCE, every=GUARD_EVERY, regrow=GUARD_REGROW,
             max_norm=GUARD_MAX_NORM, max_backoff=GUARD_MAX_BACKOFF)


# --------------------------------------------------------------------------
# 1. kernels
# --------------------------------------------------------------------------

cdef inline void normalise_input(RNN *s, bint update) noexcept nogil:
    """z[n:n+m] = input x_in, normalised by running mean/variance if enabled.

    The statistics forget with weight alpha = 1/min(count, window): an exact
    running mean/variance for the first `window` samples, an exponential one
    afterwards, so a drifting sensor keeps being centred.
    """
    cdef int j
    cdef double alpha, d
    cdef float *zx = s.z + s.n
    if not s.normalize:
        memcpy(zx, s.x_in, s.m * sizeof(float))
        return
    if update:
        s.counts[0] += 1.0
        alpha = 1.0 / (s.counts[0] if s.counts[0] < s.norm_window else s.norm_window)
        for j in range(s.m):
            d = s.x_in[j] - s.x_mean[j]
            s.x_mean[j] += alpha * d
            s.x_var[j] = (1.0 - alpha) * (s.x_var[j] + alpha * d * d)
    for j in range(s.m):
        zx[j] = <float>((s.x_in[j] - s.x_mean[j]) / sqrt(s.x_var[j] + s.norm_eps))


cdef inline void elman_rows(RNN *s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """h = tanh(W z), dphi = 1 - h^2 for units [lo, hi)."""
    cdef Py_ssize_t i
    cdef float v
    s.simd.matvec(s.theta + lo * s.K, s.K, s.z, <int>(hi - lo), s.K, s.h + lo)
    for i in range(lo, hi):
        v = tanhf(s.h[i])
        s.h[i] = v
        s.dphi[i] = 1.0 - v * v


cdef void elman_part(void *arg, int part, int parts) noexcept nogil:
    """One share of the units of the forward pass (a task of the model's pool)."""
    cdef RNN *s = <RNN *>arg
    cdef Py_ssize_t lo, hi
    rtrl_pool_share(s.n, 1, part, parts, &lo, &hi)
    elman_rows(s, lo, hi)


cdef inline void elman_forward(RNN *s) noexcept nogil:
    """z = [h_prev; x; 1], h = tanh(W z), dphi = 1 - h^2 (DESIGN §3.1); with
    `split_passes` the units are shared among the model's threads (each
    unit's row alone: the same result)."""
    memcpy(s.z, s.h, s.n * sizeof(float))
    s.z[s.K - 1] = 1.0
    if s.split_passes:
        run_parts(s, elman_part, False)
    else:
        elman_rows(s, 0, s.n)


cdef inline void forward(RNN *s) noexcept nogil:
    """The cell, then the linear readout yn = W_out feat + b_out."""
    cdef int n = s.n, o = s.o, q
    cdef const float *w_out = s.theta + s.n_core
    cdef const float *b_out = w_out + o * n
    if s.cell == CELL_ELMAN:
        elman_forward(s)
    elif s.cell == CELL_GRU:
        gru_forward(s)
    else:
        diag_forward(s)
    s.simd.matvec(w_out, n, s.feat, o, n, s.yn)
    for q in range(o):
        s.yn[q] += b_out[q]


cdef inline bint state_is_finite(RNN *s) noexcept nogil:
    cdef int i
    cdef bint ok = True
    for i in range(s.n):
        ok &= isfinite(s.h[i])
    for i in range(s.o):
        ok &= isfinite(s.yn[i])
    return ok


cdef inline double log_partition(RNN *s) noexcept nogil:
    """log sum_q exp(yn[q]), computed stably (the max subtracted first)."""
    cdef int q
    cdef double mx = s.yn[0], total = 0.0
    for q in range(1, s.o):
        if s.yn[q] > mx:
            mx = s.yn[q]
    for q in range(s.o):
        total += exp(<double>s.yn[q] - mx)
    return mx + log(total)


cdef inline void denormalise_output(RNN *s, float *yhat_out) noexcept nogil:
    """Prediction in the target's own units; class probabilities
    softmax(yn) for the softmax loss."""
    cdef int q
    cdef double logz
    if s.loss == LOSS_SOFTMAX:
        logz = log_partition(s)
        for q in range(s.o):
            yhat_out[q] = <float>exp(<double>s.yn[q] - logz)
        return
    if not s.normalize:
        memcpy(yhat_out, s.yn, s.o * sizeof(float))
        return
    for q in range(s.o):
        yhat_out[q] = <float>(s.y_mean[q] + sqrt(s.y_var[q] + s.norm_eps) * s.yn[q])


cdef inline double softmax_error(RNN *s) noexcept nogil:
    """DESIGN §3.9: p = softmax(yn), e = p sum(y) - y; returns the loss
    -sum_q y[q] log p[q] and sets s.last_base = sum(y) log(o), the loss of
    predicting every class equally likely (the guard's yardstick)."""
    cdef int q
    cdef double logz = log_partition(s), total = 0.0, loss = 0.0
    for q in range(s.o):
        total += s.y_in[q]
    for q in range(s.o):
        s.e[q] = <float>(exp(<double>s.yn[q] - logz) * total - s.y_in[q])
        loss += s.y_in[q] * (logz - s.yn[q])
    s.last_base = total * log(<double>s.o)
    return loss


cdef inline double output_error(RNN *s, bint update) noexcept nogil:
    """e = dL/dyn, c = dL/dh (W_out^T e, times tanh' of the readout for the
    diag cell); returns the loss.  Squared loss: e = yn - y (normalised),
    loss 0.5*||e||^2, s.last_base = 0.5*||y||^2 (y normalised): the loss of
    predicting zero (the running mean), the divergence guard's yardstick.
    Softmax: `softmax_error` (targets are never normalised)."""
    cdef int n = s.n, o = s.o, q, k
    cdef double alpha, d, loss = 0.0, base = 0.0, target
    cdef const float *w_out = s.theta + s.n_core
    if s.loss == LOSS_SOFTMAX:
        loss = softmax_error(s)
        o = 0                           # skips the squared loss below
    elif s.normalize and update:
        s.counts[1] += 1.0
        alpha = 1.0 / (s.counts[1] if s.counts[1] < s.norm_window else s.norm_window)
        for q in range(o):
            d = s.y_in[q] - s.y_mean[q]
            s.y_mean[q] += alpha * d
            s.y_var[q] = (1.0 - alpha) * (s.y_var[q] + alpha * d * d)
    for q in range(o):
        target = s.y_in[q]
        if s.normalize:
            target = (target - s.y_mean[q]) / sqrt(s.y_var[q] + s.norm_eps)
        s.e[q] = <float>(s.yn[q] - target)
        loss += 0.5 * <double>s.e[q] * s.e[q]
        base += 0.5 * target * target
    if s.loss == LOSS_MSE:
        s.last_base = base
    memset(s.c, 0, n * sizeof(float))
    o = s.o
    for q in range(o):
        for k in range(n):
            s.c[k] += w_out[q * n + k] * s.e[q]
    if s.cell == CELL_DIAG:
        for k in range(n):
            s.c[k] *= 1.0 - s.feat[k] * s.feat[k]
    return loss


cdef void rtrl_part(void *arg, int part, int parts) noexcept nogil:
    """Exact RTRL sensitivity update of one share of the columns of P, in
    place, with the gradient fused in (a task of the model's thread pool):

    P[k, i*K + j] <- dphi[k] * (sum_l W_rec[k, l] P[l, i*K + j] + delta_ki z[j])
    grad_W[i, j]   = sum_k c[k] P[k, i*K + j]           (only if contract)

    (Williams & Zipser 1989; DESIGN §3.2.)  `sens_columns` (_rtrl.pxd) runs
    the register-blocked product and the fused scaling and contraction one
    column slice at a time (_tile.h, at the CPU's vector width); the
    delta_ki z[j] term is added after.  Scratch: one n4 x RTRL_MAX_TILE block
    per part, not a second P.
    """
    cdef RNN *s = <RNN *>arg
    cdef int n = s.n, K = s.K, k
    cdef Py_ssize_t lo, hi, a, b, j
    cdef bint contract = s.task_contract
    cdef float d, ck, v
    cdef float *row
    rtrl_pool_share(s.ldp, RTRL_MAX_VL, part, parts, &lo, &hi)
    sens_columns(s, s.theta, K, lo, hi, part_scratch(s, part), contract)
    # the delta_ki z[j] term lands on columns [k*K, k*K + K) of row k
    for k in range(n):
        a = k * K if k * K > lo else lo
        b = k * K + K if k * K + K < hi else hi
        if a >= b:
            continue
        d = s.dphi[k]
        ck = s.c[k] if contract else 0.0
        row = s.P + k * s.ldp
        for j in range(a, b):
            v = d * s.z[j - k * K]
            row[j] += v
            if contract:
                s.grad[j] += ck * v


cdef inline void readout_gradient(RNN *s) noexcept nogil:
    """grad W_out = e feat^T, grad b_out = e; masked recurrent weights (of
    W_rec, or of each of the GRU's three W_hh blocks) get 0."""
    cdef int n = s.n, o = s.o, K = s.K, q, k, i, g
    cdef float *g_out = s.grad + s.n_core
    cdef float *row
    cdef const float *keep
    for q in range(o):
        for k in range(n):
            g_out[q * n + k] = s.e[q] * s.feat[k]
        g_out[o * n + q] = s.e[q]
    # snap2 never writes a masked entry; the other learners' are zeroed here
    if s.mask != NULL and s.learner != LEARNER_SNAP2:
        for g in range(3 if s.cell == CELL_GRU else 1):
            for i in range(n):
                if s.cell == CELL_GRU:      # W_hh after W_ih (3n x m)
                    row = s.grad + 3 * <Py_ssize_t>n * s.m + <Py_ssize_t>(g * n + i) * n
                else:
                    row = s.grad + i * K
                keep = s.mask + i * n
                for k in range(n):
                    row[k] *= keep[k]


cdef void advance(RNN *s, bint contract) noexcept nogil:
    """The learner's sensitivity update; with `contract`, also the gradient of
    the current loss for the cell's own parameters (grad[:n_core])."""
    s.core_sumsq_known = False     # set again by a learner that sums as it writes
    if s.cell == CELL_DIAG:
        diag_traces(s, contract)
    elif s.cell == CELL_GRU:
        gru_advance(s, contract)
    elif s.learner == LEARNER_RTRL:
        run_parts(s, rtrl_part, contract)
    elif s.learner == LEARNER_SNAP1:
        snap1_update(s, contract)
    elif s.learner == LEARNER_SNAP2:
        snap2_update(s, contract)
    elif s.learner == LEARNER_UORO:
        uoro_update(s, contract)
    else:
        tbptt_update(s, contract)


# --------------------------------------------------------------------------
# Divergence guard (DESIGN §3.8)
#
# A diverging model need not go non-finite: with sgd at lr = 1e3 the weights
# grow huge but finite, and a restore point that follows every finite update
# follows them there (the guard used to undo 19,994 of 20,000 updates and
# leave the outputs near 1e20).  So the restore point is a state known to be
# healthy, finite blow-ups are detected, and each one halves the step.
#
# * Loss scale.  Each learning step feeds the guard its loss L (normalised
#   units with normalize=True, the targets' own otherwise) and B = 0.5*||y||^2,
#   the loss of predicting zero (the running mean, when normalised), on the
#   same target:
#       loss_fast = EMA of L,  base_fast = EMA of B     weight GUARD_FAST = 1/16
#       loss_slow = EMA of min(L, scale)                weight 1/GUARD_SLOW = 1/1024
#       scale     = max(loss_slow, base_fast, GUARD_FLOOR = 1e-6)
#   loss_slow starts at the first loss (an untrained model's), follows the
#   loss down and never above the scale, and is frozen during alarms: a loss
#   that creeps or shoots up cannot raise its own bar.  base_fast follows the
#   signal's scale, so the test holds in any units and through a change of
#   amplitude.
# * Alarm and trip.  A step is an alarm when loss_fast > GUARD_FACTOR (30) x
#   scale: thirty times worse than both the model's record and a prediction of
#   zero on the same recent targets (healthy runs of every learner on the
#   shipped recording stay below 10, never twice in a row above it).
#   GUARD_PATIENCE (16) consecutive alarms, or a non-finite loss, trip it
#   (`guard_trip`): if learning has moved theta since the restore point (by
#   more than GUARD_MOVED = 1e-3 x ||good||), that is a blow-up: recover.  If
#   not, going back would change nothing -- the restore point does as badly on
#   the present data, and the step is already too small to move it -- so the
#   present loss becomes the record (`rebaselines`; nothing else changes).
#   Without this, a model that only worked while it learnt fast would be sent
#   back to the same point, its step halved, again and again.
# * Parameter bound.  ||theta||_2 > GUARD_MAX_NORM = 2**24 (~1.7e7: beyond it
#   a float32 weight cannot move by less than 1) after an update, or a
#   non-finite parameter or state, is a blow-up at once.  The sum of squares
#   is the one the finiteness check after every update computes anyway (in
#   float32 lanes: a sum past ~3e38 reads as inf, past the bound as well).
# * Non-finite gradient.  Once, it is the learner's (UORO's rank-one factors
#   can overflow, or a target is extreme): the update is skipped and state,
#   sensitivities and moments are reset, parameters and lr kept.  A second one
#   within GUARD_EVERY updates is a blow-up.
# * Restore point.  `good` is refreshed, with the parameters of that moment and
#   before its update, only after a whole interval of GUARD_EVERY (64) updates
#   in which loss_fast stayed within GUARD_CALM (4) x scale: parameters that
#   have just produced a calm loss, with a margin below the alarm.  It is at
#   most a few intervals old, and copying it costs 1/64 of a pass over theta
#   per update (it used to be a whole pass).
# * Recovery (`recover`): theta = good exactly; state, sensitivities and
#   optimiser moments reset; `recoveries` counts it; lr_backoff += 1.  Updates
#   use lr * 2**-lr_backoff, so repeated blow-ups halve the step until it is
#   stable: about log2(lr / largest stable lr) recoveries.  One halving comes
#   back after GUARD_REGROW (8192) updates without an alarm, so that a one-off
#   event does not slow learning for ever; an lr that really is too large costs
#   about one more recovery per 8192 updates.  lr_backoff is state (saved).
#
# Healthy runs never trip it (tests/test_guard.py); `gradient()` does not
# involve it.  A fall of an unnormalised target's level by orders of
# magnitude, with the inputs unchanged, looks like a blow-up to it: use
# normalize=True for such signals.
# --------------------------------------------------------------------------

cdef void reset_learning(RNN *s) noexcept nogil:
    """Forget state, sensitivities and optimiser moments; count a recovery."""
    cdef Py_ssize_t p = s.n_params
    rnn_reset_state(s)
    if s.m1 != NULL:
        memset(s.m1, 0, p * sizeof(float))
    if s.m2 != NULL:
        memset(s.m2, 0, p * sizeof(float))
    s.opt_t = 0
    s.recoveries += 1
    s.guard_dirty = True


cdef void recover(RNN *s) noexcept nogil:
    """Restore the last good parameters, reset_learning, and halve the
    learning rate."""
    memcpy(s.theta, s.good, s.n_params * sizeof(float))
    reset_learning(s)
    if s.lr_backoff < GUARD_MAX_BACKOFF:
        s.lr_backoff += 1
    s.alarm = 0
    s.loss_fast = s.loss_slow
    s.guard_dirty = False
    s.since_good = 0
    s.calm = 0


cdef bint guard_observe(RNN *s) noexcept nogil:
    """Feed this step's loss (s.last_loss, s.last_base) to the guard; True
    when it trips: GUARD_PATIENCE consecutive alarms, or a non-finite loss."""
    cdef double loss = s.last_loss, scale
    if not isfinite(loss):
        return True
    s.guard_n += 1
    if s.guard_n == 1:
        s.loss_fast = loss
        s.loss_slow = loss
        s.base_fast = s.last_base
        return False
    s.loss_fast += GUARD_FAST * (loss - s.loss_fast)
    s.base_fast += GUARD_FAST * (s.last_base - s.base_fast)
    scale = s.loss_slow if s.loss_slow > s.base_fast else s.base_fast
    if scale < GUARD_FLOOR:
        scale = GUARD_FLOOR
    if s.loss_fast > GUARD_CALM * scale:
        s.guard_dirty = True          # not calm enough to become the restore point
    if s.loss_fast > GUARD_FACTOR * scale:
        s.alarm += 1
        s.calm = 0
        return s.alarm >= GUARD_PATIENCE
    s.alarm = 0
    # The record takes in the loss clipped at the scale: it follows the loss
    # down, but never rises above the scale, so a loss that creeps up cannot
    # raise its own bar.
    s.loss_slow += ((loss if loss < scale else scale) - s.loss_slow) / <double>GUARD_SLOW
    return False


cdef int guard_trip(RNN *s) noexcept nogil:
    """A sustained loss blow-up.  If learning has moved the parameters since
    the restore point (by more than GUARD_MOVED x ||good||), recover.  If it
    has not -- they are still the restore point's, the learning rate is too
    small to move them -- going back would change nothing: the restore point
    itself does this badly on the present data.  Then the guard takes the
    present loss as its record (`rebaselines`) and nothing else changes."""
    cdef Py_ssize_t i
    cdef double d, d2 = 0.0, g2 = 0.0
    for i in range(s.n_params):        # one pass, only when the guard trips
        d = <double>s.theta[i] - s.good[i]
        d2 += d * d
        g2 += <double>s.good[i] * s.good[i]
    if not isfinite(s.last_loss) or not d2 <= GUARD_MOVED * GUARD_MOVED * g2:
        recover(s)
        return STATUS_RECOVERED
    s.loss_slow = s.loss_fast
    s.alarm = 0
    s.guard_dirty = True
    s.rebaselines += 1
    return STATUS_OK


cdef double optimiser_step(RNN *s, Py_ssize_t lo, Py_ssize_t hi, int *finite) noexcept nogil:
    """The optimiser's step on parameters [lo, hi), its constants in s.task_f
    (set by apply_update); returns the new parameters' sum of squares."""
    cdef Py_ssize_t n = hi - lo
    if s.optimizer == OPT_SGD:
        return s.simd.step_sumsq(s.theta + lo, s.task_f[0], s.grad + lo, n, finite)
    if s.optimizer == OPT_MOMENTUM:
        s.simd.scale_add(s.m1 + lo, s.beta1, s.grad + lo, s.task_f[0], n)
        return s.simd.step_sumsq(s.theta + lo, s.task_f[1], s.m1 + lo, n, finite)
    return s.simd.adam(s.theta + lo, s.m1 + lo, s.m2 + lo, s.grad + lo, n, s.task_f[0],
                       s.beta1, s.beta2, s.task_f[1], s.task_f[2], finite)


cdef void optimiser_part(void *arg, int part, int parts) noexcept nogil:
    """One share of the parameters of `optimiser_step` (a task of the pool)."""
    cdef RNN *s = <RNN *>arg
    cdef Py_ssize_t lo, hi
    rtrl_pool_share(s.n_params, RTRL_MAX_VL, part, parts, &lo, &hi)
    s.part_sum[part] = optimiser_step(s, lo, hi, &s.part_ok[part])


cdef int apply_update(RNN *s) noexcept nogil:
    """Refresh the restore point if due, clip by global norm, take one
    optimiser step at lr * 2**-lr_backoff; recover if the gradient or the new
    parameters are not finite or the parameters leave the bound."""
    cdef Py_ssize_t p = s.n_params
    cdef double norm2, scale = 1.0, bc1, bc2
    cdef double lr = ldexp(s.lr, -<int>s.lr_backoff)
    cdef int finite
    if s.core_sumsq_known:       # the learner summed the core block as it wrote it
        norm2 = s.core_sumsq + s.simd.sumsq(s.grad + s.n_core, p - s.n_core, &finite)
        finite = finite and s.core_finite
        s.core_sumsq_known = False
    else:
        norm2 = s.simd.sumsq(s.grad, p, &finite)
    if not finite or not isfinite(norm2):
        # the sensitivities overflowed (or the target is extreme): once, that
        # is the learner's, whose state is reset; twice within GUARD_EVERY
        # updates, it is the parameters'
        if s.since_bad < GUARD_EVERY:
            recover(s)
        else:
            reset_learning(s)
        s.since_bad = 0
        return STATUS_RECOVERED
    if s.since_good >= GUARD_EVERY:
        # a whole calm interval, this step's loss included
        if not s.guard_dirty:
            memcpy(s.good, s.theta, p * sizeof(float))
        s.since_good = 0
        s.guard_dirty = False
    if s.clip > 0 and norm2 > <double>s.clip * s.clip:
        scale = s.clip / sqrt(norm2)
    # the step and the check of its result in one pass (momentum: two)
    if s.optimizer == OPT_SGD:
        s.task_f[0] = <float>(-lr * scale)
    elif s.optimizer == OPT_MOMENTUM:
        s.task_f[0] = <float>scale
        s.task_f[1] = <float>-lr
    else:  # Adam (Kingma & Ba 2015), bias-corrected step size
        s.opt_t += 1
        bc1 = 1.0 - pow(s.beta1, <double>s.opt_t)
        bc2 = 1.0 - pow(s.beta2, <double>s.opt_t)
        s.task_f[0] = <float>scale
        s.task_f[1] = <float>(lr * sqrt(bc2) / bc1)
        s.task_f[2] = <float>(s.adam_eps * sqrt(bc2))
    if s.split_passes:
        norm2 = parts_total(s, run_parts(s, optimiser_part, False), &finite)
    else:
        norm2 = optimiser_step(s, 0, p, &finite)
    if not finite or not norm2 <= GUARD_MAX_NORM * GUARD_MAX_NORM:
        recover(s)
        return STATUS_RECOVERED
    s.updates += 1
    s.since_good += 1
    s.since_bad += 1
    s.calm += 1
    if s.calm >= GUARD_REGROW:
        s.calm = 0
        if s.lr_backoff > 0:
            s.lr_backoff -= 1
    return STATUS_OK


# --------------------------------------------------------------------------
# 2. one sample
# --------------------------------------------------------------------------

cdef void rnn_reset_state(RNN *s) noexcept nogil:
    memset(s.h, 0, s.n * sizeof(float))
    reset_learner(s)
    s.traces_stale = False


cdef int checked_forward(RNN *s) noexcept nogil:
    """Forward pass.  A non-finite state or prediction means the parameters
    went wrong (or a write into them, or an extreme input): recover (restore
    the last good parameters, reset) and compute once more."""
    forward(s)
    if state_is_finite(s):
        return STATUS_OK
    recover(s)
    forward(s)
    if state_is_finite(s):
        return STATUS_RECOVERED
    rnn_reset_state(s)
    return STATUS_POISONED


cdef int rnn_step(RNN *s, bint has_y, bint learn, float *yhat_out) noexcept nogil:
    """One sample: predict from x_in; if `learn`, advance the sensitivities;
    if also `has_y`, take one update towards y_in.  Returns STATUS_* bits."""
    cdef unsigned int fpu = rtrl_fpu_enter()
    cdef int status
    normalise_input(s, learn)      # inference does not move the statistics
    status = checked_forward(s)
    denormalise_output(s, yhat_out)
    s.steps += 1
    if status == STATUS_POISONED:
        rtrl_fpu_leave(fpu)
        return status
    if learn:
        if s.traces_stale:
            reset_learner(s)
            s.traces_stale = False
            s.trace_resets += 1
        if has_y:
            s.last_loss = output_error(s, True)
            if guard_observe(s):       # a sustained blow-up: no update from it
                status |= guard_trip(s)
            else:
                advance(s, True)
                readout_gradient(s)
                status |= apply_update(s)
        else:
            advance(s, False)
    else:
        s.traces_stale = True
    rtrl_fpu_leave(fpu)
    return status


cdef void rnn_forward_only(RNN *s, float *yhat_out) noexcept nogil:
    rnn_step(s, False, False, yhat_out)


cdef void rnn_accumulate(RNN *s, double *acc, bint labelled) noexcept nogil:
    """One step of the fixed-parameter gradient: statistics frozen, no update,
    acc += d L_t / d theta (nothing without a label: the state and the
    sensitivities advance only)."""
    cdef Py_ssize_t i
    normalise_input(s, False)
    forward(s)
    if not labelled:
        advance(s, False)
        return
    s.last_loss = output_error(s, False)
    advance(s, True)
    readout_gradient(s)
    for i in range(s.n_params):
        acc[i] += s.grad[i]


# --------------------------------------------------------------------------
# 3. the extension type that owns the memory
# --------------------------------------------------------------------------

def product_isa():
    """Instruction set of the sensitivity kernels on this CPU ("base" is the
    portable 4-wide version), unless RTRL_EDGE_ISA says otherwise."""
    forced = os.environ.get("RTRL_EDGE_ISA", "")
    return forced if forced else rtrl_kernels_best().name.decode()


def fma_peak(isa=None, long rounds=2000000, float a=0.9999, float b=1e-4):
    """(flops, seconds, checksum) of the register-only multiply-add loop of
    `isa`'s kernels ("base", "avx2", "avx512"; default: the best this CPU
    runs): independent chains acc = acc * a + b, no memory traffic, the
    core's peak multiply-add rate at that vector width.  `benchmarks/
    bench_step.py` divides the n^4 term's flops per second by it.  The
    checksum is the sum of the chains (each tends to b / (1 - a))."""
    cdef const rtrl_kernels *k = rtrl_kernels_best() if isa is None else \
        rtrl_kernels_named(str(isa).encode())
    if k == NULL:
        raise ValueError(f"instruction set {isa!r} is not available on this CPU or build")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    cdef float out
    cdef long long t0, t1
    t0 = time.perf_counter_ns()
    with nogil:
        out = k.peak(rounds, a, b)
    t1 = time.perf_counter_ns()
    return float(k.peak_flops) * rounds, (t1 - t0) * 1e-9, float(out)


cdef const rtrl_kernels *choose_kernels() except NULL:
    """The kernels for this CPU, or the ones RTRL_EDGE_ISA names ("base": the
    portable 4-wide version, "avx2", "avx512"); read when a model is built."""
    cdef const rtrl_kernels *k
    forced = os.environ.get("RTRL_EDGE_ISA", "")
    if not forced:
        return rtrl_kernels_best()
    k = rtrl_kernels_named(forced.encode())
    if k == NULL:
        raise ValueError(f"RTRL_EDGE_ISA={forced!r} is not available on this CPU or build; "
                         f"use base, avx2 or avx512 (x86-64), or leave it unset")
    return k


cdef class Core:
    """All memory and compiled state of one model.

    Constructed once; afterwards no method that runs per sample allocates
    anything but its returned prediction.  `buffers` maps a name to a numpy
    view of each buffer (the Python side builds `params` from these).
    """

    cdef RNN s
    cdef readonly list arenas
    cdef readonly dict buffers
    cdef readonly dict kinds
    cdef readonly long long rejected
    cdef bint release_gil

    def __cinit__(self, dict cfg, list layout):
        """cfg: sizes and settings (see model.OnlineRNN._core_config); layout:
        the `_layout.Buffer` list to allocate, one arena per dtype."""
        cdef RNN *s = &self.s
        cdef Py_ssize_t n = cfg["n_hidden"], m = cfg["n_in"], o = cfg["n_out"]
        cdef Py_ssize_t off
        cdef cnp.ndarray arena
        memset(s, 0, sizeof(RNN))
        s.n, s.m, s.o, s.K = n, m, o, n + m + 1
        s.cell = CELLS[cfg["cell"]]
        s.learner = LEARNERS[cfg["learner"]]
        s.loss = LOSSES[cfg["loss"]]
        s.optimizer = OPTIMIZERS[cfg["optimizer"]]
        s.lr, s.beta1, s.beta2 = cfg["lr"], cfg["beta1"], cfg["beta2"]
        s.adam_eps, s.clip = cfg["adam_eps"], cfg["clip"] or 0.0
        s.normalize, s.norm_window, s.norm_eps = cfg["normalize"], cfg["norm_window"], 1e-8
        s.since_bad = GUARD_EVERY
        s.window = cfg["window"] or 0
        s.ring_width = 5 * n if s.cell == CELL_GRU else n
        if s.cell == CELL_ELMAN:
            s.n_core = n * s.K
        elif s.cell == CELL_GRU:
            s.n_core = 3 * n * (n + m + 2)
        else:
            s.n_core = n * (m + 2)
        s.n_params = s.n_core + o * n + o
        s.simd = choose_kernels()
        # Release the GIL only where a step is long enough to be worth it.
        self.release_gil = (s.cell != CELL_DIAG and s.learner == LEARNER_RTRL
                            and n * n * s.n_core >= GIL_RELEASE_MACS)

        # One arena per dtype; float32 first buffer on a 64-byte boundary.
        self.arenas, self.buffers, self.kinds = [], {}, {}
        for dtype in ("f4", "f8", "i8"):
            bufs = [b for b in layout if b.dtype == dtype]
            slack = RTRL_MAX_VL if dtype == "f4" else 0
            arena = np.zeros(sum(b.size for b in bufs) + slack, dtype=dtype)
            off = ((64 - (<size_t>cnp.PyArray_DATA(arena)) % 64) % 64) // 4 if slack else 0
            for b in bufs:
                self.buffers[b.name] = arena[off:off + b.size]
                self.kinds[b.name] = b.kind
                off += b.size
            self.arenas.append(arena)
        self.buffers["x_var"][:] = 1.0   # identity until data arrive
        self.buffers["y_var"][:] = 1.0

        for name in ("P", "traces", "J", "P_blocks"):
            if name in self.buffers:
                s.P = self._ptr32(name)
                s.p_size = self.buffers[name].size
        if "P" in self.buffers:
            s.ldp = self.buffers["P"].size // n
        s.theta = self._ptr32("theta")
        s.grad = self._ptr32("grad")
        s.good = self._ptr32("good")
        s.m1 = self._ptr32("m1")
        s.m2 = self._ptr32("m2")
        s.mask = self._ptr32("mask")
        s.has_mask = s.mask != NULL
        s.h = self._ptr32("h")
        s.uh = self._ptr32("uoro_h")
        s.ut = self._ptr32("uoro_theta")
        s.rng = self._ptr64i("rng")
        s.ring_z = self._ptr32("ring_z")
        s.ring_d = self._ptr32("ring_d")
        s.ring = self._ptr64i("ring")
        s.s_off = self._ptr64i("s_off")
        s.s_idx = self._ptr64i("s_idx")
        s.c_off = self._ptr64i("c_off")
        s.c_idx = self._ptr64i("c_idx")
        s.p_off = self._ptr64i("p_off")
        s.ld = self._ptr64i("ld")
        s.z = self._ptr32("z")
        # Elman and GRU read out h itself; the diag cell reads out tanh(h)
        s.feat = self._ptr32("feat") if s.cell == CELL_DIAG else s.h
        s.dphi = self._ptr32("dphi")
        s.c = self._ptr32("c")
        s.yn = self._ptr32("yn")
        s.e = self._ptr32("e")
        s.x_in = self._ptr32("x_in")
        s.y_in = self._ptr32("y_in")
        s.tmp = self._ptr32("tmp")
        s.wsub = self._ptr32("wsub")
        s.dsub = self._ptr32("dsub")
        s.csub = self._ptr32("csub")
        s.gsub = self._ptr32("gsub")
        s.v1 = self._ptr32("v1")
        s.v2 = self._ptr32("v2")
        s.h_prev = self._ptr32("h_prev")
        s.gates = self._ptr32("gates")
        s.gcoef = self._ptr32("gcoef")
        s.dmat = self._ptr32("dmat")
        s.x_mean = self._ptr64("x_mean")
        s.x_var = self._ptr64("x_var")
        s.y_mean = self._ptr64("y_mean")
        s.y_var = self._ptr64("y_var")
        s.counts = self._ptr64("counts")
        # The pool (OnlineRNN's `threads`): exact RTRL's n^4 term, and the Elman
        # cell's O(n K) passes of a large model.
        s.threads = 1
        threads = cfg.get("threads", 1)
        n4_term = s.learner == LEARNER_RTRL and s.cell != CELL_DIAG
        s.split_passes = (threads > 1 and s.cell == CELL_ELMAN
                          and s.n_params >= SPLIT_MIN_PARAMS)
        if threads > 1 and (n4_term or s.split_passes):
            if n4_term and \
                    self.buffers["tmp"].size < threads * ((n + 3) // 4 * 4) * RTRL_MAX_TILE:
                raise ValueError("the layout's product scratch is too small for "
                                 f"{threads} threads")
            s.pool = rtrl_pool_new(threads)
            if s.pool == NULL:
                raise OSError(f"could not start {threads - 1} worker threads")
            s.threads = threads

    def __dealloc__(self):
        rtrl_pool_free(self.s.pool)     # stops and joins the workers
        self.s.pool = NULL

    cdef float *_ptr32(self, str name):
        return <float *>cnp.PyArray_DATA(self.buffers[name]) if name in self.buffers else NULL

    cdef double *_ptr64(self, str name):
        return <double *>cnp.PyArray_DATA(self.buffers[name])

    cdef long long *_ptr64i(self, str name):
        if name not in self.buffers:
            return NULL
        return <long long *>cnp.PyArray_DATA(self.buffers[name])

    @property
    def memory_bytes(self):
        return sum(a.nbytes for a in self.arenas)

    @property
    def ldp(self):
        return self.s.ldp

    # -- boundary ----------------------------------------------------------

    cdef int _stage(self, object v, float *out, int size, str name) except -1:
        """Copy v into out as float32 if it is a finite numeric vector of
        shape (size,); otherwise raise ValueError, leaving the model as it was
        (`out` is scratch, not state)."""
        cdef cnp.ndarray arr
        cdef int typ, j
        cdef char *data
        cdef Py_ssize_t stride = 0
        cdef double val
        cdef bint ok = True
        if cnp.PyArray_Check(v):
            arr = <cnp.ndarray>v
            typ = cnp.PyArray_TYPE(arr)
            if ((typ == cnp.NPY_FLOAT32 or typ == cnp.NPY_FLOAT64)
                    and cnp.PyArray_ISALIGNED(arr) and not cnp.PyArray_ISBYTESWAPPED(arr)
                    and ((arr.ndim == 1 and arr.shape[0] == size)
                         or (arr.ndim == 0 and size == 1))):
                data = <char *>cnp.PyArray_DATA(arr)
                if arr.ndim == 1:
                    stride = arr.strides[0]
                if typ == cnp.NPY_FLOAT32:
                    for j in range(size):
                        out[j] = (<float *>(data + j * stride))[0]
                        ok &= isfinite(out[j])
                else:
                    for j in range(size):
                        val = (<double *>(data + j * stride))[0]
                        out[j] = <float>val
                        ok &= isfinite(out[j])
                if ok:
                    return 0
                self.rejected += 1
                raise ValueError(f"{name} must be finite (no NaN or inf); expected "
                                 f"shape ({size},), got {arr!r}")
        arr = self._coerce(v, size, name)
        data = <char *>cnp.PyArray_DATA(arr)
        for j in range(size):
            val = (<double *>data)[j]
            out[j] = <float>val
            ok &= isfinite(out[j])
        if not ok:
            self.rejected += 1
            raise ValueError(f"{name} must be finite (no NaN or inf, and within "
                             f"float32 range); expected shape ({size},), got {v!r}")
        return 0

    cdef cnp.ndarray _coerce(self, object v, int size, str name):
        """Slow path: any array-like -> contiguous float64 of shape (size,)."""
        try:
            arr = np.asarray(v)
        except Exception as exc:   # ragged nested sequences and the like
            self.rejected += 1
            raise ValueError(f"{name} must be a numeric array of shape ({size},), "
                             f"got {v!r}") from exc
        if arr.dtype.kind not in "biuf":
            self.rejected += 1
            raise ValueError(f"{name} must be a numeric array of shape ({size},), "
                             f"got dtype {arr.dtype} ({v!r})")
        if not (arr.shape == (size,) or (arr.ndim == 0 and size == 1)):
            self.rejected += 1
            raise ValueError(f"{name} must have shape ({size},), got shape {arr.shape}")
        return np.ascontiguousarray(arr, dtype=np.float64).reshape(size)

    cdef object _run(self, bint has_y, bint learn):
        cdef cnp.npy_intp dim = self.s.o
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_FLOAT32, 0)
        cdef float *yhat = <float *>cnp.PyArray_DATA(out)
        cdef int status
        if self.release_gil:
            with nogil:
                status = rnn_step(&self.s, has_y, learn, yhat)
        else:
            status = rnn_step(&self.s, has_y, learn, yhat)
        if status & STATUS_POISONED:
            raise FloatingPointError(
                "the input drove the hidden state to a non-finite value even with "
                "the last good parameters; the state was reset. Scale the inputs "
                "(normalize=True) or check them.")
        return out

    cdef int _bad_label(self, object y, str why) except -1:
        self.rejected += 1
        raise ValueError(f"y must be a class index in [0, {self.s.o}) or a probability "
                         f"vector of length {self.s.o} (non-negative, summing to 1); "
                         f"{why}, got {y!r}")

    cdef int _stage_label(self, object y) except -1:
        """A softmax target into y_in as a probability row: a class index (an
        integer, or a float with an integral value) becomes the one-hot row;
        a vector of length o must be finite, non-negative and sum to 1
        within 1e-3.  Otherwise ValueError naming what was expected (y_in is
        scratch: the model is unchanged)."""
        cdef int o = self.s.o, q
        cdef double v, total = 0.0
        cdef bint index = False
        if isinstance(y, (bool, np.bool_)):
            self._bad_label(y, "a bool is not a class index")
        if isinstance(y, (int, np.integer)):
            if not 0 <= y < o:
                self._bad_label(y, "the class index is out of range")
            memset(self.s.y_in, 0, o * sizeof(float))
            self.s.y_in[<int>y] = 1.0
            return 0
        if isinstance(y, (float, np.floating)):
            index = True
        elif cnp.PyArray_Check(y) and (<cnp.ndarray>y).ndim == 0:
            if (<cnp.ndarray>y).dtype.kind not in "iuf":
                self._bad_label(y, "a class index must be a number")
            index = True
        if index:
            v = float(y)
            if not isfinite(v):
                self._bad_label(y, "a class index must be finite")
            if v != floor(v):
                self._bad_label(y, "a float used as a class index must be a whole number")
            if not 0 <= v < o:
                self._bad_label(y, "the class index is out of range")
            memset(self.s.y_in, 0, o * sizeof(float))
            self.s.y_in[<int>v] = 1.0
            return 0
        try:
            self._stage(y, self.s.y_in, o, "y")
        except ValueError:
            self.rejected -= 1              # counted once, below
            self._bad_label(y, "a probability vector must be finite, of length "
                               f"{o}")
        for q in range(o):
            if self.s.y_in[q] < 0:
                self._bad_label(y, "a probability vector must not be negative")
            total += self.s.y_in[q]
        if not abs(total - 1.0) <= 1e-3:
            self._bad_label(y, f"a probability vector must sum to 1 within 1e-3 "
                               f"(it sums to {total:.6g})")
        return 0

    def step(self, x, y=None):
        """step(x, y=None) -> prediction (float32, shape (n_out,), a new array)

        Predict from x (shape (n_in,)), then, if y is given, take one online
        update towards it: a target of shape (n_out,) for the squared loss; a
        class index or a probability vector of length n_out for the softmax
        loss (the prediction is then the class probabilities).  Without y the
        state and the sensitivities still advance.  Raises ValueError,
        changing nothing, if x or y has the wrong shape, is not numeric, is
        not finite, or is not a valid label.
        """
        self._stage(x, self.s.x_in, self.s.m, "x")
        if y is None:
            return self._run(False, True)
        if self.s.loss == LOSS_SOFTMAX:
            self._stage_label(y)
        else:
            self._stage(y, self.s.y_in, self.s.o, "y")
        return self._run(True, True)

    def predict(self, x):
        """predict(x) -> prediction (float32, shape (n_out,), a new array)

        Inference: advance the hidden state only.  Parameters and normaliser
        do not change; the sensitivities restart at the next learning step.
        """
        self._stage(x, self.s.x_in, self.s.m, "x")
        return self._run(False, False)

    def reset_state(self):
        rnn_reset_state(&self.s)

    def validated(self, v, int size, str name):
        """A new float32 array (size,) of v, checked as `step` checks x
        (ValueError naming the expected shape; counted as a rejected input)."""
        cdef cnp.npy_intp dim = size
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_FLOAT32, 0)
        self._stage(v, <float *>cnp.PyArray_DATA(out), size, name)
        return out

    def forecast(self, cnp.ndarray xs):
        """Prediction after advancing a copy of the hidden state over the rows
        of xs (T, m), statistics frozen; the model's own state is untouched
        (the forecast of DESIGN §3.8: h cheap forward steps).  Each row is
        checked as `step` checks x; on a bad row the state is put back and
        ValueError raised."""
        cdef Py_ssize_t t, T = xs.shape[0]
        cdef cnp.npy_intp dim = self.s.o
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_FLOAT32, 0)
        cdef float *saved = self._ptr32("h_saved")
        cdef unsigned int fpu
        if xs.ndim != 2 or xs.shape[1] != self.s.m or T < 1:
            raise ValueError(f"xs must have shape (T, {self.s.m}) with T >= 1")
        memcpy(saved, self.s.h, self.s.n * sizeof(float))
        try:
            for t in range(T):
                self._stage(xs[t], self.s.x_in, self.s.m, "each row of xs")
                fpu = rtrl_fpu_enter()
                normalise_input(&self.s, False)
                forward(&self.s)
                rtrl_fpu_leave(fpu)
            denormalise_output(&self.s, <float *>cnp.PyArray_DATA(out))
        finally:
            memcpy(self.s.h, saved, self.s.n * sizeof(float))
        return out

    def accumulate_gradient(self, const float[:, ::1] xs, const float[:, ::1] ys,
                            const unsigned char[::1] labelled):
        """Sum of d L_t / d theta over a sequence from the current state, with
        parameters and normaliser statistics held fixed, over the steps with
        labelled[t] != 0 (the others only advance).  Returns float64 (p,)."""
        cdef Py_ssize_t t, T = xs.shape[0]
        cdef cnp.ndarray acc = np.zeros(self.s.n_params, dtype=np.float64)
        cdef double *accp = <double *>cnp.PyArray_DATA(acc)
        cdef unsigned int fpu
        assert xs.shape[1] == self.s.m and ys.shape[1] == self.s.o and ys.shape[0] == T
        assert labelled.shape[0] == T
        with nogil:
            fpu = rtrl_fpu_enter()
            for t in range(T):
                memcpy(self.s.x_in, &xs[t, 0], self.s.m * sizeof(float))
                memcpy(self.s.y_in, &ys[t, 0], self.s.o * sizeof(float))
                rnn_accumulate(&self.s, accp, labelled[t] != 0)
            rtrl_fpu_leave(fpu)
        return acc

    # -- counters ----------------------------------------------------------

    def get_counters(self):
        return {"steps": self.s.steps, "updates": self.s.updates,
                "rejected_inputs": self.rejected,
                "divergence_recoveries": self.s.recoveries,
                "trace_resets": self.s.trace_resets,
                "optimizer_steps": self.s.opt_t,
                "traces_stale": int(self.s.traces_stale),
                "lr_backoff": self.s.lr_backoff}

    def set_counters(self, dict c):
        self.s.steps = c["steps"]
        self.s.updates = c["updates"]
        self.rejected = c["rejected_inputs"]
        self.s.recoveries = c["divergence_recoveries"]
        self.s.trace_resets = c["trace_resets"]
        self.s.opt_t = c["optimizer_steps"]
        self.s.traces_stale = bool(c["traces_stale"])
        self.s.lr_backoff = min(max(int(c.get("lr_backoff", 0)), 0), GUARD_MAX_BACKOFF)

    def guard_state(self):
        """The divergence guard's running values (for tests and diagnosis)."""
        return {"loss_fast": self.s.loss_fast, "loss_slow": self.s.loss_slow,
                "base_fast": self.s.base_fast, "last_base": self.s.last_base,
                "alarm": self.s.alarm, "guard_n": self.s.guard_n,
                "since_good": self.s.since_good, "dirty": bool(self.s.guard_dirty),
                "calm": self.s.calm, "lr_backoff": self.s.lr_backoff,
                "since_bad": self.s.since_bad, "rebaselines": self.s.rebaselines}

    @property
    def last_loss(self):
        """Loss of the latest learning step: 0.5*||e||^2 (normalised units),
        or the cross-entropy for the softmax loss."""
        return self.s.last_loss
