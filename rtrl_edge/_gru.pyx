# The GRU cell, in PyTorch's `GRUCell` semantics and parameter layout, and its
# sensitivity updates for every learner (DESIGN §3.10; the recursions are
# written out in the README, "The GRU cell").
#
#     g_i = W_ih x + b_ih,   g_h = W_hh h_prev + b_hh        (3n each: r | z | n)
#     r = sigmoid(g_i^r + g_h^r),  u = sigmoid(g_i^z + g_h^z)  (u is PyTorch's z)
#     c = tanh(g_i^n + r * g_h^n),  h = (1 - u) * c + u * h_prev
#
# theta: W_ih (3n x m) | W_hh (3n x n) | b_ih (3n) | b_hh (3n) | W_out | b_out.
#
# Everything a learner needs from one step is five vectors (s.gcoef):
#
#     a_n  = (1 - u)(1 - c^2)            dh/d(g_i^n)
#     a_nh = a_n r                       dh/d(g_h^n)
#     a_r  = a_n g_h^n r(1 - r)          dh/d(g^r), either side
#     a_z  = (h_prev - c) u(1 - u)       dh/d(g^z), either side
#     u
#
# with which  D_t = dh_t/dh_{t-1} = diag(u) + diag(a_r) W_hh^r + diag(a_z) W_hh^z
#                                   + diag(a_nh) W_hh^n
# and M_t = dh_t/dtheta (h_prev held fixed) is non-zero in row k only on unit
# k's three gate rows: gate g's input side is  ci_g [x; 1]  and its hidden side
# ch_g [h_prev; 1], with (ci, ch) = (a_r, a_r), (a_z, a_z), (a_n, a_nh) for
# g = r, z, n.  Exact RTRL is  P_t = D_t P_{t-1} + M_t  (one n x n product
# with P per step, through the same blocked product as Elman's);
# SnAp-1 keeps  J_t = D_t[k, k] J_{t-1} + M_t  on unit k's own parameters.
#
# A unit's own parameters, as SnAp-2's blocks store them: per gate g = r, z,
# n a segment [W_hh row (the kept columns C_i) | W_ih row (m) | b_ih | b_hh],
# whose source vector is [h_prev | x | 1 | 1] = [z; 1].

from libc.math cimport expf, tanhf, sqrt
from libc.string cimport memcpy, memset

from rtrl_edge._types cimport *
from rtrl_edge._learners cimport draw_signs, ring_push
from rtrl_edge._parts cimport run_parts
from rtrl_edge._rtrl cimport part_scratch, sens_columns


cdef inline float sigmoid(float v) noexcept nogil:
    return 1.0 / (1.0 + expf(-v))


# offsets into theta of a GRU's core parameters
cdef inline Py_ssize_t off_hh(RNN *s) noexcept nogil:
    return 3 * <Py_ssize_t>s.n * s.m


cdef inline Py_ssize_t off_bih(RNN *s) noexcept nogil:
    return 3 * <Py_ssize_t>s.n * (s.m + s.n)


cdef inline Py_ssize_t off_bhh(RNN *s) noexcept nogil:
    return 3 * <Py_ssize_t>s.n * (s.m + s.n + 1)


cdef inline float coef_in(RNN *s, int g, int k) noexcept nogil:
    """ci_g of unit k: a_r, a_z or a_n."""
    return s.gcoef[g * s.n + k]


cdef inline float coef_hid(RNN *s, int g, int k) noexcept nogil:
    """ch_g of unit k: a_r, a_z or a_nh."""
    return s.gcoef[(g if g < 2 else 3) * s.n + k]


