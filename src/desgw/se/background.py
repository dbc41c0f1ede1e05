"""Sky background and background-noise maps of a CCD image (SExtractor-style mesh background).

The sky is estimated on a grid of square meshes with ``sep`` (the SExtractor background
algorithm: per mesh a sigma-clipped mode ``2.5 median - 1.5 mean``, or the median when the
distribution is skewed), median-filtered over ``filter x filter`` meshes and interpolated with a
bicubic spline back to full resolution. Masked (unusable) pixels do not enter any mesh.

Choice of mesh size (``BackgroundConfig.mesh``, default 256 px = 67" at 0.263"/px): a mesh
must be several times larger than the objects it should not absorb. Galaxies detected in a
single DES exposure have isophotal diameters of a few arcsec and only rare bright galaxies reach
~30" (115 px); with 256 px meshes these fill a small fraction of a mesh, and the clipped mode
ignores them. DECam sky gradients (scattered light, moonlight, the pupil ghost) vary on
scales of several arcminutes up to the CCD size (4096 x 2048 px = 18' x 9'), so a 16 x 8 grid
of 256 px meshes, median-filtered over 3 x 3 meshes to suppress meshes biased by bright
stars, follows them.

Sources bias the clipped mode upwards (by ~0.03 sigma per pixel on a typical high-latitude
CCD), which biases faint-source and large-aperture fluxes low. Passing the segmentation map of
a first detection pass as ``objects`` masks the detected pixels, grown by
``BackgroundConfig.object_grow`` pixels to cover the wings, and halves that bias.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import sep

from desgw.errors import DataTypeError
from desgw.se.mask_grow import grow_mask
from desgw.se.maskbits import UNUSABLE
from desgw.se.measure_kernels import bad_from_mask

__all__ = ["BackgroundConfig", "Background", "estimate_background"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackgroundConfig:
    """Settings of :func:`estimate_background`.

    Attributes
    ----------
    mesh : int
        Side of the square background meshes (pixels).
    filter : int
        Size of the median filter applied to the mesh grid (meshes, odd).
    mask_bits : int
        Mask bits that exclude a pixel from the background estimate (default: unusable bits).
    fthresh : float
        Filter threshold (e-): meshes that differ from their filtered value by less than this
        are left unfiltered (SExtractor's ``BACK_FILTERTHRESH``; 0 filters all meshes).
    object_grow : int
        Pixels by which the ``objects`` mask of :func:`estimate_background` is grown.
    """

    mesh: int = 256
    filter: int = 3
    mask_bits: int = UNUSABLE
    fthresh: float = 0.0
    object_grow: int = 4

    def __post_init__(self) -> None:
        if self.mesh < 8:
            raise ValueError(f"BackgroundConfig.mesh must be >= 8 px, got {self.mesh}")
        if self.filter < 1 or self.filter % 2 == 0:
            raise ValueError(f"BackgroundConfig.filter must be a positive odd number, got {self.filter}")
        if self.object_grow < 0:
            raise ValueError(f"BackgroundConfig.object_grow must be >= 0, got {self.object_grow}")


@dataclass(frozen=True)
class Background:
    """A background estimate.

    Attributes
    ----------
    level : numpy.ndarray
        Sky level per pixel (float32, same shape as the image, e-).
    rms : numpy.ndarray
        Background noise per pixel (float32, same shape as the image, e-).
    global_level : float
        Global sky level (e-): the median of the mesh values.
    global_rms : float
        Global background noise (e-): the median of the mesh rms values.
    config : BackgroundConfig
        The settings used.
    """

    level: np.ndarray
    rms: np.ndarray
    global_level: float
    global_rms: float
    config: BackgroundConfig


def _check_image(name: str, arr: np.ndarray, shape: tuple[int, ...] | None = None) -> None:
    if arr.ndim != 2:
        raise DataTypeError(None, None, f"{name} must be 2-D, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise DataTypeError(None, None, f"{name} has shape {arr.shape}, expected {shape}")


def estimate_background(image: np.ndarray, mask: np.ndarray | None = None, *,
                        objects: np.ndarray | None = None,
                        config: BackgroundConfig = BackgroundConfig()) -> Background:
    """Estimate the sky level and background noise of a CCD image.

    Parameters
    ----------
    image : numpy.ndarray
        Image (ny, nx), e-; not modified.
    mask : numpy.ndarray or None
        Integer mask (ny, nx) with :mod:`desgw.se.maskbits` bits; pixels with any of
        ``config.mask_bits`` set are ignored. ``None``: no pixel is masked.
    config : BackgroundConfig
        Mesh and filter sizes.

    Returns
    -------
    Background
        Level and rms maps (float32, e-) and their global values.

    Raises
    ------
    desgw.errors.DataTypeError
        If the image, mask or objects map is not 2-D or their shapes differ.
    """
    image = np.asarray(image)
    _check_image("image", image)
    data = np.ascontiguousarray(image, dtype=np.float32)
    if mask is not None:
        mask = np.asarray(mask)
        _check_image("mask", mask, image.shape)
        if mask.dtype.kind not in "iu":
            raise DataTypeError(None, None, f"mask must be integer, got {mask.dtype}")
        bad = bad_from_mask(np.ascontiguousarray(mask), np.int64(config.mask_bits))
    else:
        bad = None
    if objects is not None:
        objects = np.asarray(objects)
        _check_image("objects", objects, image.shape)
        # ``object_grow`` 3x3 dilations, straight from the segmentation map
        obj = grow_mask(objects, int(config.object_grow))
        bad = obj if bad is None else np.ascontiguousarray(bad | obj)
    bkg = sep.Background(data, mask=bad, bw=config.mesh, bh=config.mesh,
                         fw=config.filter, fh=config.filter, fthresh=config.fthresh)
    level = bkg.back(dtype=np.float32)
    rms = bkg.rms(dtype=np.float32)
    log.debug("background: global level %.2f e-, rms %.3f e-", bkg.globalback, bkg.globalrms)
    return Background(level=level, rms=rms, global_level=float(bkg.globalback),
                      global_rms=float(bkg.globalrms), config=config)
