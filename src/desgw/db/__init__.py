"""desgw.db: the processing database (SQLAlchemy 2; SQLite file by default, PostgreSQL by URL).

Tables: exposures, ccd_products, zeropoints, templates_used, detections (SNOBS-like),
candidates (SNCAND-like), fakes (SNFAKE-like), schema_version.

Modules
-------
urls      normalize_url, redact_url (passwords never reach logs or messages)
database  connect -> Database (WAL + BEGIN IMMEDIATE on SQLite; advisory locks on PostgreSQL),
          connect_shared (kept open for the process's later work)
models    the ORM tables and SCHEMA_VERSION
records   frozen dataclasses exchanged with callers
writes    register_exposure(s), record_ccd_product(s), record_zeropoints,
          record_templates_used, add_detections (candidate association), record_fakes,
          replace_ccd_results (one search CCD's results, idempotent),
          recalibrate_detections (magnitudes on the exposure calibration's zeropoints)
queries   get_exposure, exposures_near, get_ccd_products, processed_ccds, get_zeropoints,
          get_templates_used, get_detections, get_candidates, get_fakes
ingest    ingest_raw -> IngestReport, non_science_reason
errors    DatabaseError, DatabaseConnectionError, DatabaseURLError, SchemaVersionError,
          UnknownExposureError
"""

from .database import Database, connect, connect_shared, retry_database
from .errors import (DatabaseConnectionError, DatabaseError, DatabaseURLError,
                     SchemaVersionError, UnknownExposureError)
from .ingest import IngestReport, ingest_raw, non_science_reason
from .models import SCHEMA_VERSION
from .queries import (exposures_near, get_candidates, get_ccd_products, get_detections,
                      get_exposure, get_fakes, get_templates_used, get_zeropoints,
                      has_calibration_records, has_diff_records, processed_ccds)
from .records import (CCD_STATUSES, Candidate, CCDProduct, Detection, ExposureRecord, Fake,
                      NewDetection, NewFake, TemplateUse, Zeropoint)
from .urls import normalize_url, redact_url
from .writes import (DEFAULT_MATCH_RADIUS_ARCSEC, ZP_SOURCE_EXPCALIB, add_detections,
                     recalibrate_detections, record_ccd_product, record_ccd_products,
                     record_fakes, record_templates_used, record_zeropoints, register_exposure,
                     register_exposures, replace_ccd_results)

__all__ = [
    "Database", "connect", "connect_shared", "retry_database", "SCHEMA_VERSION", "normalize_url",
    "redact_url",
    "DatabaseError", "DatabaseConnectionError", "DatabaseURLError", "SchemaVersionError",
    "UnknownExposureError",
    "CCD_STATUSES", "ExposureRecord", "CCDProduct", "Zeropoint", "TemplateUse", "NewDetection",
    "Detection", "Candidate", "NewFake", "Fake",
    "register_exposure", "register_exposures", "record_ccd_product",
    "record_ccd_products", "record_zeropoints",
    "record_templates_used", "add_detections", "record_fakes", "replace_ccd_results",
    "DEFAULT_MATCH_RADIUS_ARCSEC", "recalibrate_detections", "ZP_SOURCE_EXPCALIB",
    "get_exposure", "exposures_near", "get_ccd_products", "processed_ccds", "get_zeropoints",
    "get_templates_used", "get_detections", "get_candidates", "get_fakes",
    "has_calibration_records", "has_diff_records",
    "IngestReport", "ingest_raw", "non_science_reason",
]
