"""Decoded calibration (and raw) planes kept on disk, uncompressed, for later CCD tasks.

A calibration file (bias, flat, bad-pixel mask) written as ``.fits.fz`` is tile-compressed
losslessly: decoding one CCD's GZIP_2 float32 plane costs ~0.2 CPU-s, and every exposure's
task of that CCD paid it again for the bias and again for the flat. Lossless float codecs
gain little on these planes (zstd of the byte-shuffled bias: 1.2x; flat 1.6x), so the cache
holds the decoded plane as it is: one ``.npy`` file per CCD (32 MB for a float32
2048 x 4096 plane), read back in ~0.01 CPU-s.

Layout under the cache root (``Settings.calib_cache_dir``, ``OUT/cache/calib`` by default)::

    {source file name}-{hash of its resolved path}/
        v{FORMAT}-{size}-{mtime_ns}-{inode}/ccd{CCDNUM:02d}.npy

The inner folder names one version of the source file: a calibration file rewritten or
replaced (another size, modification time or inode) is never served from the old planes; the
first task that decodes the new version removes the folders of older versions. A plane is
written atomically (temporary name, then rename) by the first task that decodes it, so two
workers racing on one CCD both write complete files and either wins. Only tile-compressed
HDUs are cached (an uncompressed FITS plane reads as fast as the ``.npy``).

A cached plane that cannot be read back, or does not have the dtype and shape of the
source's header, is logged, removed and decoded from the source again: the cache never turns
a good calibration file into a failure, and the source's own problems (a corrupt HDU) are
still reported by the source's reader, naming file, HDU and problem. The folder can be
deleted at any time.

The same store holds raw CCDs that other CCDs' crosstalk corrections need
(``Settings.raw_cache_dir``, :class:`desgw.io.raw.RawExposure`): the first task to decode a
raw CCD keeps its integer pixels (17.9 MB), and the CCD's own task and its crosstalk victims
read them instead of decoding again (~0.2 CPU-s each). Raw files are many, so that store is
bounded by ``max_sources``: when the planes of a new file are first kept, the folders of all
but the ``max_sources`` most recently used files are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from .atomic import atomic_write_path, clean_stale_temp_files
from .fitsindex import FileKey

__all__ = ["CACHE_FORMAT", "CalibCache"]

log = logging.getLogger(__name__)

#: Version of the cached layout; part of every version folder's name (bump to invalidate).
CACHE_FORMAT = 1


class CalibCache:
    """Decoded calibration planes under one cache root.

    Parameters
    ----------
    root : str or os.PathLike
        The cache folder (created on the first write).
    max_sources : int or None
        Keep the planes of at most this many source files (the most recently used; None: no
        limit). A reader whose folder was removed meanwhile simply decodes its source.
    """

    def __init__(self, root: str | os.PathLike[str], max_sources: int | None = None) -> None:
        self.root = Path(root)
        self.max_sources = max_sources

    def _source_dir(self, key: FileKey) -> Path:
        digest = hashlib.sha1(key.path.encode("utf-8")).hexdigest()[:12]
        return self.root / f"{Path(key.path).name}-{digest}"

    @staticmethod
    def _version_name(key: FileKey) -> str:
        return f"v{CACHE_FORMAT}-{key.size}-{key.mtime_ns}-{key.inode}"

    def plane_path(self, key: FileKey, ccdnum: int) -> Path:
        """Where CCD ``ccdnum``'s decoded plane of the source version ``key`` is kept."""
        return self._source_dir(key) / self._version_name(key) / f"ccd{int(ccdnum):02d}.npy"

    def load(self, key: FileKey, ccdnum: int, dtype: np.dtype,
             shape: tuple[int, ...]) -> np.ndarray | None:
        """The cached plane, or None when absent or unusable (then removed).

        Parameters
        ----------
        key : FileKey
            The source file's version (:func:`desgw.io.fitsindex.file_key`).
        ccdnum : int
        dtype : numpy.dtype
            dtype the source's header gives (native byte order).
        shape : tuple of int
            numpy shape the source's header gives.
        """
        path = self.plane_path(key, ccdnum)
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, OSError, EOFError...
            log.warning("calibration cache %s unreadable (%s): removed, decoding %s again",
                        path, exc, key.path)
            self._remove(path)
            return None
        if data.dtype != np.dtype(dtype) or tuple(data.shape) != tuple(shape):
            log.warning("calibration cache %s holds %s %s, the source %s has %s %s: removed",
                        path, data.dtype, data.shape, key.path, np.dtype(dtype), tuple(shape))
            self._remove(path)
            return None
        if self.max_sources is not None:
            with contextlib.suppress(OSError):  # most recently used, for the bound
                os.utime(path.parent.parent)
        return data

    def store(self, key: FileKey, ccdnum: int, data: np.ndarray) -> Path | None:
        """Keep ``data`` as CCD ``ccdnum``'s plane of source version ``key`` (atomically).

        Folders of other versions of the same source are removed. A failure to write (disk
        full, read-only folder) is logged and returns None: the plane is then decoded again
        next time, nothing fails.
        """
        path = self.plane_path(key, ccdnum)
        fresh = not path.parent.is_dir()
        try:
            with atomic_write_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(data), allow_pickle=False)
        except OSError as exc:
            log.warning("calibration cache: cannot write %s (%s); decoding it each time",
                        path, exc)
            return None
        if fresh:  # once per source version: tidy up what older versions and killed writers left
            clean_stale_temp_files(self.root)
            self._drop_other_versions(path.parent)
            if self.max_sources is not None:
                self._drop_least_used(path.parent.parent)
        else:
            with contextlib.suppress(OSError):
                os.utime(path.parent.parent)
        return path

    def _drop_least_used(self, keep: Path) -> None:
        assert self.max_sources is not None
        others = []
        for d in self.root.iterdir():
            if d != keep and d.is_dir():
                with contextlib.suppress(OSError):
                    others.append((d.stat().st_mtime_ns, d))
        others.sort(reverse=True)
        for _, old in others[max(0, self.max_sources - 1):]:
            log.debug("decoded-plane cache: removing %s (least recently used)", old)
            shutil.rmtree(old, ignore_errors=True)

    def _drop_other_versions(self, keep: Path) -> None:
        for old in keep.parent.iterdir():
            if old != keep and old.is_dir() and old.name.startswith("v"):
                log.info("calibration cache: %s changed since %s was made; removing it",
                         keep.parent.name, old)
                shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
