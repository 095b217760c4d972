"""Graph convolutions on the HEALPix sphere (DeepSphere) and a graph UNet on the NESTED hierarchy.

The sphere is the graph of HEALPix pixels in NESTED order, each joined to its 7 or 8 neighbours
(``healpy.get_all_neighbours``), with DeepSphere's edge weights (Perraudin et al. 2019): a Gaussian kernel of the
squared Euclidean distance between the unit vectors of the pixel centres, ``w_ij = exp(-d_ij^2 / (2 <d^2>))``
with ``<d^2>`` the mean over the graph's edges. The normalised Laplacian ``L = I - D^-1/2 W D^-1/2`` (``D`` the
weighted degrees) is symmetric positive semi-definite with its spectrum in ``[0, 2]``; a filter is a polynomial
of ``L`` in the Chebyshev basis of the rescaled ``L~ = 2 L / lambda_max - I`` (Defferrard et al. 2016) with the
upper bound ``lambda_max = 2``, i.e. ``L~ = L - I = -D^-1/2 W D^-1/2`` (the true largest eigenvalue is 1.38 at
nside 1 and 1.50 at nside 32): the filters span the same polynomials of ``L`` whatever the scale, and the bound
needs no eigen-solver and is the same on every machine.
A filter with ``K`` Chebyshev terms is isotropic and reaches ``K - 1`` neighbours away.

Because the HEALPix grid and its neighbour graph are invariant under the rotations by 90 degrees about the polar
axis (and the reflections that swap faces), so are the Laplacian and every filter: filtering and rotating
commute exactly. Pooling takes the mean of the 4 NESTED children of each pixel (nside -> nside / 2, the same
grouping as ``healpy.ud_grade``), unpooling repeats each pixel into its 4 children.

Activations are vertex-major, ``(V, B, C)`` (pixels, batch, channels): a Laplacian product is then one sparse
matrix times the dense ``(V, B C)`` block with no transposes, pooling is a reshape of the leading axis and batch
normalisation sees ``(V B, C)``. :class:`SphereUNet` takes and returns the ``(B, C, 1, V)`` "images" of the
learned-method machinery (:mod:`cosmobench.cmb.learned`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..sky.sht import check_nside

__all__ = [
    "neighbour_edges",
    "edge_weights",
    "laplacian",
    "SparseOperator",
    "ChebConv",
    "pool",
    "unpool",
    "SphereUNet",
]


@functools.lru_cache(maxsize=8)
def neighbour_edges(nside: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges of the HEALPix neighbour graph in NESTED order.

    Parameters
    ----------
    nside : int
        HEALPix resolution.

    Returns
    -------
    rows, cols : ndarray of int64, shape (nedge,), read-only
        Edge ``k`` joins pixel ``rows[k]`` to its neighbour ``cols[k]``, sorted by ``rows`` then ``cols``; every
        pixel has 8 neighbours except 7 at the 24 pixels where three base faces meet, so
        ``nedge = 8 * 12 nside^2 - 24``. The relation is symmetric (each edge appears in both directions).
    """
    import healpy as hp

    nside = check_nside(nside)
    npix = 12 * nside**2
    neighbours = np.sort(hp.get_all_neighbours(nside, np.arange(npix), nest=True).T, axis=1)  # (npix, 8)
    rows = np.repeat(np.arange(npix, dtype=np.int64), 8)
    cols = neighbours.ravel().astype(np.int64)
    keep = cols >= 0
    rows, cols = rows[keep], cols[keep]
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


@functools.lru_cache(maxsize=8)
def edge_weights(nside: int) -> np.ndarray:
    """DeepSphere's edge weights of :func:`neighbour_edges`: ``exp(-d^2 / (2 <d^2>))``.

    Parameters
    ----------
    nside : int
        HEALPix resolution.

    Returns
    -------
    ndarray of float64, shape (nedge,), read-only, dimensionless in (0, 1)
        ``d`` is the chord between the unit vectors of the two pixel centres (radians for small ``d``) and
        ``<d^2>`` its mean square over all edges.
    """
    import healpy as hp

    rows, cols = neighbour_edges(nside)
    xyz = np.stack(hp.pix2vec(nside, np.arange(12 * nside**2), nest=True), axis=1)
    dist2 = np.sum((xyz[rows] - xyz[cols]) ** 2, axis=1)
    weights = np.exp(-dist2 / (2 * dist2.mean()))
    weights.setflags(write=False)
    return weights


