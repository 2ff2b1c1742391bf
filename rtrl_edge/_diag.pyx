# The diagonal cell: 2x2 rotation-decay blocks (the real form of a complex
# diagonal recurrence, as in LRU, Orvieto et al. 2023) with a tanh readout,
# trained by exact RTRL at O(n m) cost (DESIGN §3.7; Zucchet et al. 2023).
#
# Pair p holds units (2p, 2p+1) = (u, v).  With r_p = sigmoid(decay_p) and
# A_p = r_p R(angle_p), R(a) = [[cos a, -sin a], [sin a, cos a]]:
#
#     h_t[pair] = A_p h_{t-1}[pair] + Bb[pair] [x_t; 1]        feat = tanh(h_t)
#
# Parameters (theta): decay (n/2) | angle (n/2) | Bb (n x (m+1), [B | b]) | readout.
# A unit depends only on its own pair, so the sensitivity of a pair's state
# to each of its parameters is one 2-vector ("trace") carried forward by
#
#     s_t = A_p s_{t-1} + d(input)/d(param)
#
# where d/dBb[q, j] of the input is [x; 1]_j on component q - 2p,
# d/d decay = r (1 - r) R h_{t-1} = (1 - r) A h_{t-1},
# d/d angle = r R' h_{t-1} = (-(A h_{t-1})_v, (A h_{t-1})_u).
# Traces (s.P): Bb rows (n x (m+1) x 2) | decay (n/2 x 2) | angle (n/2 x 2).

from libc.math cimport expf, cosf, sinf, tanhf, sqrtf
from libc.string cimport memcpy

from rtrl_edge._types cimport *


cdef void diag_forward(RNN *s) noexcept nogil:
    """h <- A h + Bb [x; 1] per pair, feat = tanh(h).  Keeps h_{t-1} in
    h_prev and (r cos, r sin) of each pair in dphi for the traces."""
    cdef int n = s.n, m1 = s.m + 1, half = s.n // 2, p, j
    cdef const float *decay = s.theta
    cdef const float *angle = s.theta + half
    cdef const float *Bb = s.theta + n
    cdef const float *zx = s.z + n          # [x_normalised; 1]
    cdef const float *row0
    cdef const float *row1
    cdef float r, rc, rs, u, v, in0, in1
    s.z[s.K - 1] = 1.0
    memcpy(s.h_prev, s.h, n * sizeof(float))
    for p in range(half):
        r = 1.0 / (1.0 + expf(-decay[p]))
        rc = r * cosf(angle[p])
        rs = r * sinf(angle[p])
        s.dphi[2 * p] = rc
        s.dphi[2 * p + 1] = rs
        row0 = Bb + (2 * p) * m1
        row1 = row0 + m1
        in0 = 0.0
        in1 = 0.0
        for j in range(m1):
            in0 = in0 + row0[j] * zx[j]
            in1 = in1 + row1[j] * zx[j]
        u = s.h_prev[2 * p]
        v = s.h_prev[2 * p + 1]
        s.h[2 * p] = rc * u - rs * v + in0
        s.h[2 * p + 1] = rs * u + rc * v + in1
    for j in range(n):
        s.feat[j] = tanhf(s.h[j])


cdef void diag_traces(RNN *s, bint contract) noexcept nogil:
    """Advance every trace one step; with `contract`, grad of this step's loss
    for decay, angle and Bb: c[pair] . trace (s.c already includes tanh')."""
    cdef int n = s.n, m1 = s.m + 1, half = s.n // 2, p, q, j
    cdef const float *zx = s.z + n
    cdef float *t_in = s.P                  # (n, m+1, 2)
    cdef float *t_dec = s.P + 2 * n * m1    # (n/2, 2)
    cdef float *t_ang = t_dec + n           # (n/2, 2)
    cdef float *g_in = s.grad + n
    cdef float *t
    cdef float rc, rs, omr, au, av, su, sv, c0, c1, nu, nv
    for p in range(half):
        rc = s.dphi[2 * p]
        rs = s.dphi[2 * p + 1]
        omr = 1.0 - sqrtf(rc * rc + rs * rs)
        au = rc * s.h_prev[2 * p] - rs * s.h_prev[2 * p + 1]
        av = rs * s.h_prev[2 * p] + rc * s.h_prev[2 * p + 1]
        c0 = s.c[2 * p]
        c1 = s.c[2 * p + 1]
        # input weights and biases of both units of the pair
        for q in range(2):
            t = t_in + (2 * p + q) * m1 * 2
            for j in range(m1):
                su = t[2 * j]
                sv = t[2 * j + 1]
                nu = rc * su - rs * sv
                nv = rs * su + rc * sv
                if q == 0:
                    nu = nu + zx[j]
                else:
                    nv = nv + zx[j]
                t[2 * j] = nu
                t[2 * j + 1] = nv
                if contract:
                    g_in[(2 * p + q) * m1 + j] = c0 * nu + c1 * nv
        # decay: + (1 - r) A h_prev
        su = t_dec[2 * p]
        sv = t_dec[2 * p + 1]
        nu = rc * su - rs * sv + omr * au
        nv = rs * su + rc * sv + omr * av
        t_dec[2 * p] = nu
        t_dec[2 * p + 1] = nv
        if contract:
            s.grad[p] = c0 * nu + c1 * nv
        # angle: + (-(A h_prev)_v, (A h_prev)_u)
        su = t_ang[2 * p]
        sv = t_ang[2 * p + 1]
        nu = rc * su - rs * sv - av
        nv = rs * su + rc * sv + au
        t_ang[2 * p] = nu
        t_ang[2 * p + 1] = nv
        if contract:
            s.grad[half + p] = c0 * nu + c1 * nv
