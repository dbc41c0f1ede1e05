"""The HTML run report: one self-contained page plus the candidates' stamps as PNG files.

:func:`write_report` (a demo folder) and :func:`render_report` (any :class:`~desgw.workflow.
report_data.ReportData`) write ``REPORT_DIR/index.html`` and ``REPORT_DIR/img/*.png``:

* **Run summary** (``#summary``): exposures, CCDs, what ran / was skipped / failed, wall time
  per stage and in total, the workers and the machine;
* **CCDs** (``#ccds``): per CCD of every exposure the calibrated zeropoint and its error, the
  zeropoint for 1 e-/s, FWHM, astrometric rms, t_eff, QC, and for search CCDs the candidates,
  fakes recovered, m50 and ideal limit; with truth, the simulator's zeropoint and FWHM;
* **Focal plane** (``#focal-plane``): per exposure, the DECam focal plane coloured by zeropoint
  and by FWHM, QC failures crossed (:func:`~desgw.report.svg.focal_plane_svg`);
* **Efficiency** (``#efficiency``): recovered fraction of the fakes of all search CCDs vs
  magnitude, the fitted curves (all CCDs and each CCD), m50 and the ideal limit;
* **Candidates** (``#candidates``): the top candidates (:func:`~desgw.report.data.
  rank_candidates`) with search / template / difference stamps, position, magnitude, SNR,
  real/bogus score, veto flag and, with truth, the simulated object they match;
* **Truth** (``#truth``, with a simulated night): the simulated transients on the search
  CCDs and whether a candidate found them, fakes recovered, zeropoint and FWHM vs truth.

The page has inline CSS, inline SVG charts and no external URL; its only script records, after
the page's ``load`` event, which images failed to load and how many error events it saw, on
``<body>`` (``data-images-total``, ``data-images-broken``, ``data-errors``, ``data-loaded``) for
the headless-browser check
(``scripts/check_report_browser.py``). Files are written atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from desgw import __version__
from desgw.errors import MissingFileError
from desgw.io.atomic import atomic_write_bytes, atomic_write_text
from desgw.io.demo_files import demo_layout
from desgw.report.data import CCDRow, ReportCandidateRow, ReportData, collect_report
from desgw.report.svg import (
    EfficiencyModel,
    EfficiencyPoint,
    efficiency_svg,
    focal_plane_svg,
)

__all__ = [
    "REPORT_SECTIONS",
    "machine_info",
    "render_report",
    "write_report",
]

log = logging.getLogger(__name__)

#: Ids of the report's sections, in page order.
REPORT_SECTIONS: tuple[str, ...] = ("summary", "ccds", "focal-plane", "efficiency",
                                    "candidates", "truth")
_STAMP_KINDS = ("search", "template", "diff")

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1b1b1b;
background:#f6f7f9}
header{background:#14213d;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#cdd6e6;font-size:13px}
nav{background:#e9edf3;padding:6px 28px;font-size:13px}nav a{margin-right:14px;color:#14213d}
main{padding:8px 28px 40px}p{font-size:13.5px;margin:6px 0}
.scroll{overflow-x:auto}td.qc{text-align:left}
section{background:#fff;border:1px solid #dde2ea;border-radius:6px;margin:16px 0;
padding:10px 18px 16px}
h2{font-size:18px;margin:6px 0 10px;color:#14213d}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border-bottom:1px solid #e3e6eb;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#f0f2f6;position:sticky;top:0}td.l,th.l{text-align:left}
tr.fail td{background:#fdecea}.bad{color:#b3261e;font-weight:600}.good{color:#1e7b34}
.muted{color:#777}.kv td{text-align:left}.kv td:first-child{color:#555;padding-right:16px}
.maps{display:flex;flex-wrap:wrap;gap:10px}
.svg-title{font-size:13px;font-weight:600;fill:#14213d}.axis{font-size:11px;fill:#333}
.ccd-label{font-size:8px;fill:#fff;paint-order:stroke;stroke:#0006;stroke-width:1.5px}
.cands{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:10px}
.cand{border:1px solid #dde2ea;border-radius:5px;padding:6px 8px;background:#fcfcfd}
.cand h3{margin:0 0 4px;font-size:13px}
.stamps{display:flex;gap:4px}.stamps figure{margin:0;text-align:center;font-size:11px;
color:#555}
.stamps img{width:108px;height:108px;image-rendering:pixelated;border:1px solid #ccc;
background:#000}
.cand table{font-size:11.5px;margin:4px 0 0}.cand td{text-align:left;border:none;padding:1px 6px}
.tag{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px;margin-left:4px}
.tag.transient{background:#d5f5e3}.tag.variable{background:#fdebd0}
.tag.moving{background:#e8daef}.tag.star,.tag.galaxy{background:#eaecee}
.tag.none{background:#fadbd8}.tag.veto{background:#f5b7b1}
footer{color:#777;font-size:12px;padding:0 28px 20px}
"""

_SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener("error", function (ev) {
    var t = ev.target;
    errors.push(t && t !== window && t.tagName ? t.tagName + " " + (t.src || t.href || "")
                                               : String(ev.message));
  }, true);
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (im) { return !im.complete || im.naturalWidth === 0; })
      .map(function (im) { return im.getAttribute("src"); });
    var b = document.body;
    b.setAttribute("data-images-total", String(imgs.length));
    b.setAttribute("data-images-broken", broken.join(" "));
    b.setAttribute("data-errors", String(errors.length));
    b.setAttribute("data-error-messages", errors.join(" | "));
    b.setAttribute("data-loaded", "1");
  });
})();
"""


# ----------------------------------------------------------------------------- formatting
def _f(v: float, digits: int = 2, unit: str = "") -> str:
    if v is None or not math.isfinite(float(v)):
        return '<span class="muted">-</span>'
    return f"{float(v):.{digits}f}{unit}"


def _seconds(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min ({v:.0f} s)"


def machine_info() -> dict[str, Any]:
    """This machine: host, OS, Python, usable cores, memory (GB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    mem = psutil.virtual_memory().total / 1e9
    return {"host": platform.node(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "cores": cores, "memory_gb": mem,
            "cpu": platform.processor() or platform.machine()}


# ----------------------------------------------------------------------------- sections
def _summary(data: ReportData) -> str:
    rec, run = data.record, data.run
    counts = run.get("counts") or {}
    tasks = run.get("tasks") or []
    machine = rec.get("machine") or machine_info()
    kv = [("Search exposure", f"{data.search_expnum} (band {escape(data.band)})"),
          ("Templates", ", ".join(str(t) for t in data.template_expnums) or "-"),
          ("Search CCDs", ", ".join(str(r.ccdnum) for r in data.ccds if r.role == "search")),
          ("Template CCDs", str(sum(1 for r in data.ccds if r.role == "template")))]
    if "seed" in rec:
        which = "all CCDs" if rec.get("full") else "subset of CCDs"
        kv.append(("Simulation", f"seed {rec['seed']}, {which}"))
    if tasks:
        kv.append(("Tasks", (f"{len(tasks)}: {counts.get('done', 0)} done, "
                   f"{counts.get('skipped', 0)} skipped (products existed), "
                   f"<span class='{'bad' if counts.get('failed') else ''}'>"
                   f"{counts.get('failed', 0)} failed</span>, {counts.get('blocked', 0)} "
                   "blocked")))
    db = data.database
    if db:
        kv.append(("Database", escape(f"{db['url']}: {db['exposures']} exposures, "
                                      f"{db['ccd_products']} CCD products, "
                                      f"{db['detections']} detections of the search exposure, "
                                      f"{db['candidates']} candidates "
                                      f"({db['real_candidates']} not fakes)")))
    kv.append(("Scheduler", escape(str(rec.get("scheduler") or run.get("scheduler") or "-"))))
    kv.append(("Machine", escape(f"{machine.get('host')}: {machine.get('cores')} cores, "
                                 f"{_plain(machine.get('memory_gb'), 1)} GB, "
                                 f"{machine.get('os')}, Python {machine.get('python')}")))
    if "wall_seconds" in rec:
        kv.append(("Total wall time", _seconds(float(rec["wall_seconds"]))))
    html = ['<section id="summary"><h2>Run summary</h2><table class="kv">']
    html += [f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in kv]
    html.append("</table>")

    stage = rec.get("stage_seconds") or {}
    busy = rec.get("task_seconds") or {}
    labels = [("simulation", "simulation"), ("refcat_ingest", "reference catalog ingest"),
              ("db_ingest", "database ingest"), ("template_se", "template SE"),
              ("search_se", "search SE"), ("expcalib", "photometric calibration (expcalib)"),
              ("diff", "difference imaging"), ("processing", "processing (Dask run, total)"),
              ("report", "report")]
    if not stage and run.get("stage_seconds"):
        stage = dict(run["stage_seconds"])
        busy = dict(run.get("task_seconds") or {})
        labels = [(k, k) for k in stage]
    if stage:
        html.append("<h3>Wall time per stage</h3><table><tr><th class='l'>stage</th>"
                    "<th>wall</th><th>summed task time</th></tr>")
        for key, label in labels:
            if key in stage:
                html.append(f"<tr><td class='l'>{escape(label)}</td>"
                            f"<td>{_seconds(float(stage[key]))}</td>"
                            f"<td>{_seconds(float(busy[key])) if key in busy else ''}</td></tr>")
        html.append("</table><p class='muted'>Stages of the Dask run overlap in time "
                    "(template and search SE run side by side); 0 s: nothing to do (resumed)."
                    "</p>")
    problems = [t for t in tasks if t.get("status") in ("failed", "blocked")]
    if problems:
        html.append("<h3>Failed or blocked tasks</h3><ul>")
        html += [f"<li class='bad'>{escape(str(t['task_id']))}: {escape(str(t.get('status')))}"
                 f" - {escape(str(t.get('reason')))}</li>" for t in problems]
        html.append("</ul>")
    html.append("</section>")
    return "\n".join(html)


def _plain(v: Any, digits: int) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return f"{f:.{digits}f}" if math.isfinite(f) else "-"


def _qc_cell(r: CCDRow) -> str:
    if r.status != "ok":
        return f"<span class='bad' title='{escape(r.status)}'>{escape(r.status[:40])}</span>"
    if r.qc_passed is None:
        return "<span class='muted'>not assessed</span>"
    if r.qc_passed:
        return "<span class='good'>pass</span>"
    short = ", ".join(dict.fromkeys(x.split()[0] for x in r.qc_reasons if x.split()))
    return (f"<span class='bad' title='{escape('; '.join(r.qc_reasons))}'>FAIL</span> "
            f"<span class='muted'>{escape(short)}</span>")


def _templates_cell(r: CCDRow) -> str:
    """``743156: 29,36`` per template exposure used, and how many template CCDs were rejected
    (their reasons in the tooltip)."""
    by: dict[int, list[int]] = {}
    for e, c in r.templates_used:
        by.setdefault(e, []).append(c)
    text = "; ".join(f"{e}: {','.join(map(str, sorted(cs)))}" for e, cs in sorted(by.items()))
    if r.templates_rejected:
        text += (f" <span class='muted' title='{escape(chr(10).join(r.templates_rejected))}'>"
                 f"({len(r.templates_rejected)} rejected)</span>")
    return text


def _ccd_table(data: ReportData) -> str:
    truth = data.has_truth
    head = ["exposure", "role", "CCD", "ZP (e-)", "ZP err", "ZP (1 e-/s)", "FWHM (\")",
            "astrom. rms (mas)", "t_eff", "objects", "QC", "templates", "candidates",
            "fakes rec.", "m50", "ideal lim."]
    if truth:
        head += ["ΔZP vs truth (mmag)", "ΔFWHM vs truth"]
    out = [('<section id="ccds"><h2>CCDs: quality and zeropoints</h2><div class="scroll">'
           "<table><tr>")]
    out += [f"<th{' class=l' if i < 2 or h in ('QC', 'templates') else ''}>{escape(h)}</th>"
            for i, h in enumerate(head)]
    out.append("</tr>")
    for r in data.ccds:
        bad = r.status != "ok" or r.qc_passed is False or r.diff_status not in ("", "ok")
        cells = [str(r.expnum), r.role, str(r.ccdnum), _f(r.zp, 3), _f(r.zp_err, 3),
                 _f(r.zp_per_s, 3), _f(r.fwhm_arcsec, 2),
                 _f(r.astrometric_rms_arcsec * 1000.0, 1), _f(r.t_eff, 2), str(r.n_objects),
                 _qc_cell(r)]
        if r.role == "search":
            if r.n_candidates >= 0:
                cells += [_templates_cell(r), str(r.n_candidates),
                          f"{r.n_fakes_recovered}/{r.n_fakes}", _f(r.m50, 2),
                          _f(r.ideal_limit, 2)]
            else:
                cells += ["", f"<span class='bad'>{escape(r.diff_status[:50])}</span>", "", "",
                          ""]
        else:
            cells += ["", "", "", "", ""]
        if truth:
            dzp = (r.zp_per_s - r.truth_zp_per_s) * 1000.0
            dfw = (r.fwhm_arcsec / r.truth_fwhm_arcsec - 1.0) * 100.0 \
                if r.truth_fwhm_arcsec > 0 else math.nan
            cells += [_f(dzp, 1), _f(dfw, 1, " %")]
        out.append(f"<tr class='{'fail' if bad else ''}' data-expnum='{r.expnum}' "
                   f"data-ccd='{r.ccdnum}'>" + "".join(
                       f"<td{' class=l' if i < 2 else ' class=qc' if i in (10, 11) else ''}>"
                       f"{c}</td>"
                       for i, c in enumerate(cells)) + "</tr>")
    out.append("</table></div><p class='muted'>ZP (e-): calibrated AB zeropoint of the total flux "
               "in electrons over the exposure (expcalib); ZP (1 e-/s) = ZP - 2.5 log10(exptime)."
               " m50: magnitude at half the plateau efficiency of the fakes; ideal lim.: "
               "ideal 5σ PSF-fit limit of the difference image.</p></section>")
    return "\n".join(out)


def _focal_plane(data: ReportData) -> str:
    out = ['<section id="focal-plane"><h2>Focal plane: zeropoint and seeing per CCD</h2>']
    for expnum in (data.search_expnum, *data.template_expnums):
        rows = [r for r in data.ccds if r.expnum == expnum]
        if not rows:
            continue
        role = rows[0].role
        failed = [r.ccdnum for r in rows if r.status != "ok" or r.qc_passed is False]
        zp = {r.ccdnum: r.zp for r in rows}
        fwhm = {r.ccdnum: r.fwhm_arcsec for r in rows}
        out.append(f"<h3>{role} exposure {expnum} ({len(rows)} CCDs)</h3><div class='maps'>")
        out.append(focal_plane_svg(zp, title=f"{expnum}: zeropoint (e-, AB)", unit="mag",
                                   failed=failed, digits=3, width=340))
        out.append(focal_plane_svg(fwhm, title=f"{expnum}: PSF FWHM", unit="arcsec",
                                   failed=failed, digits=2, width=340))
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def _efficiency(data: ReportData) -> str:
    from desgw.diff.efficiency import efficiency_curve

    eff = data.efficiency
    out = ['<section id="efficiency"><h2>Detection efficiency of the fakes</h2>']
    if eff.mags.size < 10:
        out.append("<p class='muted'>No fakes were injected (or too few to fit).</p></section>")
        return "\n".join(out)
    curve = efficiency_curve(eff.mags, eff.recovered, bins=14)
    pts = [EfficiencyPoint(mag=float(r["mag"]), n=int(r["n"]), n_recovered=int(r["n_recovered"]),
                           efficiency=float(r["efficiency"]), err_lo=float(r["err_lo"]),
                           err_hi=float(r["err_hi"])) for r in curve.table if int(r["n"]) > 0]
    models = []
    for c, doc in sorted(eff.per_ccd.items()):
        e = doc.get("efficiency") or {}
        if e.get("m50") is not None and e.get("width") is not None:
            models.append(EfficiencyModel(label=f"CCD {c}", m50=float(e["m50"]),
                                          width=float(e["width"]),
                                          plateau=float(e.get("plateau") or 1.0),
                                          model=str(e.get("model", "logistic"))))
    models.append(EfficiencyModel(label="all CCDs", m50=curve.m50, width=curve.width,
                                  plateau=curve.plateau, model=curve.model, main=True))
    n, k = int(eff.mags.size), int(np.sum(eff.recovered))
    out.append(efficiency_svg(pts, models, m50=curve.m50, ideal_limit=eff.ideal_limit,
                              title=f"{k}/{n} fakes recovered on {len(eff.per_ccd)} search CCDs"))
    out.append(f"<p>All CCDs: m50 = <b>{curve.m50:.2f} ± {curve.m50_err:.2f}</b> mag "
               f"(width {curve.width:.2f} mag, plateau {curve.plateau:.2f}); median ideal 5σ "
               f"limit {_f(eff.ideal_limit, 2)} mag. Thin lines: each CCD's fit; points: "
               "binned fakes with 1σ Wilson intervals.</p></section>")
    return "\n".join(out)


def _stamp_files(c: ReportCandidateRow, img_dir: Path) -> list[str]:
    """Write the candidate's three stamps as PNG files; their paths relative to the page."""
    from desgw.diff.stamps_png import encode_png_gray, stretch_to_uint8

    if c.stamps is None:
        return []
    names = []
    for k, kind in enumerate(_STAMP_KINDS):
        panel = np.asarray(c.stamps[k], np.float32)
        valid = None if c.stamp_valid is None else np.asarray(c.stamp_valid[k], bool)
        png = encode_png_gray(stretch_to_uint8(panel, valid, stretch="zscale"))
        name = f"cand_{c.expnum}_{c.ccdnum:02d}_{c.cand_id}_{kind}.png"
        atomic_write_bytes(img_dir / name, png)
        names.append(f"{img_dir.name}/{name}")
    return names


def _candidates(data: ReportData, img_dir: Path) -> tuple[str, set[str]]:
    out = [(f'<section id="candidates"><h2>Top candidates ({len(data.candidates)} of '
           f'{data.n_candidates_total})</h2><p class="muted">Positive, non-fake candidates of '
           "all search CCDs, not vetoed first, then by real/bogus score and SNR. Stamps: "
           "51×51 px, zscale.</p><div class='cands'>")]
    written: set[str] = set()
    for rank, c in enumerate(data.candidates, 1):
        files = _stamp_files(c, img_dir)
        written.update(Path(f).name for f in files)
        tags = ""
        if c.veto:
            tags += "<span class='tag veto'>star veto</span>"
        if c.dipole:
            tags += "<span class='tag none'>dipole</span>"
        if c.truth_kind:
            tags += f"<span class='tag {escape(c.truth_kind)}'>truth: {escape(c.truth_kind)}</span>"
        out.append(f"<div class='cand' data-ccd='{c.ccdnum}' data-id='{c.cand_id}' "
                   f"data-rb='{c.real_bogus!r}' data-snr='{c.snr!r}'>"
                   f"<h3>#{rank} CCD {c.ccdnum} candidate {c.cand_id}{tags}</h3>")
        if files:
            out.append("<div class='stamps'>" + "".join(
                f"<figure><img src='{escape(f)}' alt='{kind} stamp' width='51' height='51'>"
                f"<figcaption>{kind}</figcaption></figure>"
                for f, kind in zip(files, _STAMP_KINDS)) + "</div>")
        truth = ""
        if c.truth_kind and c.truth_id >= 0:
            truth = (f"<tr><td>truth</td><td>{escape(c.truth_kind)} {c.truth_id}, "
                     f"{_f(c.truth_mag, 2)} mag</td></tr>")
        out.append("<table>"
                   f"<tr><td>RA, Dec</td><td>{c.ra:.6f}, {c.dec:+.6f}</td></tr>"
                   f"<tr><td>x, y</td><td>{c.x:.1f}, {c.y:.1f}</td></tr>"
                   f"<tr><td>mag</td><td>{_f(c.mag, 2)} ± {_f(c.magerr, 2)}</td></tr>"
                   f"<tr><td>SNR</td><td>{_f(c.snr, 1)}</td></tr>"
                   f"<tr><td>real/bogus</td><td><b>{_f(c.real_bogus, 3)}</b></td></tr>"
                   f"{truth}</table></div>")
    out.append("</div></section>")
    return "\n".join(out), written


def _truth(data: ReportData) -> str:
    if not data.has_truth:
        return ('<section id="truth"><h2>Truth comparison</h2><p class="muted">No simulator '
                "truth for this run.</p></section>")
    out = ['<section id="truth"><h2>Truth comparison (simulated night)</h2>']
    eff = data.efficiency
    if eff.mags.size:
        out.append(f"<p>Fakes recovered: <b>{int(np.sum(eff.recovered))}/{eff.mags.size}</b>."
                   "</p>")
    rows = [r for r in data.ccds if r.status == "ok" and math.isfinite(r.truth_zp_per_s)]
    if rows:
        dzp = np.array([r.zp_per_s - r.truth_zp_per_s for r in rows]) * 1000.0
        dfw = np.array([r.fwhm_arcsec / r.truth_fwhm_arcsec - 1 for r in rows]) * 100.0
        out.append(f"<p>Zeropoint - truth over {len(rows)} CCDs: median {np.median(dzp):+.1f} "
                   f"mmag, rms {np.sqrt(np.mean(dzp ** 2)):.1f} mmag; FWHM - truth: median "
                   f"{np.nanmedian(dfw):+.1f} %.</p>")
    tr = data.transients
    n_found = sum(t.found for t in tr)
    out.append(f"<h3>Simulated transients on the search CCDs: {n_found}/{len(tr)} found</h3>")
    if tr:
        out.append("<table><tr><th>truth id</th><th>CCD</th><th>RA</th><th>Dec</th>"
                   "<th>true mag</th><th>ideal lim.</th><th>found</th><th>candidate</th>"
                   "<th>real/bogus</th><th>SNR</th><th>sep (\")</th></tr>")
        for t in sorted(tr, key=lambda t: t.mag):
            out.append(f"<tr class='{'' if t.found else 'fail'}' data-truth-id='{t.truth_id}' "
                       f"data-found='{int(t.found)}'><td>{t.truth_id}</td><td>{t.ccdnum}</td>"
                       f"<td>{t.ra:.5f}</td><td>{t.dec:+.5f}</td><td>{_f(t.mag, 2)}</td>"
                       f"<td>{_f(t.ideal_limit, 2)}</td>"
                       f"<td>{'yes' if t.found else '<span class=bad>no</span>'}</td>"
                       f"<td>{t.cand_id if t.found else ''}</td><td>{_f(t.real_bogus, 3)}</td>"
                       f"<td>{_f(t.snr, 1)}</td><td>{_f(t.sep_arcsec, 2)}</td></tr>")
        out.append("</table>")
    kinds: dict[str, int] = {}
    for c in data.candidates:
        kinds[c.truth_kind] = kinds.get(c.truth_kind, 0) + 1
    if kinds:
        out.append("<p>Top candidates by simulated counterpart (within 1\"): "
                   + ", ".join(f"{escape(k)} {n}" for k, n in sorted(kinds.items()))
                   + " (none: no simulated object - an artefact or noise).</p>")
    out.append("</section>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- writing
def render_report(data: ReportData, report_dir: str | os.PathLike[str], *,
                  title: str = "desgw run report") -> Path:
    """Write ``report_dir/index.html`` and its stamp images (module docstring).

    PNG files in ``report_dir/img/`` that the new page does not show are removed.

    Returns
    -------
    Path
        The HTML file.
    """
    out_dir = Path(report_dir)
    img_dir = out_dir / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    cand_html, written = _candidates(data, img_dir)
    body = [_summary(data), _ccd_table(data), _focal_plane(data), _efficiency(data), cand_html,
            _truth(data)]
    nav = "".join(f"<a href='#{s}'>{s.replace('-', ' ')}</a>" for s in REPORT_SECTIONS)
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{_CSS}</style>"
            f"<script>{_SCRIPT}</script></head>\n<body>"
            f"<header><h1>{escape(title)}</h1><p>search exposure {data.search_expnum}, "
            f"band {escape(data.band)} - generated {now} by desgw {__version__}</p></header>"
            f"<nav>{nav}</nav><main>\n" + "\n".join(body) + "\n</main>"
            "<footer>desgw: DES-GW image processing. All numbers are read from the products "
            "on disk.</footer></body></html>\n")
    path = atomic_write_text(out_dir / "index.html", page)
    for p in img_dir.glob("*.png"):
        if p.name not in written:
            p.unlink(missing_ok=True)
    return Path(path)


def write_report(demo_dir: str | os.PathLike[str], *, top_n: int = 12) -> Path:
    """The report of a demo folder (:func:`desgw.workflow.demo.run_demo`): reads its
    ``demo.json``, products and simulator truth; writes ``demo_dir/report/index.html``.

    Raises
    ------
    MissingFileError
        No ``demo.json`` in ``demo_dir``.
    """
    layout = demo_layout(demo_dir)
    if not layout.record.is_file():
        raise MissingFileError(layout.record, None, "not a demo folder (no demo.json)")
    rec: Mapping[str, Any] = json.loads(layout.record.read_text(encoding="utf-8"))
    data = collect_report(layout.out, search_expnum=int(rec["search_expnum"]),
                          template_expnums=[int(t) for t in rec["template_expnums"]],
                          band=str(rec["band"]), rnum=int(rec["rnum"]), pnum=int(rec["pnum"]),
                          season=int(rec["season"]), ccds=[int(c) for c in rec["ccds"]],
                          top_n=top_n, run_summary=rec.get("run_summary"),
                          truth_dir=layout.sim if (layout.sim / "truth").is_dir() else None,
                          record=rec, db_url=layout.db_url if layout.db.is_file() else None)
    return render_report(data, layout.report_dir, title="desgw demo: a simulated night")
