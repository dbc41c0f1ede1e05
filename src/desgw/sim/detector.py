"""Detector effects of the simulator: shot and read noise, full well and bleed trails, cosmic rays,
satellite trails, bias levels with overscan drift, crosstalk and digitisation.

Every function works on numpy arrays of one CCD (trimmed grid ``(4096, 2048)`` in electrons, or the
raw ``(4146, 2160)`` layout of `desgw.instrument.camera`) and is deterministic given its
``numpy.random.Generator``.

Choices and numbers
-------------------
* Shot and read noise: exact Poisson draws (plus normal read noise) where the expected charge
  is below `POISSON_EXACT_BELOW` (20 e-); above it one normal draw of variance
  ``lam + rn**2`` with the Cornish-Fisher skewness term of the Poisson part, whose first three
  moments equal those of Poisson + Gaussian read noise (``numpy``'s Poisson sampler costs 0.6 s
  per CCD, this 0.1 s). The read noise is thus drawn with the charge, before bleeding, so pixels
  at full well read exactly full well (a few tenths of an ADU of read noise are lost there).
* Full well: `FULL_WELL_FACTOR` x SATURATA x gain per amplifier (the header SATURATA is set a
  little below the real full well, as on DECam), so a saturated pixel reads about 2 % above
  SATURATA and SE processing flags it. Charge above the full well spills up and down the column,
  half each way, filling pixels to full well (charge-conserving; charge pushed past the CCD edge
  is lost).
* Cosmic rays: 5 events per cm**2 per minute (the DES science-verification figure for DECam at
  the zenith, ~90 per CCD per minute; DECam's thick CCDs see them as tracks): muon-like straight
  tracks with zenith angles from a cos**2 law, projected length ``(250 um / 15 um) tan(theta)``
  pixels (clipped at 20 px), 80 e- per micron of silicon path with a log-normal (0.3 dex-ish)
  Landau-like scatter, deposited by bilinear sampling every 0.2 pixel (sharp, no PSF); 30 % are
  compact low-energy "spots" (1-3 px, 1000-20000 e-).
* Satellite: one straight line in the tangent plane per exposure (a great circle), magnitude
  5-10 at 0.2-1 deg/s, with the Moffat line-spread profile ``(1 + d**2/alpha**2)**(1/2 - beta)``
  of the local PSF.
* Read noise per amplifier, gain per amplifier (e-/ADU), bias level per amplifier with a slow
  row-wise drift (a linear term plus one slow sine, 1-4 ADU) that is the same in the data and the
  overscan of each row, so overscan subtraction removes it.
* Non-linearity (`nonlinear_adu`): the recorded ADU of each amplifier is a smooth, monotonic
  function of the true ADU, ``adu_rec = adu * (1 - a * (adu / SATURATA)**2)`` with ``a`` per
  amplifier in `NONLINEARITY_RANGE` (0.5-1.5 %; drawn from the camera seed by
  `desgw.sim.calib.make_detector_calib`): at SATURATA the loss is ``a``, at 20k ADU it is
  ``a (20000 / SATURATA)**2``, 0.06-0.3 % at DECam's median SATURATA (43.7k ADU) and under
  0.5 % except on the 2 % of amplifiers with SATURATA < 34.6k ADU (at most 0.76 %). It is applied
  by `digitise` to the
  bias-free signal in ADU (signal, dark and bias structure after the gain), before crosstalk,
  bias level and overscan are added and the result is rounded; crosstalk is computed from the
  *true* (linear) bias-free ADU of the source amplifiers. ``d adu_rec / d adu > 0`` up to
  ``SATURATA / sqrt(3 a)`` (> 4.7 SATURATA), far beyond the 16-bit range, so the response is
  invertible everywhere (`linear_adu`). A pixel at full well (1.02 SATURATA true) records
  1.004-1.015 SATURATA, still flagged as saturated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..instrument import (CCD_SHAPE, PIXEL_SIZE_MM, RAW_SHAPE, Distortion, align_source,
                          focal_to_pixel, get_ccd, tangent_to_focal, terms_for_victim)

__all__ = [
    "POISSON_EXACT_BELOW",
    "FULL_WELL_FACTOR",
    "CR_RATE_PER_CM2_MIN",
    "TRUTH_COSMIC_RAY",
    "TRUTH_SATELLITE",
    "TRUTH_SATURATED",
    "TRUTH_BLEED",
    "TRUTH_BAD",
    "TRUTH_HOT",
    "TRUTH_MASK_THRESHOLD_E",
    "SatelliteTrail",
    "satellite_trail",
    "add_satellite",
    "add_cosmic_rays",
    "apply_noise",
    "to_adu",
    "bleed_columns",
    "full_well_e",
    "ReadoutState",
    "draw_readout_state",
    "digitise",
    "crosstalk_adu",
    "NONLINEARITY_RANGE",
    "nonlinear_adu",
    "linear_adu",
]

POISSON_EXACT_BELOW: float = 20.0
FULL_WELL_FACTOR: float = 1.02
CR_RATE_PER_CM2_MIN: float = 5.0
#: Bits of the truth mask (uint8) returned with each rendered CCD.
TRUTH_COSMIC_RAY, TRUTH_SATELLITE, TRUTH_SATURATED, TRUTH_BLEED, TRUTH_BAD, TRUTH_HOT = 1, 2, 4, 8, 16, 32
#: A cosmic ray or satellite pixel is marked in the truth mask where it added at least this (e-).
TRUTH_MASK_THRESHOLD_E: float = 10.0
#: Range of the per-amplifier non-linearity coefficient ``a`` (fractional loss at SATURATA).
NONLINEARITY_RANGE: tuple[float, float] = (0.005, 0.015)

_SI_THICKNESS_UM = 250.0
_E_PER_UM = 80.0


# ----------------------------------------------------------------------------- noise
def apply_noise(electrons: np.ndarray, rng: np.random.Generator, read_noise_e: np.ndarray) -> None:
    """Shot noise and read noise on expected charge, in place (float32 e-).

    Pixels expecting at least `POISSON_EXACT_BELOW` e- get one normal draw of variance
    ``lam + rn**2`` with the Cornish-Fisher skewness term of the Poisson part,
    ``lam + sqrt(V) z + lam (z**2 - 1) / (6 V)``, ``V = lam + rn**2`` (mean, variance and third
    moment exact); fainter pixels get an exact Poisson draw plus ``rn z``.

    Parameters
    ----------
    electrons : ndarray, shape (ny, nx), float32
        Expected charge; replaced by the noisy charge plus read noise.
    rng : numpy.random.Generator
    read_noise_e : ndarray, shape (nx,)
        Read noise (e-) of each column's amplifier.
    """
    z = rng.standard_normal(electrons.shape, dtype=np.float32)
    faint = np.zeros(electrons.shape, dtype=np.bool_)
    low = _noise_kernel(electrons, z, np.ascontiguousarray(read_noise_e, dtype=np.float32),
                        np.float32(POISSON_EXACT_BELOW), faint)
    if low:
        lam = electrons[faint]  # left untouched (clipped at 0) by the kernel
        cols = np.nonzero(faint)[1]
        electrons[faint] = (rng.poisson(lam.astype(np.float64)).astype(np.float32)
                            + np.asarray(read_noise_e, dtype=np.float32)[cols] * z[faint])


@numba.njit(cache=True, nogil=True)
def _noise_kernel(lam, z, rn, exact_below, faint):
    ny, nx = lam.shape
    low = 0
    for j in range(ny):
        for i in range(nx):
            v = max(lam[j, i], 0.0)
            if v < exact_below:
                lam[j, i] = v
                faint[j, i] = True
                low += 1
                continue
            var = v + rn[i] * rn[i]
            zz = z[j, i]
            lam[j, i] = v + np.sqrt(var) * zz + v * (zz * zz - 1.0) / (6.0 * var)
    return low


# ----------------------------------------------------------------------------- full well
def full_well_e(ccdnum: int) -> np.ndarray:
    """Full well (e-) of each trimmed column of a CCD, shape (2048,)."""
    ccd = get_ccd(ccdnum)
    out = np.empty(CCD_SHAPE[1])
    for amp in ccd.amps.values():
        out[amp.trimmed.x0:amp.trimmed.x1] = FULL_WELL_FACTOR * amp.saturation_adu * amp.gain
    return out


@numba.njit(cache=True, nogil=True)
def _bleed_kernel(img, fw, mask, bit_sat, bit_bleed):
    ny, nx = img.shape
    lost = 0.0
    over = np.zeros(nx, dtype=np.bool_)
    for y in range(ny):  # row-major scan for the columns that need work
        for x in range(nx):
            if img[y, x] > fw[x]:
                over[x] = True
    for x in range(nx):
        full = fw[x]
        if not over[x]:
            continue
        y = 0
        while y < ny:
            if img[y, x] <= full:
                y += 1
                continue
            y0 = y
            excess = 0.0
            while y < ny and img[y, x] >= full:
                excess += img[y, x] - full
                img[y, x] = full
                mask[y, x] |= bit_sat
                y += 1
            y1 = y  # first row above the run
            up = 0.5 * excess
            down = excess - up
            # downwards
            j = y0 - 1
            while down > 0.0 and j >= 0:
                v = img[j, x]
                if v > full:
                    down += v - full
                    v = full
                room = full - v
                add = min(room, down)
                img[j, x] = v + add
                down -= add
                if img[j, x] >= full:
                    mask[j, x] |= bit_bleed | bit_sat
                j -= 1
            lost += down
            # upwards: over-full pixels met on the way join the spill
            j = y1
            while up > 0.0 and j < ny:
                v = img[j, x]
                if v > full:
                    up += v - full
                    v = full
                room = full - v
                add = min(room, up)
                img[j, x] = v + add
                up -= add
                if img[j, x] >= full:
                    mask[j, x] |= bit_bleed | bit_sat
                j += 1
            lost += up
            y = max(j, y1)
    return lost


def bleed_columns(electrons: np.ndarray, full_well: np.ndarray, mask: np.ndarray) -> float:
    """Cap pixels at full well, spilling the excess charge along the column, in place.

    Parameters
    ----------
    electrons : ndarray, shape (ny, nx), float32
        Charge per pixel (after shot noise).
    full_well : ndarray, shape (nx,)
        Full well of each column (e-).
    mask : ndarray, shape (ny, nx), uint8
        Truth mask; `TRUTH_SATURATED` is set on every pixel at full well and `TRUTH_BLEED` on
        the pixels filled by spilled charge.

    Returns
    -------
    float
        Electrons lost past the top and bottom edges of the CCD.
    """
    # float32-representable full wells: a pixel filled to full well compares equal to it
    fw = np.asarray(full_well, dtype=np.float32).astype(np.float64)
    return float(_bleed_kernel(electrons, fw, mask,
                               np.uint8(TRUTH_SATURATED), np.uint8(TRUTH_BLEED)))


# ----------------------------------------------------------------------------- cosmic rays
def add_cosmic_rays(electrons: np.ndarray, rng: np.random.Generator, exptime: float,
                    mask: np.ndarray, *, rate_per_cm2_min: float = CR_RATE_PER_CM2_MIN) -> int:
    """Add cosmic-ray charge to a trimmed CCD image (e-), in place.

    Parameters
    ----------
    electrons : ndarray, shape (ny, nx), float32
    rng : numpy.random.Generator
    exptime : float
        Seconds the CCD is exposed to cosmic rays (the exposure time; readout adds ~20 s on DECam,
        ignored).
    mask : ndarray, shape (ny, nx), uint8
        `TRUTH_COSMIC_RAY` is set where a cosmic ray added at least `TRUTH_MASK_THRESHOLD_E`.
    rate_per_cm2_min : float

    Returns
    -------
    int
        Number of cosmic rays.
    """
    ny, nx = electrons.shape
    area_cm2 = ny * nx * (PIXEL_SIZE_MM / 10.0) ** 2
    n = int(rng.poisson(rate_per_cm2_min * area_cm2 * exptime / 60.0))
    if n == 0:
        return 0
    x0 = rng.uniform(0, nx, n)
    y0 = rng.uniform(0, ny, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    # cos^2(theta) zenith-angle law of muons: cos(theta) = U**(1/3) for a flux through a surface
    cos_t = rng.random(n) ** (1.0 / 3.0)
    tan_t = np.sqrt(np.maximum(1.0 - cos_t**2, 0.0)) / np.maximum(cos_t, 1e-3)
    length = np.minimum(_SI_THICKNESS_UM / (PIXEL_SIZE_MM * 1000.0) * tan_t, 20.0)
    path_um = np.hypot(_SI_THICKNESS_UM, length * PIXEL_SIZE_MM * 1000.0)
    charge = _E_PER_UM * path_um * rng.lognormal(0.0, 0.3, n)
    spot = rng.random(n) < 0.3
    length[spot] = rng.uniform(0.0, 2.0, spot.sum())
    charge[spot] = np.exp(rng.uniform(np.log(1000.0), np.log(20000.0), spot.sum()))
    flat_idx, dep = _cr_deposits(x0, y0, phi, length, charge, nx, ny)
    if flat_idx.size == 0:
        return n
    hit, inverse = np.unique(flat_idx, return_inverse=True)
    acc = np.bincount(inverse, weights=dep)
    ev = electrons.reshape(-1)
    ev[hit] += acc.astype(np.float32)
    mv = mask.reshape(-1)
    strong = hit[acc >= TRUTH_MASK_THRESHOLD_E]
    mv[strong] |= np.uint8(TRUTH_COSMIC_RAY)
    return n


def _cr_deposits(x0, y0, phi, length, charge, nx, ny):
    idx, dep = [], []
    for k in range(len(x0)):
        steps = max(int(np.ceil(length[k] / 0.2)), 1)
        t = (np.arange(steps) + 0.5) / steps - 0.5
        xs = x0[k] + t * length[k] * np.cos(phi[k])
        ys = y0[k] + t * length[k] * np.sin(phi[k])
        q = charge[k] / steps
        fx, fy = np.floor(xs), np.floor(ys)
        wx, wy = xs - fx, ys - fy
        for ddx, ddy, w in ((0, 0, (1 - wx) * (1 - wy)), (1, 0, wx * (1 - wy)),
                            (0, 1, (1 - wx) * wy), (1, 1, wx * wy)):
            px = fx.astype(np.int64) + ddx
            py = fy.astype(np.int64) + ddy
            ok = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
            idx.append(py[ok] * nx + px[ok])
            dep.append(q * w[ok])
    return np.concatenate(idx), np.concatenate(dep)


# ----------------------------------------------------------------------------- satellite
@dataclass(frozen=True)
class SatelliteTrail:
    """A satellite trail: a straight line in the focal-frame tangent plane.

    Attributes
    ----------
    xi0, eta0 : float
        A point on the line (deg from the boresight).
    angle_deg : float
        Direction of the line from the xi axis (deg).
    e_per_arcsec : float
        Charge per arcsec of trail length (e-), before the flat field.
    mag : float
        The satellite's magnitude (for the truth).
    """

    xi0: float
    eta0: float
    angle_deg: float
    e_per_arcsec: float
    mag: float


def satellite_trail(rng: np.random.Generator, zeropoint: float) -> SatelliteTrail:
    """Draw the exposure's satellite trail (crossing within 0.9 deg of the boresight).

    Parameters
    ----------
    rng : numpy.random.Generator
    zeropoint : float
        AB magnitude of 1 e-/s (the exposure's zeropoint).
    """
    r = 0.9 * np.sqrt(rng.random())
    t = rng.uniform(0, 2 * np.pi)
    mag = float(rng.uniform(5.0, 10.0))
    speed_arcsec_s = float(rng.uniform(0.2, 1.0)) * 3600.0
    return SatelliteTrail(xi0=float(r * np.cos(t)), eta0=float(r * np.sin(t)),
                          angle_deg=float(rng.uniform(0.0, 180.0)),
                          e_per_arcsec=float(10 ** (-0.4 * (mag - zeropoint)) / speed_arcsec_s),
                          mag=mag)


@numba.njit(cache=True, nogil=True)
def _line_kernel(img, mask, vx, vy, e_per_px, alpha, beta, half_width, thresh, bit):
    ny, nx = img.shape
    nv = vx.size
    norm = 0.0
    # normalise the line-spread profile numerically on a fine grid
    for k in range(-20000, 20001):
        d = k * 0.005
        norm += (1.0 + d * d / (alpha * alpha)) ** (0.5 - beta) * 0.005
    for s in range(nv - 1):
        ax, ay, bx, by = vx[s], vy[s], vx[s + 1], vy[s + 1]
        dx, dy = bx - ax, by - ay
        seg2 = dx * dx + dy * dy
        if seg2 <= 0.0:
            continue
        xlo = int(max(min(ax, bx) - half_width, 0.0))
        xhi = int(min(max(ax, bx) + half_width + 1, nx))
        ylo = int(max(min(ay, by) - half_width, 0.0))
        yhi = int(min(max(ay, by) + half_width + 1, ny))
        for y in range(ylo, yhi):
            for x in range(xlo, xhi):
                t = ((x - ax) * dx + (y - ay) * dy) / seg2
                # each pixel belongs to the segment whose [0, 1) parameter range holds it
                if t < 0.0 and s > 0:
                    continue
                if t >= 1.0 and s < nv - 2:
                    continue
                px = ax + t * dx - x
                py = ay + t * dy - y
                d2 = px * px + py * py
                if d2 > half_width * half_width:
                    continue
                v = e_per_px * (1.0 + d2 / (alpha * alpha)) ** (0.5 - beta) / norm
                img[y, x] += v
                if v >= thresh:
                    mask[y, x] |= bit


def add_satellite(electrons: np.ndarray, mask: np.ndarray, trail: SatelliteTrail, ccdnum: int,
                  distortion: Distortion, *, fwhm_pix: float, beta: float,
                  pixel_scale_arcsec: float) -> bool:
    """Add a satellite trail to a trimmed CCD image (e-), in place, if it crosses the CCD.

    The line is followed in pixel space as a polyline (vertices every 0.005 deg through the exact
    instrument mapping, so the distortion bends it as on the sky) and drawn with the Moffat
    line-spread profile of FWHM ``fwhm_pix``. `TRUTH_SATELLITE` is set in ``mask`` where the trail
    adds at least `TRUTH_MASK_THRESHOLD_E`.

    Returns
    -------
    bool
        True if any pixel was touched.
    """
    ny, nx = electrons.shape
    a = np.deg2rad(trail.angle_deg)
    t = np.arange(-2.5, 2.5, 0.005)
    xi = trail.xi0 + t * np.cos(a)
    eta = trail.eta0 + t * np.sin(a)
    px, py = focal_to_pixel(ccdnum, *tangent_to_focal(xi, eta, distortion))
    alpha = fwhm_pix / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    half = float(alpha * 20.0)
    inside = (px > -half) & (px < nx + half) & (py > -half) & (py < ny + half)
    if inside.sum() < 1:
        return False
    k = np.flatnonzero(inside)
    lo, hi = max(k[0] - 1, 0), min(k[-1] + 2, len(px))
    vx = np.ascontiguousarray(px[lo:hi])
    vy = np.ascontiguousarray(py[lo:hi])
    if len(vx) < 2:
        return False
    e_per_px = trail.e_per_arcsec * pixel_scale_arcsec
    before = int(np.count_nonzero(mask & TRUTH_SATELLITE))
    _line_kernel(electrons, mask, vx, vy, e_per_px, alpha, beta, half, TRUTH_MASK_THRESHOLD_E,
                 np.uint8(TRUTH_SATELLITE))
    return int(np.count_nonzero(mask & TRUTH_SATELLITE)) > before


# ----------------------------------------------------------------------------- readout
@numba.njit(cache=True, nogil=True)
def _adu_kernel(e, bias, inv_gain):
    ny, nx = e.shape
    for j in range(ny):
        for i in range(nx):
            e[j, i] = (e[j, i] + bias[j, i]) * inv_gain[i]


def to_adu(electrons: np.ndarray, bias_e: np.ndarray | None, gain: np.ndarray) -> None:
    """Electrons -> ADU above the bias level, in place: ``(e + bias_e) / gain[column]``."""
    if bias_e is None:
        bias_e = np.zeros_like(electrons)
    _adu_kernel(electrons, bias_e, (1.0 / np.asarray(gain, dtype=np.float64)).astype(np.float32))



@dataclass(frozen=True)
class ReadoutState:
    """Per-exposure readout of one CCD: bias level per amp and row-wise drift (ADU).

    Attributes
    ----------
    bias_adu : dict[str, float]
        Bias level per amplifier for this exposure (camera level + a few ADU jitter).
    drift_adu : dict[str, ndarray]
        Row-wise drift per amplifier, shape (4146,), indexed by raw row; the same in data and
        overscan columns.
    """

    bias_adu: dict[str, float]
    drift_adu: dict[str, np.ndarray]


def draw_readout_state(ccdnum: int, bias_level_adu: dict[str, float], rng: np.random.Generator,
                       *, bias_overscan: bool = True) -> ReadoutState:
    """Draw an exposure's bias levels (camera level + N(0, 2 ADU)) and slow row drifts (1-4 ADU)."""
    ccd = get_ccd(ccdnum)
    rows = np.arange(RAW_SHAPE[0], dtype=np.float64) / RAW_SHAPE[0]
    bias, drift = {}, {}
    for name in sorted(ccd.amps):
        if not bias_overscan:
            bias[name] = 0.0
            drift[name] = np.zeros(RAW_SHAPE[0], dtype=np.float32)
            continue
        bias[name] = float(bias_level_adu[name] + rng.normal(0.0, 2.0))
        lin = rng.uniform(-2.0, 2.0)
        amp = rng.uniform(0.5, 2.0)
        period = rng.uniform(0.4, 1.5)
        phase = rng.uniform(0, 2 * np.pi)
        drift[name] = (lin * rows + amp * np.sin(2 * np.pi * rows / period + phase)).astype(np.float32)
    return ReadoutState(bias, drift)


def digitise(adu_biasfree: np.ndarray, ccdnum: int, state: ReadoutState, rng: np.random.Generator,
             *, crosstalk: np.ndarray | None = None, read_noise: bool = True,
             nonlinearity: dict[str, float] | None = None) -> np.ndarray:
    """Build the raw uint16 HDU array of one CCD.

    Per amplifier: the true bias-free ADU go through the non-linear response
    (`nonlinear_adu`, when ``nonlinearity`` is given), then crosstalk, bias level and row
    drift are added, then the result is rounded and clipped.

    Parameters
    ----------
    adu_biasfree : ndarray, shape (4096, 2048), float32
        Trimmed image in true (linear) ADU above the bias level (signal, bias structure and
        data-pixel read noise already included). Not modified.
    ccdnum : int
    state : ReadoutState
    rng : numpy.random.Generator
        For the read noise of the overscan, prescan and parallel-overscan pixels.
    crosstalk : ndarray, shape (4096, 2048), optional
        Crosstalk ADU added to the data pixels.
    read_noise : bool
        Add read noise to the non-data pixels.
    nonlinearity : dict[str, float], optional
        Non-linearity coefficient ``a`` per amplifier name (`nonlinear_adu` with the
        amplifier's SATURATA); None: linear response.

    Returns
    -------
    ndarray, shape (4146, 2160), uint16
        Rounded, clipped to 0..65535.
    """
    ccd = get_ccd(ccdnum)
    raw = np.zeros(RAW_SHAPE, dtype=np.float32)
    for name, amp in ccd.amps.items():
        level = np.float32(state.bias_adu[name])
        drift = state.drift_adu[name]
        t = amp.trimmed
        d = amp.raw_data
        block = adu_biasfree[t.y0:t.y1, t.x0:t.x1]
        if nonlinearity is not None and nonlinearity.get(name, 0.0) != 0.0:
            block = nonlinear_adu(block, nonlinearity[name], amp.saturation_adu)
        if crosstalk is not None:
            block = block + crosstalk[t.y0:t.y1, t.x0:t.x1]
        raw[d.y0:d.y1, d.x0:d.x1] = block + (level + drift[d.y0:d.y1])[:, None]
        sigma = np.float32(amp.read_noise_e / amp.gain)
        for box in (amp.raw_overscan, amp.raw_prescan, amp.raw_parallel_overscan):
            if box.x1 <= box.x0 or box.y1 <= box.y0:
                continue
            vals = (level + drift[box.y0:box.y1])[:, None] + np.zeros(box.shape, dtype=np.float32)
            if read_noise:
                vals += sigma * rng.standard_normal(box.shape, dtype=np.float32)
            raw[box.y0:box.y1, box.x0:box.x1] = vals
    np.rint(raw, out=raw)
    np.clip(raw, 0, 65535, out=raw)
    return raw.astype(np.uint16)


# ----------------------------------------------------------------------------- non-linearity
def nonlinear_adu(adu: np.ndarray, a: float, saturation_adu: float) -> np.ndarray:
    """Recorded ADU of a non-linear amplifier: ``adu * (1 - a * (adu / saturation_adu)**2)``.

    Parameters
    ----------
    adu : array_like
        True (linear) ADU above the bias level.
    a : float
        Fractional loss at ``saturation_adu`` (0 gives the identity).
    saturation_adu : float
        The amplifier's SATURATA (ADU).

    Returns
    -------
    ndarray
        Same shape; float32 for float32 input, else float64.
    """
    x = np.asarray(adu)
    dt = np.float32 if x.dtype == np.float32 else np.float64
    c = dt(a / float(saturation_adu) ** 2)
    x = x.astype(dt, copy=False)
    return x - c * x * x * x


def linear_adu(recorded: np.ndarray, a: float, saturation_adu: float) -> np.ndarray:
    """Inverse of `nonlinear_adu`: the true ADU of recorded ADU (float64, any shape).

    Newton's method from ``recorded``; converges to 1e-9 ADU in a few steps over the monotonic
    range (``|adu| < saturation_adu / sqrt(3 a)``).
    """
    r = np.asarray(recorded, dtype=np.float64)
    if a == 0:
        return r.copy()
    c = a / float(saturation_adu) ** 2
    t = r.copy()
    for _ in range(50):
        f = t - c * t**3 - r
        step = f / (1.0 - 3.0 * c * t**2)
        t -= step
        if np.all(np.abs(step) < 1e-10 * np.maximum(np.abs(t), 1.0)):
            break
    return t


# ----------------------------------------------------------------------------- crosstalk
def crosstalk_adu(victim_ccd: int, sources: dict[int, np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Crosstalk signal (ADU) induced in a CCD's data pixels by the real DECam coefficients.

    Parameters
    ----------
    victim_ccd : int
    sources : dict[int, ndarray]
        Bias-free ADU images (trimmed, (4096, 2048)) of the source CCDs, the victim included
        (the values before any crosstalk is added).

    Returns
    -------
    ndarray, shape (4096, 2048), float32
        ADU to add to the victim's data pixels.
    list of int
        Source CCDs the coefficient file names but ``sources`` lacks (their terms are skipped).
    """
    victim = get_ccd(victim_ccd)
    out = np.zeros(CCD_SHAPE, dtype=np.float32)
    missing: set[int] = set()
    for term in terms_for_victim(victim_ccd):
        src_img = sources.get(term.source_ccd)
        if src_img is None:
            missing.add(term.source_ccd)
            continue
        samp = get_ccd(term.source_ccd).amps[term.source_amp]
        vamp = victim.amps[term.victim_amp]
        src = src_img[samp.trimmed.y0:samp.trimmed.y1, samp.trimmed.x0:samp.trimmed.x1]
        aligned = align_source(src, samp, vamp)
        t = vamp.trimmed
        out[t.y0:t.y1, t.x0:t.x1] += term.signal(aligned)
    return out, sorted(missing)
