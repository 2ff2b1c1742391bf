# The approximate learners (DESIGN §3.3-3.6), cimported by _kernels.
from rtrl_edge._types cimport RNN

cdef void snap1_update(RNN *s, bint contract) noexcept nogil
cdef void snap2_update(RNN *s, bint contract) noexcept nogil
cdef void uoro_update(RNN *s, bint contract) noexcept nogil
cdef void tbptt_update(RNN *s, bint contract) noexcept nogil
cdef void reset_learner(RNN *s) noexcept nogil

# shared with the GRU's learners (_gru.pyx)
cdef void draw_signs(RNN *s, float *nu) noexcept nogil
cdef int ring_push(RNN *s, const float *per_step, int *held) noexcept nogil
