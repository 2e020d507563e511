"""One backend-neutral module per algorithm: what it computes, how it tiles, what it costs.

NumPy only (SciPy for FFT sizes): both the Numba and the CUDA kernels import
these, so a plan, a transform or a workspace formula is written once.
"""
