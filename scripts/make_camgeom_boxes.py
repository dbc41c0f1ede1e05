"""Make ``src/desgw/instrument/data/camgeom_boxes.npz`` from the 62 LSST camGeom amplifier
tables ``src/desgw/instrument/data/camgeom/<DETPOS>.fits`` (the source data, kept in the
package): the amplifier boxes :mod:`desgw.instrument.camera` needs, in one small file that a
process reads in milliseconds.

Usage: ``python scripts/make_camgeom_boxes.py`` (from the repository root). The test
``tests/instrument/test_camera.py::test_camgeom_boxes_file_equals_the_fits_tables`` checks
the file against the tables.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits

from desgw.instrument.camera import CAMGEOM_BOX_COLUMNS, CAMGEOM_BOXES_FILE

DATA = Path(__file__).resolve().parent.parent / "src" / "desgw" / "instrument" / "data"


def main() -> Path:
    detpos: list[str] = []
    amps: list[str] = []
    rows: list[list[int]] = []
    for path in sorted((DATA / "camgeom").glob("*.fits")):
        with fits.open(path) as hdul:
            for row in hdul[1].data:
                detpos.append(path.stem)
                amps.append(str(row["name"]).strip())
                rows.append([int(row[c]) for c in CAMGEOM_BOX_COLUMNS])
    out = DATA / CAMGEOM_BOXES_FILE
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, detpos=np.array(detpos, dtype="U4"), amp=np.array(amps, dtype="U2"),
                 boxes=np.array(rows, dtype=np.int32),
                 columns=np.array(CAMGEOM_BOX_COLUMNS, dtype="U40"))
    os.replace(tmp, out)
    print(f"{out}: {len(rows)} amplifiers of {len(set(detpos))} CCDs")
    return out


if __name__ == "__main__":
    main()