cdef void gru_forward(RNN *s) noexcept nogil:
    """z = [h_prev; x; 1]; h = the GRU's new state; gcoef = (a_r, a_z, a_n,
    a_nh, u); dphi = 1 (D_t already holds the derivatives: the shared fused
    pass scales by dphi)."""
    cdef int n = s.n, m = s.m, k
    cdef float *gi = s.gates
    cdef float *gh = s.gates + 3 * n
    cdef const float *b_ih = s.theta + off_bih(s)
    cdef const float *b_hh = s.theta + off_bhh(s)
    cdef float r, u, c, hp, a_n
    memcpy(s.z, s.h, n * sizeof(float))
    s.z[s.K - 1] = 1.0
    s.simd.matvec(s.theta, m, s.z + n, 3 * n, m, gi)
    s.simd.matvec(s.theta + off_hh(s), n, s.z, 3 * n, n, gh)
    for k in range(3 * n):
        gi[k] += b_ih[k]
        gh[k] += b_hh[k]
    for k in range(n):
        r = sigmoid(gi[k] + gh[k])
        u = sigmoid(gi[n + k] + gh[n + k])
        c = tanhf(gi[2 * n + k] + r * gh[2 * n + k])
        hp = s.z[k]
        s.h[k] = (1.0 - u) * c + u * hp
        a_n = (1.0 - u) * (1.0 - c * c)
        s.gcoef[k] = a_n * gh[2 * n + k] * r * (1.0 - r)       # a_r
        s.gcoef[n + k] = (hp - c) * u * (1.0 - u)              # a_z
        s.gcoef[2 * n + k] = a_n                               # a_n
        s.gcoef[3 * n + k] = a_n * r                           # a_nh
        s.gcoef[4 * n + k] = u
        s.dphi[k] = 1.0


cdef inline float d_entry(RNN *s, const float *w_hh, int k, int l) noexcept nogil:
    """D_t[k, l] (w_hh: W_hh, row stride n)."""
    cdef int n = s.n
    cdef Py_ssize_t nn = <Py_ssize_t>n * n, kl = <Py_ssize_t>k * n + l
    cdef float d = (s.gcoef[k] * w_hh[kl] + s.gcoef[n + k] * w_hh[nn + kl]
                    + s.gcoef[3 * n + k] * w_hh[2 * nn + kl])
    if k == l:
        d += s.gcoef[4 * n + k]
    return d


cdef inline float d_diag(RNN *s, int k) noexcept nogil:
    return d_entry(s, s.theta + off_hh(s), k, k)


# --------------------------------------------------------------------------
# exact RTRL
# --------------------------------------------------------------------------

cdef void gru_rtrl_part(void *arg, int part, int parts) noexcept nogil:
    """D_t P on one share of the columns of P, with its gradient (a task of
    the model's thread pool; dphi = 1 for the GRU)."""
    cdef RNN *s = <RNN *>arg
    cdef Py_ssize_t lo, hi
    rtrl_pool_share(s.ldp, RTRL_MAX_VL, part, parts, &lo, &hi)
    sens_columns(s, s.dmat, s.n, lo, hi, part_scratch(s, part), s.task_contract)


cdef void gru_rtrl(RNN *s, bint contract) noexcept nogil:
    """P <- D_t P + M_t, in place, with grad[:n_core] = c^T P fused in.

    D_t is formed once (3 n^2), then P goes through the blocked product and
    the fused pass exactly as Elman's (`rtrl_part` in _kernels.pyx, with
    dphi = 1, split over the model's threads), and M_t, which touches each
    unit's own 3(n + m + 2) columns of its row, is added after (with its share
    of the gradient)."""
    cdef int n = s.n, m = s.m, k, l, g
    cdef Py_ssize_t ldp = s.ldp, row_ih, row_hh
    cdef const float *w_hh = s.theta + off_hh(s)
    cdef float *P = s.P
    cdef float *G = s.grad
    cdef float *Pk
    cdef float ci, ch, ck
    for k in range(n):
        for l in range(n):
            s.dmat[k * n + l] = d_entry(s, w_hh, k, l)
    run_parts(s, gru_rtrl_part, contract)
    # M_t: unit k's gate rows g*n + k of W_ih, W_hh, b_ih, b_hh
    for k in range(n):
        Pk = P + k * ldp
        ck = s.c[k] if contract else 0.0
        for g in range(3):
            ci = coef_in(s, g, k)
            ch = coef_hid(s, g, k)
            row_ih = <Py_ssize_t>(g * n + k) * m
            row_hh = off_hh(s) + <Py_ssize_t>(g * n + k) * n
            s.simd.scale_add(Pk + row_ih, 1.0, s.z + n, ci, m)
            s.simd.scale_add(Pk + row_hh, 1.0, s.z, ch, n)
            Pk[off_bih(s) + g * n + k] += ci
            Pk[off_bhh(s) + g * n + k] += ch
            if contract:
                s.simd.scale_add(G + row_ih, 1.0, s.z + n, ck * ci, m)
                s.simd.scale_add(G + row_hh, 1.0, s.z, ck * ch, n)
                G[off_bih(s) + g * n + k] += ck * ci
                G[off_bhh(s) + g * n + k] += ck * ch


