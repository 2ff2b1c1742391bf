# Declarations shared by the compiled modules of rtrl_edge.
#
# `RNN` is the whole state of one model as raw pointers into the model's two
# arenas (float32 and float64), filled once at construction by `Core`.  The
# kernels in _kernels.pyx take an `RNN*` and never allocate, raise or touch
# Python objects.

cdef extern from "_tile.h" nogil:
    ctypedef void (*rtrl_product_fn)(const float *w, int ldw, const float *b,
                                     Py_ssize_t ldb, int n_rows, int n_inner,
                                     int width, float *out, int ldo) noexcept nogil
    ctypedef void (*rtrl_epilogue_fn)(float *p, Py_ssize_t ldp, const float *t, int ldt,
                                      int n_rows, int width, const float *dphi,
                                      const float *c, float *g, int contract) noexcept nogil
    ctypedef struct rtrl_kernels:
        rtrl_product_fn product
        rtrl_epilogue_fn epilogue
        const char *name
    const rtrl_kernels *rtrl_kernels_named(const char *name)
    const rtrl_kernels *rtrl_kernels_best()
    int RTRL_MAX_VL
    unsigned int rtrl_fpu_enter()
    void rtrl_fpu_leave(unsigned int old)

# learner ids
cdef enum:
    LEARNER_RTRL = 0

# optimiser ids
cdef enum:
    OPT_SGD = 0
    OPT_MOMENTUM = 1
    OPT_ADAM = 2

# status bits returned by the step kernel
cdef enum:
    STATUS_OK = 0
    STATUS_RECOVERED = 1      # an update or state went non-finite and was undone
    STATUS_POISONED = 2       # even the restored parameters give a non-finite state

ctypedef struct RNN:
    # sizes
    int n                 # hidden units
    int m                 # inputs
    int o                 # outputs
    int K                 # n + m + 1: columns of W = [W_rec | W_in | b]
    Py_ssize_t n_params   # n*K + o*n + o
    Py_ssize_t ldp        # row stride of P in floats (>= n*K, multiple of RTRL_MAX_VL)
    int nb                # column block width of the sensitivity update
    # configuration
    int learner
    int optimizer
    float lr
    float beta1
    float beta2
    float adam_eps
    float clip            # <= 0: no clipping
    bint normalize
    double norm_window    # normaliser forgets with weight 1/min(count, window)
    double norm_eps
    bint traces_stale     # set by forward-only steps; the next learning step zeroes P
    # counters
    long long steps
    long long updates
    long long recoveries
    long long trace_resets
    long long opt_t       # optimiser step count (Adam bias correction)
    double last_loss
    # parameters and optimiser (float32, each n_params long)
    float *theta          # [W (n x K, row-major) | W_out (o x n) | b_out (o)]
    float *grad
    float *good           # theta after the latest finite update (divergence guard)
    float *m1             # first moment / momentum (NULL for sgd)
    float *m2             # second moment (Adam only)
    # running state
    float *h              # (n,)
    float *P              # (n, ldp): P[k, i*K + j] = dh[k] / dW[i, j]
    # per-step scratch
    float *z              # (K,)  [h_prev; x_normalised; 1]
    float *dphi           # (n,)  tanh'(a)
    float *c              # (n,)  W_out^T e
    float *yn             # (o,)  prediction in normalised units
    float *e              # (o,)  yn - y_normalised
    float *x_in           # (m,)  staged raw input
    float *y_in           # (o,)  staged raw target
    float *tmp            # (n4, nb) product block, n4 = n rounded up to 4
    # online normaliser (float64): mean and variance per channel, sample counts
    double *x_mean
    double *x_var
    double *y_mean
    double *y_var
    double *counts        # [inputs seen, targets seen]
    const rtrl_kernels *simd  # product and fused pass for this CPU

cdef int rnn_step(RNN *s, bint has_y, bint learn, float *yhat_out) noexcept nogil
cdef void rnn_forward_only(RNN *s, float *yhat_out) noexcept nogil
cdef void rnn_reset_state(RNN *s) noexcept nogil
