# The GRU cell and its sensitivity updates for every learner (DESIGN §3.10).
from rtrl_edge._types cimport RNN

cdef void gru_forward(RNN *s) noexcept nogil
cdef void gru_advance(RNN *s, bint contract) noexcept nogil
