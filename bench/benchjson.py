"""What the bench scripts do with a result: the machine's load, and one JSON object printed
(and written to ``--out`` when given).

Imported by the scripts of this folder (``python bench/NAME.py`` puts the folder on
``sys.path``); not part of the package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["emit", "load_average"]


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to 0.01."""
    return [round(v, 2) for v in os.getloadavg()]


def emit(result: Any, out: Path | None) -> None:
    """Print ``result`` as indented JSON and, if ``out`` is given, write the same text there
    (with a final newline)."""
    text = json.dumps(result, indent=1)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n")
