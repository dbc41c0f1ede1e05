"""desgw.io: all file reading and writing of the package.

Modules
-------
errors     DesgwError, DesgwInputError and its subclasses (picklable; name file, HDU, problem)
atomic     atomic_write_path / atomic_write_text / atomic_write_bytes
sections   FITS section strings ``[x1:x2,y1:y2]`` <-> Section
raw        raw DECam exposures (.fits / .fits.fz): RawExposure, read_exposure_header, write_raw_exposure
calib      calibration images (bias, flat, starflat, bpm): write_calib, CalibFile, read_calib
instcal    NOIRLab Community Pipeline InstCal products: read_instcal
products   immask images (SCI/MSK/WGT) and FITS/CSV/Parquet tables
naming     product file names and the exposure directory layout
"""
