"""Import of the optional dependencies that belong to a pip extra.

PostgreSQL (``psycopg``), batch clusters (``dask-jobqueue``) and model training
(``scikit-learn``) are not core dependencies; the code that needs one imports it through
:func:`require_extra`, so a missing one is a clear :class:`ModuleNotFoundError` naming the
extra to install instead of a bare import failure deep in a library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require_extra"]


def require_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise an error naming the pip extra that provides it.

    Parameters
    ----------
    module : str
        Importable module name (``"psycopg"``, ``"dask_jobqueue"``, ``"sklearn"``).
    extra : str
        The desgw extra that installs it (``"postgres"``, ``"batch"``, ``"train"``).
    purpose : str
        What needs it, for the message (``"PostgreSQL databases"``).

    Returns
    -------
    types.ModuleType
        The imported module.

    Raises
    ------
    ModuleNotFoundError
        When ``module`` is not installed; the message says ``pip install 'desgw[extra]'``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of its own dependencies is missing
        raise ModuleNotFoundError(
            f"{purpose} need the optional dependency {module!r}, which is not installed: "
            f"pip install 'desgw[{extra}]'", name=module) from exc
