"""The dropped-bias fault alone, for a subprocess (it shares im2col's name with another)."""

from planted_faults import Im2colDroppedBias

REPLACES_BUILTINS = True
KERNELS = [Im2colDroppedBias()]
