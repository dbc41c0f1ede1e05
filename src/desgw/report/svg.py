"""Inline SVG charts of the run report: the DECam focal-plane map and the efficiency curve.

Pure functions returning SVG text (no plotting library): every drawn data element carries
``data-*`` attributes with its value, so a test (or a browser) can read back what was drawn.

* :func:`focal_plane_svg`: every DECam science CCD as its outline in the focal plane (from
  :func:`desgw.instrument.pixel_to_focal`; drawn as usual, long CCD axis horizontal, N CCDs up),
  the processed ones filled with a colour for a value
  (zeropoint, FWHM...), QC failures crossed in red, dead CCDs hatched, a colour bar.
* :func:`efficiency_svg`: detection efficiency of the fakes vs magnitude: binned points with
  their error bars, the fitted model curves, ``m50`` and the ideal 5-sigma limit as vertical
  lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

__all__ = [
    "EfficiencyModel",
    "EfficiencyPoint",
    "colour_for",
    "efficiency_svg",
    "focal_plane_svg",
]

# Anchor colours of a perceptually ordered map (viridis-like), 0 -> 1.
_MAP = np.array([(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
                 (31, 158, 137), (53, 183, 121), (110, 206, 88), (181, 222, 43),
                 (253, 231, 37)], dtype=np.float64)


def colour_for(value: float, lo: float, hi: float) -> str:
    """``#rrggbb`` of ``value`` on the colour map between ``lo`` and ``hi`` (clipped); grey
    for a non-finite value."""
    if not math.isfinite(value):
        return "#bbbbbb"
    t = 0.5 if not hi > lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    pos = t * (len(_MAP) - 1)
    i = min(int(pos), len(_MAP) - 2)
    f = pos - i
    r, g, b = (_MAP[i] * (1 - f) + _MAP[i + 1] * f).round().astype(int)
    return f"#{r:02x}{g:02x}{b:02x}"


def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"


def focal_plane_svg(values: Mapping[int, float], *, title: str, unit: str = "",
                    failed: Sequence[int] = (), digits: int = 3, width: int = 420,
                    value_range: tuple[float, float] | None = None) -> str:
    """The DECam focal plane with the CCDs of ``values`` coloured by their value.

    Parameters
    ----------
    values : mapping of CCDNUM to float
        Value of each processed CCD (NaN: processed, no value: grey).
    title : str
        Caption above the map (also the SVG's accessible title).
    unit : str
        Unit shown in the tooltips and the colour bar.
    failed : sequence of int
        CCDs that failed quality control (crossed in red) or processing.
    digits : int
        Decimals of the values shown.
    width : int
        Width of the picture (px); the height follows the focal plane's aspect.
    value_range : (float, float), optional
        Colour-bar limits (default: the finite values' min and max).

    Returns
    -------
    str
        An ``<svg>`` element. Each CCD is a ``<g class="ccd">`` with ``data-ccd``,
        ``data-value`` (``"nan"`` if none, absent for CCDs not processed) and ``data-qc``
        (``"fail"``/``"pass"``).
    """
    from desgw.instrument import CCD_SHAPE, DEAD_CCDS, SCIENCE_CCDNUMS, get_ccd, pixel_to_focal

    ny, nx = CCD_SHAPE
    xs = np.array([0, nx - 1, nx - 1, 0], dtype=np.float64)
    ys = np.array([0, 0, ny - 1, ny - 1], dtype=np.float64)
    polys = {c: pixel_to_focal(c, xs, ys) for c in SCIENCE_CCDNUMS}
    # the familiar DECam picture: CCDs' long axis horizontal, N CCDs (+x_mm) at the top;
    # picture axes (u, v) = (y_mm, x_mm), v up
    polys = {c: (p[1], p[0]) for c, p in polys.items()}
    allx = np.concatenate([p[0] for p in polys.values()])
    ally = np.concatenate([p[1] for p in polys.values()])
    pad = 8.0
    x0, x1 = allx.min() - pad, allx.max() + pad
    y0, y1 = ally.min() - pad, ally.max() + pad
    scale = width / (x1 - x0)
    map_h = (y1 - y0) * scale
    top, bar_h = 22.0, 34.0
    height = math.ceil(top + map_h + bar_h)
    finite = [float(v) for v in values.values() if math.isfinite(float(v))]
    if value_range is not None:
        lo, hi = value_range
    elif finite:
        lo, hi = min(finite), max(finite)
    else:
        lo, hi = 0.0, 1.0
    bad = {int(c) for c in failed}

    def px(xmm: np.ndarray, ymm: np.ndarray) -> list[tuple[float, float]]:
        # picture v up
        return [((a - x0) * scale, top + (y1 - b) * scale) for a, b in zip(xmm, ymm)]

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="focal-plane" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img">'),
           f"<title>{escape(title)}</title>",
           ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#999" '
           'stroke-width="2"/></pattern></defs>'),
           f'<text x="4" y="15" class="svg-title">{escape(title)}</text>']
    for c in SCIENCE_CCDNUMS:
        pts = px(*polys[c])
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        cx = sum(p[0] for p in pts) / 4
        cy = sum(p[1] for p in pts) / 4
        detpos = get_ccd(c).detpos
        if c in values:
            v = float(values[c])
            qc = "fail" if c in bad else "pass"
            tip = f"CCD {c} ({detpos}): {_fmt(v, digits)} {unit}".rstrip()
            if c in bad:
                tip += " - failed"
            out.append(f'<g class="ccd" data-ccd="{c}" data-value="{v!r}" data-qc="{qc}">'
                       f"<title>{escape(tip)}</title>"
                       f'<polygon points="{path}" fill="{colour_for(v, lo, hi)}" '
                       'stroke="#222" stroke-width="0.8"/>')
            if c in bad:
                a, b, cc, d = pts
                out.append(f'<line x1="{a[0]:.1f}" y1="{a[1]:.1f}" x2="{cc[0]:.1f}" '
                           f'y2="{cc[1]:.1f}" stroke="#e00" stroke-width="2"/>'
                           f'<line x1="{b[0]:.1f}" y1="{b[1]:.1f}" x2="{d[0]:.1f}" '
                           f'y2="{d[1]:.1f}" stroke="#e00" stroke-width="2"/>')
            out.append(f'<text x="{cx:.1f}" y="{cy + 3:.1f}" class="ccd-label" '
                       f'text-anchor="middle">{c}</text></g>')
        else:
            fill = "url(#hatch)" if c in DEAD_CCDS else "#f4f4f4"
            what = "dead" if c in DEAD_CCDS else "not processed"
            out.append(f'<g class="ccd-off" data-ccd="{c}"><title>CCD {c} ({detpos}): '
                       f'{what}</title><polygon points="{path}" fill="{fill}" stroke="#bbb" '
                       'stroke-width="0.6"/></g>')
    # colour bar
    by = top + map_h + 6
    bw = width * 0.6
    bx = (width - bw) / 2
    n = 40
    for i in range(n):
        v = lo + (hi - lo) * (i + 0.5) / n
        out.append(f'<rect x="{bx + bw * i / n:.1f}" y="{by:.1f}" width="{bw / n + 0.5:.1f}" '
                   f'height="9" fill="{colour_for(v, lo, hi)}"/>')
    u = f" {unit}" if unit else ""
    out.append(f'<text x="{bx - 4:.1f}" y="{by + 8:.1f}" text-anchor="end" class="axis">'
               f"{_fmt(lo, digits)}</text>")
    out.append(f'<text x="{bx + bw + 4:.1f}" y="{by + 8:.1f}" class="axis">'
               f"{_fmt(hi, digits)}{escape(u)}</text>")
    if bad:
        out.append(f'<text x="{width / 2:.1f}" y="{by + 22:.1f}" text-anchor="middle" '
                   'class="axis">red cross: failed QC or processing</text>')
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class EfficiencyPoint:
    """One magnitude bin of recovered fakes.

    Attributes
    ----------
    mag : float
        Bin centre (AB mag).
    n, n_recovered : int
        Fakes in the bin and recovered ones.
    efficiency, err_lo, err_hi : float
        Fraction recovered and its lower/upper error bars.
    """

    mag: float
    n: int
    n_recovered: int
    efficiency: float
    err_lo: float
    err_hi: float


@dataclass(frozen=True)
class EfficiencyModel:
    """A fitted efficiency curve ``plateau * shape((m - m50) / width)``.

    Attributes
    ----------
    label : str
    m50, width, plateau : float
        Magnitude of half the plateau (AB), width (mag), plateau (fraction).
    model : str
        ``"logistic"`` or ``"erf"`` (:func:`desgw.diff.efficiency.efficiency_model`).
    main : bool
        Drawn thick (the combined fit) rather than thin (one CCD).
    """

    label: str
    m50: float
    width: float
    plateau: float
    model: str = "logistic"
    main: bool = False


def efficiency_svg(points: Sequence[EfficiencyPoint], models: Sequence[EfficiencyModel], *,
                   m50: float, ideal_limit: float, title: str, width: int = 560,
                   height: int = 320) -> str:
    """Efficiency vs magnitude (see the module docstring).

    Parameters
    ----------
    points : sequence of EfficiencyPoint
        Binned fakes (``<circle class="eff-point">`` with ``data-mag``, ``data-n``,
        ``data-k``, ``data-eff``).
    models : sequence of EfficiencyModel
        Fitted curves (``<path class="eff-model">``).
    m50 : float
        Marked with a vertical line (``data-m50``); NaN: not drawn.
    ideal_limit : float
        Ideal 5-sigma point-source limit (AB), a dashed vertical line; NaN: not drawn.
    title : str
    width, height : int
        Size of the picture (px).

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    from desgw.diff.efficiency import efficiency_model

    mags = [p.mag for p in points if math.isfinite(p.mag)]
    extra = [v for v in (m50, ideal_limit) if math.isfinite(v)]
    lo = math.floor(min(mags + extra, default=20.0) * 2 - 1) / 2
    hi = math.ceil(max(mags + extra, default=25.0) * 2 + 1) / 2
    left, right, top, bottom = 46.0, 14.0, 26.0, 40.0
    pw, ph = width - left - right, height - top - bottom

    def sx(m: float) -> float:
        return left + (m - lo) / (hi - lo) * pw

    def sy(e: float) -> float:
        return top + (1.0 - e) * ph

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="efficiency" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img">'),
           f"<title>{escape(title)}</title>",
           f'<text x="{left:.0f}" y="16" class="svg-title">{escape(title)}</text>',
           (f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" '
           'stroke="#444"/>')]
    for e in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(e):.1f}" y2="{sy(e):.1f}" '
                   'stroke="#ddd"/>'
                   f'<text x="{left - 5}" y="{sy(e) + 4:.1f}" text-anchor="end" class="axis">'
                   f"{e:.2f}</text>")
    m = math.ceil(lo * 2) / 2
    while m <= hi + 1e-9:
        out.append(f'<line x1="{sx(m):.1f}" x2="{sx(m):.1f}" y1="{top + ph}" '
                   f'y2="{top + ph + 4}" stroke="#444"/><text x="{sx(m):.1f}" '
                   f'y="{top + ph + 16}" text-anchor="middle" class="axis">{m:g}</text>')
        m += 0.5
    out.append(f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" '
               'class="axis">injected magnitude (AB)</text>'
               f'<text x="12" y="{top + ph / 2:.0f}" text-anchor="middle" class="axis" '
               f'transform="rotate(-90 12 {top + ph / 2:.0f})">fraction recovered</text>')
    grid = np.linspace(lo, hi, 121)
    for mod in models:
        if not (math.isfinite(mod.m50) and math.isfinite(mod.width) and mod.width > 0):
            continue
        plateau = mod.plateau if math.isfinite(mod.plateau) else 1.0
        eff = efficiency_model(grid, mod.m50, mod.width, plateau, model=mod.model)
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(g):.1f},{sy(e):.1f}"
                     for i, (g, e) in enumerate(zip(grid, eff)))
        style = ('stroke="#1f5fbf" stroke-width="2.2"' if mod.main
                 else 'stroke="#9bb7e0" stroke-width="1" stroke-opacity="0.8"')
        out.append(f'<path class="eff-model" data-label="{escape(mod.label)}" '
                   f'data-m50="{mod.m50!r}" d="{d}" fill="none" {style}>'
                   f"<title>{escape(mod.label)}: m50 {mod.m50:.2f}</title></path>")
    for p in points:
        if not math.isfinite(p.mag):
            continue
        x, y = sx(p.mag), sy(p.efficiency)
        y_hi, y_lo = sy(min(1.0, p.efficiency + p.err_hi)), sy(max(0.0, p.efficiency - p.err_lo))
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_hi:.1f}" y2="{y_lo:.1f}" '
                   'stroke="#333"/>'
                   f'<circle class="eff-point" data-mag="{p.mag!r}" data-n="{p.n}" '
                   f'data-k="{p.n_recovered}" data-eff="{p.efficiency!r}" cx="{x:.1f}" '
                   f'cy="{y:.1f}" r="3.2" fill="#111"><title>{p.mag:.2f} mag: '
                   f"{p.n_recovered}/{p.n}</title></circle>")
    for value, cls, label, dash in ((m50, "m50", "m50", ""),
                                    (ideal_limit, "ideal-limit", "ideal 5σ", "5,4")):
        if not math.isfinite(value):
            continue
        x = sx(value)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line class="{cls}" data-{cls}="{value!r}" x1="{x:.1f}" x2="{x:.1f}" '
                   f'y1="{top}" y2="{top + ph}" stroke="#c0392b" stroke-width="1.5"'
                   f"{dash_attr}/>"
                   f'<text x="{x + 3:.1f}" y="{top + 12 if cls == "m50" else top + 26}" '
                   f'class="axis" fill="#c0392b">{label} {value:.2f}</text>')
    out.append("</svg>")
    return "\n".join(out)
