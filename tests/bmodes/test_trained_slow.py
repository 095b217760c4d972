"""Trained networks against exact answers (slow: minutes of CPU).

- A ScoreNet1D trained on a 30-dimensional Gaussian toy must approach the exact DSM loss floor and its samples the
  toy's mean and covariance.
- The whole pipeline on a small simulated dataset: unconditional samples reproduce held-out clean spectra, the
  conditional posterior mean beats the unconditional one and the observation in MSE, and r from the posterior is
  close to the truth at r = 0.01.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmobench.bmodes.losses import dsm_loss
from cosmobench.bmodes.samplers import make_sampler
from cosmobench.bmodes.score_net import ScoreModel, ScoreNet1D
from cosmobench.bmodes.sde import VPSDE
from cosmobench.bmodes.train import _cosine_warmup
from cosmobench.core.train import fit
from cosmobench.toys import GaussianSpectra

pytestmark = pytest.mark.slow


def test_trained_network_approaches_the_exact_score():
    d = 30
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(0.05, 3.0, d)
    toy = GaussianSpectra(mean=np.linspace(-1, 1, d), cov=(q * lam) @ q.T)
    x, xv = toy.sample(20000, rng).astype(np.float32), toy.sample(4000, rng).astype(np.float32)
    sde = VPSDE()
    torch.manual_seed(0)
    model = ScoreModel(ScoreNet1D(d, 256, 128, 5), sde)
    epochs = 40
    fit(
        model,
        (x,),
        (xv,),
        loss_fn=dsm_loss(sde),
        epochs=epochs,
        batch_size=256,
        lr=1e-3,
        scheduler=_cosine_warmup(epochs * 79, 200),
        grad_clip=1.0,
        device="cpu",
        progress=False,
    )
    model.eval()
    ts = np.linspace(1e-5, 1, 4001)
    m, s = sde.mean_coeff(ts), sde.marginal_std(ts)
    floor = np.mean([np.mean(a**2 * lam / (a**2 * lam + b**2)) for a, b in zip(m, s)])
    torch.manual_seed(1)
    with torch.no_grad():
        loss = np.mean([dsm_loss(sde)(model, (torch.tensor(xv),)).item() for _ in range(5)])
        exact = np.mean(
            [dsm_loss(sde)(lambda xt, t: toy.score(sde)(xt, t), (torch.tensor(xv),)).item() for _ in range(5)]
        )
    assert exact == pytest.approx(floor, abs=0.01)
    assert loss - floor < 0.01  # within 5 % of the floor
    with torch.inference_mode():
        gen = torch.Generator().manual_seed(2)
        out = (
            make_sampler("em", sde, model.score_fn(), n_steps=500)(
                sde.prior_sampling((4000, d), generator=gen), generator=gen
            )
            .x.double()
            .numpy()
        )
    w = (out - toy.mean) @ toy.eigvecs / np.sqrt(toy.eigvals)
    assert np.abs(w.mean(0)).max() < 0.2  # mean within 0.2 sigma in every eigen-direction
    ev = np.linalg.eigvalsh(np.cov(w.T))
    assert 0.7 < ev.min() and ev.max() < 1.5  # Marchenko-Pastur range for exact samples: 0.83-1.18


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from cosmobench.bmodes import stages

    data_root = tmp_path_factory.mktemp("bm-slow")
    stages.simulate(
        out_dir=str(data_root),
        r_test=[0.001, 0.01],
        n_test=60,
        n_train=12000,
        n_val=1000,
        fg_fraction=0.0,
        n_fg_mc=0,
        progress=False,
    )
    return data_root


def _run_dir(small_dataset, tmp_path):
    (tmp_path / "data").symlink_to(small_dataset / "data")
    return str(tmp_path)


def test_unconditional_model_reproduces_held_out_spectra(small_dataset, tmp_path):
    """A dedicated prior model (conditional=false): its samples match the held-out clean spectra's means, standard
    deviations and correlations (standardised logs) to a few sampling sigmas."""
    from cosmobench.bmodes import stages

    out = _run_dir(small_dataset, tmp_path)
    stages.train(out_dir=out, conditional=False, epochs=100, batch_size=256, lr=2e-3, progress=False, device="cpu")
    pc = stages.sample(
        out_dir=out,
        modes=["unconditional"],
        sampler="pc",
        n_steps=300,
        n_draws=1,
        n_prior_check=1000,
        trajectory_every=0,
        progress=False,
        device="cpu",
    )["prior_check"]
    # worst of 30 multipoles (and of 435 correlations): a few sigma is expected even for exact samples
    assert pc["max_abs_mean_z"] < 5
    assert pc["max_abs_log_std_ratio"] < 5 * pc["std_ratio_tolerance_1sigma"]
    assert pc["max_abs_corr_diff"] < 4 * pc["corr_diff_tolerance_1sigma"]


def test_pipeline_quality(small_dataset, tmp_path):
    """The conditional model: over the test set its posterior mean beats the unconditional draws, the observation and
    the observation minus its expected contamination in MSE; r from its posterior is close to the truth at 0.01."""
    from cosmobench.bmodes import stages

    out = _run_dir(small_dataset, tmp_path)
    stages.train(out_dir=out, epochs=100, batch_size=256, lr=2e-3, progress=False, device="cpu")
    res = stages.sample(
        out_dir=out,
        modes=["conditional", "unconditional"],
        sampler="em",
        n_steps=300,
        n_draws=16,
        n_prior_check=0,
        trajectory_every=0,
        progress=False,
        device="cpu",
    )["results"]
    key = "mse_r_units_posterior_mean"
    # summed over both test sets: at r = 0.01, the centre of the prior, the prior mean is itself a fair estimate
    cond_total = sum(res[f"conditional/r{r}"][key] for r in ("0.001", "0.01"))
    assert cond_total < 0.5 * sum(res[f"unconditional/r{r}"][key] for r in ("0.001", "0.01"))
    for r in ("0.001", "0.01"):
        cond = res[f"conditional/r{r}"]
        assert cond[key] < cond["mse_r_units_observed_minus_expected_contamination"]
        assert cond[key] < 0.1 * cond["mse_r_units_observed"]
    rows = {(row["r0"], row["estimator"]): row for row in stages.infer(out_dir=out)["rows"]}
    diff = rows[(0.01, "diffusion_median")]
    assert abs(diff["bias"]) < 0.6 * diff["sigma_fisher"] and diff["std_over_fisher"] < 1.5
