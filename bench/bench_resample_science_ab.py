"""Science A/B of the resampling kernel: the difference of search CCDs with another tree's kernel
and with this tree's, from the same inputs and random generator.

Usage: ``python bench/bench_resample_science_ab.py WORKDIR OLD_SRC [--ccds 27,28,29]
[--out FILE]``

``WORKDIR`` is a work folder of ``bench/bench_exposure.py`` whose template exposure is
processed, ``OLD_SRC`` the ``src`` folder of another tree (``git archive main src | tar -x -C
DIR``), loaded as ``desgw_old`` (:func:`bench_se_ab._old_package`). For each CCD the inputs
of :func:`desgw.diff.pipeline.difference_ccd` are captured once (``bench_resample_ab``'s
``_capture``: SE and difference imaging of the search CCD in this process), then
``difference_ccd`` runs twice on deep copies of them, first with the old module's
``resample_kernel`` put in :mod:`desgw.diff.resample`, then with this tree's. Reported per CCD:
the largest and median relative change of the template coadd's weight, the largest change of
the difference image over its sigma, the difference's pull width (half the 16-84 % range of
``diff / sigma`` on usable pixels) old and new, the noise factors, the candidate and
recovered-fake counts old and new, and the largest change of every numeric candidate column
when the candidate lists have the same length. Prints one JSON object (also written to
``--out FILE``); not a timing.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from bench_resample_ab import _capture
from bench_se_ab import _old_package

import desgw.diff.pipeline as diff_pipeline
import desgw.diff.resample as resample
from desgw.se.maskbits import EDGE, UNUSABLE
from benchjson import emit


def _pull_width(diff: np.ndarray, var: np.ndarray, good: np.ndarray) -> float:
    """Half the 16-84 % range of ``diff / sqrt(var)`` on the ``good`` pixels."""
    z = diff[good] / np.sqrt(var[good])
    lo, hi = np.percentile(z, [15.87, 84.13])
    return float((hi - lo) / 2.0)


def _compare(old: Any, new: Any) -> dict[str, Any]:
    """The science of two DiffResults of the same inputs."""
    good = (np.isfinite(old.diff_var) & (old.diff_var > 0)
            & ((old.mask & int(UNUSABLE | EDGE)) == 0))
    both = (old.template_weight > 0) & (new.template_weight > 0)
    rel = np.abs(new.template_weight[both] / old.template_weight[both] - 1.0)
    sig = np.sqrt(old.diff_var[good])
    out: dict[str, Any] = {
        "template_weight_rel_change_max": float(rel.max()),
        "template_weight_rel_change_median": float(np.median(rel)),
        "template_image_max_abs_over_sigma": float(np.max(
            np.abs(new.template_image[both] - old.template_image[both])
            * np.sqrt(old.template_weight[both]))),
        "diff_max_abs_over_sigma": float(np.max(np.abs(new.diff[good] - old.diff[good]) / sig)),
        "diff_pull_width_old_new": [_pull_width(r.diff, r.diff_var, good) for r in (old, new)],
        "n_candidates_old_new": [len(old.candidates), len(new.candidates)],
        "fakes_recovered_old_new": [int(np.sum(r.fakes["recovered"]))
                                    if "recovered" in r.fakes.colnames else None
                                    for r in (old, new)],
    }
    for key in ("noise_correlation_factor", "diff_noise_factor", "score_noise_factor"):
        out[key + "_old_new"] = [old.meta.get(key), new.meta.get(key)]
    if len(old.candidates) == len(new.candidates) and len(old.candidates):
        changes = {}
        for col in old.candidates.colnames:
            a = np.asarray(old.candidates[col])
            b = np.asarray(new.candidates[col])
            if a.dtype.kind in "fiu" and a.ndim == 1:
                d = float(np.nanmax(np.abs(b.astype(float) - a.astype(float))))
                if d > 0:
                    changes[col] = d
        out["candidate_max_abs_change"] = changes
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("old_src", type=Path)
    ap.add_argument("--ccds", default="27,28,29")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="desgw_old_"))
    result: dict[str, Any] = {"workdir": str(args.workdir)}
    new_kernel = resample.resample_kernel
    try:
        _old_package(args.old_src, tmp)
        sys.path.insert(0, str(tmp))
        old_kernel = importlib.import_module("desgw_old.diff.resample_kernels").resample_kernel
        for ccd in (int(c) for c in args.ccds.split(",")):
            a, k = _capture(args.workdir, ccd)
            runs = []
            for kernel in (old_kernel, new_kernel):
                resample.resample_kernel = kernel
                runs.append(diff_pipeline.difference_ccd(*copy.deepcopy(a), **copy.deepcopy(k)))
            resample.resample_kernel = new_kernel
            result[str(ccd)] = _compare(*runs)
    finally:
        resample.resample_kernel = new_kernel
        shutil.rmtree(tmp, ignore_errors=True)
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
