"""The nominal zeropoint (desgw.se.nominal_zp) against the official ones, and testcase6 through
the commands with it.

Part 1, per real CP cut-out of shared/realdata/legacypipe: the nominal zeropoint of the total
flux in e- (DES season zeropoint, per-CCD throughput, extinction at the header AIRMASS,
exposure time) minus the official one (``ccdzpt`` for 1 ADU/s plus 2.5 log10(gain * exptime),
gain from GAINA/GAINB), with mean and rms over the cut-outs and per band.

Part 2 (``--testcase6``; ~1.5 CPU-min): `desgw refcat ingest`, `desgw ingest` and
`desgw sediff -C` of the later epoch of each band of testcase6, and per band the exit code, the
zeropoint mode and sources from the diffdone JSON, the search and template zeropoints against
the official ones, and the candidates (all, and above the real/bogus threshold).

Usage: python bench/realdata_nominal_zp.py [--testcase6]   (prints one JSON object)
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "realdata"))

from realdata_cases import (
    gaia_sources_for_ingest,
    instcal_cases,
    lay_out_as_archive,
    load_case,
)

from desgw.io.instcal import instcal_gain_columns
from desgw.se.nominal_zp import nominal_ccd_zeropoint

SEARCH = {"g": 802955, "r": 803291, "z": 803277}  # testcase6: the later epoch of each band


def _r(x: float | None, n: int = 4) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), n)


def official_zp_e(case) -> float:
    ccd = load_case(case.image_path)
    gain = float(np.median(instcal_gain_columns(ccd.header, ccd.shape[1], ccd.ccdnum)))
    return case.ccdzpt + 2.5 * math.log10(gain * ccd.exptime)


def cutouts() -> dict:
    rows, res = {}, []
    for c in instcal_cases():
        ccd = load_case(c.image_path)
        nom = nominal_ccd_zeropoint(ccd.band, ccd.ccdnum, ccd.exptime,
                                    float(ccd.header["AIRMASS"]))
        off = official_zp_e(c)
        rows[c.label] = {"band": c.band, "ccdnum": ccd.ccdnum, "airmass": nom.airmass,
                         "exptime": nom.exptime, "nominal": _r(nom.zp), "official": _r(off),
                         "nominal_minus_official": _r(nom.zp - off)}
        res.append((c.band, nom.zp - off))
    d = np.array([v for _, v in res])
    summary: dict[str, Any] = {"n": int(d.size), "mean": _r(float(d.mean())),
               "rms": _r(float(np.sqrt(np.mean(d ** 2)))), "min": _r(float(d.min())),
               "max": _r(float(d.max()))}
    for b in sorted({b for b, _ in res}):
        v = np.array([x for bb, x in res if bb == b])
        summary[b] = {"n": int(v.size), "mean": _r(float(v.mean())),
                      "rms": _r(float(np.sqrt(np.mean(v ** 2))))}
    return {"cutouts": rows, "summary": summary}


def testcase6() -> dict:
    from click.testing import CliRunner

    from desgw.cli import main as cli
    from desgw.io.products import read_fits_table

    cases = {c.expnum: c for c in instcal_cases() if c.testcase == "testcase6"}
    out: dict = {}
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        tc = Path(next(iter(cases.values())).testcase_dir)
        lay_out_as_archive(tc, tmp / "raw")
        runner.invoke(cli, ["refcat", "ingest", *gaia_sources_for_ingest(tc, tmp), "--store",
                            str(tmp / "refcat")])
        db = f"sqlite:///{tmp / 'desgw.sqlite'}"
        runner.invoke(cli, ["ingest", str(tmp / "raw"), "--db-url", db])
        for band, e in SEARCH.items():
            res = runner.invoke(cli, ["sediff", "-E", str(e), "-r", "1", "-p", "1", "-S", "1",
                                      "-C", "-s", "--raw-dir", str(tmp / "raw"), "--refcat",
                                      str(tmp / "refcat"), "--out", str(tmp / "out"),
                                      "--db-url", db])
            entry: dict = {"exit_code": res.exit_code}
            done = list((tmp / "out").glob(f"scratch/gw/exp/*/{e}/dp1/*/*_diffdone.json"))
            if not done:
                entry["output"] = res.output[-400:]
                out[band] = entry
                continue
            doc = json.loads(done[0].read_text())
            zp = doc["zeropoints"]
            entry.update(mode=zp["mode"], search_source=zp["search_source"],
                         flags=doc["flags"], search_zp=_r(zp["search_zp"]),
                         search_zp_err=zp.get("search_zp_err"),
                         search_official=_r(official_zp_e(cases[e])),
                         n_candidates=doc["n_candidates"],
                         n_above_threshold=doc["n_candidates_above_threshold"],
                         degraded_line=[ln.strip() for ln in res.output.splitlines()
                                        if "DEGRADED" in ln])
            entry["templates"] = [{
                "expnum": t["expnum"], "source": t.get("source"), "zp": _r(t.get("zp")),
                "official": _r(official_zp_e(cases[int(t["expnum"])])),
                "dmag": _r(t.get("dmag")), "dmag_err": _r(t.get("dmag_err"))}
                for t in zp["templates"]]
            (cands,) = done[0].parent.glob("*_cands.fits")
            meta = read_fits_table(cands).meta
            entry["header"] = {k: meta.get(k) for k in ("ZPMODE", "ZPSOURCE", "MAGZERO",
                                                        "MAGZERR")}
            out[band] = entry
    return out


def main(argv: list[str]) -> int:
    if not instcal_cases():
        print(json.dumps({"error": "shared/realdata not found"}))
        return 1
    doc = cutouts()
    if "--testcase6" in argv:
        doc["testcase6"] = testcase6()
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
