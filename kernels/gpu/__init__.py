"""GPU kernels (CuPy + CUDA C). Importable without CuPy, a driver or a GPU, and without Numba."""
