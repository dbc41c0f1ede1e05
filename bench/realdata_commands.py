"""Real CP InstCal cut-outs through desgw's commands, against the Legacy Surveys CCD table.

For each testcase of shared/realdata/legacypipe: the cut-outs laid out as the archive serves
them (fpacked triplets in one folder), ``desgw refcat ingest`` of its Gaia rows, then
``desgw se --instcal`` per exposure. Prints one JSON object: per cut-out our zeropoint for
1 ADU/s (``MAGZERO`` of the e- image minus 2.5 log10(gain * exptime)) minus ``ccdzpt``, our
astrometric offset (the refinement of the CP WCS: Gaia minus CP WCS, arcsec, RA * cos(dec))
minus ``ccdraoff`` / ``ccddecoff``, the stars used, and the degraded steps.

Usage: python bench/realdata_commands.py   (DESGW_SHARED may point at shared/ or shared/realdata)
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "realdata"))

from realdata_cases import gaia_sources_for_ingest, instcal_cases, lay_out_as_archive

from desgw.cli import main as cli
from desgw.io.instcal import instcal_gain_columns, read_instcal


def _r(x: float | None, n: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), n)


def main() -> int:
    cases = instcal_cases()
    if not cases:
        print(json.dumps({"error": "shared/realdata not found"}))
        return 1
    runner = CliRunner()
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as td:
        for tc in sorted({c.testcase for c in cases}):
            tcs = [c for c in cases if c.testcase == tc]
            tmp = Path(td) / tc
            raw = tmp / "raw"
            lay_out_as_archive(Path(tcs[0].testcase_dir), raw)
            runner.invoke(cli, ["refcat", "ingest", *gaia_sources_for_ingest(
                Path(tcs[0].testcase_dir), tmp), "--store", str(tmp / "refcat")])
            for c in tcs:
                res = runner.invoke(cli, ["se", "-E", str(c.expnum), "-r", "1", "-p", "1",
                                          "--instcal", "-s", "--raw-dir", str(raw), "--refcat",
                                          str(tmp / "refcat"), "--out", str(tmp / "out")])
                qc = [p for p in (tmp / "out").glob(f"scratch/gw/exp/*/{c.expnum}/D*_qc.json")
                      if p.name.count("_") >= 4]
                if res.exit_code != 0 or not qc:
                    out[c.label] = {"exit_code": res.exit_code, "output": res.output[-300:]}
                    continue
                doc = json.loads(qc[0].read_text())
                ccd = read_instcal(c.image_path)
                gain = float(np.median(instcal_gain_columns(ccd.header, ccd.shape[1],
                                                            ccd.ccdnum)))
                zp = doc["zeropoint"]
                ours = None if zp["zp"] is None else \
                    zp["zp"] - 2.5 * math.log10(gain * c.exptime)
                a = doc["astrometry"]
                refined = bool(a["n_used"])
                out[c.label] = {
                    "exit_code": res.exit_code,
                    "zp_stars": zp["n_used"],
                    "ccdzpt": _r(c.ccdzpt),
                    "zp_minus_ccdzpt": _r(None if ours is None else ours - c.ccdzpt),
                    "zp_err": _r(zp["zp_err"]),
                    "astrometry_stars": a["n_used"],
                    "dra_minus_ccdraoff": _r(a["offset_ra_arcsec"] - c.ccdraoff)
                    if refined else None,
                    "ddec_minus_ccddecoff": _r(a["offset_dec_arcsec"] - c.ccddecoff)
                    if refined else None,
                    "ccdraoff": _r(c.ccdraoff), "ccddecoff": _r(c.ccddecoff),
                    "degraded": doc["degraded"],
                }
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
