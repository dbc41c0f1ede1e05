"""desgw.refcat: Gaia reference catalogs in a HEALPix-partitioned Parquet store.

Ingest Gaia-archive tables (:func:`ingest_gaia`), query them by CCD footprint or cone at
an exposure epoch (:class:`RefCatStore`), and transform Gaia G, BP, RP to DES magnitudes
(:func:`gaia_to_des`).
"""

from desgw.refcat.geometry import mjd_to_jyear, propagate_proper_motion
from desgw.refcat.ingest import StoreIndex, ingest_gaia, refcat_ingest_main
from desgw.refcat.store import RefCatStore
from desgw.refcat.transforms import (
    BANDS,
    TRANSFORM_BANDS,
    VALID_BP_RP,
    GaiaToDesResult,
    TransformUnavailableError,
    des_minus_g,
    gaia_g_only,
    gaia_to_des,
)

__all__ = [
    "BANDS", "TRANSFORM_BANDS", "VALID_BP_RP", "GaiaToDesResult", "TransformUnavailableError",
    "des_minus_g", "gaia_g_only", "gaia_to_des",
    "StoreIndex", "ingest_gaia", "refcat_ingest_main",
    "RefCatStore", "mjd_to_jyear", "propagate_proper_motion",
]
