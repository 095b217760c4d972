"""Settings of the B-mode stages, written once: the fields are the sections of ``conf/bmodes.yaml``.

The defaults are the embedded CPU run (a few minutes on 2 cores); presets (``conf/bmodes_preset``) change them:
``tiny`` (seconds, for tests), ``prototype`` (the seed prototype's settings, for comparisons).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

from ..core.settings import StageSettings

__all__ = [
    "SimulateSettings",
    "TrainSettings",
    "SampleSettings",
    "InferSettings",
    "CheckSettings",
    "CompareSettings",
    "SECTIONS",
]

OUT_DIR = "cosmobench_out/bmodes"
R_TEST = (0.0, 0.001, 0.005, 0.01)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateSettings(StageSettings):
    """``bmodes simulate``: amortised train/val pairs and fixed-r validation and test pairs.

    Attributes
    ----------
    out_dir : str
        Run folder; the data go to ``out_dir/data``.
    seed : int
        Dataset seed (all streams derive from it).
    nside : int
        HEALPix resolution of the simulated maps.
    r_test : tuple of float
        r of the fixed-r sets (``dl_gt_r{r}.npy``, ``dl_noisy_r{r}.npy``; ``val_r{r}`` the validation twins).
    n_test : int
        Spectra per fixed-r test set (and per fixed-r validation set, drawn from their own streams).
    n_train, n_val : int
        Spectra in the amortised training and validation sets, r ~ U[0, r_max].
    r_max : float
        Upper edge of the training prior.
    n_train_per_r : int
        Clean spectra per test r in ``dl_train_r{r}.npy`` (the prototype's per-r files; 0: none).
    ell_min : int
    ell_max : int or None
        Data multipoles; None = 2 nside - 1.
    beam_fwhm_arcmin : float
        Gaussian beam FWHM, arcmin.
    noise_depth : float
        White Q/U noise depth, uK_CMB arcmin, added after the beam.
    fg_fraction : float
        Foreground residual as an amplitude fraction of the BK18-calibrated dust + synchrotron B-mode sky
        (:data:`~cosmobench.bmodes.dataset.FOREGROUND_BB`), drawn anew per sample; 0 = none.
    fg_freq_ghz : float
        Frequency of the foreground residual, GHz.
    fg_components : tuple of str
        Subset of ("dust", "synchrotron").
    fg_modulation : float
        Standard deviation of the log-normal spatial modulation of the residual (its non-Gaussianity).
    fg_scatter : float
        Scale of the per-sample scatter of amplitude, slope and spectral parameters (0 = one fixed SED).
    n_fg_mc : int
        Foreground skies averaged for the residual's model spectrum.
    mask : {"none", "galactic"}
    mask_bcut_deg, mask_apod_deg : float
        Galactic cut and apodisation of the mask, degrees.
    cosmology : dict or None
        :class:`~cosmobench.sky.cosmology.Cosmology` fields; None = the data model's default.
    executor : {"serial", "processes", "dask"}
    workers : int
    chunk : int
        Spectra per work item.
    force : bool
        Run even when the job looks larger than the free disk or memory.
    """

    out_dir: str = OUT_DIR
    seed: int = 0
    nside: int = 16
    r_test: tuple[float, ...] = R_TEST
    n_test: int = 100
    n_train: int = 4000
    n_val: int = 300
    r_max: float = 0.02
    n_train_per_r: int = 0
    ell_min: int = 2
    ell_max: int | None = None
    beam_fwhm_arcmin: float = 24.8
    noise_depth: float = 11.9
    fg_fraction: float = 0.01
    fg_freq_ghz: float = 95.0
    fg_components: tuple[str, ...] = ("dust", "synchrotron")
    fg_modulation: float = 0.5
    fg_scatter: float = 1.0
    n_fg_mc: int = 32
    mask: str = "none"
    mask_bcut_deg: float = 20.0
    mask_apod_deg: float = 10.0
    cosmology: dict | None = None
    executor: str = "serial"
    workers: int = 1
    chunk: int = 100
    force: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings(StageSettings):
    """``bmodes train``: the (conditional) score model on the amortised pairs.

    Attributes
    ----------
    out_dir : str
    seed : int
    sde : dict
        ``{"name": "ve"|"vp"|"subvp", **arguments}`` (the SDE class's defaults otherwise); VE without
        ``sigma_max`` (or None) takes the largest distance between training points.
    conditional : bool
        Learn s(x_t, t | y); the condition is dropped with probability ``p_uncond``.
    p_uncond : float
    hidden_dim, embed_dim, num_layers : int
        Score network architecture.
    fourier_scale : float
        Scale of the Gaussian Fourier time embedding.
    normalization : {"per_ell", "global"}
        Standardisation of the log spectra (``global`` is the prototype's).
    log_offset_r : float
        Offset of the log transform in units of the r = 1 tensor template.
    weighting : {"sigma2", "likelihood"}
        Denoising score-matching weight.
    epochs, batch_size : int
    lr : float
    warmup_steps : int
    grad_clip : float
    ema_decay : float
        Lowered to 1 - 10/steps on short runs (the loop's EMA has no warm-up).
    device : str
        "auto" = CUDA when available, else CPU.
    """

    out_dir: str = OUT_DIR
    seed: int = 0
    sde: dict = field(default_factory=lambda: {"name": "ve"})
    conditional: bool = True
    p_uncond: float = 0.2
    hidden_dim: int = 256
    embed_dim: int = 128
    num_layers: int = 5
    fourier_scale: float = 30.0
    normalization: str = "per_ell"
    log_offset_r: float = 1e-4
    weighting: str = "sigma2"
    epochs: int = 200
    batch_size: int = 256
    lr: float = 2e-3
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    device: str = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleSettings(StageSettings):
    """``bmodes sample``: posterior draws of the clean spectra of every fixed-r set.

    Attributes
    ----------
    out_dir : str
    seed : int
    modes : tuple of str
        "conditional" p(x | y), "unconditional" p(x), "prototype" (reverse process started from y at t = 1).
    sampler : {"em", "ode", "pc"}
    n_steps : int
        Score evaluations per draw (em, ode) or predictor steps (pc).
    sampler_options : dict
        Other sampler options (pc: snr, n_corrector_steps, predictor, step_norm; ode: solver, rtol, atol; all: eps).
    n_draws : int
        Posterior draws per observed spectrum.
    split : {"val", "test"}
        Which fixed-r sets to denoise: validation sets for choices, test sets for the final table.
    r_values : tuple of float or None
        Fixed-r sets to denoise (None = all of the dataset).
    n_spectra : int or None
        Use only the first spectra of each set.
    n_prior_check : int
        Unconditional samples compared with held-out clean spectra; 0 to skip.
    chunk_size : int
        Trajectories per sampler call.
    trajectory_every : int
        Store and plot trajectories every this many steps (0: none).
    reduced_precision : bool
        bfloat16-rounded matrix products in the sampler (about 2x faster on CPU, score error ~1e-3).
    ood_alpha : float
        False-alarm probability of the out-of-distribution guard (:mod:`cosmobench.bmodes.ood`): a set is refused
        when its spectra outside the training distribution would happen by chance less often; 0 disables it.
    device : str
    """

    out_dir: str = OUT_DIR
    seed: int = 0
    modes: tuple[str, ...] = ("conditional", "prototype")
    sampler: str = "em"
    n_steps: int = 1000
    sampler_options: dict = field(default_factory=dict)
    n_draws: int = 16
    split: str = "test"
    r_values: tuple[float, ...] | None = None
    n_spectra: int | None = None
    n_prior_check: int = 1000
    chunk_size: int = 4096
    trajectory_every: int = 10
    reduced_precision: bool = False
    ood_alpha: float = 1e-3
    device: str = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferSettings(StageSettings):
    """``bmodes infer``: r on every sampled fixed-r set, every estimator, against the Fisher bound.

    Attributes
    ----------
    out_dir : str
    seed : int
    split : {"val", "test"}
        The sampled sets to score (must have been sampled with the same split).
    mode : str
        Which sampled draws give the diffusion estimates (normally "conditional").
    n_per_draw : int
        r draws per posterior spectrum draw.
    r_max_search : float
        Upper edge of the exact-likelihood search.
    """

    out_dir: str = OUT_DIR
    seed: int = 0
    split: str = "test"
    mode: str = "conditional"
    n_per_draw: int = 8
    r_max_search: float = 0.2


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckSettings(StageSettings):
    """``bmodes check``: are spectra files (e.g. the prototype's ``dl_noisy_r{r}.npy``) like the training data?

    Attributes
    ----------
    out_dir : str
        Run folder whose training set is the reference.
    files : tuple of str
        ``.npy`` files of D_l, shape (n, n_ell) with the dataset's multipoles, uK_CMB^2.
    kind : {"observed", "clean"}
        Compare with the observed (``dl_noisy_train``) or clean (``dl_gt_train``) training spectra.
    """

    out_dir: str = OUT_DIR
    files: tuple[str, ...] = ()
    kind: str = "observed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareSettings(StageSettings):
    """``bmodes compare``: the r table over several runs (training seeds), with the spread between them.

    Attributes
    ----------
    out_dir : str
        Where ``compare/<split>/`` is written.
    runs : tuple of str
        Run folders, each with a finished ``infer/<split>``; usually the same data with different training seeds.
    split : {"val", "test"}
    """

    out_dir: str = OUT_DIR
    runs: tuple[str, ...] = ()
    split: str = "test"


SECTIONS: dict[str, type[StageSettings]] = {
    "simulate": SimulateSettings,
    "train": TrainSettings,
    "sample": SampleSettings,
    "infer": InferSettings,
    "check": CheckSettings,
    "compare": CompareSettings,
}
