"""Real-sky statistics: the estimators on exact inputs, and the synthetic models against PySM's d1/s1/f1/a1."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from cosmobench.sky import sht
from cosmobench.sky.foregrounds import FOREGROUND_MODELS, latitude_profile, make_foregrounds
from cosmobench.sky.realism import (
    BANDS,
    REAL_SKY,
    ee_bb_ratio,
    effective_index,
    galactic_latitude,
    high_latitude_weight,
    low_ell_share,
    main,
    masked_spectra,
    realism_summary,
    spectral_slope,
)

# ------------------------------------------------------------------------------------------ estimators


def test_high_latitude_weight_is_the_sin2_taper():
    b = galactic_latitude(32)
    w = high_latitude_weight(32)
    assert np.all(w[np.abs(b) <= 30] == 0) and np.all(w[np.abs(b) >= 40] == 1)
    mid = (np.abs(b) > 30) & (np.abs(b) < 40)
    assert_allclose(w[mid], np.sin(np.pi / 2 * (np.abs(b[mid]) - 30) / 10) ** 2, rtol=1e-12)


def test_slope_ratio_share_and_index_on_exact_inputs():
    ell = np.arange(200.0)
    cl = np.zeros(200)
    cl[1:] = ell[1:] ** -2.42
    assert_allclose(spectral_slope(cl), -2.42, rtol=1e-10)
    cls = np.stack([cl, 2.0 * cl, cl])
    assert_allclose(ee_bb_ratio(cls), 2.0, rtol=1e-12)
    flat = np.ones(101) / (2 * np.arange(101) + 1)  # equal variance per multipole
    assert_allclose(low_ell_share(flat), 28 / 99, rtol=1e-12)  # ell 2..29 out of 2..100
    assert_allclose(effective_index(np.full(3, 2.0), np.full(3, 2.0 * 3.0**1.5), 100.0, 300.0), 1.5, rtol=1e-12)


def test_masked_ee_bb_of_a_gaussian_field_recovers_its_input():
    """A Gaussian spin-2 field with C_EE = 2 C_BB through the tapered high-latitude mask: EE/BB = 2 within 10 %."""
    nside, lmax = 64, 191
    ell = np.arange(lmax + 1)
    cl = np.zeros((4, lmax + 1))
    cl[0, 2:] = cl[1, 2:] = 2.0 * ell[2:] ** -1.5
    cl[2, 2:] = ell[2:] ** -1.5
    iqu = sht.alm2map(sht.synalm(cl, lmax, np.random.default_rng(0)), nside)
    cls = masked_spectra(iqu, high_latitude_weight(nside))
    assert abs(ee_bb_ratio(cls) / 2.0 - 1) < 0.1
    assert abs(spectral_slope(cls[2]) + 1.5) < 0.15
    assert_allclose(masked_spectra(iqu[0]), sht.alm2cl(sht.map2alm(iqu[0], iter=3)), rtol=1e-6)


# ------------------------------------------------------------------------------------------ models vs real sky


def _check_bands(summary: dict[str, tuple[float, float, float]]) -> None:
    """The mean over realisations of every statistic with a band lies inside it."""
    outside = {k: round(summary[k][0], 4) for k, (lo, hi) in BANDS.items() if not lo <= summary[k][0] <= hi}
    bands = {k: BANDS[k] for k in outside}
    assert not outside, f"outside the real-sky bands {bands}: {outside}"


def test_default_model_inside_the_real_sky_bands():
    """The default model at nside 64 (3 realisations) against the bands of issue 12 around PySM d1/s1/f1/a1."""
    summary = realism_summary("default", 64, range(3))
    _check_bands(summary)
    # the former default failed these (issue 12): dust T uncorrelated with column density, AME too bright at 100 GHz
    assert summary["dust_temp_vs_lnI"][1] < -0.5
    assert summary["ame_100_high"][2] < 2 * REAL_SKY["ame_100_high"]
    # free-free and AME high-latitude spectra now within 0.6 of the real sky's (-0.97 / -1.34; were -2.2 / -2.9)
    for key in ("ff_tt_slope_high", "ame_tt_slope_high"):
        assert abs(summary[key][0] - REAL_SKY[key]) < 0.6, (key, summary[key])


@pytest.mark.slow
@pytest.mark.parametrize(("nside", "n"), [(64, 8), (128, 4)])
def test_default_model_inside_the_real_sky_bands_more_realisations(nside, n):
    _check_bands(realism_summary("default", nside, range(n)))


def test_models_are_registered_and_measurable(capsys):
    assert {"default", "alt", "filament"} <= set(FOREGROUND_MODELS)
    main(["--nside", "16", "--seeds", "1", "--models", "default", "filament"])
    table = capsys.readouterr().out
    assert table.startswith("| statistic | real sky (PySM) | band | `default` | `filament` |")
    assert len(table.splitlines()) == 2 + len(REAL_SKY) + 1  # header, rule, statistics, low_ell_share_100


def test_filament_model_has_an_independent_morphology():
    """Filament dust is not a log-normal field: ln(I / profile) is skewed (the gaps between ridges), where the
    default's is symmetric; and its spectral index rises with column density (beta-T anticorrelation) where the
    default's falls."""
    nside = 64
    prof = latitude_profile(nside, 290.0, 1.2e4, plane_width=0.02, lon_contrast=1.5)  # the default dust profile
    skew = {}
    for model in ("default", "filament"):
        values = []
        for seed in range(4):
            dust = make_foregrounds("synthetic", nside, np.random.default_rng(seed), model=model, components=["dust"])
            x = np.log(dust[0].iqu[0] / prof)
            x = x - x.mean()
            values.append(np.mean(x**3) / np.mean(x**2) ** 1.5)
        skew[model] = np.mean(values)
    assert abs(skew["default"]) < 0.1 and skew["filament"] < -0.2, skew  # measured: -0.004 and -0.32
    stats = {m: realism_summary(m, nside, range(2)) for m in ("default", "filament")}
    assert stats["default"]["dust_index_vs_lnI"][2] < 0 < stats["filament"]["dust_index_vs_lnI"][1]
    with pytest.raises(ValueError, match="morphology"):
        make_foregrounds("synthetic", 16, np.random.default_rng(0), components=["dust"], dust={"morphology": "web"})
