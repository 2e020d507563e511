"""The problem grid every kernel is checked on (CPU, emulated GPU and GPU)."""

import pytest


def _grid():
    """(id, ConvProblem.make kwargs) covering each axis the issue names."""
    cases = []

    def add(n=2, c=4, hw=(7, 9), k=6, rs=(3, 3), **kw):
        kw.setdefault("bias", True)
        label = f"n{n}c{c}hw{hw[0]}x{hw[1]}k{k}rs{rs[0]}x{rs[1]}-" + "-".join(
            f"{a}{b}" for a, b in sorted(kw.items()))
        cases.append(pytest.param((n, c, *hw, k, *rs), kw, id=label))

    for stride in (1, 2, 3):  # stride x padding on an odd, non-square image
        for padding in (0, 1, 2, 3, "valid") + (("same",) if stride == 1 else ()):
            add(stride=stride, padding=padding)
    for dilation in (2, 3):
        for padding in (0, 2, "same"):
            add(hw=(13, 15), dilation=dilation, padding=padding)
        add(hw=(13, 15), rs=(5, 5), dilation=dilation, padding=1)
    for groups, c, k in ((1, 4, 6), (2, 4, 6), (6, 6, 6), (6, 6, 12)):  # dense, 2, depthwise(x2)
        for bias in (False, True):
            add(n=3, c=c, k=k, hw=(13, 5), groups=groups, padding=1, bias=bias)
        add(n=1, c=c, k=k, hw=(13, 5), groups=groups, stride=2, padding="valid")
    for rs in ((1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1)):
        add(n=1, hw=(13, 9), rs=rs, padding="same")
        add(n=3, hw=(13, 9), rs=rs, padding=0, bias=False)
    add(n=1, c=3, k=8, hw=(31, 35), rs=(11, 11), stride=4, padding=2)
    add(n=2, c=8, k=8, hw=(5, 6), rs=(1, 1), stride=2)
    add(n=1, c=4, k=4, hw=(6, 6), rs=(2, 4), padding="same", dilation=(1, 2))
    add(n=2, c=4, k=6, hw=(9, 8), rs=(3, 3), padding=((0, 2), (3, 1)))
    # Many output channels per group on narrow images: direct's channel-order path,
    # with partial channel (K/g = 300 > 256) and pixel (Q = 21 > 8, odd) blocks,
    # and C/g = 6 (four channels at once, then two one at a time).
    add(n=2, c=8, k=32, hw=(9, 11), rs=(3, 3), padding=1)
    add(n=1, c=6, k=40, hw=(13, 7), rs=(5, 3), stride=2, padding=((2, 1), (0, 2)),
        dilation=(1, 2))
    add(n=2, c=8, k=64, hw=(7, 9), rs=(1, 1), groups=2)
    add(n=1, c=6, k=300, hw=(5, 21), rs=(3, 3), padding="same")
    return cases


GRID = _grid()
