"""The night of an exposure's product folder, for commands whose ``-n`` is optional.

An exposure's single-epoch products live in ``{out}/{cache}/{schema}/exp/{nite}/{expnum}/``
(:func:`desgw.io.naming.exposure_dir`); the night is the exposure's, fixed when ``se`` ran.
:func:`resolve_product_nite` finds it, and refuses a ``-n`` that contradicts it (the original
``RUN_DIFFIMG_PIPELINE.sh`` required ``-n``; desgw used to ignore a wrong value silently).
"""

from __future__ import annotations

import os
from pathlib import Path

from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.naming import immask_name

__all__ = ["resolve_product_nite"]


def resolve_product_nite(out_root: str | os.PathLike[str], expnum: int, band: str, ccdnum: int,
                         rnum: int, pnum: int, *, cache: str, schema: str,
                         nite: int | None = None) -> int:
    """The night ``YYYYMMDD`` of the folder holding a CCD's single-epoch products.

    Parameters
    ----------
    out_root : path
        Product root.
    expnum, band, ccdnum, rnum, pnum
        The CCD's product (``D{expnum}_{band}_{ccd}_r{R}p{P}_immask.fits.fz``).
    cache, schema : str
        The product tree (``scratch``/``persistent``, ``gw``/``wsdiff``).
    nite : int or None
        The night given by the user (``-n``), checked; None: found.

    Returns
    -------
    int

    Raises
    ------
    MissingFileError
        No folder of the exposure holds the product.
    DesgwInputError
        ``nite`` is given and the product is under another night (the message names it), or
        it is under several nights and ``nite`` is None.
    """
    base = Path(out_root) / cache / schema / "exp"
    name = immask_name(int(expnum), band, int(ccdnum), int(rnum), int(pnum))
    nites = sorted(int(p.parent.parent.name) for p in base.glob(f"*/{int(expnum)}/{name}")
                   if p.parent.parent.name.isdigit())
    if not nites:
        raise MissingFileError(base, None, f"no single-epoch product {name} of exposure {expnum} "
                               f"under any night (looked for */{expnum}/{name}); run "
                               f"`desgw se` first")
    if nite is not None:
        if int(nite) in nites:
            return int(nite)
        raise DesgwInputError(base, None, f"-n {nite} contradicts exposure {expnum}: its "
                                f"products ({name}) are under night {nites[0]}"
                                + (f" (and {nites[1:]})" if len(nites) > 1 else "")
                                + f"; give -n {nites[0]} or leave -n out", nite=int(nite),
                                found=tuple(nites))
    if len(nites) > 1:
        raise DesgwInputError(base, None, f"exposure {expnum} has {name} under several "
                                f"nights {nites}: choose one with -n", nite=None,
                                found=tuple(nites))
    return nites[0]
