"""The garbage collector skips what a process held at its first run, and still collects what comes after."""

import gc
import weakref

import pytest

from tl_core.config import DataConfig, RunConfig
from tl_core.errors import TransferLabError
from tl_core.runs.store import RunStore
from tl_core.training import collector, runner


class _Node:
    """A tracked object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.partner: _Node | None = None


def _is_tracked_by_collections(target: object) -> bool:
    return any(candidate is target for candidate in gc.get_objects())


@pytest.fixture
def fresh_process_state(monkeypatch):
    """As if no run had frozen anything yet in this process; afterwards the collector is as the test found it.

    A test that freezes leaves every object of the test process in the permanent generation: unfreezing the
    ones this test froze (and only when none were frozen before) keeps later tests' collections as they were.
    """
    frozen_before = gc.get_freeze_count()
    was_enabled = gc.isenabled()
    monkeypatch.setattr(collector, "_frozen", False)
    yield
    if frozen_before == 0:
        gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_first_call_freezes_what_is_alive_and_later_garbage_is_still_collected(fresh_process_state):
    alive_before = _Node()
    assert _is_tracked_by_collections(alive_before)

    assert collector.freeze_startup_objects() is True
    assert not _is_tracked_by_collections(alive_before)  # collections no longer walk it
    assert gc.get_freeze_count() > 0

    made_after = _Node()
    made_after.partner = _Node()
    made_after.partner.partner = made_after  # a cycle: only the collector can free it
    watcher = weakref.ref(made_after)
    assert _is_tracked_by_collections(made_after)
    del made_after
    gc.collect()
    assert watcher() is None


def test_later_calls_freeze_nothing_more(fresh_process_state):
    assert collector.freeze_startup_objects() is True
    frozen = gc.get_freeze_count()
    made_after = [_Node() for _ in range(50)]
    assert collector.freeze_startup_objects() is False
    assert (
        gc.get_freeze_count() <= frozen
    )  # nothing added (frozen objects can still be freed when nothing refers to them)
    assert all(_is_tracked_by_collections(node) for node in made_after[:3])


def test_a_run_freezes_the_start_up_objects_before_it_reads_any_data(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "freeze_startup_objects", lambda: calls.append("frozen"))
    config = RunConfig(data=DataConfig(source=str(tmp_path / "no-such-folder")))
    with pytest.raises(TransferLabError, match="does not exist"):
        runner.run_experiment(config, store=RunStore(tmp_path / "workspace"))
    assert calls == ["frozen"]
