"""The PSF fit's pedestal (``PSFConfig.fit_pedestal``): a level common to the PSF stars' stamps
that the background left (the sky under the stars above or below the one subtracted) is fitted
jointly with the model instead of entering it.

A model normalised over its stamp turns a pedestal ``p`` into ``p / F`` of every star's
normalised stamp: the model's wings rise by the flux-weighted mean of that, its core drops and
every PSF flux rises by ~``p x stamp area / F`` (0.45 % for 3 e-/px on 1e5-1e6 e- stars in a
27 px stamp). The pedestal does not scale with the star's flux, the star's light does: the fit
separates them by the stars' spread in flux, over the stamp pixels beyond 2 FWHM.

Fields of :mod:`test_psf_flux_bias` (galsim Moffat beta 2.5 and Kolmogorov, FWHM 4.5 px varying
by 16 % over the field, 225 stars of 1e5-1e6 e-, 64 px apart, 1500 e- sky): measured pedestals
+0.06 / +0.52 e-/px with none added, +3.06 / +3.52 with 3 e-/px added; bright-star FLUX_PSF /
stamp flux 0.9995 / 0.9990 either way, against 1.0045 / 1.0046 without the pedestal fit. A
pedestal within :data:`desgw.se.psf.PEDESTAL_SIGMA` of its error is left out (0).
"""

from __future__ import annotations

import numpy as np
import pytest

from desgw.se.measure import psf_fluxes
from desgw.se.psf import PSFConfig, fit_psf
from test_psf_flux_bias import _field, _positions, _stamp

CASES = [("moffat", 2.5, 4.5), ("kolmogorov", 0.0, 4.5)]


@pytest.mark.parametrize("kind,beta,fwhm0", CASES, ids=["moffat2.5", "kolmogorov"])
def test_pedestal_fitted_with_the_model(kind, beta, fwhm0):
    stamp = _stamp(fwhm0)
    image, _noiseless, weight, box = _field(kind, beta, fwhm0, stamp)
    xs, ys, _flux = _positions()
    peds, ratios = [], []
    for added in (0.0, 3.0):
        img = image + np.float32(added)
        psf = fit_psf(img, weight, None, xs, ys,
                      config=PSFConfig(stamp=stamp, fit_pedestal=True))
        peds.append(psf.sky_pedestal - added)
        flux = psf_fluxes(img - np.float32(psf.sky_pedestal), weight, None, xs, ys, psf)[0]
        ratios.append(float(np.mean(flux / box)))
        if added:
            # without the pedestal fit the same stamps give fluxes 0.45 % high
            plain = fit_psf(img, weight, None, xs, ys, config=PSFConfig(stamp=stamp))
            assert plain.sky_pedestal == 0.0
            high = float(np.mean(psf_fluxes(img, weight, None, xs, ys, plain)[0] / box))
            assert high > 1.003, high
    # the pedestal found (its noise over 225 stars is ~0.3 e-/px; with none added it may be
    # left out as insignificant, PEDESTAL_SIGMA)
    assert max(abs(p) for p in peds) < 0.8, peds
    # bright stars' PSF fluxes unbiased to the bar (0.1 %) whatever the pedestal
    assert max(abs(r - 1.0) for r in ratios) < 1e-3, ratios
