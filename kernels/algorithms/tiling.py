"""Tiling arithmetic shared by the CPU and GPU kernels (pure Python).

Kernels process large problems in tiles so that the memory they allocate
beyond input and output stays under a workspace cap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """A block of work: images ``n0:n0+nb`` and output rows ``p0:p0+rows``."""

    n0: int
    nb: int
    p0: int
    rows: int


def plan_tiles(n_images: int, n_rows: int, bytes_per_row: int, cap: int) -> tuple[int, int]:
    """Images and rows per tile so that a tile's workspace stays within ``cap``.

    Whole images are grouped while one image fits; otherwise one image is cut
    into row blocks (at least one row).

    Returns
    -------
    images_per_tile, rows_per_tile : int
    """
    per_image = max(1, bytes_per_row * n_rows)
    if per_image <= cap:
        return max(1, min(n_images, cap // per_image)), n_rows
    rows = max(1, cap // max(1, bytes_per_row))
    return 1, min(rows, n_rows)


def iter_tiles(n_images: int, n_rows: int, images_per_tile: int,
               rows_per_tile: int) -> Iterator[Tile]:
    """Tiles covering ``n_images x n_rows`` in row-major order."""
    for n0 in range(0, n_images, images_per_tile):
        nb = min(images_per_tile, n_images - n0)
        for p0 in range(0, n_rows, rows_per_tile):
            yield Tile(n0, nb, p0, min(rows_per_tile, n_rows - p0))
