# Sensitivity updates of the learners that trade exactness for cost.
#
# Each `*_update(s, contract)` runs after the Elman forward pass of a step
# (z, dphi, h are this step's) and carries its learner's state forward; with
# `contract` it also writes the gradient of this step's loss for the cell's
# weights W = [W_rec | W_in | b] into s.grad[:n*K] (the readout gradient is
# exact and computed elsewhere).  s.c holds dL/dh = W_out^T e.
#
# Notation as in DESIGN §3: n units, m inputs, K = n + m + 1, row i of W holds
# unit i's incoming weights.

from libc.math cimport sqrt
from libc.string cimport memcpy, memset

from rtrl_edge._types cimport *
from rtrl_edge._parts cimport parts_total, run_parts


cdef void reset_learner(RNN *s) noexcept nogil:
    """Forget every sensitivity: a sequence boundary."""
    if s.P != NULL:
        memset(s.P, 0, s.p_size * sizeof(float))
    if s.uh != NULL:
        memset(s.uh, 0, s.n * sizeof(float))
        memset(s.ut, 0, s.n_core * sizeof(float))
    if s.ring != NULL:
        s.ring[0] = 0
        s.ring[1] = 0
        memset(s.ring_z, 0, s.window * s.K * sizeof(float))
        memset(s.ring_d, 0, s.window * s.ring_width * sizeof(float))


# --------------------------------------------------------------------------
# SnAp-1 (Menick et al. 2020; DESIGN §3.3)
# --------------------------------------------------------------------------

cdef double snap1_rows(RNN *s, Py_ssize_t lo, Py_ssize_t hi, int *all_finite) noexcept nogil:
    """Rows [lo, hi) of SnAp-1 with the gradient: one pass per row, the trace,
    its gradient row and that row's sum of squares (the update's clip norm
    then needs no pass over the gradient).  Returns the rows' sum."""
    cdef int K = s.K, finite
    cdef Py_ssize_t k
    cdef float d
    cdef double total = 0.0
    all_finite[0] = 1
    for k in range(lo, hi):
        d = s.dphi[k]
        total += s.simd.trace_grad(s.P + k * K, d * s.theta[k * K + k], s.z, d, s.c[k],
                                   s.grad + k * K, K, &finite)
        all_finite[0] = all_finite[0] and finite
    return total


cdef void rows_part(void *arg, int part, int parts) noexcept nogil:
    """One share of the rows of `snap1_rows` or `uoro_rows`, by the model's
    learner (a task of the model's pool)."""
    cdef RNN *s = <RNN *>arg
    cdef Py_ssize_t lo, hi
    rtrl_pool_share(s.n, 1, part, parts, &lo, &hi)
    if s.learner == LEARNER_SNAP1:
        s.part_sum[part] = snap1_rows(s, lo, hi, &s.part_ok[part])
    else:
        s.part_sum[part] = uoro_rows(s, lo, hi, &s.part_ok[part])


cdef void trace_rows(RNN *s) noexcept nogil:
    """Every row's trace and gradient row (`rows_part`), shared among the
    model's threads with `split_passes`; the rows' sum of squares becomes the
    update's clip norm (core_sumsq), so that it needs no pass of its own."""
    cdef int finite, parts = 1
    if s.split_passes:
        parts = run_parts(s, rows_part, True)
    else:
        rows_part(s, 0, 1)
    s.core_sumsq = parts_total(s, parts, &finite)
    s.core_finite, s.core_sumsq_known = finite, True


cdef void snap1_update(RNN *s, bint contract) noexcept nogil:
    """J[k, j] <- dphi[k] * (W_rec[k, k] J[k, j] + z[j]);  grad W[k, j] = c[k] J[k, j].

    Keeps only each unit's sensitivity to its own incoming weights: memory
    n*K, cost O(n*K).  Exact when W_rec is diagonal.  With `split_passes`
    the rows are shared among the model's threads."""
    cdef int n = s.n, K = s.K, k
    cdef float d
    if not contract:
        for k in range(n):
            d = s.dphi[k]
            s.simd.scale_add(s.P + k * K, d * s.theta[k * K + k], s.z, d, K)
        return
    trace_rows(s)


# --------------------------------------------------------------------------
# SnAp-2 on a sparse W_rec (DESIGN §3.4)
# --------------------------------------------------------------------------

