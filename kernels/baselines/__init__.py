"""The peers convbench's kernels are compared with: oneDNN, cuDNN, the textbook im2col."""
