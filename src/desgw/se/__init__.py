"""Single-epoch processing: raw CCD -> calibrated image, catalog, WCS, PSF, zeropoint, QC."""