cdef void snap2_update(RNN *s, bint contract) noexcept nogil:
    """Exact RTRL restricted to the entries a sparse W_rec can fill in two steps.

    For row i of W only the kept columns C_i are parameters, and only the
    units S_i = {i} ∪ {k : mask[k, i]} carry sensitivity to them; block
    P_i (|S_i| x ld_i) holds P[S_i, i, C_i].  Per row:

        P_i <- dphi[S_i] * (W_rec[S_i, S_i] @ P_i + e_i z[C_i]^T)
        grad W[i, C_i] = c[S_i]^T P_i

    which is the RTRL recursion with every entry outside the pattern held at
    zero; with a dense mask it is exact RTRL.  Each block goes through the
    same SIMD product and fused pass as exact RTRL.  Memory sum_i |S_i| ld_i,
    about density^2 of exact RTRL's.
    """
    cdef int n = s.n, K = s.K, i, a, b, sz, cw, ld, ai
    cdef const long long *S
    cdef const long long *C
    cdef float *blk
    cdef float *row
    cdef float d, ci, v
    if contract:
        memset(s.grad, 0, n * K * sizeof(float))
    for i in range(n):
        S = s.s_idx + s.s_off[i]
        sz = <int>(s.s_off[i + 1] - s.s_off[i])
        C = s.c_idx + s.c_off[i]
        cw = <int>(s.c_off[i + 1] - s.c_off[i])
        ld = <int>s.ld[i]
        blk = s.P + s.p_off[i]
        ai = 0
        for a in range(sz):
            if S[a] == i:
                ai = a
            s.dsub[a] = s.dphi[S[a]]
            s.csub[a] = s.c[S[a]]
            for b in range(sz):
                s.wsub[a * sz + b] = s.theta[S[a] * K + S[b]]
        # rows padded to a multiple of 4 (the tile height; wsub's extra rows
        # are zero, their output rows unused) so no block takes the 1-row path
        s.simd.product(s.wsub, sz, blk, ld, (sz + 3) & ~3, sz, ld, s.tmp, ld)
        if contract:
            memset(s.gsub, 0, ld * sizeof(float))
        # over the padded width: padding columns of the block are zero and stay
        # zero, and a whole number of vectors avoids the scalar tail
        s.simd.epilogue(blk, ld, s.tmp, ld, sz, ld, s.dsub, s.csub, s.gsub, contract)
        # the delta_ki z[j] term: unit i's own row of the block
        d = s.dphi[i]
        ci = s.c[i]
        row = blk + ai * ld
        for b in range(cw):
            v = d * s.z[C[b]]
            row[b] += v
            if contract:
                s.gsub[b] += ci * v
        if contract:
            for b in range(cw):
                s.grad[i * K + C[b]] = s.gsub[b]


# --------------------------------------------------------------------------
# UORO (Tallec & Ollivier 2017; DESIGN §3.5)
# --------------------------------------------------------------------------

cdef inline unsigned long long next_u64(long long *state) noexcept nogil:
    """xorshift128+ (Vigna 2017): the random signs of UORO, reproducible from
    the two saved state words."""
    cdef unsigned long long *st = <unsigned long long *>state
    cdef unsigned long long s1 = st[0]
    cdef unsigned long long s0 = st[1]
    st[0] = s0
    s1 ^= s1 << 23
    st[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26)
    return st[1] + s0


cdef void draw_signs(RNN *s, float *nu) noexcept nogil:
    """nu[i] = +-1 for i < n, 64 signs per draw of the generator."""
    cdef int i
    cdef unsigned long long bits = 0
    for i in range(s.n):
        if i % 64 == 0:
            bits = next_u64(s.rng)
        nu[i] = 1.0 if (bits >> (i % 64)) & 1 else -1.0


cdef void uoro_update(RNN *s, bint contract) noexcept nogil:
    """Rank-one unbiased estimate P ~ h~ theta~^T.

        D h~      = dphi * (W_rec h~)                 (dh_t/dh_{t-1} applied to h~)
        u[i, j]   = nu_i dphi_i z_j                   (nu^T dh_t/dW, nu random signs)
        rho0      = sqrt(|theta~| / |D h~|),  rho1 = sqrt(|u| / |nu|)   (eps-guarded)
        h~        <- rho0 D h~ + rho1 nu
        theta~    <- theta~ / rho0 + u / rho1
        grad W    = (c^T h~) theta~

    Memory and cost O(n*K).  |u| = |dphi| |z| since nu_i^2 = 1.
    """
    cdef int n = s.n, K = s.K, i, finite
    cdef float *nu = s.v1
    cdef float *dh = s.v2
    cdef double nt, ndh, nd, nz, rho0, rho1, acc
    cdef double eps = 1e-7
    cdef float r0inv
    draw_signs(s, nu)
    s.simd.matvec(s.theta, K, s.uh, n, n, dh)           # W_rec h~
    for i in range(n):
        dh[i] *= s.dphi[i]
    ndh = s.simd.sumsq(dh, n, &finite)
    nd = s.simd.sumsq(s.dphi, n, &finite)
    nz = s.simd.sumsq(s.z, K, &finite)
    nt = s.simd.sumsq(s.ut, n * K, &finite)
    rho0 = sqrt((sqrt(nt) + eps) / (sqrt(ndh) + eps))
    rho1 = sqrt((sqrt(nd * nz) + eps) / (sqrt(<double>n) + eps))
    for i in range(n):
        s.uh[i] = <float>(rho0 * dh[i] + rho1 * nu[i])
    r0inv = <float>(1.0 / rho0)
    if not contract:
        for i in range(n):
            s.simd.scale_add(s.ut + i * K, r0inv, s.z, <float>(nu[i] * s.dphi[i] / rho1), K)
        return
    # grad W = (c^T h~) theta~, with h~ already new: each row of theta~, its
    # gradient row and that row's sum of squares in one pass (as SnAp-1)
    acc = 0.0
    for i in range(n):
        acc += <double>s.c[i] * s.uh[i]
    s.task_f[0] = r0inv
    s.task_f[2] = <float>acc
    s.task_d[0] = rho1
    trace_rows(s)