def laplacian(nside: int, *, rescaled: bool = False, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised graph Laplacian of the HEALPix sphere in NESTED order, as a torch sparse CSR tensor.

    Parameters
    ----------
    nside : int
        HEALPix resolution.
    rescaled : bool
        ``False``: ``L = I - D^-1/2 W D^-1/2`` (spectrum in ``[0, 2]``, ``D^1/2 1`` in its null space);
        ``True``: the Chebyshev argument ``L - I`` (spectrum in ``[-1, 1]``, zero diagonal: only the edges).
    dtype : torch.dtype
        Floating type of the values.

    Returns
    -------
    torch.Tensor, sparse CSR, shape (12 nside^2, 12 nside^2), dimensionless
    """
    import scipy.sparse as sp

    rows, cols = neighbour_edges(check_nside(nside))
    weights = edge_weights(nside)
    npix = 12 * nside**2
    degree = np.bincount(rows, weights=weights, minlength=npix)
    adjacency = sp.csr_matrix((weights / np.sqrt(degree[rows] * degree[cols]), (rows, cols)), shape=(npix, npix))
    matrix = -adjacency if rescaled else sp.identity(npix, format="csr") - adjacency
    matrix.sort_indices()
    with warnings.catch_warnings():  # torch says once per process that CSR support is "beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data).to(dtype),
            (npix, npix),
            check_invariants=True,
        )


class _SymmetricProduct(torch.autograd.Function):
    """``A @ x`` for a constant symmetric sparse ``A``: the gradient is ``A @ grad`` (no sparse transpose)."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.matrix = matrix
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, ctx.matrix @ grad


class SparseOperator(nn.Module):
    """A constant symmetric sparse matrix held as CSR buffers (moved by ``.to``, copied by ``deepcopy``, not saved).

    Parameters
    ----------
    matrix : torch.Tensor, sparse CSR, shape (V, V)
        Must be symmetric: the backward pass multiplies by the matrix again instead of its transpose.
    """

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        index = torch.int32 if matrix.values().numel() < 2**31 else torch.int64
        self.size = int(matrix.shape[0])
        self.register_buffer("crow", matrix.crow_indices().to(index), persistent=False)
        self.register_buffer("col", matrix.col_indices().to(index), persistent=False)
        self.register_buffer("values", matrix.values(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``matrix @ x`` for x of shape (V, N), in the dtype of the stored values (autocast off)."""
        matrix = torch.sparse_csr_tensor(
            self.crow, self.col, self.values, (self.size, self.size), check_invariants=False
        )
        with torch.autocast(x.device.type, enabled=False):
            return _SymmetricProduct.apply(matrix, x.to(self.values.dtype))


class ChebConv(nn.Module):
    """Chebyshev graph convolution: ``y = sum_k T_k(L~) x W_k + b``.

    Parameters
    ----------
    in_channels, out_channels : int
        Feature widths.
    k : int
        Number of Chebyshev terms ``T_0 .. T_{k-1}`` (``k = 1`` is a per-pixel linear map; the filter reaches
        ``k - 1`` neighbours away).
    bias : bool
        Add a learned bias per output channel.

    Notes
    -----
    Weights ``(k, in_channels, out_channels)`` start at He-normal scale ``sqrt(2 / (k in_channels))``: every
    ``T_k(L~)`` has spectrum within ``[-1, 1]``. The recursion ``T_k = 2 L~ T_{k-1} - T_{k-2}`` runs in the
    Laplacian's dtype (float32, outside autocast); the mixing of the terms follows autocast.
    """

    def __init__(self, in_channels: int, out_channels: int, k: int, *, bias: bool = True):
        super().__init__()
        if k < 1:
            raise ValueError(f"the number of Chebyshev terms must be >= 1, got {k}")
        self.k = int(k)
        self.weight = nn.Parameter(torch.randn(k, in_channels, out_channels) * np.sqrt(2.0 / (k * in_channels)))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, lap: SparseOperator) -> torch.Tensor:
        """Filter vertex-major features.

        Parameters
        ----------
        x : torch.Tensor, shape (V, B, in_channels)
        lap : SparseOperator
            The rescaled Laplacian ``L~`` of the grid of ``x`` (:func:`laplacian` with ``rescaled=True``).

        Returns
        -------
        torch.Tensor, shape (V, B, out_channels)
        """
        npix, batch, channels = x.shape
        flat = x.reshape(npix, batch * channels)
        terms = [flat if self.k == 1 else flat.to(lap.values.dtype)]
        if self.k > 1:
            terms.append(lap(terms[0]))
        for _ in range(2, self.k):
            terms.append(2 * lap(terms[-1]) - terms[-2])
        stacked = torch.cat([t.reshape(npix, batch, channels) for t in terms], dim=-1)
        out = stacked @ self.weight.reshape(-1, self.weight.shape[-1])
        return out if self.bias is None else out + self.bias


def pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over the 4 NESTED children: (V, ...) at nside -> (V / 4, ...) at nside / 2."""
    return x.reshape(x.shape[0] // 4, 4, *x.shape[1:]).mean(dim=1)


def unpool(x: torch.Tensor) -> torch.Tensor:
    """Repeat each pixel into its 4 NESTED children: (V, ...) at nside -> (4 V, ...) at 2 nside."""
    return x.repeat_interleave(4, dim=0)


class _Block(nn.Module):
    """Two (ChebConv -> BatchNorm -> ReLU) layers at one resolution."""

    def __init__(self, in_channels: int, out_channels: int, k: int, batch_norm: bool):
        super().__init__()
        self.convs = nn.ModuleList(
            [ChebConv(c, out_channels, k, bias=not batch_norm) for c in (in_channels, out_channels)]
        )
        self.norms = nn.ModuleList([nn.BatchNorm1d(out_channels) if batch_norm else nn.Identity() for _ in range(2)])

    def forward(self, x: torch.Tensor, lap: SparseOperator) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x, lap)
            npix, batch, channels = x.shape
            x = torch.relu(norm(x.reshape(npix * batch, channels)).reshape(npix, batch, channels))
        return x


class SphereUNet(nn.Module):
    """DeepSphere-style graph-convolution UNet on the HEALPix NESTED hierarchy.

    Level ``i`` works at ``nside / 2^i`` with ``channels[i]`` features: a block of two Chebyshev convolutions
    (each followed by BatchNorm and ReLU) on the way down, then mean-pooling to the next level; the deepest level
    has one block; on the way up each level repeats the coarser features into the children, concatenates the
    level's encoder output and applies a block; a per-pixel linear map (a 1-term ChebConv) gives the outputs.

    Parameters
    ----------
    in_channels : int
        Input maps.
    nside : int
        Resolution of the input maps; must be divisible by ``2^(len(channels) - 1)``.
    channels : sequence of int
        Feature width at each resolution level, finest first.
    k : int
        Chebyshev terms per convolution.
    out_channels : int
        Output maps.
    batch_norm : bool
        BatchNorm after every convolution but the last (else the convolutions carry a bias).
    """

    def __init__(
        self,
        in_channels: int,
        nside: int,
        channels: Sequence[int],
        *,
        k: int = 3,
        out_channels: int = 1,
        batch_norm: bool = True,
    ):
        super().__init__()
        nside, channels = check_nside(nside), [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive widths, got {channels}")
        if nside < 2 ** (len(channels) - 1):
            raise ValueError(f"{len(channels)} levels need nside >= {2 ** (len(channels) - 1)}, got nside {nside}")
        self.nside = nside
        self.laplacians = nn.ModuleList(
            [SparseOperator(laplacian(nside >> i, rescaled=True, dtype=torch.float32)) for i in range(len(channels))]
        )
        self.down = nn.ModuleList(
            [_Block(c_in, c_out, k, batch_norm) for c_in, c_out in zip([in_channels, *channels[:-1]], channels)]
        )
        self.up = nn.ModuleList(
            [_Block(channels[i + 1] + channels[i], channels[i], k, batch_norm) for i in range(len(channels) - 1)]
        )
        self.head = ChebConv(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, 1, 12 nside^2) NESTED -> (B, out_channels, 1, 12 nside^2) NESTED."""
        if x.shape[-1] != 12 * self.nside**2:
            raise ValueError(f"expected {12 * self.nside**2} NESTED pixels (nside {self.nside}), got {x.shape[-1]}")
        h = x.flatten(1, 2).permute(2, 0, 1)  # (V, B, C)
        skips = []
        for level, block in enumerate(self.down):
            if level:
                h = pool(h)
            h = block(h, self.laplacians[level])
            skips.append(h)
        for level in reversed(range(len(self.up))):
            h = self.up[level](torch.cat([unpool(h), skips[level]], dim=-1), self.laplacians[level])
        return self.head(h, self.laplacians[0]).permute(1, 2, 0).unsqueeze(2)
