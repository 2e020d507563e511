"""The kernels under test and the peer libraries they are compared with.

Installed as ``convbench.kernels``. Each kernel knows nothing of the harness
but the contract (:mod:`convbench.contract`) and the problem model:

* ``algorithms/``: one backend-neutral module per algorithm (plans, transform
  matrices, tiling, workspace formulas; NumPy only), imported by both backends;
* ``cpu/``: Numba kernels; ``gpu/``: CuPy + CUDA C kernels (importable
  without CuPy or a GPU); ``baselines/``: oneDNN, cuDNN, the textbook im2col;
* ``catalog.py``: the list the harness registers.
"""
