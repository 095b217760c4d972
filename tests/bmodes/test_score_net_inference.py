"""The sampler's inference path of the score network: preallocated buffers and reduced-precision products."""

from __future__ import annotations

import torch

from cosmobench.bmodes.score_net import ScoreModel, ScoreNet1D
from cosmobench.bmodes.sde import VESDE


def test_buffered_inference_path_equals_the_forward_and_returns_new_tensors():
    """Under inference mode the score is computed in two reused buffers; it must equal forward / s(t) and every call
    must return its own tensor (a Heun or RK4 step keeps several scores alive at once)."""
    torch.manual_seed(0)
    model = ScoreModel(ScoreNet1D(30, 64, 32, 5, cond_dim=30), VESDE(0.01, 30.0)).eval()
    x, y = torch.randn(16, 30), torch.randn(16, 30)
    score = model.score_fn(y)
    with torch.inference_mode():
        first = score(x, 0.3)
        second = score(x * 2, 0.7)
        ref = model(x, torch.full((16,), 0.3), y)
    torch.testing.assert_close(first, ref, rtol=1e-5, atol=1e-5)
    assert first.data_ptr() != second.data_ptr() and not torch.equal(first, second)


def test_reduced_precision_score_is_close_and_restores_the_setting():
    """bfloat16-rounded matrix products (CPU oneDNN) change the score of the benchmark-size network by < 1 % (a
    rounding of the inputs, 2^-9 relative, through 5 layers; measured 0.8-1.0e-3) and
    leave the global setting as it was."""
    torch.manual_seed(0)
    model = ScoreModel(ScoreNet1D(30, 256, 128, 5, cond_dim=30), VESDE(0.01, 30.0)).eval()
    x, y = torch.randn(64, 30), torch.randn(64, 30)
    before = torch.backends.mkldnn.matmul.fp32_precision
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    with torch.inference_mode():
        for t in (1e-3, 0.3, 1.0):
            exact = model.score_fn(y)(x, t)
            fast = model.score_fn(y, reduced_precision=True)(x, t)
            err = ((fast - exact).norm() / exact.norm()).item()
            assert err < 1e-2, (t, err)
            assert err > 0 or not bf16, (t, err)  # it was applied, where the CPU has bfloat16 arithmetic
    assert torch.backends.mkldnn.matmul.fp32_precision == before
