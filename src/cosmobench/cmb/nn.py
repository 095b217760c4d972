"""Networks for learned CMB separation: the cmbNNCS full-sky UNet and a patch UNet.

:class:`FullSkyNet` is cmbNNCS's UNet (Wang et al. 2022) on the full-sky plane of :mod:`cosmobench.cmb.tiling`:
each encoder level is a stride-2 convolution, each decoder level a stride-2 transposed convolution, both followed
by BatchNorm and PReLU (the last decoder layer by PReLU only); decoder levels after the first take the
concatenation of the encoder skip and the previous output; no pooling, no dropout (by default).
``reference_config(5)`` and ``reference_config(8)`` reproduce UNet5 and UNet8 exactly (6,266,955 and 100,690,881
parameters with 7 inputs).

:class:`PatchNet` is a classic UNet (two 3x3 convolutions per level, max-pooling down, 2x2 transposed
convolutions up, a final 1x1 convolution), like CMB-ML's PatchNN demo, for patches with a halo.

Both pad their input with zeros to a multiple of ``2**levels`` and crop the output back, so they run on any
image size (UNet8 at nside 128, where the plane's 384 columns are not divisible by 2^8, included).

Dropout (``dropout=p > 0``, for MC dropout, :mod:`cosmobench.cmb.learned`): an ``nn.Dropout2d(p)`` (whole feature
maps of an image zeroed with probability p, the others scaled by 1 / (1 - p)) closes every encoder and decoder
block but the output layer: :class:`FullSkyNet`'s last decoder layer and :class:`PatchNet`'s 1x1 head are not
followed by dropout, so a zeroed output layer still outputs exactly 0. It is the block's last module and holds no
parameter, so ``dropout=0`` (no module at all) and ``dropout=p`` networks have the same parameters, the same
initial values for a seed and the same ``state_dict`` keys.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FullSkyNet", "PatchNet", "reference_config", "count_parameters"]


def reference_config(levels: int, base_channels: int | None = None) -> dict:
    """Channel widths and kernels of cmbNNCS's UNet5 (``levels=5``) or UNet8 (``levels=8``), or a generic depth.

    Parameters
    ----------
    levels : int
        Number of encoder (and decoder) levels.
    base_channels : int, optional
        Width of the first level, doubled at each level; defaults to the reference's (32 for 5 levels, 16 for 8).

    Returns
    -------
    dict with ``channels``, ``enc_kernels``, ``dec_kernels`` (keyword arguments of :class:`FullSkyNet`).
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if levels == 8:
        enc, dec, base = (5, 5, 4, 4, 4, 4, 4, 4), (4, 4, 4, 4, 4, 4, 5, 5), 16
    else:  # UNet5 for 5 levels; the same pattern for other depths
        enc, dec, base = (4,) * levels, (4,) * (levels - 1) + (2,), 32
    base = base if base_channels is None else int(base_channels)
    return {"channels": [base * 2**i for i in range(levels)], "enc_kernels": list(enc), "dec_kernels": list(dec)}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (height, width)


