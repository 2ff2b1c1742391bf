# What other compiled modules cimport from _kernels.
from rtrl_edge._types cimport RNN

cdef int rnn_step(RNN *s, bint has_y, bint learn, float *yhat_out) noexcept nogil
cdef void rnn_reset_state(RNN *s) noexcept nogil