# --------------------------------------------------------------------------
# SnAp-1
# --------------------------------------------------------------------------

cdef inline void own_source(RNN *s, float *out, const long long *cols, int nc, float ci,
                            float ch) noexcept nogil:
    """M_t on one gate segment of a unit's own parameters (SnAp-2's block
    layout): out = [ch h_prev[cols] | ci x | ci | ch]."""
    cdef int n = s.n, m = s.m, b
    for b in range(nc):
        out[b] = ch * s.z[cols[b]]
    s.simd.scaled(out + nc, ci, s.z + n, m)
    out[nc + m] = ci
    out[nc + m + 1] = ch


cdef inline void scatter_own(RNN *s, int k, int g, const float *gseg, const long long *cols,
                             int nc) noexcept nogil:
    """Write a gate segment's gradient (own_source's layout) into grad's
    PyTorch layout: W_hh row g*n + k (columns `cols`), W_ih row, b_ih,
    b_hh."""
    cdef int n = s.n, m = s.m, b
    cdef Py_ssize_t row = g * n + k
    cdef float *g_hh = s.grad + off_hh(s) + row * n
    for b in range(nc):
        g_hh[cols[b]] = gseg[b]
    memcpy(s.grad + row * m, gseg + nc, m * sizeof(float))
    s.grad[off_bih(s) + row] = gseg[nc + m]
    s.grad[off_bhh(s) + row] = gseg[nc + m + 1]


cdef void gru_snap1(RNN *s, bint contract) noexcept nogil:
    """J <- D_t[k, k] J + M_t[k, own] for each unit k's own parameters;
    grad = c_k J there.  Every core parameter has one owning unit, so J is
    stored like the core parameters themselves (n_core floats, PyTorch's
    layout: J[q] = dh[owner of q]/dtheta[q]) and its gradient needs no
    scatter.  Exact when the three W_hh blocks are diagonal.  Gate by gate,
    region by region: the rows of W_hh and W_ih through the vector kernels,
    the biases (contiguous over the units) inline."""
    cdef int n = s.n, m = s.m, k, g
    cdef float *J = s.P
    cdef float *G = s.grad
    cdef float *d = s.tmp                   # D_t's diagonal
    cdef const float *x = s.z + n
    cdef const float *ci
    cdef const float *ch
    cdef float *Jr
    cdef float *Gr
    cdef float *Jb
    cdef float *Gb
    for k in range(n):
        d[k] = d_diag(s, k)
    for g in range(3):
        ci = s.gcoef + g * n
        ch = s.gcoef + (g if g < 2 else 3) * n
        # W_hh rows g*n + k (n long): the vector kernels
        Jr = J + off_hh(s) + <Py_ssize_t>g * n * n
        Gr = G + off_hh(s) + <Py_ssize_t>g * n * n
        for k in range(n):
            s.simd.scale_add(Jr + k * n, d[k], s.z, ch[k], n)
            if contract:
                s.simd.scaled(Gr + k * n, s.c[k], Jr + k * n, n)
        # W_ih rows g*n + k (m long)
        Jr = J + <Py_ssize_t>g * n * m
        Gr = G + <Py_ssize_t>g * n * m
        for k in range(n):
            s.simd.scale_add(Jr + k * m, d[k], x, ci[k], m)
            if contract:
                s.simd.scaled(Gr + k * m, s.c[k], Jr + k * m, m)
        # b_ih and b_hh entries g*n + k
        Jb = J + off_bih(s) + g * n
        for k in range(n):
            Jb[k] = d[k] * Jb[k] + ci[k]
        Jb = J + off_bhh(s) + g * n
        for k in range(n):
            Jb[k] = d[k] * Jb[k] + ch[k]
        if contract:
            Jb = J + off_bih(s) + g * n
            Gb = G + off_bih(s) + g * n
            for k in range(n):
                Gb[k] = s.c[k] * Jb[k]
            Jb = J + off_bhh(s) + g * n
            Gb = G + off_bhh(s) + g * n
            for k in range(n):
                Gb[k] = s.c[k] * Jb[k]


# --------------------------------------------------------------------------
# SnAp-2 on a sparse W_hh (the mask applies to each of its three blocks)
# --------------------------------------------------------------------------

