"""Star and galaxy stamps against GalSim, flux conservation and centroids."""

import galsim
import numpy as np
import pytest

from desgw.sim.psf import add_moffat_stars, moffat_alpha, moffat_radius, shape_matrix
from desgw.sim.render_galaxies import GalaxyInputs, _galsim_one, add_galaxies


def _m(fwhm, e1, e2, beta=3.0):
    s = shape_matrix(np.array([moffat_alpha(fwhm, beta)]), np.array([e1]), np.array([e2]))
    return np.array([[s[0, 0, 0], s[0, 0, 1], s[0, 1, 1]]])


@pytest.mark.parametrize("fwhm,e1,e2", [(3.8, 0.0, 0.0), (2.6, 0.05, -0.03), (5.0, 0.1, 0.08)])
def test_star_matches_galsim_pixel_integration(fwhm, e1, e2):
    x0, y0 = 60.3, 59.77
    img = np.zeros((121, 121), np.float32)
    add_moffat_stars(img, np.array([x0]), np.array([y0]), np.array([1e6]), _m(fwhm, e1, e2), 3.0)
    ref = galsim.ImageD(121, 121, scale=1.0)
    galsim.Moffat(beta=3.0, fwhm=fwhm).shear(e1=e1, e2=e2).withFlux(1e6).drawImage(
        ref, offset=(x0 - 60, y0 - 60), method="auto")
    # inside the stamp, galsim's pixels; beyond it (<= 1e-3 of the flux), nothing
    r = int(moffat_radius(np.array([1e6]), _m(fwhm, e1, e2), 3.0)[0])
    inside = np.s_[60 - r + 1:60 + r, 60 - r + 1:60 + r]
    assert np.abs(img - ref.array)[inside].max() < 4e-4 * ref.array.max()


def test_star_flux_and_centroid():
    rng = np.random.default_rng(3)
    n = 40
    x = 100 + rng.uniform(-0.5, 0.5, n)
    y = 100 + rng.uniform(-0.5, 0.5, n)
    m = _m(3.5, 0.06, 0.04)
    for k in range(n):
        img = np.zeros((201, 201), np.float32)
        add_moffat_stars(img, x[k:k + 1], y[k:k + 1], np.array([2e5]), m, 3.0)
        yy, xx = np.mgrid[:201, :201]
        ap = (xx - x[k]) ** 2 + (yy - y[k]) ** 2 < 60**2
        assert abs(img[ap].sum() / 2e5 - 1) < 1e-3
        assert abs((img * xx).sum() / img.sum() - x[k]) < 0.005
        assert abs((img * yy).sum() / img.sum() - y[k]) < 0.005


