"""Compiled backend: the Cython/C kernels behind ``fastcnn.functional``.

Each module implements its part of the backend contract, the ``Backend`` protocol in
``fastcnn._backend``, which mypy checks these modules' stubs against.
"""
