"""Where ``desgw demo`` puts things under its output folder (the layout the demo writes and
the report reads: :mod:`desgw.workflow.demo`, :mod:`desgw.report.html`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoLayout", "demo_layout"]


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo puts things under ``OUTDIR`` (absolute paths)."""

    root: Path
    sim: Path
    refcat: Path
    out: Path
    db: Path
    report_dir: Path

    @property
    def report(self) -> Path:
        """The HTML report."""
        return self.report_dir / "index.html"

    @property
    def record(self) -> Path:
        """``demo.json``: parameters and timings of the last run."""
        return self.root / "demo.json"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db}"


def demo_layout(outdir: str | os.PathLike[str]) -> DemoLayout:
    """The folders of a demo in ``outdir``: ``sim/``, ``refcat/``, ``out/``, ``desgw.sqlite``
    and ``report/``."""
    root = Path(outdir).expanduser().absolute()
    return DemoLayout(root=root, sim=root / "sim", refcat=root / "refcat", out=root / "out",
                      db=root / "desgw.sqlite", report_dir=root / "report")
