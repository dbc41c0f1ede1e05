"""desgw: a fast re-creation of the DES-GW image processing of DECam exposures."""

__version__ = "0.1.0"
