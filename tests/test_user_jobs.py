"""One job manager per server, seen per user: a shared fair queue, each user's runs in their own store."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tests.job_helpers import FakeRun  # noqa: E402
from tests.job_helpers import tiny_config as _config
from tests.job_helpers import wait_until as _until
from tl_core.jobs.manager import JobManager  # noqa: E402
from tl_core.server.workspaces import QuotaExceededError, UnsafePathError, Workspaces  # noqa: E402
from ui.state import UserJobs  # noqa: E402


@pytest.fixture()
def server(tmp_path):
    spaces = Workspaces(tmp_path / "root", disk_quota_mb=1)
    run = FakeRun(blocking=True)
    manager = JobManager(spaces.workspace_for(_trainer()).store(), run=run, max_concurrent=1)
    yield spaces, manager, run
    run.release.set()
    manager.shutdown(stop_jobs=True)


def _trainer():
    from tl_core.server.accounts import User

    return User("tara", "trainer", "Tara")


def _student(name):
    from tl_core.server.accounts import User

    return User(name, "student", name.title())


def _jobs(spaces, manager, user):
    return UserJobs(manager, spaces.workspace_for(user).store(), user, spaces)


def test_users_share_one_queue_and_see_only_their_own_jobs(server, tmp_path):
    spaces, manager, run = server
    alice, bob = _jobs(spaces, manager, _student("alice")), _jobs(spaces, manager, _student("bob"))
    first = alice.submit(_config(spaces.server_datasets))
    second = bob.submit(_config(spaces.server_datasets))
    _until(lambda: manager.status(first).state == "running")
    assert (
        manager.status(second).state == "queued" and manager.status(second).queue_position == 1
    )  # one CPU slot for both
    assert alice.active_run_ids() == [first] and bob.active_run_ids() == [second]
    assert [r.id for r in alice.store.list_runs()] == [first] and [r.id for r in bob.store.list_runs()] == [second]
    assert manager.status(second).owner == "bob"
    assert not alice.stop(second) and manager.status(second).state == "queued", "one user cannot stop another's job"
    run.release.set()
    _until(lambda: manager.status(second).state == "finished")
    assert bob.store.get(second).status == "completed"


def test_a_user_over_the_disk_quota_cannot_queue(server, tmp_path):
    spaces, manager, _ = server
    carol = _jobs(spaces, manager, _student("carol"))
    (spaces.workspace_for(_student("carol")).datasets / "big.bin").write_bytes(b"x" * 2_000_000)
    spaces.forget_usage("carol")
    with pytest.raises(QuotaExceededError):
        carol.submit(_config(spaces.server_datasets))
    assert carol.store.list_runs() == []


def test_a_student_cannot_queue_another_users_data_or_weights(server):
    spaces, manager, _ = server
    alice, bob = _student("alice"), _student("bob")
    bobs_data = spaces.workspace_for(bob).datasets / "mine"
    bobs_data.mkdir(parents=True)
    jobs = _jobs(spaces, manager, alice)
    with pytest.raises(UnsafePathError):
        jobs.submit(_config(bobs_data))
    config = _config(spaces.server_datasets)
    with pytest.raises(UnsafePathError):
        jobs.submit(config.replace(model=dataclasses.replace(config.model, weights="/etc/weights.keras")))
    assert jobs.store.list_runs() == []


def test_a_run_that_recorded_its_outcome_is_no_longer_active_while_its_process_exits(server):
    spaces, manager, run = server
    alice = _jobs(spaces, manager, _student("alice"))
    run_id = alice.submit(_config(spaces.server_datasets))
    _until(lambda: alice.store.get(run_id).status == "running")  # the job marked its run running
    assert alice.active_run_ids() == [run_id]
    # The worker writes the outcome a moment before its process exits and the queue frees the slot.
    alice.store.finish_run(run_id, "completed", metrics={"epochs_run": 1})
    _until(lambda: alice.active_run_ids() == [])  # not "1 queued" and "Queue training" beside a completed run
    assert run_id in manager.active_run_ids(), "the queue still holds the job: the window this test is about"
    run.release.set()
