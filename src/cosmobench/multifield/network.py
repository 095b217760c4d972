"""The ``o3_err`` CNN of the CMD benchmark: posterior mean and standard deviation of 6 parameters from maps.

Layer by layer as the authors' model (for 256^2 inputs): blocks of three convolutions (3x3, 3x3, then 2x2 with
stride 2), circular padding, batch norm (none after the first convolution; ``B01`` exists but is unused, kept so
released weights load), LeakyReLU(0.2); channels double from 2h to 64h while the map halves from 256^2 to 4^2; a
4x4 convolution to 128h; dropout, FC 128h -> 64h, LeakyReLU, dropout, FC 64h -> 12. Outputs 0-5 are the
posterior means of the normalised parameters; outputs 6-11 are squared and read as standard deviations.

For other map sizes (powers of two >= 8) the number of halving blocks is log2(npix) - 2, so the last feature map
is always 4^2; at 256^2 the module names and parameter count are the reference's (15,045,900 at h = 8, one field).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["O3Err", "n_blocks", "count_parameters"]


def n_blocks(npix: int) -> int:
    """Number of halving blocks for ``npix``^2 inputs: log2(npix) - 2 (6 for CMD's 256^2)."""
    if npix < 8 or npix & (npix - 1):
        raise ValueError(f"o3_err needs a power-of-two map size >= 8, got {npix}")
    return int(math.log2(npix)) - 2


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (including the unused ``B01`` affine weights, as the reference counts)."""
    return sum(p.numel() for p in model.parameters())


class O3Err(nn.Module):
    """The ``o3_err`` network.

    Parameters
    ----------
    in_channels : int
        Number of fields stacked as channels.
    hidden : int
        Width multiplier h (the reference searched 6-12).
    dropout : float
        Dropout rate before each fully connected layer.
    npix : int
        Map side in pixels (power of two >= 8).
    n_params : int
        Parameters predicted (6 in CMD): the output has 2 n_params columns, means then standard deviations.

    Notes
    -----
    ``forward`` takes (B, C, H, W) and returns (B, 2 n_params): ``[:, :n]`` posterior means, ``[:, n:]``
    standard deviations (>= 0), both in normalised-label units.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 8, dropout: float = 0.0, npix: int = 256, n_params: int = 6):
        super().__init__()
        if hidden < 1 or in_channels < 1:
            raise ValueError(f"hidden and in_channels must be >= 1, got {hidden}, {in_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.npix, self.n_params, self.hidden, self.in_channels = npix, n_params, hidden, in_channels
        self.nb = n_blocks(npix)
        cin = in_channels
        for b in range(self.nb):
            cout = 2 ** (b + 1) * hidden
            setattr(self, f"C{b}1", nn.Conv2d(cin, cout, 3, 1, 1, padding_mode="circular", bias=True))
            setattr(self, f"C{b}2", nn.Conv2d(cout, cout, 3, 1, 1, padding_mode="circular", bias=True))
            setattr(self, f"C{b}3", nn.Conv2d(cout, cout, 2, 2, 0, padding_mode="circular", bias=True))
            for j in (1, 2, 3):
                setattr(self, f"B{b}{j}", nn.BatchNorm2d(cout))
            cin = cout
        setattr(self, f"C{self.nb}1", nn.Conv2d(cin, 2 * cin, 4, 1, 0, padding_mode="circular", bias=True))
        setattr(self, f"B{self.nb}1", nn.BatchNorm2d(2 * cin))
        self.FC1 = nn.Linear(2 * cin, cin)
        self.FC2 = nn.Linear(cin, 2 * n_params)
        self.dropout = nn.Dropout(p=dropout)
        self.LeakyReLU = nn.LeakyReLU(0.2)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened 128h-dimensional (at 256^2) feature vector before the head, shape (B, 2 * 2^nb h)."""
        act = self.LeakyReLU
        for b in range(self.nb):
            c1, c2, c3 = (getattr(self, f"C{b}{j}") for j in (1, 2, 3))
            n1, n2, n3 = (getattr(self, f"B{b}{j}") for j in (1, 2, 3))
            x = act(c1(x)) if b == 0 else act(n1(c1(x)))
            x = act(n2(c2(x)))
            x = act(n3(c3(x)))
        x = act(getattr(self, f"B{self.nb}1")(getattr(self, f"C{self.nb}1")(x)))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.npix, self.npix) or x.shape[1] != self.in_channels:
            raise ValueError(
                f"o3_err built for (B, {self.in_channels}, {self.npix}, {self.npix}) inputs, got {tuple(x.shape)}"
            )
        x = self.features(x)
        x = self.LeakyReLU(self.FC1(self.dropout(x)))
        x = self.FC2(self.dropout(x))
        n = self.n_params
        return torch.cat([x[:, :n], torch.square(x[:, n:])], dim=1)