cdef void gru_snap2(RNN *s, bint contract) noexcept nogil:
    """Exact RTRL restricted to what a sparse W_hh fills in two steps: for unit
    i, block P_i (|S_i| x ld_i) holds the sensitivities of the units S_i =
    {i} u {k : mask[k, i]} to unit i's parameters (three gate segments over
    the kept columns C_i, see own_source):

        P_i <- D_t[S_i, S_i] @ P_i + M_t (on unit i's own row of the block)
        grad[unit i's parameters] = c[S_i]^T P_i

    Through the same product and fused pass as Elman's snap2 (dphi = 1).
    With a dense mask it is exact RTRL."""
    cdef int n = s.n, m = s.m, i, a, b, sz, cw, ld, ai, g, w
    cdef const long long *S
    cdef const long long *C
    cdef const float *w_hh = s.theta + off_hh(s)
    cdef float *blk
    if contract:
        memset(s.grad, 0, s.n_core * sizeof(float))
    for i in range(n):
        S = s.s_idx + s.s_off[i]
        sz = <int>(s.s_off[i + 1] - s.s_off[i])
        C = s.c_idx + s.c_off[i]
        cw = <int>(s.c_off[i + 1] - s.c_off[i])
        w = cw + m + 2
        ld = <int>s.ld[i]
        blk = s.P + s.p_off[i]
        ai = 0
        for a in range(sz):
            if S[a] == i:
                ai = a
            s.dsub[a] = 1.0
            s.csub[a] = s.c[S[a]]
            for b in range(sz):
                s.wsub[a * sz + b] = d_entry(s, w_hh, <int>S[a], <int>S[b])
        s.simd.product(s.wsub, sz, blk, ld, (sz + 3) & ~3, sz, ld, s.tmp, ld)
        if contract:
            memset(s.gsub, 0, ld * sizeof(float))
        s.simd.epilogue(blk, ld, s.tmp, ld, sz, ld, s.dsub, s.csub, s.gsub, contract)
        # M_t on unit i's own row of the block (s.tmp is free again), and its
        # share c_i M_t of the gradient
        for g in range(3):
            own_source(s, s.tmp, C, cw, coef_in(s, g, i), coef_hid(s, g, i))
            s.simd.scale_add(blk + ai * ld + g * w, 1.0, s.tmp, 1.0, w)
            if contract:
                s.simd.scale_add(s.gsub + g * w, 1.0, s.tmp, s.c[i], w)
                scatter_own(s, i, g, s.gsub + g * w, C, cw)


# --------------------------------------------------------------------------
# UORO
# --------------------------------------------------------------------------

cdef void gru_uoro(RNN *s, bint contract) noexcept nogil:
    """Rank-one P ~ h~ theta~^T (DESIGN §3.5) with the GRU's D_t and M_t:

        D h~    = u h~ + a_r (W_hh^r h~) + a_z (W_hh^z h~) + a_nh (W_hh^n h~)
        u_vec   = nu^T M_t: on unit k's gate rows, nu_k ci_g [x; 1] and
                  nu_k ch_g [h_prev; 1]
        ||u_vec||^2 = sum_k,g ci_g^2 (||x||^2 + 1) + ch_g^2 (||h_prev||^2 + 1)

    then rho0, rho1, h~, theta~ and the gradient exactly as Elman's
    The signs nu come from the same generator (`draw_signs`).  s.gates is
    scratch here (the forward pass is done with it)."""
    cdef int n = s.n, m = s.m, k, g, finite
    cdef float *wh = s.gates                # W_hh h~ (3n)
    cdef float *nu = s.v1
    cdef float *dh = s.v2
    cdef double nt, ndh, nx, nh, nu2 = 0.0, rho0, rho1, acc, ci, ch
    cdef double eps = 1e-7
    cdef float r0inv, f
    cdef Py_ssize_t row
    draw_signs(s, nu)
    s.simd.matvec(s.theta + off_hh(s), n, s.uh, 3 * n, n, wh)
    for k in range(n):
        dh[k] = (s.gcoef[4 * n + k] * s.uh[k] + s.gcoef[k] * wh[k]
                 + s.gcoef[n + k] * wh[n + k] + s.gcoef[3 * n + k] * wh[2 * n + k])
    ndh = s.simd.sumsq(dh, n, &finite)
    nx = s.simd.sumsq(s.z + n, m, &finite) + 1.0
    nh = s.simd.sumsq(s.z, n, &finite) + 1.0
    for k in range(n):
        for g in range(3):
            ci = coef_in(s, g, k)
            ch = coef_hid(s, g, k)
            nu2 += ci * ci * nx + ch * ch * nh
    nt = s.simd.sumsq(s.ut, s.n_core, &finite)
    rho0 = sqrt((sqrt(nt) + eps) / (sqrt(ndh) + eps))
    rho1 = sqrt((sqrt(nu2) + eps) / (sqrt(<double>n) + eps))
    for k in range(n):
        s.uh[k] = <float>(rho0 * dh[k] + rho1 * nu[k])
    r0inv = <float>(1.0 / rho0)
    for k in range(n):
        for g in range(3):
            row = g * n + k
            f = <float>(nu[k] / rho1)
            s.simd.scale_add(s.ut + row * m, r0inv, s.z + n, f * coef_in(s, g, k), m)
            s.simd.scale_add(s.ut + off_hh(s) + row * n, r0inv, s.z, f * coef_hid(s, g, k), n)
            s.ut[off_bih(s) + row] = r0inv * s.ut[off_bih(s) + row] + f * coef_in(s, g, k)
            s.ut[off_bhh(s) + row] = r0inv * s.ut[off_bhh(s) + row] + f * coef_hid(s, g, k)
    if contract:
        acc = 0.0
        for k in range(n):
            acc += <double>s.c[k] * s.uh[k]
        s.simd.scaled(s.grad, <float>acc, s.ut, s.n_core)


