# Types shared by the compiled modules of rtrl_edge (declarations only).
#
# `RNN` is the whole state of one model as raw pointers into the model's
# arenas (float32, float64 and int64), filled once at construction by
# `_kernels.Core`.  Kernels take an `RNN*` and never allocate, raise or touch
# Python objects.  Buffers a configuration does not use are NULL.

cdef extern from "_tile.h" nogil:
    ctypedef void (*rtrl_product_fn)(const float *w, int ldw, const float *b,
                                     Py_ssize_t ldb, int n_rows, int n_inner,
                                     int width, float *out, int ldo) noexcept nogil
    ctypedef void (*rtrl_epilogue_fn)(float *p, Py_ssize_t ldp, const float *t, int ldt,
                                      int n_rows, int width, const float *dphi,
                                      const float *c, float *g, int contract) noexcept nogil
    ctypedef void (*rtrl_sens_fn)(const float *w, int ldw, float *p, Py_ssize_t ldp,
                                  int n_rows, int width, int wreal, const float *dphi,
                                  const float *c, float *g, int contract,
                                  float *t) noexcept nogil
    ctypedef void (*rtrl_matvec_fn)(const float *w, Py_ssize_t ldw, const float *x,
                                    int rows, int cols, float *out) noexcept nogil
    ctypedef void (*rtrl_scale_add_fn)(float *y, float a, const float *x, float b,
                                       Py_ssize_t n) noexcept nogil
    ctypedef void (*rtrl_scaled_fn)(float *y, float a, const float *x,
                                    Py_ssize_t n) noexcept nogil
    ctypedef double (*rtrl_sumsq_fn)(const float *x, Py_ssize_t n, int *finite) noexcept nogil
    ctypedef double (*rtrl_adam_fn)(float *theta, float *m1, float *m2, const float *g,
                                    Py_ssize_t n, float scale, float b1, float b2,
                                    float lr, float eps, int *finite) noexcept nogil
    ctypedef float (*rtrl_peak_fn)(long iters, float a, float b) noexcept nogil
    ctypedef double (*rtrl_trace_grad_fn)(float *p, float a, const float *z, float b, float c,
                                          float *g, Py_ssize_t n, int *finite) noexcept nogil
    ctypedef double (*rtrl_step_sumsq_fn)(float *y, float a, const float *x, Py_ssize_t n,
                                          int *finite) noexcept nogil
    ctypedef struct rtrl_kernels:
        rtrl_product_fn product     # out = W @ panel, register-blocked
        rtrl_epilogue_fn epilogue   # the fused pass after it
        rtrl_sens_fn sens           # both, one column slice at a time (RTRL's update)
        rtrl_matvec_fn matvec       # out = W @ x
        rtrl_scale_add_fn scale_add # y = a y + b x
        rtrl_scaled_fn scaled       # y = a x
        rtrl_sumsq_fn sumsq         # sum x^2, all finite?
        rtrl_adam_fn adam           # Adam's element update; sum theta^2, all finite?
        rtrl_trace_grad_fn trace_grad   # p = a p + b z; g = c p; sum g^2, one pass
        rtrl_step_sumsq_fn step_sumsq   # y += a x; sum y^2, one pass
        rtrl_peak_fn peak           # register-only multiply-adds (the benchmark's peak)
        int peak_flops              # flops of one round of peak
        const char *name
    const rtrl_kernels *rtrl_kernels_named(const char *name)
    const rtrl_kernels *rtrl_kernels_best()
    int RTRL_MAX_VL
    int RTRL_MAX_TILE
    unsigned int rtrl_fpu_enter()
    void rtrl_fpu_leave(unsigned int old)


cdef extern from "_pool.h" nogil:
    ctypedef void (*rtrl_task_fn)(void *arg, int part, int parts) noexcept nogil
    ctypedef struct rtrl_pool:
        pass
    rtrl_pool *rtrl_pool_new(int parts)
    void rtrl_pool_run(rtrl_pool *pool, rtrl_task_fn task, void *arg)
    void rtrl_pool_free(rtrl_pool *pool)
    void rtrl_pool_share(Py_ssize_t total, Py_ssize_t unit, int part, int parts,
                         Py_ssize_t *lo, Py_ssize_t *hi)


