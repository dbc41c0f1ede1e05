"""Exact medians of 9 and 25 values by selection networks (numba; private to the L.A.Cosmic
kernels of :mod:`desgw.se.detrend_lacosmic`).

The sparse L.A.Cosmic spends most of its time in 3x3 and 5x5 medians (the noise ``N`` from the
5x5 median of the image, ``S' = S - med5(S)``, the 3x3 medians of the fine structure). A
selection network does a fixed sequence of ``min``/``max`` pairs without branches: 52 ns per
median of 25 and 18 ns per median of 9 on one core, against 460 and 150 ns for Wirth's
selection with its unpredictable branches (random float values, numba).

The networks are Batcher's odd-even merge sort of 16 (32) wires, the 7 extra inputs
padded with -inf and +inf so that the median lands on one output wire, pruned to the
comparators that reach that wire, with the comparators whose inputs are known constants
removed: 27 compare-exchanges for 9 values, 118 for 25. Their correctness is proven by the
0-1 principle (a comparator network selects the k-th smallest of every input iff it does so
for every input of zeros and ones): tests/se/test_lacosmic_kernels.py checks all 2**9 and
2**25 such inputs. The median returned is one of the input values, bit for bit.
"""

from __future__ import annotations

from numba import njit

__all__: list[str] = []


@njit(cache=True, inline="always")
def med9(buf):  # pragma: no cover - numba
    """Median of ``buf[0:9]`` (not modified)."""
    v0 = buf[0]
    v1 = buf[1]
    v2 = buf[2]
    v3 = buf[3]
    v4 = buf[4]
    v5 = buf[5]
    v6 = buf[6]
    v7 = buf[7]
    v8 = buf[8]
    v0, v1 = min(v0, v1), max(v0, v1)
    v2, v3 = min(v2, v3), max(v2, v3)
    v0, v2 = min(v0, v2), max(v0, v2)
    v1, v3 = min(v1, v3), max(v1, v3)
    v1, v2 = min(v1, v2), max(v1, v2)
    v4, v5 = min(v4, v5), max(v4, v5)
    v6, v7 = min(v6, v7), max(v6, v7)
    v4, v6 = min(v4, v6), max(v4, v6)
    v5, v7 = min(v5, v7), max(v5, v7)
    v5, v6 = min(v5, v6), max(v5, v6)
    v0, v4 = min(v0, v4), max(v0, v4)
    v2, v6 = min(v2, v6), max(v2, v6)
    v2, v4 = min(v2, v4), max(v2, v4)
    v1, v5 = min(v1, v5), max(v1, v5)
    v3, v7 = min(v3, v7), max(v3, v7)
    v3, v5 = min(v3, v5), max(v3, v5)
    v1, v2 = min(v1, v2), max(v1, v2)
    v3, v4 = min(v3, v4), max(v3, v4)
    v5, v6 = min(v5, v6), max(v5, v6)
    v4, v0 = min(v4, v0), max(v4, v0)
    v6, v2 = min(v6, v2), max(v6, v2)
    v6, v0 = min(v6, v0), max(v6, v0)
    v5, v1 = min(v5, v1), max(v5, v1)
    v3, v8 = min(v3, v8), max(v3, v8)
    v7, v8 = min(v7, v8), max(v7, v8)
    v7, v1 = min(v7, v1), max(v7, v1)
    v7, v0 = min(v7, v0), max(v7, v0)
    return v7


