"""Small exposures and object tables for the rendering tests (not a test module)."""

from __future__ import annotations

from typing import Any

import numpy as np

from desgw.instrument import Pointing, pixel_to_sky
from desgw.sim.model import ExposureSpec, ObjectTable, PSFField, SimSwitches

CCD = 35  # N4, next to the optical axis

#: everything off: the rendered CCD is the sky and the objects, digitised exactly
QUIET = SimSwitches(noise=False, bias_overscan=False, flat=False, bad_pixels=False, crosstalk=False,
                    saturation=False, cosmic_rays=False, satellite=False, sky_gradient=False,
                    nonlinearity=False)


def make_spec(*, expnum: int = 1000, fwhm: float = 1.0, sky: float = 20.8, zp: float = 26.6,
              exptime: float = 90.0, variation: bool = True, rotation: float = 0.0) -> ExposureSpec:
    psf = PSFField(fwhm, beta=3.0, fwhm_r2=0.05 if variation else 0.0,
                   fwhm_tilt=(0.02, -0.01) if variation else (0.0, 0.0),
                   e1=0.03 if variation else 0.0, e2=-0.02 if variation else 0.0,
                   e_astig=0.02 if variation else 0.0)
    p = Pointing(40.0, -25.0, rotation)
    return ExposureSpec(expnum=expnum, band="r", mjd=58710.2, exptime=exptime, airmass=1.1,
                        pointing=p, header_pointing=p, psf=psf, sky_mag_arcsec2=sky,
                        sky_gradient=(0.02, -0.01), zeropoint=zp)


def objects_at(spec: ExposureSpec, ccdnum: int, x, y, mag, *, kind=0, hlr=0.0, n=1.0, q=1.0,
               pa=0.0, id0: int = 1) -> ObjectTable:
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    ra, dec = pixel_to_sky(ccdnum, x, y, spec.pointing, spec.distortion)
    k = len(x)
    full = lambda v, dt=float: np.broadcast_to(np.asarray(v, dtype=dt), (k,)).copy()  # noqa: E731
    return ObjectTable(id=np.arange(id0, id0 + k, dtype=np.int64), kind=full(kind, np.int8), ra=ra,
                       dec=dec, mag=full(mag), hlr_arcsec=full(hlr), sersic_n=full(n), q=full(q),
                       pa_deg=full(pa))


def concat(*tables: ObjectTable) -> ObjectTable:
    cols = ("id", "kind", "ra", "dec", "mag", "hlr_arcsec", "sersic_n", "q", "pa_deg")
    columns: dict[str, Any] = {c: np.concatenate([getattr(t, c) for t in tables]) for c in cols}
    return ObjectTable(**columns)


def data_e(raw: np.ndarray, ccdnum: int, bias: dict | None = None, *, overscan: bool = False
           ) -> np.ndarray:
    """Trimmed image in electrons from a raw array (bias levels subtracted when given, or the
    row-wise mean of the overscan when ``overscan``)."""
    from desgw.instrument import CCD_SHAPE, get_ccd

    out = np.empty(CCD_SHAPE, dtype=np.float64)
    for name, amp in get_ccd(ccdnum).amps.items():
        d, t = amp.raw_data, amp.trimmed
        block = raw[d.y0:d.y1, d.x0:d.x1].astype(np.float64)
        if bias is not None:
            block = block - bias[name]
        if overscan:
            o = amp.raw_overscan
            block = block - raw[o.y0:o.y1, o.x0:o.x1].mean(axis=1)[:, None]
        out[t.y0:t.y1, t.x0:t.x1] = block * amp.gain
    return out
