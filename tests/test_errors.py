"""The exception hierarchy (desgw.errors): every exception class of the package is a DesgwError,
sits where the engine and the runners expect it, and survives pickling (worker processes send
failures back) with its type, message and numbers."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import desgw
from desgw.db.errors import (
    DatabaseConnectionError,
    DatabaseError,
    DatabaseURLError,
    SchemaVersionError,
    UnknownExposureError,
)
from desgw.diff.pipeline_types import DiffError
from desgw.diff.realbogus import RealBogusModelError
from desgw.diff.relscale import RelativeScaleError
from desgw.engine.condor import CondorValueError
from desgw.engine.graph import GraphError
from desgw.engine.tasks import is_transient
from desgw.errors import (
    AlgorithmError,
    CorruptFileError,
    DataTypeError,
    DesgwError,
    DesgwInputError,
    HeaderError,
    MissingCCDError,
    MissingFileError,
    NoWorkFoundError,
    TransientError,
    TransientTaskError,
    describe_error,
)
from desgw.refcat.transforms import TransformUnavailableError
from desgw.se.astrometry import AstrometryError
from desgw.se.detrend import DetrendError
from desgw.se.nominal_zp import NominalZeropointError
from desgw.se.photocal import PhotometricCalibrationError
from desgw.se.psf import PSFFitError
from desgw.workflow.dagmaker_rc import DagmakerConfigError
from desgw.workflow.sediff_ccd import SearchSEError

#: One instance of every exception class of the package, with its category.
EXAMPLES: list[tuple[BaseException, type[DesgwError]]] = [
    (DesgwInputError("a.fits", 2, "bad", extra=3), DesgwInputError),
    (CorruptFileError("a.fits", None, "truncated"), DesgwInputError),
    (MissingCCDError("a.fits", None, "no CCD 5", present=(1, 2)), DesgwInputError),
    (HeaderError("a.fits", "N4", "no EXPTIME", keyword="EXPTIME"), DesgwInputError),
    (DataTypeError("a.fits", 1, "BITPIX 8"), DesgwInputError),
    (MissingFileError("a.fits", None, "not found"), DesgwInputError),
    (DetrendError("b.fits", 3, "all saturated", ccdnum=3), DesgwInputError),
    (GraphError("g.json", None, "cycle"), DesgwInputError),
    (DagmakerConfigError("dagmaker.rc", None, "not a number", line=4, key="TWINDOW"),
     DesgwInputError),
    (NoWorkFoundError("no template"), NoWorkFoundError),
    (TransformUnavailableError("Y"), NoWorkFoundError),
    (NominalZeropointError("no nominal zeropoint for band u"), NoWorkFoundError),
    (AlgorithmError("diverged"), AlgorithmError),
    (AstrometryError("too few matches", n_detections=40, n_refs=30, n_matched=3,
                     rms_arcsec=0.8), AlgorithmError),
    (PSFFitError("too few stars", 12, 4, 10), AlgorithmError),
    (PhotometricCalibrationError("too few stars", n_matched=3, n_used=2), AlgorithmError),
    (DiffError("no usable template", kind="nothing_to_do", details={"n": 0}), AlgorithmError),
    (RelativeScaleError("no source measured cleanly in both", n_matched=2, n_clean=0),
     AlgorithmError),
    (TransientError("disk full"), TransientError),
    (TransientTaskError("se-1-2", "OSError: disk"), TransientError),
    (DatabaseConnectionError("sqlite:///x: cannot open"), TransientError),
    (DesgwError("plain"), DesgwError),
    (SearchSEError("SE of the search CCD failed: no WCS"), DesgwError),
    (DatabaseError("db"), DesgwError),
    (DatabaseURLError("not a URL"), DesgwError),
    (CondorValueError(None, None, "a new line"), DesgwInputError),
    (SchemaVersionError("schema 9"), DesgwError),
    (UnknownExposureError("exposure 7 unknown", 7), DesgwError),
    (RealBogusModelError("feature version 1, expected 2"), DesgwError),
]


def _package_exceptions() -> set[type[BaseException]]:
    found = set()
    for info in pkgutil.walk_packages(desgw.__path__, "desgw."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.add(obj)
    return found


def test_every_exception_of_the_package_is_listed_here():
    assert _package_exceptions() - {type(e) for e, _ in EXAMPLES} == set()


@pytest.mark.parametrize(("error", "category"), EXAMPLES, ids=lambda v: type(v).__name__)
def test_category_and_pickling(error, category):
    assert isinstance(error, DesgwError) and isinstance(error, category)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error) and describe_error(back) == describe_error(error)
    assert vars(back) == vars(error)
    # the engine retries transient failures only
    assert is_transient(error) == isinstance(error, TransientError)


def test_the_four_categories_are_disjoint():
    cats = (DesgwInputError, NoWorkFoundError, AlgorithmError, TransientError)
    for a in cats:
        for b in cats:
            assert a is b or not issubclass(a, b)
    assert issubclass(TransformUnavailableError, ValueError)  # still one, for its callers
