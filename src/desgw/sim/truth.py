"""The truth of a simulated night: flattening exposures to table rows and reading it all back.

`simulate_night` writes ``OUTDIR/truth/``; `load_truth` reads it into a `Truth` whose helpers
answer the questions tests and accuracy measurements ask: where does a pixel of a CCD truly
point (`Truth.true_pixel_to_sky`, with the exposure's true pointing and distortion), which
objects fall on a CCD and with how many electrons (`Truth.objects_on_ccd`).

Files (all under ``OUTDIR/truth/``)
-----------------------------------
``objects.parquet``
    Static truth of every object (`Scene.objects` columns).
``exposures.csv``
    One row per exposure, every `ExposureSpec` field flattened (`EXPOSURE_COLUMNS`) plus
    ``mjd_mid`` and ``raw_file``.
``ccds.csv``
    One row per rendered exposure and CCD: ``expnum``, ``ccdnum``, ``zeropoint`` (AB mag for
    1 e-/s in the flat-fielded image: the exposure zeropoint + 2.5 log10(qe), as the dome flat is
    normalised per CCD), ``qe`` (relative QE of the CCD), ``sky_e_per_pix`` (sky electrons per
    pixel in the exposure at the CCD centre), ``fwhm_arcsec``, ``e1``, ``e2`` (PSF at the CCD
    centre), ``pixel_scale_arcsec``, ``n_objects``.
``fluxes.parquet``
    One row per exposure, CCD and object whose centre is on the CCD and which is there (finite
    magnitude): ``expnum``, ``ccdnum``, ``id``, ``kind``, ``x``, ``y`` (0-based trimmed pixel),
    ``ra``, ``dec`` (deg, at mid-exposure), ``mag`` (AB, exposure band), ``flux_e`` (electrons
    in the exposure after flat fielding: ``exptime * 10**(-0.4 (mag - zeropoint))`` with the
    CCD's zeropoint).
``transients.csv``, ``variables.csv``, ``moving.csv``
    Light-curve and orbit parameters (`Scene.transients`, `.variables`, `.moving`).
``night.json``
    Seed, band, field, CCDs per exposure, switches and configurations.
``artefacts_<expnum>.npz``
    The renderer's injected-artefact masks, sparse: ``ccd_N_y``, ``ccd_N_x``, ``ccd_N_bits`` for
    the nonzero pixels of CCD N (`Truth.artefact_masks` rebuilds the images).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike, NDArray

from desgw.errors import CorruptFileError, MissingFileError

from ..instrument import CCD_SHAPE, Distortion, Pointing, pixel_to_sky, sky_to_pixel
from ..io.products import read_csv, read_parquet
from .model import ExposureSpec, PSFField

__all__ = ["EXPOSURE_COLUMNS", "exposure_row", "spec_from_row", "Truth", "load_truth", "TRUTH_FILES"]

#: Files `load_truth` reads (relative to ``OUTDIR/truth``).
TRUTH_FILES: tuple[str, ...] = ("objects.parquet", "exposures.csv", "ccds.csv", "fluxes.parquet",
                                "transients.csv", "variables.csv", "moving.csv", "night.json")

#: Columns of ``exposures.csv`` that describe an `ExposureSpec` (units: deg, s, arcsec, mag).
EXPOSURE_COLUMNS: tuple[str, ...] = (
    "expnum", "band", "mjd", "exptime", "airmass", "is_template",
    "ra", "dec", "rotation_deg", "header_ra", "header_dec", "header_rotation_deg",
    "fwhm_arcsec", "psf_beta", "psf_fwhm_r2", "psf_fwhm_tilt_xi", "psf_fwhm_tilt_eta",
    "psf_e1", "psf_e2", "psf_e_astig", "psf_profile", "sky_mag_arcsec2", "sky_gradient_xi",
    "sky_gradient_eta",
    "zeropoint", "dist_scale_deg_per_mm", "dist_k2", "dist_k4", "obstype", "propid", "object_name",
)


def exposure_row(spec: ExposureSpec) -> dict[str, Any]:
    """Flatten an `ExposureSpec` into a dict with the `EXPOSURE_COLUMNS` keys."""
    p, h, f, d = spec.pointing, spec.header_pointing, spec.psf, spec.distortion
    return {
        "expnum": int(spec.expnum), "band": spec.band, "mjd": float(spec.mjd),
        "exptime": float(spec.exptime), "airmass": float(spec.airmass),
        "is_template": bool(spec.is_template),
        "ra": p.ra_deg, "dec": p.dec_deg, "rotation_deg": p.rotation_deg,
        "header_ra": h.ra_deg, "header_dec": h.dec_deg, "header_rotation_deg": h.rotation_deg,
        "fwhm_arcsec": f.fwhm_arcsec, "psf_beta": f.beta, "psf_fwhm_r2": f.fwhm_r2,
        "psf_fwhm_tilt_xi": f.fwhm_tilt[0], "psf_fwhm_tilt_eta": f.fwhm_tilt[1],
        "psf_e1": f.e1, "psf_e2": f.e2, "psf_e_astig": f.e_astig, "psf_profile": f.profile,
        "sky_mag_arcsec2": float(spec.sky_mag_arcsec2), "sky_gradient_xi": spec.sky_gradient[0],
        "sky_gradient_eta": spec.sky_gradient[1], "zeropoint": float(spec.zeropoint),
        "dist_scale_deg_per_mm": d.scale_deg_per_mm, "dist_k2": d.k2, "dist_k4": d.k4,
        "obstype": spec.obstype, "propid": spec.propid, "object_name": spec.object_name,
    }


def spec_from_row(row: Any) -> ExposureSpec:
    """Rebuild an `ExposureSpec` from a row (mapping or table row) with `EXPOSURE_COLUMNS`."""
    def f(k: str) -> float:
        return float(row[k])

    return ExposureSpec(
        expnum=int(row["expnum"]), band=str(row["band"]), mjd=f("mjd"), exptime=f("exptime"),
        airmass=f("airmass"),
        pointing=Pointing(f("ra"), f("dec"), f("rotation_deg")),
        header_pointing=Pointing(f("header_ra"), f("header_dec"), f("header_rotation_deg")),
        psf=PSFField(fwhm_arcsec=f("fwhm_arcsec"), beta=f("psf_beta"), fwhm_r2=f("psf_fwhm_r2"),
                     fwhm_tilt=(f("psf_fwhm_tilt_xi"), f("psf_fwhm_tilt_eta")), e1=f("psf_e1"),
                     e2=f("psf_e2"), e_astig=f("psf_e_astig"),
                     profile=_profile(row)),
        sky_mag_arcsec2=f("sky_mag_arcsec2"), sky_gradient=(f("sky_gradient_xi"), f("sky_gradient_eta")),
        zeropoint=f("zeropoint"),
        distortion=Distortion(f("dist_scale_deg_per_mm"), f("dist_k2"), f("dist_k4")),
        is_template=_as_bool(row["is_template"]), obstype=str(row["obstype"]),
        propid=str(row["propid"]), object_name=str(row["object_name"]),
    )


def _profile(row: Any) -> str:
    """The row's PSF profile; ``"moffat"`` for truth written before the column existed
    (every such night was rendered with Moffat PSFs unless its generator was told
    otherwise, which it did not record)."""
    try:
        v = row["psf_profile"]
    except (KeyError, IndexError, ValueError):
        return "moffat"
    text = str(v).strip()
    return text if text and text.lower() not in ("nan", "none", "--") else "moffat"


def _as_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "t", "yes")
    return bool(v)


@dataclass(frozen=True)
class Truth:
    """Everything `simulate_night` knows about what it made (tables as astropy Tables).

    Attributes
    ----------
    outdir : Path
        The night's output directory.
    objects, exposures, ccds, fluxes, transients, variables, moving : astropy.table.Table
        The tables of the module docstring.
    meta : dict
        Contents of ``night.json``.
    """

    outdir: Path
    objects: Table
    exposures: Table
    ccds: Table
    fluxes: Table
    transients: Table
    variables: Table
    moving: Table
    meta: dict = field(default_factory=dict)

    @property
    def expnums(self) -> list[int]:
        """All exposure numbers, in time order."""
        return [int(e) for e in self.exposures["expnum"]]

    @property
    def template_expnums(self) -> list[int]:
        return [int(r["expnum"]) for r in self.exposures if _as_bool(r["is_template"])]

    @property
    def search_expnums(self) -> list[int]:
        return [int(r["expnum"]) for r in self.exposures if not _as_bool(r["is_template"])]

    def _row(self, expnum: int) -> Any:
        hit = np.flatnonzero(np.asarray(self.exposures["expnum"]) == int(expnum))
        if hit.size != 1:
            raise KeyError(f"exposure {expnum} is not in the truth of {self.outdir}")
        return self.exposures[int(hit[0])]

    def exposure_spec(self, expnum: int) -> ExposureSpec:
        """The `ExposureSpec` exposure ``expnum`` was rendered from."""
        return spec_from_row(self._row(expnum))

    def raw_path(self, expnum: int) -> Path:
        """Path of the raw file of exposure ``expnum``."""
        return self.outdir / "raw" / str(self._row(expnum)["raw_file"])

    def ccdnums(self, expnum: int) -> list[int]:
        """CCDs rendered for exposure ``expnum``."""
        sel = np.asarray(self.ccds["expnum"]) == int(expnum)
        return [int(c) for c in np.asarray(self.ccds["ccdnum"])[sel]]

    def true_pixel_to_sky(self, expnum: int, ccdnum: int, x: ArrayLike, y: ArrayLike
                          ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """True (ra, dec) in deg of 0-based trimmed pixel (x, y) of a CCD of an exposure."""
        spec = self.exposure_spec(expnum)
        return pixel_to_sky(int(ccdnum), np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                            spec.pointing, spec.distortion)

    def true_sky_to_pixel(self, expnum: int, ccdnum: int, ra: ArrayLike, dec: ArrayLike
                          ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """0-based trimmed pixel (x, y) where true (ra, dec) in deg falls on a CCD of an exposure."""
        spec = self.exposure_spec(expnum)
        return sky_to_pixel(int(ccdnum), np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64),
                            spec.pointing, spec.distortion)

    def objects_on_ccd(self, expnum: int, ccdnum: int) -> Table:
        """Rows of ``fluxes`` for one exposure and CCD (id, kind, x, y, ra, dec, mag, flux_e)."""
        f = self.fluxes
        sel = (np.asarray(f["expnum"]) == int(expnum)) & (np.asarray(f["ccdnum"]) == int(ccdnum))
        return f[sel]

    def ccd_row(self, expnum: int, ccdnum: int) -> Any:
        """The ``ccds`` row of one exposure and CCD."""
        c = self.ccds
        hit = np.flatnonzero((np.asarray(c["expnum"]) == int(expnum))
                             & (np.asarray(c["ccdnum"]) == int(ccdnum)))
        if hit.size != 1:
            raise KeyError(f"CCD {ccdnum} of exposure {expnum} was not rendered")
        return c[int(hit[0])]

    def artefact_masks(self, expnum: int) -> dict[int, np.ndarray]:
        """Injected-artefact masks per CCD of an exposure: uint8 (4096, 2048), renderer truth bits.

        Bits (`desgw.sim.detector`): 1 cosmic ray, 2 satellite, 4 saturated, 8 bleed trail,
        16 bad-pixel box, 32 hot pixel. Empty dict when the exposure has no artefact file.
        """
        path = self.outdir / "truth" / f"artefacts_{int(expnum)}.npz"
        if not path.exists():
            return {}
        out: dict[int, np.ndarray] = {}
        with np.load(path) as z:
            for key in z.files:
                if key.endswith("_bits"):
                    ccd = int(key.split("_")[1])
                    mask = np.zeros(CCD_SHAPE, dtype=np.uint8)
                    mask[z[f"ccd_{ccd}_y"].astype(np.intp), z[f"ccd_{ccd}_x"].astype(np.intp)] = z[key]
                    out[ccd] = mask
        return out


def load_truth(outdir: str | os.PathLike[str]) -> Truth:
    """Read ``OUTDIR/truth/`` written by `simulate_night`.

    Raises
    ------
    MissingFileError
        A truth file is missing (the message names it).
    CorruptFileError
        A table cannot be read.
    """
    root = Path(outdir)
    tdir = root / "truth"
    for name in TRUTH_FILES:
        if not (tdir / name).exists():
            raise MissingFileError(tdir / name, None, "truth file missing (was the night simulated here?)")
    try:
        meta = json.loads((tdir / "night.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(tdir / "night.json", None, f"not readable JSON ({exc})") from exc
    exposures = read_csv(tdir / "exposures.csv")
    if "psf_profile" not in exposures.colnames:
        # truth written before the column existed: the night's survey setting, which
        # night.json has always recorded (every exposure of a night has the same profile)
        profile = (meta.get("survey_config") or {}).get("psf_profile")
        if profile:
            exposures["psf_profile"] = [str(profile)] * len(exposures)
    return Truth(
        outdir=root,
        objects=read_parquet(tdir / "objects.parquet"),
        exposures=exposures,
        ccds=read_csv(tdir / "ccds.csv"),
        fluxes=read_parquet(tdir / "fluxes.parquet"),
        transients=read_csv(tdir / "transients.csv"),
        variables=read_csv(tdir / "variables.csv"),
        moving=read_csv(tdir / "moving.csv"),
        meta=meta,
    )
