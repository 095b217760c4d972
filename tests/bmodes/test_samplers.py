"""Samplers driven by the exact score of a Gaussian toy must return the toy's distribution (no training).

Statistics are in the whitened frame w = Lambda^-1/2 U^T (x - mu): the mean must pass a chi^2 test and the sample
covariance must be the identity within its sampling error plus a small discretisation allowance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmobench.bmodes.samplers import (
    SAMPLERS,
    EulerMaruyama,
    PredictorCorrector,
    ProbabilityFlowODE,
    get_sampler,
    make_sampler,
)
from cosmobench.bmodes.sde import VESDE, VPSDE, SubVPSDE
from cosmobench.toys import GaussianSpectra

D, N = 10, 3000
SDES = {"ve": VESDE(0.01, 20.0), "vp": VPSDE(0.1, 20.0), "subvp": SubVPSDE(0.1, 20.0)}


@pytest.fixture(scope="module")
def toy() -> GaussianSpectra:
    """Correlated, anisotropic 'spectra': eigenvalues spread over two decades, a non-zero mean."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    lam = np.geomspace(0.05, 4.0, D)
    return GaussianSpectra(mean=np.linspace(-1, 1, D), cov=(q * lam) @ q.T)


def _exact_prior(toy, sde, n, seed):
    """x_T drawn from the exact p_T of the toy, so that only the integrator is tested."""
    mean, cov = toy.marginal(sde, sde.T)
    x = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)
    return torch.tensor(x, dtype=torch.float32)


def _whiten(toy, x):
    return (np.asarray(x, dtype=np.float64) - toy.mean) @ toy.eigvecs / np.sqrt(toy.eigvals)


def _check_gaussian(toy, x, cov_tol=0.03):
    w = _whiten(toy, x)
    n, d = w.shape
    chi2_mean = n * np.sum(w.mean(0) ** 2)
    assert chi2_mean < d + 6 * np.sqrt(2 * d), f"mean off: chi2 = {chi2_mean:.1f} for {d} dof"
    s = np.cov(w.T)
    trace = np.trace(s) / d
    assert abs(trace - 1) < 5 * np.sqrt(2 / (n * d)) + cov_tol, f"variance off: mean eigenvalue {trace:.3f}"
    frob = np.sum((s - np.eye(d)) ** 2)
    assert frob < 2.5 * d * (d + 1) / n + d * cov_tol**2, f"covariance off: |S - I|_F^2 = {frob:.3f}"


CASES = {
    "em": ("em", {"n_steps": 500}),
    "ode-rk45": ("ode", {"solver": "rk45"}),
    "ode-heun": ("ode", {"solver": "heun", "n_steps": 200}),
    "pc-em": ("pc", {"n_steps": 300, "snr": 0.16}),
    "pc-reverse-diffusion-sigma": ("pc", {"n_steps": 300, "predictor": "reverse_diffusion", "step_norm": "sigma"}),
}


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("case", list(CASES))
def test_exact_score_recovers_the_gaussian(toy, sde_name, case):
    sde = SDES[sde_name]
    name, opts = CASES[case]
    sampler = make_sampler(name, sde, toy.score(sde), **opts)
    gen = torch.Generator().manual_seed(1)
    res = sampler(_exact_prior(toy, sde, N, seed=2), generator=gen)
    assert torch.isfinite(res.x).all()
    _check_gaussian(toy, res.x.numpy())


@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_from_the_prior(toy, sde_name):
    """For VP-type SDEs p_T is the standard normal prior, so sampling from the prior is exact too."""
    sde = SDES[sde_name]
    gen = torch.Generator().manual_seed(3)
    x = EulerMaruyama(sde, toy.score(sde), n_steps=500)(sde.prior_sampling((N, D), generator=gen), generator=gen).x
    _check_gaussian(toy, x.numpy())


def test_prototype_sign_error_diverges(toy):
    """The prototype stepped with dt = t_i - t_{i+1} > 0 in x + (f - g^2 s) dt: it integrates against the score
    and ends orders of magnitude too wide (VE, sigma 0.1..10, 1000 steps). Our samplers step with dt < 0."""
    one = GaussianSpectra(mean=np.zeros(1), cov=np.eye(1))
    sde = VESDE(0.1, 10.0)
    score = one.score(sde)
    gen = torch.Generator().manual_seed(4)
    x = sde.prior_sampling((2000, 1), generator=gen)
    ts = np.linspace(1.0, 1e-5, 1001)
    x_bad = x.clone()
    for i in range(1000):
        dt = ts[i] - ts[i + 1]  # the prototype's positive step
        g = sde.diffusion(ts[i])
        x_bad = x_bad - g**2 * score(x_bad, ts[i]) * dt + g * np.sqrt(dt) * torch.randn(x.shape, generator=gen)
    assert x_bad.std() > 100
    sampler = EulerMaruyama(sde, score, n_steps=1000)
    assert np.all(np.diff(sampler.time_grid()) < 0)
    good = sampler(x, generator=gen).x
    assert abs(good.std().item() - 1) < 0.1


