"""Compiled backend: Cython kernels for convolution and pooling (see BACKEND_API.md)."""
