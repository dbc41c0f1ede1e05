"""Skip every real-data test cleanly when shared/realdata is not present, and put the folder's
helper module (realdata_cases) on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata_cases import realdata_root


def pytest_collection_modifyitems(config, items):
    if realdata_root() is not None:
        return
    skip = pytest.mark.skip(reason="shared/realdata not found (set DESGW_SHARED)")
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(skip)
