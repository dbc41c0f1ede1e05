"""desgw.train: training data for the real/bogus classifier, simulated difference-image
scenes run through the runtime detection and measurement (used by
``scripts/train_realbogus.py``; nothing at run time imports it).

The public entry points are listed in ``__all__``; each is imported from its module on first use,
so ``import desgw.train`` stays cheap (the command line imports only what a command needs).
"""

from __future__ import annotations

from typing import Any

from desgw.util.lazy import lazy_attribute, lazy_dir

__all__ = [
    "TrainingSet",
    "make_training_set",
    "roc_summary",
]

_LAZY: dict[str, str] = {
    "TrainingSet": "realbogus_sim",
    "make_training_set": "realbogus_sim",
    "roc_summary": "realbogus_sim",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
