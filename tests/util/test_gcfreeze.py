"""gc.freeze after a worker's first task of a kind: garbage collected first, once per kind,
and collection of later garbage unchanged."""

import gc
import weakref

import pytest

from desgw.util import gcfreeze
from desgw.util.gcfreeze import freeze_after_first_task


class _Node:
    me: object = None


def _cycle() -> weakref.ref:
    """A self-referencing object that only the cyclic collector can free."""
    n = _Node()
    n.me = n
    return weakref.ref(n)


@pytest.fixture()
def no_automatic_gc(monkeypatch):
    monkeypatch.setattr(gcfreeze, "_frozen_kinds", set())
    monkeypatch.delenv("DESGW_GC_FREEZE", raising=False)
    was = gc.isenabled()
    gc.disable()  # no automatic collection may free the test's cycles behind its back
    try:
        yield
    finally:
        gc.unfreeze()
        if was:
            gc.enable()


def test_garbage_is_collected_before_the_freeze_and_later_garbage_still_is(no_automatic_gc):
    before = _cycle()
    assert before() is not None  # no collection yet
    assert freeze_after_first_task("se")
    assert before() is None  # collected, not made permanent
    n_frozen = gc.get_freeze_count()
    assert n_frozen > 1000  # the modules' objects
    # a second task of the kind does nothing; one of a new kind freezes what it added
    assert not freeze_after_first_task("se")
    assert gc.get_freeze_count() == n_frozen
    keep = [_Node() for _ in range(100)]
    assert freeze_after_first_task("diff")
    assert gc.get_freeze_count() >= n_frozen + 100
    # garbage made after the freeze is collected as before
    later = _cycle()
    assert later() is not None
    gc.collect()
    assert later() is None
    del keep


def test_turned_off_by_the_environment(no_automatic_gc, monkeypatch):
    monkeypatch.setenv("DESGW_GC_FREEZE", "0")
    assert not freeze_after_first_task("se")
    assert gc.get_freeze_count() == 0
