"""Scores of denoised B-mode spectra: MSE against the truth and simple baselines, and the prior check."""

from __future__ import annotations

import numpy as np

__all__ = ["mse_table", "prior_check"]


def mse_table(gt, obs, mean, single, contamination_dl, template_dl, r_ml) -> dict:
    """MSE of estimates of the clean D_l: in uK^4, and in template units (D_l / D_l^{t, r=1}, i.e. r per l).

    Besides the diffusion posterior (mean and one draw) the baselines are the raw observation, the observation
    minus its expected contamination, and the template projection max(r_ML, 0) x D_l^{t, r=1}: the exact Gaussian
    maximum-likelihood r of each observed spectrum (``r_ml``, shape (n,)) times the tensor template.
    """
    estimates = {
        "observed": obs,
        "observed_minus_expected_contamination": obs - contamination_dl,
        "template_projection": np.maximum(np.asarray(r_ml), 0.0)[:, None] * template_dl,
        "posterior_mean": mean,
        "single_draw": single,
    }
    out = {}
    for name, est in estimates.items():
        out[f"mse_{name}"] = float(np.mean((est - gt) ** 2))
        out[f"mse_r_units_{name}"] = float(np.mean(((est - gt) / template_dl) ** 2))
    return out


def prior_check(x_true: np.ndarray, x_model: np.ndarray) -> dict:
    """Compare model samples with held-out clean spectra (transformed units): mean z-scores, std ratios and the
    largest correlation difference, with the tolerances expected from the sample sizes."""
    n1, n2 = len(x_true), len(x_model)
    m1, m2 = x_true.mean(0), x_model.mean(0)
    s1, s2 = x_true.std(0, ddof=1), x_model.std(0, ddof=1)
    z = (m2 - m1) / np.sqrt(s1**2 / n1 + s2**2 / n2)
    c1, c2 = np.corrcoef(x_true.T), np.corrcoef(x_model.T)
    return {
        "n_true": n1,
        "n_model": n2,
        "max_abs_mean_z": float(np.abs(z).max()),
        "mean_z": z.tolist(),
        "std_ratio": (s2 / s1).tolist(),
        "max_abs_log_std_ratio": float(np.abs(np.log(s2 / s1)).max()),
        "std_ratio_tolerance_1sigma": float(np.sqrt(0.5 / n1 + 0.5 / n2)),
        "max_abs_corr_diff": float(np.abs(c2 - c1).max()),
        "corr_diff_tolerance_1sigma": float(np.sqrt(1 / n1 + 1 / n2)),
    }