cdef double uoro_rows(RNN *s, Py_ssize_t lo, Py_ssize_t hi, int *all_finite) noexcept nogil:
    """Rows [lo, hi) of theta~ <- theta~ / rho0 + u / rho1 and grad W = acc theta~,
    with s.task_f[0] = 1 / rho0, s.task_f[2] = acc, s.task_d[0] = rho1 and
    s.v1 = nu; returns the rows' sum of squares of the gradient."""
    cdef int K = s.K, finite
    cdef Py_ssize_t i
    cdef double total = 0.0, rho1 = s.task_d[0]
    cdef float r0inv = s.task_f[0], acc = s.task_f[2]
    all_finite[0] = 1
    for i in range(lo, hi):
        total += s.simd.trace_grad(s.ut + i * K, r0inv, s.z, <float>(s.v1[i] * s.dphi[i] / rho1),
                                   acc, s.grad + i * K, K, &finite)
        all_finite[0] = all_finite[0] and finite
    return total


# --------------------------------------------------------------------------
# Truncated BPTT(k) (DESIGN §3.6)
# --------------------------------------------------------------------------

cdef int ring_push(RNN *s, const float *per_step, int *held) noexcept nogil:
    """Store this step's z (K) and `per_step` (ring_width floats) in the
    ring; returns their slot and sets *held to the entries now held."""
    cdef int slot = <int>s.ring[0]
    memcpy(s.ring_z + <Py_ssize_t>slot * s.K, s.z, s.K * sizeof(float))
    memcpy(s.ring_d + <Py_ssize_t>slot * s.ring_width, per_step,
           s.ring_width * sizeof(float))
    s.ring[0] = (slot + 1) % s.window
    if s.ring[1] < s.window:
        s.ring[1] += 1
    held[0] = <int>s.ring[1]
    return slot


cdef void tbptt_update(RNN *s, bint contract) noexcept nogil:
    """Keep (z, dphi) of the last k steps in a ring; with `contract`, back-
    propagate this step's loss through them (current weights):

        delta_a = delta_h * dphi_t';   grad W += delta_a z_t'^T;   delta_h = W_rec^T delta_a

    for t' = t, t-1, ..., down to k steps or the last reset.  Memory k(K + n),
    cost O(k n K) per learning step.  Equals BPTT of L_t when k >= t.  The
    last step back sums each finished gradient row's squares as it writes it
    (the update's clip norm then needs no pass of its own).
    """
    cdef int n = s.n, K = s.K, k = s.window, i, back, slot, held, finite
    cdef float *dh = s.v1
    cdef float *da = s.v2
    cdef const float *zt
    cdef const float *dt
    cdef double total = 0.0
    cdef bint all_finite = True
    slot = ring_push(s, s.dphi, &held)
    if not contract:
        return
    memset(s.grad, 0, n * K * sizeof(float))
    memcpy(dh, s.c, n * sizeof(float))
    for back in range(held):
        zt = s.ring_z + slot * K
        dt = s.ring_d + slot * n
        for i in range(n):
            da[i] = dh[i] * dt[i]
            if back + 1 < held:
                s.simd.scale_add(s.grad + i * K, 1.0, zt, da[i], K)
            else:
                total += s.simd.step_sumsq(s.grad + i * K, da[i], zt, K, &finite)
                all_finite = all_finite and finite
        if back + 1 < held:
            memset(dh, 0, n * sizeof(float))
            for i in range(n):          # dh = W_rec^T da, row by row
                s.simd.scale_add(dh, 1.0, s.theta + i * K, da[i], n)
        slot = (slot - 1 + k) % k
    s.core_sumsq, s.core_finite, s.core_sumsq_known = total, all_finite, True