# cells
cdef enum:
    CELL_ELMAN = 0        # DESIGN §3.1
    CELL_DIAG = 1         # 2x2 rotation-decay blocks, tanh readout (§3.7)
    CELL_GRU = 2          # PyTorch GRUCell layout (§3.10), see _gru.pyx

# losses
cdef enum:
    LOSS_MSE = 0          # 0.5 ||yhat - y||^2
    LOSS_SOFTMAX = 1      # -sum_q y[q] log softmax(yhat)[q] (§3.9)

# learners
cdef enum:
    LEARNER_RTRL = 0      # §3.2 (for the diag cell: its exact O(n m) traces)
    LEARNER_SNAP1 = 1     # §3.3
    LEARNER_SNAP2 = 2     # §3.4
    LEARNER_UORO = 3      # §3.5
    LEARNER_TBPTT = 4     # §3.6

# optimisers
cdef enum:
    OPT_SGD = 0
    OPT_MOMENTUM = 1
    OPT_ADAM = 2

# status bits returned by the step kernel
cdef enum:
    STATUS_OK = 0
    STATUS_RECOVERED = 1      # the divergence guard intervened (see _kernels.pyx)
    STATUS_POISONED = 2       # even the restored parameters give a non-finite state

ctypedef struct RNN:
    # sizes
    int n                 # hidden units
    int m                 # inputs
    int o                 # outputs
    int K                 # n + m + 1: columns of W = [W_rec | W_in | b] (Elman);
                          # for every cell, the length of z = [h_prev; x; 1]
    int cell
    int loss
    Py_ssize_t n_params   # all parameters
    Py_ssize_t n_core     # parameters before the readout: W_out = theta + n_core
    Py_ssize_t ldp        # row stride of P in floats (multiple of RTRL_MAX_VL)
    int threads           # parts the n^4 term is split into (1: no pool)
    rtrl_pool *pool       # the model's workers when threads > 1, else NULL
    bint split_passes     # the O(n K) passes (forward, SnAp-1/UORO traces, the
                          # optimiser step) are split too: threads > 1, Elman
                          # cell, n_params >= SPLIT_MIN_PARAMS (_kernels.pyx)
    # what the task the pool is running needs (set before each run_parts)
    bint task_contract
    float task_f[6]       # its scalars (see each task)
    double task_d[2]
    double part_sum[64]   # each part's partial sum (MAX_THREADS = 64 parts)
    int part_ok[64]       # and whether what it summed was finite
    int window            # TBPTT truncation k
    int ring_width        # floats per step in ring_d: n (Elman), 5n (GRU)
    Py_ssize_t p_size     # floats in the learner's sensitivity buffer P
    # configuration
    int learner
    int optimizer
    float lr
    float beta1
    float beta2
    float adam_eps
    float clip            # <= 0: no clipping
    bint normalize
    bint has_mask         # W_rec has a sparsity mask
    double norm_window    # normaliser forgets with weight 1/min(count, window)
    double norm_eps
    bint traces_stale     # set by forward-only steps; the next learning step resets
    # counters
    long long steps
    long long updates
    long long recoveries
    long long trace_resets
    long long opt_t       # optimiser step count (Adam bias correction)
    double last_loss
    double last_base      # 0.5*||y||^2 (normalised): the loss of predicting zero
    # divergence guard (_kernels.pyx, "Divergence guard")
    long long lr_backoff  # updates use lr * 2**-lr_backoff; +1 per recovery
    long long guard_n     # losses the guard has seen
    long long alarm       # consecutive learning steps with loss_fast > GUARD_FACTOR x scale
    long long since_good  # updates since `good` was refreshed
    long long calm        # alarm-free updates since the last recovery or backoff step
    long long since_bad   # updates since the last non-finite gradient
    long long rebaselines # trips that took the present loss as the new reference
    bint guard_dirty      # a step above GUARD_CALM x scale since `good` was refreshed
    double loss_fast      # EMA of the loss, weight GUARD_FAST
    double loss_slow      # the loss's record: EMA of min(loss, scale), weight 1/GUARD_SLOW
    double base_fast      # EMA of last_base, weight GUARD_FAST
    # parameters and optimiser (float32, each n_params long)
    float *theta          # Elman: [W (n x K) | W_out (o x n) | b_out (o)]
                          # diag:  [decay (n/2) | angle (n/2) | Bb (n x (m+1)) | W_out | b_out]
                          # GRU:   [W_ih (3n x m) | W_hh (3n x n) | b_ih (3n) | b_hh (3n)
                          #         | W_out | b_out]
    float *grad
    # sum of squares of grad[:n_core] when the learner computed it while
    # writing it (SnAp-1), so that the update skips that pass; used once
    double core_sumsq
    bint core_sumsq_known
    bint core_finite
    float *good           # the last good parameters (divergence guard)
    float *m1             # first moment / momentum (NULL for sgd)
    float *m2             # second moment (Adam only)
    float *mask           # (n, n) 1 = kept, 0 = masked W_rec entry (NULL: dense)
    # running state
    float *h              # (n,)
    # learner state
    float *P              # rtrl/Elman (n, ldp): P[k, i*K + j] = dh[k]/dW[i, j]
                          # rtrl/GRU (n, ldp): P[k, q] = dh[k]/dtheta[q], q < n_core
                          # snap1 (n, K):      J[k, j] ~ dh[k]/dW[k, j]
                          # snap2: the blocks P_i (|S_i|, ld_i), one per row i of W
                          # rtrl/diag: traces, see _diag.pyx
    float *uh             # uoro h~ (n,)
    float *ut             # uoro theta~ (n_core,): (n, K) for Elman
    long long *rng        # uoro: xorshift128+ state (2 words)
    float *ring_z         # tbptt: z of the last `window` steps (window, K)
    float *ring_d         # tbptt: tanh' (Elman) or gcoef (GRU) of the last `window`
                          # steps (window, ring_width)
    long long *ring       # tbptt: [next slot, entries held]
    # snap2 structure (int64), built from the mask
    long long *s_off      # (n+1,) S_i = s_idx[s_off[i]:s_off[i+1]]: units row i reaches
    long long *s_idx
    long long *c_off      # (n+1,) C_i = c_idx[c_off[i]:c_off[i+1]]: kept columns of row i
    long long *c_idx
    long long *p_off      # (n+1,) block i starts at P + p_off[i]
    long long *ld         # (n,)   row stride of block i
    # per-step scratch
    float *z              # (K,)  [h_prev; x_normalised; 1]  (diag: [x_normalised; 1] at z + n)
    float *feat           # (n,)  readout features: h (Elman), tanh(h) (diag)
    float *dphi           # (n,)  tanh'(a) (Elman)
    float *c              # (n,)  dL/dh (W_out^T e, through the readout)
    float *yn             # (o,)  prediction in normalised units
    float *e              # (o,)  yn - y_normalised
    float *x_in           # (m,)  staged raw input
    float *y_in           # (o,)  staged raw target
    float *tmp            # product scratch (rtrl: threads x n4 x RTRL_MAX_TILE, one
                          # block per thread; snap2: largest |S_i| x ld_i)
    float *wsub           # snap2: W_rec restricted to S_i
    float *dsub           # snap2: tanh' on S_i
    float *csub           # snap2: c on S_i
    float *gsub           # snap2: gradient row i on C_i; uoro/tbptt: scratch vectors
    float *v1             # (n,) scratch
    float *v2             # (n,) scratch
    float *h_prev         # (n,) diag: state before this step
    # GRU (_gru.pyx)
    float *gates          # (6n,) W_ih x + b_ih | W_hh h_prev + b_hh; uoro: scratch
    float *gcoef          # (5n,) a_r | a_z | a_n | a_nh | u: this step's D_t and M_t
    float *dmat           # (n, n) rtrl: D_t = dh_t/dh_{t-1}
    # online normaliser (float64): mean and variance per channel, sample counts
    double *x_mean
    double *x_var
    double *y_mean
    double *y_var
    double *counts        # [inputs seen, targets seen]
    const rtrl_kernels *simd  # product and fused pass for this CPU