def test_reverse_drift_points_towards_the_data(toy):
    """One reverse step from a far point moves it towards the mean (score sign and dt sign together)."""
    sde = SDES["ve"]
    far = torch.tensor(toy.mean + 30.0, dtype=torch.float32)[None]
    step = EulerMaruyama(sde, toy.score(sde), n_steps=10, denoise=True)
    x = step(far, generator=torch.Generator().manual_seed(0)).x
    assert np.linalg.norm(x.numpy() - toy.mean) < np.linalg.norm(far.numpy() - toy.mean)
    drift, _ = sde.reverse(toy.score(sde)).sde(far, 0.5)
    # reverse drift f - g^2 s is integrated with dt < 0: x moves along +g^2 s, i.e. towards the mean
    assert torch.sum(-drift * (torch.tensor(toy.mean, dtype=torch.float32) - far)) > 0


def test_pc_runs_and_per_sample_step_norm_is_biased(toy):
    """The prototype's PC crashed; ours runs. Per-sample norms make the Langevin step depend on the state, which
    biases the stationary law: the variance comes out inflated, the reason "batch" is the default."""
    sde = SDES["vp"]
    x_T = _exact_prior(toy, sde, N, seed=5)
    gen = torch.Generator().manual_seed(6)
    res = PredictorCorrector(sde, toy.score(sde), n_steps=300, step_norm="sample")(x_T, generator=gen)
    w = _whiten(toy, res.x.numpy())
    assert np.trace(np.cov(w.T)) / D > 1.1
    assert res.nfe == 600


def test_any_rank_gives_the_same_samples():
    """Samplers are rank-agnostic: (B, 2, 5) maps and (B, 10) vectors follow identical paths."""
    toy_flat = GaussianSpectra(mean=np.zeros(10), cov=np.diag(np.linspace(0.5, 2, 10)))
    toy_map = GaussianSpectra(mean=np.zeros((2, 5)), cov=toy_flat.cov)
    sde = SDES["vp"]
    x = torch.randn(64, 10, generator=torch.Generator().manual_seed(7))
    for name, opts in (("em", {}), ("pc", {}), ("ode", {"solver": "rk4"})):
        flat = make_sampler(name, sde, toy_flat.score(sde), n_steps=50, **opts)(
            x, generator=torch.Generator().manual_seed(8)
        )
        maps = make_sampler(name, sde, toy_map.score(sde), n_steps=50, **opts)(
            x.reshape(64, 2, 5), generator=torch.Generator().manual_seed(8)
        )
        assert maps.x.shape == (64, 2, 5)
        torch.testing.assert_close(maps.x.reshape(64, 10), flat.x, rtol=1e-5, atol=1e-5)


def test_trajectories_are_recorded(toy):
    sde = SDES["ve"]
    res = EulerMaruyama(sde, toy.score(sde), n_steps=100)(
        _exact_prior(toy, sde, 8, 9), generator=torch.Generator().manual_seed(0), trajectory_every=25
    )
    assert res.trajectory.shape == (5, 8, D)
    np.testing.assert_allclose(res.times, [1.0, 0.75, 0.5, 0.25, 1e-5], atol=1e-4)
    torch.testing.assert_close(res.trajectory[-1], res.x)
    assert res.trajectory[0].std() > 5 * res.trajectory[-1].std()
    ode = ProbabilityFlowODE(sde, toy.score(sde))(_exact_prior(toy, sde, 8, 9), trajectory_every=25)
    assert ode.trajectory.shape[1:] == (8, D) and ode.times[0] == 1.0


def test_ode_is_deterministic(toy):
    sde = SDES["vp"]
    x = _exact_prior(toy, sde, 16, 10)
    ode = ProbabilityFlowODE(sde, toy.score(sde), solver="heun", n_steps=50)
    a = ode(x, generator=torch.Generator().manual_seed(1)).x
    b = ode(x, generator=torch.Generator().manual_seed(2)).x
    torch.testing.assert_close(a, b)


def test_registry_errors_list_the_choices(toy):
    assert set(SAMPLERS) == {"em", "ode", "pc"}
    assert get_sampler("pc") is PredictorCorrector
    with pytest.raises(ValueError, match="expected one of"):
        get_sampler("ddim")
    with pytest.raises(TypeError, match="valid options"):
        make_sampler("em", SDES["ve"], toy.score(SDES["ve"]), snr=0.1)
    with pytest.raises(ValueError, match="ODE solver"):
        make_sampler("ode", SDES["ve"], toy.score(SDES["ve"]), solver="dopri8")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["em", "pc"])
def test_cuda_graph_path_recovers_the_gaussian(toy, name):
    sde = SDES["vp"]
    score = toy.score(sde, device="cuda")
    x_T = _exact_prior(toy, sde, N, seed=11).cuda()
    gen = torch.Generator(device="cuda").manual_seed(12)
    res = make_sampler(name, sde, score, n_steps=300)(x_T, generator=gen, cuda_graph=True)
    _check_gaussian(toy, res.x.cpu().numpy())
