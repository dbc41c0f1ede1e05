"""The polynomial terms and design matrix of TAN-SIP distortion fits (one home for the
astrometric solver, :mod:`desgw.se.astrometry`, and the optics-model WCS,
:mod:`desgw.se.process_wcs`)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["sip_terms", "sip_design"]


def sip_terms(order: int, start: int = 0) -> list[tuple[int, int]]:
    """Exponents ``(p, q)`` of the terms ``u**p v**q`` with ``start <= p + q <= order``.

    Ordered by total degree, then by decreasing ``p`` (``(1, 0), (0, 1), (2, 0), (1, 1)...``).
    """
    return [(p, n - p) for n in range(start, order + 1) for p in range(n, -1, -1)]


def sip_design(u: NDArray, v: NDArray, terms: list[tuple[int, int]]) -> NDArray:
    """Design matrix (N, len(terms)): column ``k`` is ``u**p v**q`` for ``terms[k] = (p, q)``.

    Powers are built by repeated multiplication (cheaper than ``**`` per column).
    """
    top = max(p + q for p, q in terms)
    upow = [np.ones_like(u)]
    vpow = [np.ones_like(v)]
    for _ in range(top):
        upow.append(upow[-1] * u)
        vpow.append(vpow[-1] * v)
    return np.column_stack([upow[p] * vpow[q] for p, q in terms])
