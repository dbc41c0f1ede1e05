"""DECam as data: detectors, amplifiers, crosstalk, bad pixels and the focal plane -> sky mapping.

Nothing else in the package hard-codes DECam numbers; everything comes from the files in
``data/`` (copied from the real DECam calibration data, see ``data/SOURCES.md``).
"""

from .camera import (
    CCD,
    CCD_SHAPE,
    DEAD_CCDS,
    DEFAULT_CCDNUMS,
    PIXEL_SIZE_MM,
    RAW_SHAPE,
    SCIENCE_CCDNUMS,
    UNSTABLE_AMPS,
    Amplifier,
    Box,
    ccds,
    get_ccd,
    parse_ccd_list,
)
from .crosstalk import CrosstalkTerm, align_source, crosstalk_terms, source_ccds, terms_for_victim
from .defects import defect_boxes, defect_mask
from .optics import (
    DECAM_DISTORTION,
    Distortion,
    Pointing,
    ccd_corners_sky,
    focal_to_pixel,
    focal_to_tangent,
    pixel_scale_arcsec,
    pixel_to_focal,
    pixel_to_sky,
    sky_to_pixel,
    sky_to_tangent,
    tangent_to_focal,
    tangent_to_sky,
)

__all__ = [
    "CCD", "CCD_SHAPE", "DEAD_CCDS", "DEFAULT_CCDNUMS", "PIXEL_SIZE_MM", "RAW_SHAPE",
    "SCIENCE_CCDNUMS", "UNSTABLE_AMPS", "Amplifier", "Box", "ccds", "get_ccd", "parse_ccd_list",
    "CrosstalkTerm", "align_source", "crosstalk_terms", "source_ccds", "terms_for_victim",
    "defect_boxes", "defect_mask",
    "DECAM_DISTORTION", "Distortion", "Pointing", "ccd_corners_sky", "focal_to_pixel",
    "focal_to_tangent", "pixel_scale_arcsec", "pixel_to_focal", "pixel_to_sky", "sky_to_pixel",
    "sky_to_tangent", "tangent_to_focal", "tangent_to_sky",
]
