# The diagonal (2x2 rotation-decay) cell and its exact traces (DESIGN §3.7).
from rtrl_edge._types cimport RNN

cdef void diag_forward(RNN *s) noexcept nogil
cdef void diag_traces(RNN *s, bint contract) noexcept nogil
