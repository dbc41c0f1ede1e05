"""The simulated camera's fixed detector properties and the calibration files made from them.

A `DetectorCalib` is the camera: per CCD its relative quantum efficiency, amplifier bias levels,
bias structure, flat-field pattern, bad pixels (the real DES bad-pixel boxes, made hot, dead or
low-response) and random hot pixels. It is fixed by a seed, so templates and search exposures see
the same camera, as on the sky.

The full-size images (flat, bias structure: 32 MB each per CCD) are not stored: a `DetectorCalib`
holds compact per-CCD parameters and rebuilds the images on demand, deterministically
(`DetectorCalib.flat`, `DetectorCalib.bias_e`, `DetectorCalib.bpm`); 62 stored flats would cost
2 GB. The pixel-to-pixel part of the flat comes from a counter-based hash of (seed, CCD, pixel),
so it is identical however often and in whatever order it is rebuilt.

Physics (what SE processing has to undo)
---------------------------------------
* QE: the relative throughput of each CCD, the band integral of its column in the real
  ``{band}_band_per_detector_throughput.fits`` over the focal-plane average (+-1.5 %), times a
  small seeded scatter (0.3 %).
* Flat: a smooth large-scale pattern (4 separable cosine modes, 2.5 % rms) times a pixel-to-pixel
  response (1 % rms, Irwin-Hall(4) distributed, bounded at +-3.5 %), normalised to mean 1 per CCD.
  Dividing by the written dome flat removes it up to the dome flat's own 0.1 % noise.
* Bias structure (electrons, what remains after overscan subtraction): a fixed column pattern
  (0.8 e- rms) and a decaying start-of-readout transient (10-30 e-, e-folding 30 rows) per amp.
* Bad pixels: the real DES boxes (`desgw.instrument.defect_boxes`); boxes larger than 2000 pixels
  (CCD edges, large regions) get a low response (0.6-0.9), smaller ones are dead (response 0.02,
  40 %) or hot (dark current log-normal around 5 e-/s, 60 %). Plus random hot pixels (Poisson mean
  150 per CCD, 1-300 e-/s). The bad-pixel mask marks all of them with BADPIX (bit 1).
* Non-linearity: per amplifier a coefficient ``a`` uniform in
  `desgw.sim.detector.NONLINEARITY_RANGE` (0.5-1.5 % loss at SATURATA, model in
  `desgw.sim.detector.nonlinear_adu`), drawn from its own stream of the seed (the other
  properties are those of a camera drawn without it). ``make_detector_calib(...,
  nonlinearity=False)`` gives ``a = 0`` (linear amplifiers, identity table). The lookup table
  written to ``calib/linearity.fits`` (`DetectorCalib.linearity_table`) inverts the model
  exactly at its grid points (0..65535 ADU, step 16) and to < 1e-3 ADU between them.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from ..instrument import CCD_SHAPE, defect_boxes, get_ccd
from ..io.calib import LinearityTable
from .detector import NONLINEARITY_RANGE, linear_adu

__all__ = ["BADPIX", "CCDCalib", "DetectorCalib", "make_detector_calib", "write_calibrations",
           "throughput_qe"]

log = logging.getLogger(__name__)

#: Bit of the written bad-pixel mask (``desgw.se.maskbits.BADPIX``).
BADPIX: int = 1
_DEFECT_DEAD, _DEFECT_HOT, _DEFECT_LOW = 0, 1, 2


@dataclass(frozen=True, eq=False)
class CCDCalib:
    """Fixed properties of one CCD (compact; images are rebuilt by `DetectorCalib`).

    Attributes
    ----------
    ccdnum : int
    qe : float
        Relative quantum efficiency (focal-plane mean ~1); the CCD's zeropoint is
        ``spec.zeropoint + 2.5 log10(qe)``.
    bias_level_adu : dict[str, float]
        Mean bias level per amplifier (ADU), 1000-3000.
    defect_boxes : ndarray, shape (N, 4), int32
        ``x0, y0, width, height`` (trimmed pixels) of the real DES bad-pixel boxes.
    defect_kind : ndarray, shape (N,), int8
        0 dead, 1 hot, 2 low response.
    defect_value : ndarray, shape (N,)
        Response (dead, low) or dark current in e-/s (hot).
    hot_x, hot_y : ndarray of int
        Random hot pixels (trimmed pixel coordinates).
    hot_rate : ndarray
        Their dark current (e-/s).
    flat_modes : ndarray, shape (4, 5)
        Smooth flat modes: amplitude, x frequency, x phase, y frequency, y phase.
    column_pattern_seed, flat_seed : int
        Seeds of the column bias pattern and of the pixel-to-pixel flat hash.
    transient_e : dict[str, float]
        Start-of-readout bias transient amplitude per amplifier (e-).
    nonlinearity : dict[str, float]
        Non-linearity coefficient ``a`` per amplifier (`desgw.sim.detector.nonlinear_adu`;
        0 or absent: linear).
    """

    ccdnum: int
    qe: float
    bias_level_adu: dict[str, float]
    defect_boxes: np.ndarray
    defect_kind: np.ndarray
    defect_value: np.ndarray
    hot_x: np.ndarray
    hot_y: np.ndarray
    hot_rate: np.ndarray
    flat_modes: np.ndarray
    column_pattern_seed: int
    flat_seed: int
    transient_e: dict[str, float]
    nonlinearity: dict[str, float] = field(default_factory=dict)


@functools.cache
def throughput_qe(band: str) -> np.ndarray:
    """Relative throughput of the 62 CCDs in a band from the real per-detector curves.

    Returns
    -------
    ndarray, shape (62,)
        Band integral of each CCD's throughput over that of the average (index CCDNUM - 1);
        ones when the band has no file.
    """
    from ..instrument.throughput import has_throughput, relative_ccd_throughput

    if not has_throughput(band):
        log.warning("no per-detector throughput for band %s; QE offsets from the seed only", band)
        return np.ones(62)
    return relative_ccd_throughput(band, per_photon=False)


@numba.njit(cache=True, nogil=True, inline="always")
def _splitmix(z):
    z = (z + np.uint64(0x9E3779B97F4A7C15))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _flat_kernel(out, seed, fx, gy, p2p_sigma):
    """out = (1 + sum_k fx[k, x] * gy[k, y]) * (1 + sigma * IrwinHall4(hash(seed, pixel)))."""
    ny, nx = out.shape
    nk = fx.shape[0]
    scale = p2p_sigma * np.sqrt(3.0) / 65535.0  # sum of 4 U(0,1): var 1/3 -> unit variance
    s0 = np.uint64(seed)
    mask16 = np.uint64(0xFFFF)
    for y in range(ny):
        for x in range(nx):
            smooth = 1.0
            for k in range(nk):
                smooth += fx[k, x] * gy[k, y]
            h = _splitmix(s0 ^ np.uint64(y * nx + x))
            u = (float(h & mask16) + float((h >> np.uint64(16)) & mask16)
                 + float((h >> np.uint64(32)) & mask16) + float((h >> np.uint64(48)) & mask16))
            out[y, x] = smooth * (1.0 + scale * (u - 2.0 * 65535.0))


@dataclass(frozen=True, eq=False)
class DetectorCalib:
    """The simulated camera: fixed per-CCD detector properties for one seed and band.

    Images are rebuilt on each call (flat ~0.05 s, bias and bpm faster), never cached.

    Attributes
    ----------
    seed : int
    band : str
    ccds : dict[int, CCDCalib]
    flat_p2p_rms : float
        Pixel-to-pixel flat rms (fraction).
    flat_smooth_rms : float
        Large-scale flat rms (fraction).
    dome_flat_noise : float
        rms of the written dome flat's own noise (fraction).
    """

    seed: int
    band: str
    ccds: dict[int, CCDCalib]
    flat_p2p_rms: float = 0.01
    flat_smooth_rms: float = 0.025
    dome_flat_noise: float = 0.001

    def _get(self, ccdnum: int) -> CCDCalib:
        try:
            return self.ccds[int(ccdnum)]
        except KeyError:
            raise KeyError(f"CCD {ccdnum} is not in this DetectorCalib (has {sorted(self.ccds)})") from None

    def flat(self, ccdnum: int) -> np.ndarray:
        """True flat-field pattern of a CCD: float32 (4096, 2048), mean 1 (rebuilt, ~0.1 s)."""
        c = self._get(ccdnum)
        ny, nx = CCD_SHAPE
        x = np.arange(nx) / nx
        y = np.arange(ny) / ny
        modes = c.flat_modes
        fx = np.array([m[0] * np.cos(2 * np.pi * m[1] * x + m[2]) for m in modes])
        gy = np.array([np.cos(2 * np.pi * m[3] * y + m[4]) for m in modes])
        out = np.empty(CCD_SHAPE, dtype=np.float32)
        _flat_kernel(out, np.uint64(c.flat_seed), fx, gy, self.flat_p2p_rms)
        out /= np.float32(out.mean(dtype=np.float64))
        return out

    def dome_flat(self, ccdnum: int) -> np.ndarray:
        """The dome flat written to ``calib/flat_{band}.fits``: `flat` times (1 + 0.1 % noise), mean 1."""
        rng = np.random.default_rng([self.seed, int(ccdnum), 77])
        out = self.flat(ccdnum) * (1.0 + self.dome_flat_noise
                                   * rng.standard_normal(CCD_SHAPE, dtype=np.float32))
        return (out / out.mean(dtype=np.float64)).astype(np.float32)

    def bias_e(self, ccdnum: int) -> np.ndarray:
        """Bias structure after overscan subtraction (electrons), float32 (4096, 2048)."""
        c = self._get(ccdnum)
        ccd = get_ccd(int(ccdnum))
        rng = np.random.default_rng(c.column_pattern_seed)
        cols = rng.normal(0.0, 0.8, CCD_SHAPE[1]).astype(np.float32)
        out = np.empty(CCD_SHAPE, dtype=np.float32)
        rows = np.arange(CCD_SHAPE[0], dtype=np.float32)
        for name, amp in ccd.amps.items():
            t = amp.trimmed
            # rows counted from the first row read out
            from_start = rows if amp.readout_bottom else rows[::-1]
            trans = (c.transient_e[name] * np.exp(-from_start / 30.0)).astype(np.float32)
            out[:, t.x0:t.x1] = trans[:, None] + cols[None, t.x0:t.x1]
        return out

    def master_bias_e(self, ccdnum: int, n_frames: int = 25) -> np.ndarray:
        """The master bias written to ``calib/bias.fits.fz``: `bias_e` plus the noise of an
        average of ``n_frames`` bias exposures (read noise / sqrt(n_frames) per pixel), electrons."""
        ccd = get_ccd(int(ccdnum))
        c = self._get(ccdnum)
        rng = np.random.default_rng([c.column_pattern_seed, 7])
        out = self.bias_e(ccdnum)
        for amp in ccd.amps.values():
            t = amp.trimmed
            sigma = amp.read_noise_e / np.sqrt(n_frames)
            out[t.y0:t.y1, t.x0:t.x1] += rng.normal(0.0, sigma, t.shape).astype(np.float32)
        return out

    def linearity_table(self, ccdnum: int, step: float = 16.0) -> LinearityTable:
        """The CCD's linearity lookup table: true ADU for recorded ADU 0..65535 (``step`` apart).

        Each amplifier's column inverts `desgw.sim.detector.nonlinear_adu` with its coefficient
        and SATURATA (exactly at the grid points); the identity for a linear amplifier.
        """
        c = self._get(ccdnum)
        ccd = get_ccd(int(ccdnum))
        adu = np.arange(0.0, 65535.0 + 0.5 * step, step)
        cols = {name: linear_adu(adu, c.nonlinearity.get(name, 0.0), amp.saturation_adu)
                for name, amp in ccd.amps.items()}
        return LinearityTable(adu, cols["A"], cols["B"])

    def bpm(self, ccdnum: int) -> np.ndarray:
        """Bad-pixel mask of a CCD: uint16 (4096, 2048), `BADPIX` on defects and hot pixels."""
        c = self._get(ccdnum)
        out = np.zeros(CCD_SHAPE, dtype=np.uint16)
        for x0, y0, w, h in c.defect_boxes:
            out[max(y0, 0):y0 + h, max(x0, 0):x0 + w] |= BADPIX
        out[c.hot_y, c.hot_x] |= BADPIX
        return out

    def response_and_dark(self, ccdnum: int) -> tuple[list[tuple[slice, slice, float]], np.ndarray,
                                                       np.ndarray, np.ndarray]:
        """Defects as the renderer applies them.

        Returns
        -------
        response : list of (row slice, column slice, factor)
            Dead and low-response boxes: the signal there is multiplied by ``factor``.
        dark_y, dark_x : ndarray of int
            Hot pixels (boxes expanded, plus the random hot pixels).
        dark_rate : ndarray
            Their dark current, e-/s.
        """
        c = self._get(ccdnum)
        response = []
        dy, dx, dr = [c.hot_y], [c.hot_x], [c.hot_rate]
        for (x0, y0, w, h), kind, val in zip(c.defect_boxes, c.defect_kind, c.defect_value):
            sl = (slice(max(y0, 0), y0 + h), slice(max(x0, 0), x0 + w))
            if kind == _DEFECT_HOT:
                yy, xx = np.mgrid[sl]
                dy.append(yy.ravel())
                dx.append(xx.ravel())
                dr.append(np.full(yy.size, val))
            else:
                response.append((sl[0], sl[1], float(val)))
        return response, np.concatenate(dy), np.concatenate(dx), np.concatenate(dr)


def make_detector_calib(ccdnums, seed: int, band: str, *, nonlinearity: bool = True) -> DetectorCalib:
    """Draw the simulated camera for a set of CCDs.

    Parameters
    ----------
    ccdnums : iterable of int
        CCDNUMs (1..62).
    seed : int
        Camera seed; the same seed gives the same camera (CCD properties do not depend on which
        other CCDs are requested).
    band : str
        Filter band (QE offsets and the flat file name).
    nonlinearity : bool
        Draw non-linear amplifiers (``a`` in `desgw.sim.detector.NONLINEARITY_RANGE`); False
        makes them linear (``a = 0``, identity linearity table). Pass
        ``SimSwitches.nonlinearity`` so the written table matches the rendered data.

    Returns
    -------
    DetectorCalib
    """
    qe_band = throughput_qe(band)
    ccds: dict[int, CCDCalib] = {}
    for ccdnum in sorted({int(c) for c in ccdnums}):
        ccd = get_ccd(ccdnum)
        rng = np.random.default_rng([int(seed), ccdnum, 1])
        boxes = np.asarray(defect_boxes(ccdnum), dtype=np.int32).reshape(-1, 4)
        area = boxes[:, 2].astype(np.int64) * boxes[:, 3]
        kind = np.where(area > 2000, _DEFECT_LOW,
                        np.where(rng.random(len(boxes)) < 0.4, _DEFECT_DEAD, _DEFECT_HOT)).astype(np.int8)
        value = np.where(kind == _DEFECT_LOW, rng.uniform(0.6, 0.9, len(boxes)),
                         np.where(kind == _DEFECT_DEAD, 0.02,
                                  rng.lognormal(np.log(5.0), 1.0, len(boxes))))
        nhot = rng.poisson(150)
        modes = np.column_stack([
            rng.normal(0.0, 1.0, 4), rng.uniform(0.2, 1.5, 4), rng.uniform(0, 2 * np.pi, 4),
            rng.uniform(0.2, 2.0, 4), rng.uniform(0, 2 * np.pi, 4)])
        # cos(x)cos(y) has variance 1/4 per mode: scale so the smooth part has the target rms
        modes[:, 0] *= 0.025 / np.sqrt(np.sum(modes[:, 0] ** 2) / 4.0)
        ccds[ccdnum] = CCDCalib(
            ccdnum=ccdnum,
            qe=float(qe_band[ccdnum - 1] * (1.0 + rng.normal(0.0, 0.003))),
            bias_level_adu={a: float(rng.uniform(1000.0, 3000.0)) for a in sorted(ccd.amps)},
            defect_boxes=boxes,
            defect_kind=kind,
            defect_value=value,
            hot_x=rng.integers(0, CCD_SHAPE[1], nhot),
            hot_y=rng.integers(0, CCD_SHAPE[0], nhot),
            hot_rate=np.exp(rng.uniform(np.log(1.0), np.log(300.0), nhot)),
            flat_modes=modes,
            column_pattern_seed=int(rng.integers(2**62)),
            flat_seed=int(rng.integers(2**62)),
            transient_e={a: float(rng.uniform(10.0, 30.0)) for a in sorted(ccd.amps)},
            nonlinearity=_draw_nonlinearity(seed, ccdnum, sorted(ccd.amps), nonlinearity),
        )
    return DetectorCalib(seed=int(seed), band=band, ccds=ccds)


def _draw_nonlinearity(seed: int, ccdnum: int, amps: list[str], on: bool) -> dict[str, float]:
    # a stream of its own, so that the rest of the camera does not depend on it
    rng = np.random.default_rng([int(seed), int(ccdnum), 3])
    lo, hi = NONLINEARITY_RANGE
    values = rng.uniform(lo, hi, len(amps))
    return {a: float(v) if on else 0.0 for a, v in zip(amps, values)}


def write_calibrations(outdir: str | os.PathLike[str], calib: DetectorCalib) -> dict[str, Path]:
    """Write the camera's calibration files for SE processing.

    Writes ``{outdir}/calib/bias.fits.fz`` (master bias: bias structure plus the noise of a
    25-frame average, electrons after overscan subtraction and gain), ``{outdir}/calib/
    flat_{band}.fits.fz`` (dome flat, mean 1, with its own 0.1 % noise) and ``{outdir}/calib/
    bpm.fits.fz`` (BADPIX = 1 on the bad pixels), one HDU per CCD of ``calib``, atomically, with
    `desgw.io.calib.write_calib`. Bias and flat are tile-compressed with quantisation (the bias at a
    quarter of its noise, ``quantize_level=4``; the flat at 1/16 of its pixel-to-pixel scatter,
    which cfitsio counts as noise, adding 0.02 % rms per pixel), the mask losslessly: 5-8 MB per CCD
    and kind instead of 32 MB. Also ``{outdir}/calib/linearity.fits``: the linearity lookup
    tables (`DetectorCalib.linearity_table`, DECam's ``linearity_table`` layout,
    `desgw.io.calib.write_linearity`), 100 kB per CCD.

    Returns
    -------
    dict
        ``{"bias": path, "flat": path, "bpm": path, "linearity": path}``.
    """
    from astropy.io import fits

    from ..io.calib import write_calib, write_linearity

    folder = Path(outdir) / "calib"
    folder.mkdir(parents=True, exist_ok=True)
    header = fits.Header()
    header["DESGWSIM"] = (True, "simulated by desgw.sim")
    header["SIMSEED"] = (calib.seed, "DetectorCalib seed")
    header["BAND"] = calib.band
    out = {}
    out["bias"] = write_calib(folder / "bias.fits.fz", "bias",
                              _LazyMap(calib.ccds, calib.master_bias_e), header, quantize_level=4.0)
    out["flat"] = write_calib(folder / f"flat_{calib.band}.fits.fz", "flat",
                              _LazyMap(calib.ccds, calib.dome_flat), header, quantize_level=16.0)
    out["bpm"] = write_calib(folder / "bpm.fits.fz", "bpm", _LazyMap(calib.ccds, calib.bpm), header)
    out["linearity"] = write_linearity(folder / "linearity.fits",
                                       {c: calib.linearity_table(c) for c in calib.ccds}, header)
    return out


class _LazyMap(dict):
    """A mapping whose values are computed when read (keeps one flat in memory at a time)."""

    def __init__(self, keys, func):
        super().__init__({k: None for k in keys})
        self._func = func

    def __getitem__(self, key):
        return self._func(key)