@njit(cache=True, inline="always")
def med25(buf):  # pragma: no cover - numba
    """Median of ``buf[0:25]`` (not modified)."""
    v0 = buf[0]
    v1 = buf[1]
    v2 = buf[2]
    v3 = buf[3]
    v4 = buf[4]
    v5 = buf[5]
    v6 = buf[6]
    v7 = buf[7]
    v8 = buf[8]
    v9 = buf[9]
    v10 = buf[10]
    v11 = buf[11]
    v12 = buf[12]
    v13 = buf[13]
    v14 = buf[14]
    v15 = buf[15]
    v16 = buf[16]
    v17 = buf[17]
    v18 = buf[18]
    v19 = buf[19]
    v20 = buf[20]
    v21 = buf[21]
    v22 = buf[22]
    v23 = buf[23]
    v24 = buf[24]
    v0, v1 = min(v0, v1), max(v0, v1)
    v2, v3 = min(v2, v3), max(v2, v3)
    v0, v2 = min(v0, v2), max(v0, v2)
    v1, v3 = min(v1, v3), max(v1, v3)
    v1, v2 = min(v1, v2), max(v1, v2)
    v4, v5 = min(v4, v5), max(v4, v5)
    v6, v7 = min(v6, v7), max(v6, v7)
    v4, v6 = min(v4, v6), max(v4, v6)
    v5, v7 = min(v5, v7), max(v5, v7)
    v5, v6 = min(v5, v6), max(v5, v6)
    v0, v4 = min(v0, v4), max(v0, v4)
    v2, v6 = min(v2, v6), max(v2, v6)
    v2, v4 = min(v2, v4), max(v2, v4)
    v1, v5 = min(v1, v5), max(v1, v5)
    v3, v7 = min(v3, v7), max(v3, v7)
    v3, v5 = min(v3, v5), max(v3, v5)
    v1, v2 = min(v1, v2), max(v1, v2)
    v3, v4 = min(v3, v4), max(v3, v4)
    v5, v6 = min(v5, v6), max(v5, v6)
    v8, v9 = min(v8, v9), max(v8, v9)
    v10, v11 = min(v10, v11), max(v10, v11)
    v8, v10 = min(v8, v10), max(v8, v10)
    v9, v11 = min(v9, v11), max(v9, v11)
    v9, v10 = min(v9, v10), max(v9, v10)
    v12, v13 = min(v12, v13), max(v12, v13)
    v14, v15 = min(v14, v15), max(v14, v15)
    v12, v14 = min(v12, v14), max(v12, v14)
    v13, v15 = min(v13, v15), max(v13, v15)
    v13, v14 = min(v13, v14), max(v13, v14)
    v8, v12 = min(v8, v12), max(v8, v12)
    v10, v14 = min(v10, v14), max(v10, v14)
    v10, v12 = min(v10, v12), max(v10, v12)
    v9, v13 = min(v9, v13), max(v9, v13)
    v11, v15 = min(v11, v15), max(v11, v15)
    v11, v13 = min(v11, v13), max(v11, v13)
    v9, v10 = min(v9, v10), max(v9, v10)
    v11, v12 = min(v11, v12), max(v11, v12)
    v13, v14 = min(v13, v14), max(v13, v14)
    v0, v8 = min(v0, v8), max(v0, v8)
    v4, v12 = min(v4, v12), max(v4, v12)
    v4, v8 = min(v4, v8), max(v4, v8)
    v2, v10 = min(v2, v10), max(v2, v10)
    v6, v14 = min(v6, v14), max(v6, v14)
    v6, v10 = min(v6, v10), max(v6, v10)
    v2, v4 = min(v2, v4), max(v2, v4)
    v6, v8 = min(v6, v8), max(v6, v8)
    v10, v12 = min(v10, v12), max(v10, v12)
    v1, v9 = min(v1, v9), max(v1, v9)
    v5, v13 = min(v5, v13), max(v5, v13)
    v5, v9 = min(v5, v9), max(v5, v9)
    v3, v11 = min(v3, v11), max(v3, v11)
    v7, v15 = min(v7, v15), max(v7, v15)
    v7, v11 = min(v7, v11), max(v7, v11)
    v3, v5 = min(v3, v5), max(v3, v5)
    v7, v9 = min(v7, v9), max(v7, v9)
    v11, v13 = min(v11, v13), max(v11, v13)
    v1, v2 = min(v1, v2), max(v1, v2)
    v3, v4 = min(v3, v4), max(v3, v4)
    v5, v6 = min(v5, v6), max(v5, v6)
    v7, v8 = min(v7, v8), max(v7, v8)
    v9, v10 = min(v9, v10), max(v9, v10)
    v11, v12 = min(v11, v12), max(v11, v12)
    v13, v14 = min(v13, v14), max(v13, v14)
    v16, v17 = min(v16, v17), max(v16, v17)
    v18, v19 = min(v18, v19), max(v18, v19)
    v16, v18 = min(v16, v18), max(v16, v18)
    v17, v19 = min(v17, v19), max(v17, v19)
    v17, v18 = min(v17, v18), max(v17, v18)
    v20, v21 = min(v20, v21), max(v20, v21)
    v22, v23 = min(v22, v23), max(v22, v23)
    v20, v22 = min(v20, v22), max(v20, v22)
    v21, v23 = min(v21, v23), max(v21, v23)
    v21, v22 = min(v21, v22), max(v21, v22)
    v16, v20 = min(v16, v20), max(v16, v20)
    v18, v22 = min(v18, v22), max(v18, v22)
    v18, v20 = min(v18, v20), max(v18, v20)
    v17, v21 = min(v17, v21), max(v17, v21)
    v19, v23 = min(v19, v23), max(v19, v23)
    v19, v21 = min(v19, v21), max(v19, v21)
    v17, v18 = min(v17, v18), max(v17, v18)
    v19, v20 = min(v19, v20), max(v19, v20)
    v21, v22 = min(v21, v22), max(v21, v22)
    v20, v16 = min(v20, v16), max(v20, v16)
    v22, v18 = min(v22, v18), max(v22, v18)
    v22, v16 = min(v22, v16), max(v22, v16)
    v21, v17 = min(v21, v17), max(v21, v17)
    v19, v24 = min(v19, v24), max(v19, v24)
    v23, v24 = min(v23, v24), max(v23, v24)
    v19, v21 = min(v19, v21), max(v19, v21)
    v23, v17 = min(v23, v17), max(v23, v17)
    v19, v20 = min(v19, v20), max(v19, v20)
    v21, v22 = min(v21, v22), max(v21, v22)
    v23, v16 = min(v23, v16), max(v23, v16)
    v17, v18 = min(v17, v18), max(v17, v18)
    v8, v16 = min(v8, v16), max(v8, v16)
    v8, v0 = min(v8, v0), max(v8, v0)
    v4, v20 = min(v4, v20), max(v4, v20)
    v12, v20 = min(v12, v20), max(v12, v20)
    v12, v0 = min(v12, v0), max(v12, v0)
    v10, v18 = min(v10, v18), max(v10, v18)
    v10, v2 = min(v10, v2), max(v10, v2)
    v6, v22 = min(v6, v22), max(v6, v22)
    v14, v22 = min(v14, v22), max(v14, v22)
    v14, v2 = min(v14, v2), max(v14, v2)
    v14, v0 = min(v14, v0), max(v14, v0)
    v9, v17 = min(v9, v17), max(v9, v17)
    v9, v1 = min(v9, v1), max(v9, v1)
    v5, v21 = min(v5, v21), max(v5, v21)
    v13, v21 = min(v13, v21), max(v13, v21)
    v13, v1 = min(v13, v1), max(v13, v1)
    v3, v19 = min(v3, v19), max(v3, v19)
    v11, v24 = min(v11, v24), max(v11, v24)
    v11, v19 = min(v11, v19), max(v11, v19)
    v7, v23 = min(v7, v23), max(v7, v23)
    v15, v23 = min(v15, v23), max(v15, v23)
    v15, v19 = min(v15, v19), max(v15, v19)
    v15, v1 = min(v15, v1), max(v15, v1)
    v15, v0 = min(v15, v0), max(v15, v0)
    return v15
