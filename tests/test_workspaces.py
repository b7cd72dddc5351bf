"""Per-user workspaces: path checks (traversal, absolute, symlinks, NUL), isolation, quotas and cleanup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tl_core.errors import RunNotFoundError, TransferLabError
from tl_core.server.accounts import User
from tl_core.server.workspaces import LOCAL_USER, QuotaExceededError, UnsafePathError, Workspaces, safe_join

ALICE = User("alice", "student", "Alice")
BOB = User("bob", "student", "Bob")
TRAINER = User("tess", "trainer", "Tess")
MB = 1 << 20


@pytest.fixture()
def spaces(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "root", disk_quota_mb=3, max_upload_mb=2)


def _write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def test_safe_join_keeps_names_inside(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    assert safe_join(root, "flowers") == root.resolve() / "flowers"
    assert safe_join(root, "flowers/roses", "1.jpg") == root.resolve() / "flowers" / "roses" / "1.jpg"
    assert safe_join(root, "a..b") == root.resolve() / "a..b"  # dots inside a name are fine


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../other", "'\\.\\.'"),
        ("flowers/../../other", "'\\.\\.'"),
        ("..\\other", "'\\.\\.'"),
        ("/etc/passwd", "absolute path"),
        ("C:\\Windows", "absolute path"),
        ("C:relative", "absolute path"),
        ("\\\\server\\share", "absolute path"),
        ("flow\x00ers", "NUL byte"),
        ("", "empty name"),
    ],
)
def test_safe_join_refuses_escapes(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(UnsafePathError, match=message):
        safe_join(tmp_path, name)


def test_safe_join_refuses_symlinks_that_escape(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "inner").mkdir()
    (root / "ok-link").symlink_to(root / "inner", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        safe_join(root, "link", "file.txt")
    assert safe_join(root, "ok-link") == (root / "inner").resolve()


def test_workspace_layout_and_own_run_store(spaces: Workspaces) -> None:
    space = spaces.workspace_for(ALICE)
    assert space.root == spaces.root / "users" / "alice"
    assert all(folder.is_dir() for folder in (space.datasets, space.cache, space.runs))
    store = space.store()
    assert store.workspace == space.root and store.run_dir("20260101-000000-abcdef").parent == space.runs
    assert space.dataset_path("flowers") == space.datasets / "flowers"
    with pytest.raises(UnsafePathError):
        space.dataset_path("../../bob/datasets/flowers")


def test_student_cannot_reach_another_users_folder(spaces: Workspaces) -> None:
    bob_data = _write(spaces.workspace_for(BOB).datasets / "cats" / "a" / "1.png", 10)
    bob_run = (
        spaces.workspace_for(BOB)
        .store()
        .create_run(config={}, backbone="b", weights="imagenet", mode="feature-extraction")
    )
    with pytest.raises(UnsafePathError, match="cannot open bob's workspace"):
        spaces.workspace_for(ALICE, "bob")
    with pytest.raises(UnsafePathError, match="outside your workspace"):
        spaces.check_readable(ALICE, bob_data)
    alice_datasets = spaces.workspace_for(ALICE).datasets
    with pytest.raises(UnsafePathError, match="outside your workspace"):
        spaces.check_readable(ALICE, alice_datasets / ".." / ".." / "bob" / "datasets" / "cats")
    with pytest.raises(UnsafePathError):
        spaces.check_writable(ALICE, bob_data)
    with pytest.raises(RunNotFoundError):
        spaces.workspace_for(ALICE).store().get(bob_run.id)  # her store simply has no such run
    with pytest.raises(RunNotFoundError):
        spaces.check_weights_source(ALICE, f"run:{bob_run.id}")
    with pytest.raises(UnsafePathError, match="Only a trainer"):
        spaces.all_runs(ALICE)
    assert spaces.check_readable(TRAINER, bob_data) == bob_data.resolve()
    assert spaces.workspace_for(TRAINER, "bob").root == spaces.root / "users" / "bob"


def test_symlink_in_a_workspace_cannot_lead_to_another_user(spaces: Workspaces) -> None:
    bob_datasets = spaces.workspace_for(BOB).datasets
    (spaces.workspace_for(ALICE).datasets / "sneaky").symlink_to(bob_datasets, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        spaces.workspace_for(ALICE).dataset_path("sneaky")
    with pytest.raises(UnsafePathError):
        spaces.check_readable(ALICE, spaces.workspace_for(ALICE).datasets / "sneaky")


def test_shared_datasets_are_readable_but_only_trainers_write(spaces: Workspaces) -> None:
    shared = _write(spaces.server_datasets / "flowers" / "rose" / "1.png", 10)
    assert spaces.check_readable(ALICE, shared) == shared.resolve()
    assert spaces.server_dataset_path("flowers") == shared.parents[1].resolve()
    with pytest.raises(UnsafePathError):
        spaces.server_dataset_path("../users/bob")
    with pytest.raises(UnsafePathError, match="may not change"):
        spaces.check_writable(ALICE, shared)
    assert spaces.check_writable(TRAINER, shared) == shared.resolve()
    with pytest.raises(UnsafePathError, match="NUL"):
        spaces.check_readable(ALICE, "flowers\x00")


def test_weights_sources_for_students_and_trainers(spaces: Workspaces) -> None:
    own = (
        spaces.workspace_for(ALICE)
        .store()
        .create_run(config={}, backbone="b", weights="imagenet", mode="feature-extraction")
    )
    assert spaces.check_weights_source(ALICE, "imagenet") == "imagenet"
    assert spaces.check_weights_source(ALICE, f"run:{own.id[:17]}") == f"run:{own.id}"
    for source in ("/tmp/model.keras", "https://tfhub.dev/x", str(spaces.workspace_for(ALICE).datasets / "m.keras")):
        with pytest.raises(UnsafePathError, match="students start from"):
            spaces.check_weights_source(ALICE, source)
    weights = _write(spaces.server_datasets / "weights" / "w.weights.h5", 4)
    assert spaces.check_weights_source(TRAINER, str(weights)) == str(weights)
    with pytest.raises(UnsafePathError):
        spaces.check_weights_source(TRAINER, "/etc/passwd")


def test_usage_counts_datasets_caches_and_runs(spaces: Workspaces) -> None:
    space = spaces.workspace_for(ALICE)
    _write(space.datasets / "flowers" / "rose" / "1.png", 1000)
    _write(space.datasets / "flowers.zip", 500)
    _write(space.cache / "features" / "abc.npy", 300)
    run = space.store().create_run(config={}, backbone="b", weights="imagenet", mode="feature-extraction")
    _write(space.runs / run.id / "model.keras", 200)
    usage = spaces.disk_usage("alice")
    assert (usage.datasets, usage.cache, usage.runs) == (1500, 300, 200)
    assert usage.other > 0  # transferlab.db
    assert usage.total == 2000 + usage.other
    assert usage.largest[0] == ("datasets/flowers", 1000)
    _write(space.datasets / "more.zip", 700)
    assert spaces.disk_usage("alice").datasets == 1500  # measured at most every few seconds
    assert spaces.disk_usage("alice", max_age_s=0).datasets == 2200
    assert spaces.disk_usage("bob").total == 0  # no workspace yet: nothing used


def test_symlinks_are_not_followed_when_counting(spaces: Workspaces, tmp_path: Path) -> None:
    big = _write(tmp_path / "big.bin", 5 * MB)
    space = spaces.workspace_for(ALICE)
    os.symlink(big, space.datasets / "link.bin")
    assert spaces.disk_usage("alice").datasets < 1000


def test_upload_limit_and_disk_quota_messages(spaces: Workspaces) -> None:
    space = spaces.workspace_for(ALICE)
    with pytest.raises(QuotaExceededError, match=r"2\.5 MB; the server accepts at most 2 MB per upload"):
        spaces.check_upload("alice", int(2.5 * MB))
    spaces.check_upload("alice", 1 * MB)  # fits
    _write(space.datasets / "flowers" / "a.png", int(1.5 * MB))
    _write(space.cache / "images" / "cache.npy", int(0.5 * MB))
    with pytest.raises(QuotaExceededError) as raised:
        spaces.check_upload("alice", int(1.5 * MB))
    message = str(raised.value)
    assert isinstance(raised.value, TransferLabError)
    assert "over its 3 MB quota" in message and "plus 1.5 MB more" in message
    assert "datasets 1.5 MB" in message and "caches 0.5 MB" in message
    assert "datasets/flowers (1.5 MB)" in message and "Delete old runs" in message
    spaces.check_disk("alice")  # 2 MB used: still under the quota
    _write(space.runs / "x" / "model.keras", int(1.5 * MB))
    spaces.forget_usage("alice")
    with pytest.raises(QuotaExceededError, match="runs 1.5 MB"):
        spaces.check_disk("alice")
    spaces.check_disk("bob", int(2.9 * MB))  # every user has their own quota


def test_no_quota_in_personal_mode(tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "workspace", single_user=True)
    space = spaces.workspace_for(LOCAL_USER)
    assert space.root == (tmp_path / "workspace").resolve() and space.datasets == space.root / "datasets"
    _write(space.datasets / "big.bin", 3 * MB)
    spaces.check_upload("local", 500 * MB)
    assert spaces.usernames() == ["local"]
    assert spaces.check_weights_source(LOCAL_USER, str(space.datasets / "big.bin")).endswith("big.bin")


def test_trainer_sees_all_runs_and_cleans_up(spaces: Workspaces) -> None:
    alice_store = spaces.workspace_for(ALICE).store()
    bob_store = spaces.workspace_for(BOB).store()
    kept = alice_store.create_run(config={}, backbone="b", weights="imagenet", mode="feature-extraction")
    alice_store.finish_run(kept.id, "completed")
    failed = bob_store.create_run(config={}, backbone="b", weights="imagenet", mode="feature-extraction")
    bob_store.finish_run(failed.id, "failed", error="boom")
    _write(bob_store.run_dir(failed.id) / "checkpoint.keras", 4000)
    cache_entry = _write(spaces.workspace_for(ALICE).cache / "features" / "k1.npy", 9000)
    (spaces.root / "users" / "Not_A_User!").mkdir()
    assert spaces.usernames() == ["alice", "bob"]
    assert {(run.username, run.record.id) for run in spaces.all_runs(TRAINER)} == {
        ("alice", kept.id),
        ("bob", failed.id),
    }
    candidates = spaces.cleanup_candidates(TRAINER)
    assert [(c.username, c.kind) for c in candidates] == [("alice", "cache"), ("bob", "run")]
    assert candidates[0].size_bytes == 9000 and candidates[1].run_id == failed.id
    with pytest.raises(UnsafePathError):
        spaces.cleanup_candidates(ALICE)
    spaces.disk_usage("alice")
    for candidate in candidates:
        spaces.delete_candidate(TRAINER, candidate)
    assert not cache_entry.exists() and bob_store.list_runs() == []
    assert spaces.disk_usage("alice").cache == 0  # usage measured again after the deletion
    assert spaces.cleanup_candidates(TRAINER) == []
