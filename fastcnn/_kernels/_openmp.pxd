# The team-size rule shared by every kernel module (see _openmp.pyx's docstring).

cdef int team_size(Py_ssize_t work, Py_ssize_t min_work, int n_threads) noexcept nogil
cdef void team_released(int threads) noexcept nogil
