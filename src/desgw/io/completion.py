"""Which products mark a task as finished (the resume rule of the engine and of DAGMaker).

* ``se`` (one CCD): its four SE products exist (immask, fullcat, PSF model and the ``_qc.json``
  written last; :class:`desgw.io.product_paths.CCDProductPaths`) and match the size and
  checksum the ``_qc.json`` recorded for them.
* ``expcalib`` (one exposure): ``allZP_D{expnum}_r{R}p{P}.csv``, the exposure QC file and, for
  every CCD of the task, ``Zero_D{expnum}_{ccd}_r{R}p{P}.csv`` exist, and the exposure QC file
  is not older than any of the CCDs' ``_qc.json`` (a CCD processed again makes the calibration
  stale).
* ``diff`` (one search CCD): the completion marker that
  :func:`desgw.workflow.diff_ccd.run_diff_ccd` writes last
  (``{exposure_dir}/dp{season}/{band}_{ccd:02d}/D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_dp{season}
  _diffdone.json``) exists, says ``ok`` and lists the same templates as the task (the rule
  run_diff_ccd applies itself): ``templates_requested``, the templates asked for, some of which
  the difference imaging may have rejected (markers without it: ``template_expnums``); its
  products match the sizes and checksums it recorded.

All functions take the task's ``args`` (see :mod:`desgw.engine.run`); they read the files a
marker vouches for to verify their checksums.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from desgw.io.checksums import records_problems
from desgw.io.naming import (
    allzp_csv_name,
    exposure_dir,
    qc_exposure_name,
    zero_csv_name,
)
from desgw.io.product_paths import (
    CCDProductPaths,
    ccd_product_paths,
    diff_product_paths,
)

__all__ = [
    "diff_complete",
    "diff_done_path",
    "expcalib_complete",
    "exposure_outdir",
    "se_complete",
    "se_paths",
]


def exposure_outdir(out_root: str | os.PathLike[str], expnum: int, args: Mapping[str, Any]
                    ) -> Path:
    """The exposure's product directory ``out_root/cache/schema/exp/nite/expnum``."""
    return exposure_dir(out_root, str(args["cache"]), str(args["schema"]), int(args["nite"]),
                        int(expnum))


def se_paths(out_root: str | os.PathLike[str], expnum: int, ccd: int, args: Mapping[str, Any]
             ) -> CCDProductPaths:
    """The SE product paths of one CCD."""
    return ccd_product_paths(exposure_outdir(out_root, expnum, args), int(expnum),
                             str(args["band"]), int(ccd), int(args["rnum"]), int(args["pnum"]))


def se_complete(out_root: str | os.PathLike[str], expnum: int, ccd: int,
                args: Mapping[str, Any]) -> bool:
    """True when the CCD's four SE products exist."""
    return se_paths(out_root, expnum, ccd, args).complete()


def expcalib_complete(out_root: str | os.PathLike[str], expnum: int, ccds: Iterable[int],
                      args: Mapping[str, Any]) -> bool:
    """True when the exposure's calibration of ``ccds`` is on disk and up to date."""
    d = exposure_outdir(out_root, expnum, args)
    r, p = int(args["rnum"]), int(args["pnum"])
    qc = d / qc_exposure_name(int(expnum), str(args["band"]), r, p)
    needed = [d / allzp_csv_name(int(expnum), r, p), qc]
    needed += [d / zero_csv_name(int(expnum), int(c), r, p) for c in ccds]
    if not all(f.is_file() for f in needed):
        return False
    t_qc = qc.stat().st_mtime
    for c in ccds:
        ccd_qc = se_paths(out_root, expnum, int(c), args).qc
        if not ccd_qc.is_file() or ccd_qc.stat().st_mtime > t_qc:
            return False
    return True


def diff_done_path(out_root: str | os.PathLike[str], expnum: int, ccd: int,
                   args: Mapping[str, Any]) -> Path:
    """The difference-imaging completion marker of a search CCD."""
    return diff_product_paths(exposure_outdir(out_root, expnum, args), int(expnum),
                              str(args["band"]), int(ccd), int(args["rnum"]), int(args["pnum"]),
                              int(args["season"])).done


def diff_complete(out_root: str | os.PathLike[str], expnum: int, ccd: int,
                  args: Mapping[str, Any]) -> bool:
    """True when the CCD's difference imaging finished with the task's templates."""
    path = diff_done_path(out_root, expnum, ccd, args)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or not doc.get("ok"):
        return False
    key = "templates_requested" if "templates_requested" in doc else "template_expnums"
    requested: list[Any] = list(doc.get(key) or [])
    if sorted(int(e) for e in requested) != sorted(int(e) for e in args.get("templates") or []):
        return False
    # the products still match the sizes and checksums the marker recorded
    return "products" not in doc or not records_problems(path.parent, doc["products"])
