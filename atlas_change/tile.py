"""Tile stage: the grid of 64 x 64 patches on the scene, its chunks, cutting a read block into
patches, and averaging overlapping patch probabilities onto output cells. Pure numpy.

The whole scene is classified: where its size is not 64 + a multiple of the stride, the last
row (column) of cells is labelled by patches shifted back to end at the scene's edge (`edges`),
so that cell grid covers every pixel; its last cells reach up to stride - 1 pixels past the edge."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window

from .errors import AtlasError

PATCH = 64


@dataclass(frozen=True)
class PatchGrid:
    """Patches of `patch` pixels whose top-left corners sit every `stride` pixels from the origin.

    Output cells are `stride` x `stride` pixels; each patch covers k x k cells (k = patch/stride).
    """

    width: int
    height: int
    stride: int = 64
    patch: int = PATCH
    y0: int = 0  # pixel offset of the first patch (the edge grids of `edges`)
    x0: int = 0

    def __post_init__(self):
        if self.stride <= 0 or self.patch % self.stride:
            raise AtlasError(f"stride {self.stride} must divide the patch size {self.patch} (64, 32 or 16)")

    @property
    def k(self) -> int:
        return self.patch // self.stride

    @property
    def n_rows(self) -> int:
        return max(0, (self.height - self.y0 - self.patch) // self.stride + 1)

    @property
    def n_cols(self) -> int:
        return max(0, (self.width - self.x0 - self.patch) // self.stride + 1)

    @property
    def remainder(self) -> tuple[int, int]:
        """Pixel rows below and columns right of the last regular patch (0 when none are left)."""
        if not self.n_rows or not self.n_cols:
            return 0, 0
        return (self.height - self.patch) % self.stride, (self.width - self.patch) % self.stride

    @property
    def cell_shape(self) -> tuple[int, int]:
        """Rows, cols of the output raster, edge cells included (0 x 0 when the scene is smaller
        than one patch)."""
        if not self.n_rows or not self.n_cols:
            return 0, 0
        ry, rx = self.remainder
        return self.n_rows + self.k - 1 + (ry > 0), self.n_cols + self.k - 1 + (rx > 0)

    def edges(self) -> list[tuple[PatchGrid, tuple[int, int, int, int]]]:
        """The patches that end at the bottom and right edges, each as (grid, patch range): the last
        row of the grid shifted down by the remainder, the last column of the one shifted right, and
        the corner patch. They label only the cells the regular patches leave uncovered."""
        ry, rx = self.remainder
        out = []
        if ry:
            g = PatchGrid(self.width, self.height, self.stride, self.patch, ry, 0)
            out.append((g, (g.n_rows - 1, g.n_rows, 0, g.n_cols)))
        if rx:
            g = PatchGrid(self.width, self.height, self.stride, self.patch, 0, rx)
            out.append((g, (0, g.n_rows, g.n_cols - 1, g.n_cols)))
        if ry and rx:
            g = PatchGrid(self.width, self.height, self.stride, self.patch, ry, rx)
            out.append((g, (g.n_rows - 1, g.n_rows, g.n_cols - 1, g.n_cols)))
        return out

    def edge_chunks(self, chunk_px: int) -> list[tuple[PatchGrid, tuple[int, int, int, int]]]:
        """`edges`, split along the edge into ranges of as many patches as a regular chunk holds (the
        model's batches stay full: a 10,980 px tile's edge is one range at the default chunk)."""
        n = max(1, (chunk_px // self.stride) ** 2)
        out = []
        for g, (r0, r1, c0, c1) in self.edges():
            if r1 - r0 == 1:
                out += [(g, (r0, r1, c, min(c + n, c1))) for c in range(c0, c1, n)]
            else:
                out += [(g, (r, min(r + n, r1), c0, c1)) for r in range(r0, r1, n)]
        return out

    def cell_transform(self, transform: Affine) -> Affine:
        """The output grid: the scene's origin, cells `stride` pixels wide."""
        s = self.stride
        return Affine(transform.a * s, transform.b * s, transform.c, transform.d * s, transform.e * s, transform.f)

    def chunks(self, chunk_px: int) -> list[tuple[int, int, int, int]]:
        """Patch-index ranges (r0, r1, c0, c1), each about `chunk_px` pixels square."""
        n = max(1, chunk_px // self.stride)
        return [(r, min(r + n, self.n_rows), c, min(c + n, self.n_cols))
                for r in range(0, self.n_rows, n) for c in range(0, self.n_cols, n)]

    def window(self, r0: int, r1: int, c0: int, c1: int) -> Window:
        """Pixel window holding patches r0..r1-1 x c0..c1-1."""
        s = self.stride
        return Window(self.x0 + c0 * s, self.y0 + r0 * s, (c1 - c0 - 1) * s + self.patch,
                      (r1 - r0 - 1) * s + self.patch)


def usable_patches(valid: np.ndarray, stride: int, patch: int = PATCH, max_nodata: float = 0.0) -> np.ndarray:
    """(h, w) data mask -> (rows, cols) flags of the patches whose nodata fraction <= max_nodata."""
    bad = sliding_window_view(~valid, (patch, patch))[::stride, ::stride]
    if max_nodata > 0:
        return bad.mean(axis=(-2, -1)) <= max_nodata
    return ~bad.any(axis=(-2, -1))


def cut_patches(block: np.ndarray, valid: np.ndarray, stride: int, patch: int = PATCH,
                max_nodata: float = 0.0, usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(bands, h, w) block -> (patches (n, patch, patch, bands) of the usable patches,
    usable flags (rows, cols)). A patch is usable when its nodata fraction <= max_nodata, or
    where `usable` (from usable_patches, then narrowed, e.g. by clouds) says so."""
    if usable is None:
        usable = usable_patches(valid, stride, patch, max_nodata)
    views = sliding_window_view(block, (patch, patch), axis=(1, 2))[:, ::stride, ::stride]
    # views: (bands, rows, cols, patch, patch) -> (n, patch, patch, bands), one copy of the usable ones
    patches = np.ascontiguousarray(views[:, usable].transpose(1, 2, 3, 0))
    return patches, usable


def covering_patches(flags: np.ndarray, k: int) -> np.ndarray:
    """Per-patch flags (R, C) -> per cell (R+k-1, C+k-1): how many flagged patches cover the cell
    (a patch covers k x k cells, k = patch / stride)."""
    r, c = flags.shape
    count = np.zeros((r + k - 1, c + k - 1), dtype=np.int32)
    for dy in range(k):
        for dx in range(k):
            count[dy:dy + r, dx:dx + c] += flags
    return count


def average_to_cells(probs: np.ndarray, usable: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Patch probabilities (R, C, n) -> cell probabilities (R+k-1, C+k-1, n): each cell gets the
    mean over the usable patches that cover it. Returns (cell probs, cell has-data mask)."""
    r, c, n = probs.shape
    total = np.zeros((r + k - 1, c + k - 1, n), dtype=np.float64)
    w = usable.astype(np.float64)
    for dy in range(k):
        for dx in range(k):
            total[dy:dy + r, dx:dx + c] += probs * w[..., None]
    count = covering_patches(usable, k)
    has = count > 0
    total[has] /= count[has][:, None]
    return total.astype(np.float32), has


def cells_with_edges(grid: PatchGrid, parts: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
                     combine) -> tuple:
    """Cell arrays of the whole scene from per-patch arrays: `parts` maps a grid's (y0, x0) to its
    patch arrays over the range `edges` gives it (the regular grid: all of it), `combine` turns one
    grid's patch arrays into cell arrays (e.g. average_to_cells); the edge grids fill the last row /
    column of cells that the regular grid leaves uncovered."""
    ry, rx = grid.remainder
    main = combine(*parts[(0, 0)])
    rows, cols = grid.cell_shape
    out = []
    for m in main:
        a = np.zeros((rows, cols) + m.shape[2:], m.dtype)
        a[:m.shape[0], :m.shape[1]] = m
        out.append(a)
    if ry:
        for a, e in zip(out, combine(*parts[(ry, 0)])):
            a[-1, :e.shape[1]] = e[-1]
    if rx:
        for a, e in zip(out, combine(*parts[(0, rx)])):
            a[:e.shape[0], -1] = e[:, -1]
    if ry and rx:
        for a, e in zip(out, combine(*parts[(ry, rx)])):
            a[-1, -1] = e[-1, -1]
    return tuple(out)