class FullSkyNet(nn.Module):
    """cmbNNCS UNet with configurable depth and widths.

    Parameters
    ----------
    in_channels : int
        Number of input maps (frequency channels).
    channels : sequence of int
        Output width of each encoder level (the decoder mirrors it back to ``out_channels``).
    enc_kernels, dec_kernels : sequence of int
        Kernel size of each encoder / decoder layer (each in 2..5; stride 2; padding ``(k-1)//2`` so sizes
        halve and double exactly).
    out_channels : int
        Number of output maps.
    batch_norm : bool
        BatchNorm after every layer but the last (the reference uses it).
    dropout : float
        Probability of the ``Dropout2d`` after every layer but the last; 0 (the reference): none.

    Notes
    -----
    Input (B, in_channels, H, W) -> output (B, out_channels, H, W), any H, W (zero-padded internally to a
    multiple of ``2**len(channels)``).
    """

    def __init__(
        self,
        in_channels: int,
        channels=(32, 64, 128, 256, 512),
        enc_kernels=(4, 4, 4, 4, 4),
        dec_kernels=(4, 4, 4, 4, 2),
        out_channels: int = 1,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if not (len(channels) == len(enc_kernels) == len(dec_kernels)) or not channels:
            raise ValueError(
                f"channels, enc_kernels and dec_kernels must have the same length >= 1; got "
                f"{len(channels)}, {len(enc_kernels)}, {len(dec_kernels)}"
            )
        if any(k not in (2, 3, 4, 5) for k in (*enc_kernels, *dec_kernels)):
            raise ValueError(f"kernel sizes must be 2, 3, 4 or 5; got {list(enc_kernels)} | {list(dec_kernels)}")
        self.levels = len(channels)
        widths_in = [in_channels, *channels[:-1]]
        self.encoder = nn.ModuleList(
            _block(nn.Conv2d(c_in, c_out, k, stride=2, padding=(k - 1) // 2), c_out, batch_norm, dropout)
            for c_in, c_out, k in zip(widths_in, channels, enc_kernels)
        )
        dec_out = [*channels[-2::-1], out_channels]
        dec_in = [channels[-1]] + [2 * c for c in channels[-2::-1]]
        self.decoder = nn.ModuleList(
            _block(
                nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=(k - 1) // 2, output_padding=k % 2),
                c_out,
                batch_norm and i < self.levels - 1,
                dropout if i < self.levels - 1 else 0.0,
            )
            for i, (c_in, c_out, k) in enumerate(zip(dec_in, dec_out, dec_kernels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H, W)."""
        x, (height, width) = _pad_to_multiple(x, 2**self.levels)
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        x = self.decoder[0](skips.pop())
        for layer in self.decoder[1:]:
            x = layer(torch.cat([skips.pop(), x], dim=1))
        return x[..., :height, :width]


def _block(conv: nn.Module, width: int, batch_norm: bool, dropout: float) -> nn.Sequential:
    layers = [conv, nn.BatchNorm2d(width)] if batch_norm else [conv]
    return nn.Sequential(*layers, nn.PReLU(), *_dropout(dropout))


def _dropout(p: float) -> list[nn.Module]:
    """The dropout closing a block: ``[Dropout2d(p)]``, or nothing for p = 0 (the network without dropout)."""
    return [nn.Dropout2d(p)] if p else []


class PatchNet(nn.Module):
    """Classic UNet for patches: per level two 3x3 convolutions (+ BatchNorm) + activation.

    Parameters
    ----------
    in_channels : int
        Number of input maps.
    levels : int
        Number of resolution levels (``levels - 1`` poolings).
    base_channels : int
        Width of the first level, doubled at each level.
    out_channels : int
        Number of output maps.
    batch_norm : bool
        BatchNorm after each convolution (CMB-ML's PatchNN had none).
    dropout : float
        Probability of the ``Dropout2d`` after each level's two convolutions (not after the 1x1 head); 0: none.
    crop : int
        Pixels cropped from every side of the output (the halo of the patches).

    Notes
    -----
    Input (B, in_channels, S, S) -> output (B, out_channels, S - 2 crop, S - 2 crop).
    """

    def __init__(
        self,
        in_channels: int,
        levels: int = 4,
        base_channels: int = 32,
        out_channels: int = 1,
        batch_norm: bool = True,
        crop: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        widths = [base_channels * 2**i for i in range(levels)]
        self.levels, self.crop = levels, int(crop)
        self.down = nn.ModuleList(
            _double_conv(c_in, c_out, batch_norm, dropout) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(w * 2, w, 2, stride=2) for w in widths[-2::-1])
        self.up = nn.ModuleList(_double_conv(2 * w, w, batch_norm, dropout) for w in widths[-2::-1])
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, S, S) -> (B, out_channels, S - 2 crop, S - 2 crop)."""
        x, (height, width) = _pad_to_multiple(x, 2 ** (self.levels - 1))
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        x = skips.pop()
        for upsample, block in zip(self.upsample, self.up):
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        c = self.crop
        return self.head(x)[..., c : height - c, c : width - c]


def _double_conv(c_in: int, c_out: int, batch_norm: bool, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((c_in, c_out), (c_out, c_out)):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers, *_dropout(dropout))
