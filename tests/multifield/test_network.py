"""o3_err: the reference's parameter counts at 256^2, and its outputs."""

from __future__ import annotations

import pytest
import torch

from cosmobench.multifield.network import O3Err, count_parameters, n_blocks


@pytest.mark.parametrize(
    ("hidden", "channels", "expected"),
    [(6, 1, 8_466_876), (8, 1, 15_045_900), (8, 13, 15_047_628), (12, 1, 33_839_052)],
)
def test_reference_parameter_counts(hidden, channels, expected):
    assert count_parameters(O3Err(channels, hidden, npix=256)) == expected


def test_reference_module_names_and_unused_b01():
    names = set(O3Err(1, 2, npix=256).state_dict())
    for name in ("C01.weight", "B01.weight", "C53.bias", "C61.weight", "B61.running_mean", "FC1.weight", "FC2.bias"):
        assert name in names


def test_outputs_means_and_nonnegative_std_at_64():
    assert n_blocks(64) == 4 and n_blocks(256) == 6
    model = O3Err(3, 2, dropout=0.3, npix=64).eval()
    out = model(torch.randn(5, 3, 64, 64))
    assert out.shape == (5, 12)
    assert torch.all(out[:, 6:] >= 0)
    with pytest.raises(ValueError, match="power-of-two"):
        O3Err(1, 2, npix=48)
    with pytest.raises(ValueError, match="inputs"):
        model(torch.randn(1, 3, 32, 32))
