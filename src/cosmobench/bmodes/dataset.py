"""Simulated B-mode power spectra: clean tensor spectra and observed spectra, from HEALPix maps.

One sample at tensor-to-scalar ratio r (all streams independent, from :func:`cosmobench.core.seeds.rng` with the
key ``(seed, "bmodes", split, i, <part>)``):

1. tensor B-mode alm from C_l^BB = r C_l^{t, r=1} (CAMB, n_t = 0 so the template scales linearly in r),
   stream ``"tensor"``; lensing B-mode alm from CAMB's lensed-scalar C_l^BB (a Gaussian field, fine at l < 50),
   stream ``"lensing"``. Both are pure B (E = T = 0).
2. **truth** (``dl_gt``): the tensor B alm times the beam b_l (FWHM 24.8'), synthesised to Q/U at ``nside``,
   analysed back with ``map2alm`` (3 Jacobi iterations) and turned into C_l^BB: the spectrum of the beam-convolved
   tensor map of this realisation (the prototype's ground truth), with its cosmic variance.
3. **observation** (``dl_noisy``): (tensor + lensing) alm times b_l, synthesised to Q/U, plus a foreground
   residual map, plus white Q/U noise of depth ``noise_depth`` uK arcmin added **after** the beam; analysed the same
   way (full sky), or multiplied by an apodised Galactic mask first (pseudo-C_l divided by mean(mask^2)).
4. Spectra are D_l = l(l+1) C_l / 2 pi in uK_CMB^2 on ``ell_min..ell_max`` (default 2..2 nside - 1 = 2..31,
   30 values). No pixel window is applied (the maps are band-limited syntheses; healpy's pixel-window files
   would need a download).

Foreground residual: the prototype added the raw 28 GHz PySM sky to every sample, which is orders of magnitude
above r = 0.001. Here each sample gets a **new** synthetic foreground sky (:mod:`cosmobench.sky.foregrounds`,
stream ``"foregrounds"``) at ``fg_freq_ghz`` (uK_RJ -> uK_CMB), scaled by ``fg_fraction``: the part of the
foregrounds that a component separation left behind. The default (1e-4 of the 95 GHz polarised dust +
synchrotron sky) is a residual well below the noise at every multipole, so the reference Fisher numbers apply;
it is an assumption of very good cleaning, not a prediction. Set ``fg_fraction`` higher to study foreground bias,
0 to switch the residual off. Its mean spectrum (Monte Carlo over ``n_fg_mc`` skies) enters the likelihood model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

from ..core.io import CorruptFileError, atomic_path
from ..core.seeds import rng as stream
from ..sky import sht

__all__ = [
    "PROTOTYPE_COSMOLOGY",
    "ell_range",
    "dl_factor",
    "bb_templates",
    "BModeSimulator",
    "r_label",
]

#: The prototype's cosmology (A_s = 2.1e-9 -> ln(10^10 A_s) = ln 21), tau 0.05431, tensor pivot 0.05 / Mpc.
PROTOTYPE_COSMOLOGY = {
    "H0": 67.32,
    "ombh2": 0.0224,
    "omch2": 0.1201,
    "ns": 0.966,
    "tau": 0.05431,
    "ln10As": math.log(21.0),
}
_TEMPLATE_FORMAT = 1


@functools.lru_cache(maxsize=8)
def _rj_to_cmb(freq_ghz: float) -> float:
    """uK_CMB per uK_RJ at ``freq_ghz`` (cached: astropy's equivalencies take milliseconds)."""
    from ..sky.units import unit_factor

    return float(unit_factor(freq_ghz, "uK_RJ", "uK_CMB"))


def r_label(r: float) -> str:
    """The r in file names, e.g. 0.001 -> ``"0.001"``, 0 -> ``"0"`` (``dl_gt_r0.001.npy``)."""
    return f"{float(r):g}"


def ell_range(nside: int, ell_min: int = 2, ell_max: int | None = None) -> np.ndarray:
    """Multipoles of the data vector: ``ell_min..ell_max`` (default 2..2 nside - 1), shape (n_ell,)."""
    ell_max = 2 * sht.check_nside(nside) - 1 if ell_max is None else int(ell_max)
    if not 2 <= ell_min <= ell_max <= sht.default_lmax(nside):
        raise ValueError(
            f"need 2 <= ell_min <= ell_max <= 3 nside - 1 = {sht.default_lmax(nside)}, "
            f"got ell_min={ell_min}, ell_max={ell_max}"
        )
    return np.arange(int(ell_min), ell_max + 1)


def dl_factor(ell: np.ndarray) -> np.ndarray:
    """l(l+1) / 2 pi: D_l = dl_factor * C_l."""
    ell = np.asarray(ell, dtype=float)
    return ell * (ell + 1) / (2 * np.pi)


def bb_templates(lmax: int, cosmology: dict | None = None, cache: Path | str | None = None) -> dict[str, np.ndarray]:
    """CAMB BB spectra: the tensor template at r = 1, n_t = 0, and the lensed-scalar (lensing) BB.

    Parameters
    ----------
    lmax : int
    cosmology : dict, optional
        :class:`~cosmobench.sky.cosmology.Cosmology` fields; default :data:`PROTOTYPE_COSMOLOGY`. ``r`` and ``nt``
        are set here (1 and 0).
    cache : path, optional
        ``.npz`` file reused when it holds the same lmax and cosmology (CAMB takes about a second per call).

    Returns
    -------
    dict
        ``cl_tensor`` and ``cl_lens``: C_l^BB in uK_CMB^2, shape (lmax + 1,); ``cosmology``: the fields used.
    """
    from ..sky.cosmology import Cosmology, camb_spectra

    fields = dict(PROTOTYPE_COSMOLOGY if cosmology is None else cosmology)
    for key in ("r", "nt"):
        if key in fields:
            raise ValueError(
                f"cosmology must not set {key!r}: the tensor template is built at r = 1, n_t = 0 "
                "and scaled linearly; choose r with the dataset's r values"
            )
    cosmo = Cosmology(**fields, r=1.0, nt=0.0)
    meta = {"format": _TEMPLATE_FORMAT, "lmax": int(lmax), "cosmology": cosmo.to_dict()}
    if cache is not None and Path(cache).exists():
        try:
            with np.load(cache, allow_pickle=False) as f:
                import json

                if json.loads(str(f["meta"])) == meta:
                    return {"cl_tensor": f["cl_tensor"], "cl_lens": f["cl_lens"], "cosmology": meta["cosmology"]}
        except (OSError, ValueError, KeyError) as err:
            raise CorruptFileError(f"template cache {cache} is unreadable ({err}); delete it to rebuild") from err
    cl_tensor = camb_spectra(cosmo, lmax, kind="tensor")[2]
    cl_lens = camb_spectra(cosmo, lmax, kind="lensed_scalar")[2]
    if cache is not None:
        import json

        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, cl_tensor=cl_tensor, cl_lens=cl_lens, meta=np.array(json.dumps(meta, sort_keys=True)))
    return {"cl_tensor": cl_tensor, "cl_lens": cl_lens, "cosmology": meta["cosmology"]}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BModeSimulator:
    """Simulate clean and observed B-mode spectra at NSIDE ``nside`` (see the module docstring).

    Parameters
    ----------
    cl_tensor, cl_lens : ndarray, shape (>= 3 nside,)
        C_l^BB templates in uK_CMB^2 (tensor at r = 1), e.g. from :func:`bb_templates`.
    nside : int
    ell_min, ell_max : int
        Multipole range of the data vector (default 2..2 nside - 1).
    beam_fwhm_arcmin : float
        Gaussian beam.
    noise_depth : float
        White Q/U noise, uK_CMB arcmin (0 for none).
    fg_fraction : float
        Amplitude of the foreground residual relative to the foreground sky at ``fg_freq_ghz`` (0 for none).
    fg_freq_ghz : float
        Frequency of the foreground sky.
    fg_components : tuple of str
        Synthetic components (polarised ones: "dust", "synchrotron").
    mask : {"none", "galactic"}
        Full sky, or an apodised cut abs(b) > ``mask_bcut_deg`` with C1 apodisation ``mask_apod_deg``.
    mask_bcut_deg, mask_apod_deg : float
    """

    cl_tensor: np.ndarray
    cl_lens: np.ndarray
    nside: int = 16
    ell_min: int = 2
    ell_max: int | None = None
    beam_fwhm_arcmin: float = 24.8
    noise_depth: float = 11.9
    fg_fraction: float = 1e-4
    fg_freq_ghz: float = 95.0
    fg_components: tuple[str, ...] = ("dust", "synchrotron")
    mask: str = "none"
    mask_bcut_deg: float = 20.0
    mask_apod_deg: float = 10.0

    def __post_init__(self):
        sht.check_nside(self.nside)
        if self.mask not in ("none", "galactic"):
            raise ValueError(f"unknown mask {self.mask!r}; expected 'none' or 'galactic'")
        if self.noise_depth < 0 or self.fg_fraction < 0 or self.beam_fwhm_arcmin < 0:
            raise ValueError("noise_depth, fg_fraction and beam_fwhm_arcmin must be >= 0")
        if len(self.cl_tensor) <= self.lmax or len(self.cl_lens) <= self.lmax:
            raise ValueError(f"templates must reach lmax = 3 nside - 1 = {self.lmax}")
        object.__setattr__(self, "fg_components", tuple(self.fg_components))

    # ------------------------------------------------------------------ geometry
    @property
    def lmax(self) -> int:
        """Band limit of the syntheses and analyses, 3 nside - 1."""
        return sht.default_lmax(self.nside)

    @property
    def ell(self) -> np.ndarray:
        """Multipoles of the data vector, shape (n_ell,)."""
        return ell_range(self.nside, self.ell_min, self.ell_max)

    @property
    def beam(self) -> np.ndarray:
        """B-mode beam transfer function b_l, shape (lmax + 1,)."""
        return sht.gauss_beam(self.beam_fwhm_arcmin, self.lmax, pol=True)[2]

    def mask_map(self) -> np.ndarray | None:
        """The analysis mask, shape (npix,), or None on the full sky."""
        if self.mask == "none":
            return None
        from ..cmb.masks import apodize, latitude_mask

        return apodize(latitude_mask(self.nside, self.mask_bcut_deg), self.mask_apod_deg)

    @property
    def fsky(self) -> float:
        """Effective sky fraction of the spectrum estimator: mean(mask^2), 1 on the full sky."""
        m = self.mask_map()
        return 1.0 if m is None else float(np.mean(m**2))

    @property
    def noise_cl(self) -> float:
        """White-noise C_l^BB = (depth in rad)^2, uK^2 sr."""
        return (self.noise_depth * math.pi / 10800) ** 2

    # ------------------------------------------------------------------ pieces
    def _b_alm(self, cl_bb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cls = np.zeros((4, self.lmax + 1))
        cls[2] = cl_bb[: self.lmax + 1]
        return sht.synalm(cls, self.lmax, rng)

    def _spectrum(self, qu_maps: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """C_l^BB of I=0, Q, U maps on the data ell range (pseudo-C_l / mean(mask^2) when masked)."""
        maps = np.zeros((3, qu_maps.shape[-1]))
        maps[1:] = qu_maps if mask is None else qu_maps * mask
        cl = sht.alm2cl(sht.map2alm(maps, lmax=self.lmax, iter=3)[2])
        if mask is not None:
            cl = cl / np.mean(mask**2)
        return cl[self.ell]

    def foreground_residual(self, rng: np.random.Generator) -> np.ndarray:
        """Q, U of ``fg_fraction`` times a new synthetic foreground sky at ``fg_freq_ghz``, uK_CMB, (2, npix)."""
        import astropy.units as u

        from ..sky.foregrounds import synthetic_foregrounds

        comps = synthetic_foregrounds(self.nside, rng, components=self.fg_components)
        qu = sum(np.asarray(c.emission(self.fg_freq_ghz * u.GHz).value)[1:] for c in comps)
        return qu * (self.fg_fraction * _rj_to_cmb(self.fg_freq_ghz))

    def simulate(
        self, r: float, seed: int, split: str, index: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One sample: clean tensor D_l and observed D_l.

        Parameters
        ----------
        r : float
            Tensor-to-scalar ratio (>= 0).
        seed : int
            Dataset seed.
        split : str
            Split name (part of the stream key).
        index : int
            Sample index within the split.
        mask : ndarray, optional
            Precomputed :meth:`mask_map` (computed if None and a mask is configured).

        Returns
        -------
        dl_gt, dl_obs : ndarray, shape (n_ell,), uK_CMB^2
        """
        if r < 0:
            raise ValueError(f"r must be >= 0, got {r}")
        if mask is None and self.mask != "none":
            mask = self.mask_map()
        beam = self.beam
        key = ("bmodes", split, int(index))
        alm_t = sht.almxfl(self._b_alm(r * self.cl_tensor, stream(seed, *key, "tensor")), beam)
        alm_l = sht.almxfl(self._b_alm(self.cl_lens, stream(seed, *key, "lensing")), beam)
        tensor_qu = sht.alm2map(alm_t, self.nside, self.lmax)[1:]
        obs = tensor_qu + sht.alm2map(alm_l, self.nside, self.lmax)[1:]
        if self.fg_fraction > 0:
            obs = obs + self.foreground_residual(stream(seed, *key, "foregrounds"))
        if self.noise_depth > 0:
            from ..sky.noise import white_noise

            obs = obs + white_noise(self.nside, self.noise_depth, stream(seed, *key, "noise"), nfield=2)
        fac = dl_factor(self.ell)
        return fac * self._spectrum(tensor_qu, None), fac * self._spectrum(obs, mask)

    def simulate_many(self, r_values: np.ndarray, seed: int, split: str, start: int = 0) -> np.ndarray:
        """Samples ``start .. start + len(r_values) - 1`` of ``split``: array of shape (n, 2, n_ell) (gt, obs)."""
        mask = self.mask_map()
        return np.stack(
            [
                np.stack(self.simulate(float(r), seed, split, start + k, mask))
                for k, r in enumerate(np.asarray(r_values, dtype=float))
            ]
        )

    def clean_many(self, r: float, seed: int, split: str, n: int) -> np.ndarray:
        """``n`` clean tensor D_l at ``r`` (no lensing, noise or foregrounds drawn), shape (n, n_ell)."""
        fac = dl_factor(self.ell)
        out = np.empty((int(n), len(self.ell)))
        for i in range(int(n)):
            alm = sht.almxfl(self._b_alm(r * self.cl_tensor, stream(seed, "bmodes", split, i, "tensor")), self.beam)
            out[i] = fac * self._spectrum(sht.alm2map(alm, self.nside, self.lmax)[1:], None)
        return out

    def foreground_cl(self, n_mc: int, seed: int) -> np.ndarray:
        """Mean C_l^BB of the foreground residual over ``n_mc`` skies (estimated as the data), shape (n_ell,)."""
        if self.fg_fraction == 0 or n_mc == 0:
            return np.zeros(len(self.ell))
        mask = self.mask_map()
        return np.mean(
            [
                self._spectrum(self.foreground_residual(stream(seed, "bmodes", "fg_model", k, "foregrounds")), mask)
                for k in range(int(n_mc))
            ],
            axis=0,
        )

    def model(self, cl_fg: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Expected spectra of the data vector, C_l in uK^2 on :attr:`ell` (inputs of the exact likelihood).

        Returns
        -------
        dict
            ``ell``; ``cl_tensor_obs`` = C^t b^2 (r = 1, as in both truth and observation); ``cl_lens_obs`` =
            C^lens b^2; ``nl`` = white noise; ``cl_fg``; ``cl_other`` = lensing + noise + foreground; ``fsky``.
        """
        ell = self.ell
        b2 = self.beam[ell] ** 2
        cl_fg = np.zeros(len(ell)) if cl_fg is None else np.asarray(cl_fg, dtype=float)
        nl = np.full(len(ell), self.noise_cl)
        lens = self.cl_lens[ell] * b2
        return {
            "ell": ell,
            "cl_tensor_obs": self.cl_tensor[ell] * b2,
            "cl_lens_obs": lens,
            "nl": nl,
            "cl_fg": cl_fg,
            "cl_other": lens + nl + cl_fg,
            "fsky": self.fsky,
        }

    def settings(self) -> dict:
        """The scalar settings (JSON-ready), without the templates."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
            if f.name not in ("cl_tensor", "cl_lens")
        }
