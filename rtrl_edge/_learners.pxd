# The approximate learners (DESIGN §3.3-3.6), cimported by _kernels.
from rtrl_edge._types cimport RNN

cdef void snap1_update(RNN *s, bint contract) noexcept nogil
cdef void snap2_update(RNN *s, bint contract) noexcept nogil
cdef void uoro_update(RNN *s, bint contract) noexcept nogil
cdef void tbptt_update(RNN *s, bint contract) noexcept nogil
cdef void reset_learner(RNN *s) noexcept nogil