@pytest.mark.parametrize("beta", [2.5, 3.5, 5.0])
@pytest.mark.parametrize("fwhm", [2.7, 4.0, 6.0])
def test_star_keeps_its_wing_beyond_the_stamp_out(beta, fwhm):
    """A star's image holds its total flux times the Moffat fraction enclosed by the stamp's
    elliptical cut (1 - (1 + q_cut)**(1 - beta)), not the whole flux: a stamp rescaled to the
    total puts the far wing's light (0.02-0.1 %) into the star and makes it brighter than its
    truth."""
    m = _m(fwhm, 0.05, -0.02, beta)
    for flux in (3e3, 1e5, 1e7):
        r = int(moffat_radius(np.array([flux]), m, beta)[0])
        n = 2 * r + 41
        img = np.zeros((n, n), np.float32)
        add_moffat_stars(img, np.array([n // 2 + 0.3]), np.array([n // 2 - 0.2]),
                         np.array([flux]), m, beta)
        det = m[0, 0] * m[0, 2] - m[0, 1] ** 2
        q_cut = (r - 0.5) ** 2 * det / max(m[0, 0], m[0, 2])
        enclosed = 1.0 - (1.0 + q_cut) ** (1.0 - beta)
        assert enclosed < 1.0 - 1e-6
        assert abs(img.sum(dtype=np.float64) / flux - enclosed) < 5e-5


def test_stamp_radius_grows_with_flux():
    m = np.repeat(_m(3.8, 0, 0), 3, axis=0)
    r = moffat_radius(np.array([1e3, 1e5, 1e8]), m, 3.0)
    assert r[0] <= r[1] < r[2]


def _gal(hlr_pix, n, e1, e2, x, y, flux, fwhm=3.8):
    jac = np.eye(2)[None]
    m = _m(fwhm, 0, 0)
    b = shape_matrix(np.array([hlr_pix]), np.array([e1]), np.array([e2]))
    return GalaxyInputs(x=np.array([x]), y=np.array([y]), flux=np.array([flux]),
                        b=np.array([[b[0, 0, 0], b[0, 0, 1], b[0, 1, 1]]]), n=np.array([n]), m=m,
                        cell=np.zeros(1, int), cell_m=m, jac=jac, hlr_arcsec=np.array([hlr_pix]),
                        e1=np.array([e1]), e2=np.array([e2]), psf_fwhm_arcsec=np.array([fwhm]),
                        psf_e1=np.zeros(1), psf_e2=np.zeros(1))


@pytest.mark.parametrize("n", [1.0, 4.0])
def test_galaxy_fft_path_matches_galsim(n):
    g = _gal(4.5, n, 0.3, 0.1, 100.3, 99.6, 1e5)
    fast = np.zeros((200, 200), np.float32)
    ref = np.zeros((200, 200), np.float32)
    counts = add_galaxies(fast, g, 3.0)
    assert counts == {"fft": 1, "galsim": 0}
    _galsim_one(ref, g, 0, 3.0)
    assert abs(fast.sum() / 1e5 - 1) < 1e-4
    assert np.abs(fast - ref).max() < 0.01 * ref.max()
    yy, xx = np.mgrid[:200, :200]
    assert abs((fast * xx).sum() / fast.sum() - 100.3) < 0.005
    assert abs((fast * yy).sum() / fast.sum() - 99.6) < 0.005


def test_big_galaxy_goes_to_galsim():
    g = _gal(40.0, 1.0, 0.0, 0.0, 200.0, 200.0, 1e6)
    img = np.zeros((400, 400), np.float32)
    counts = add_galaxies(img, g, 3.0)
    assert counts == {"fft": 0, "galsim": 1}
    assert abs(img.sum() / 1e6 - 1) < 0.01


@pytest.mark.parametrize("fwhm,e1,e2", [(3.0, 0.0, 0.0), (4.5, 0.06, -0.04)])
def test_kolmogorov_star_matches_galsim(fwhm, e1, e2):
    from desgw.sim.psf import add_profile_stars

    x0, y0 = 60.3, 59.77
    img = np.zeros((121, 121), np.float32)
    add_profile_stars(img, np.array([x0]), np.array([y0]), np.array([1e6]), _m(fwhm, e1, e2), 3.0,
                      "kolmogorov")
    ref = galsim.ImageD(121, 121, scale=1.0)
    galsim.Kolmogorov(fwhm=fwhm).shear(e1=e1, e2=e2).withFlux(1e6).drawImage(
        ref, offset=(x0 - 60, y0 - 60), method="auto")
    # galsim's pixels inside the stamp; the wing beyond it (r**-11/3) is not drawn
    assert np.abs(img - ref.array).max() < 2e-3 * ref.array.max()
    assert abs(img.sum() / 1e6 - 1) < 3e-3  # 121 x 121 image: the rest lies outside
    assert img.sum(dtype=np.float64) < ref.array.sum()
    # not a Moffat: its wing at 5 FWHM is brighter than a beta 3 Moffat's of the same FWHM
    mof = np.zeros((121, 121), np.float32)
    add_moffat_stars(mof, np.array([x0]), np.array([y0]), np.array([1e6]), _m(fwhm, e1, e2), 3.0)
    r = round(5 * fwhm)
    assert img[60, 60 + r] > 1.5 * mof[60, 60 + r]


def test_kolmogorov_galaxy_kernel_matches_galsim():
    g = _gal(4.5, 1.0, 0.3, 0.1, 100.3, 99.6, 1e5)
    fast = np.zeros((200, 200), np.float32)
    ref = np.zeros((200, 200), np.float32)
    add_galaxies(fast, g, 3.0, profile="kolmogorov")
    _galsim_one(ref, g, 0, 3.0, "kolmogorov")
    moffat = np.zeros((200, 200), np.float32)
    _galsim_one(moffat, g, 0, 3.0)
    assert np.abs(fast - ref).max() < 0.01 * ref.max()
    assert np.abs(moffat - ref).max() > 0.02 * ref.max()


def test_survey_psf_options():
    from desgw.sim.survey import SurveyConfig, plan_night

    specs = plan_night(seed=3, n_templates=1, config=SurveyConfig(
        psf_profile="kolmogorov", psf_beta=(4.0, 4.0), psf_fwhm_tilt=0.2))
    assert all(s.psf.profile == "kolmogorov" and s.psf.beta == 4.0 for s in specs)
    assert max(abs(t) for s in specs for t in s.psf.fwhm_tilt) > 0.02
    default = plan_night(seed=3, n_templates=1)
    assert all(s.psf.profile == "moffat" and 2.5 <= s.psf.beta <= 3.5 for s in default)
    with pytest.raises(ValueError):
        plan_night(seed=3, config=SurveyConfig(psf_profile="gauss"))