# --------------------------------------------------------------------------
# truncated BPTT
# --------------------------------------------------------------------------

cdef void gru_tbptt(RNN *s, bint contract) noexcept nogil:
    """Keep (z, gcoef) of the last k steps in the ring (`ring_push`); with
    `contract`, back-propagate this step's loss through them, current weights:

        grad[unit k's gate g rows] += dh_k ci_g [x; 1], dh_k ch_g [h_prev; 1]
        dh <- D_t^T dh = u dh + sum_g W_hh^g^T (ch_g dh)
    """
    cdef int n = s.n, m = s.m, K = s.K, k, g, back, win = s.window, slot, held
    cdef Py_ssize_t row
    cdef float *dh = s.v1
    cdef float *nxt = s.v2
    cdef const float *zt
    cdef const float *co
    cdef const float *w_hh = s.theta + off_hh(s)
    cdef float ci, ch
    slot = ring_push(s, s.gcoef, &held)
    if not contract:
        return
    memset(s.grad, 0, s.n_core * sizeof(float))
    memcpy(dh, s.c, n * sizeof(float))
    for back in range(held):
        zt = s.ring_z + <Py_ssize_t>slot * K
        co = s.ring_d + <Py_ssize_t>slot * s.ring_width
        for k in range(n):
            for g in range(3):
                row = g * n + k
                ci = dh[k] * co[g * n + k]
                ch = dh[k] * co[(g if g < 2 else 3) * n + k]
                s.simd.scale_add(s.grad + row * m, 1.0, zt + n, ci, m)
                s.simd.scale_add(s.grad + off_hh(s) + row * n, 1.0, zt, ch, n)
                s.grad[off_bih(s) + row] += ci
                s.grad[off_bhh(s) + row] += ch
        if back + 1 < held:
            for k in range(n):
                nxt[k] = co[4 * n + k] * dh[k]
            for k in range(n):
                for g in range(3):
                    ch = dh[k] * co[(g if g < 2 else 3) * n + k]
                    s.simd.scale_add(nxt, 1.0, w_hh + <Py_ssize_t>(g * n + k) * n, ch, n)
            memcpy(dh, nxt, n * sizeof(float))
        slot = (slot - 1 + win) % win


cdef void gru_advance(RNN *s, bint contract) noexcept nogil:
    """The learner's sensitivity update after gru_forward; with `contract`,
    also grad[:n_core] for this step's loss (s.c = dL/dh)."""
    if s.learner == LEARNER_RTRL:
        gru_rtrl(s, contract)
    elif s.learner == LEARNER_SNAP1:
        gru_snap1(s, contract)
    elif s.learner == LEARNER_SNAP2:
        gru_snap2(s, contract)
    elif s.learner == LEARNER_UORO:
        gru_uoro(s, contract)
    else:
        gru_tbptt(s, contract)
