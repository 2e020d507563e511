"""GPU kernels (CuPy + CUDA C). Importable without CuPy or a GPU."""
