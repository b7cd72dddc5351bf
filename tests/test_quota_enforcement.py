"""The disk quota holds for what users unpack and what their runs cache, not only for upload sizes.

Archive bombs, several archives unpacked at once (threads and processes), image and feature caches,
uploads saved from several tabs, a queued run in a real worker process, and a zip bomb uploaded through
Chromium to a real workshop server.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import tarfile  # noqa: E402
import threading  # noqa: E402
import zipfile  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tl_core.data.archive import extract_archive  # noqa: E402
from tl_core.data.image_cache import build_image_cache, check_image_cache_room  # noqa: E402
from tl_core.data.image_dataset import scan_dataset
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.data.types import Example
from tl_core.server.accounts import User  # noqa: E402
from tl_core.server.disk_budget import QUOTA_FILE, DiskBudget, QuotaExceededError, workspace_bytes  # noqa: E402
from tl_core.server.workspaces import LOCAL_USER, Workspaces  # noqa: E402
from ui.uploads import save_uploaded_file  # noqa: E402

ALICE = User("alice", "student", "Alice")
MB = 1 << 20
_ZEROS = b"\0" * MB


def _zip_of_zeros(archive: Path, megabytes_per_file: dict[str, int]) -> Path:
    """A zip whose files are all zeros: ~1 KB of archive per MB unpacked."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
        for name, megabytes in megabytes_per_file.items():
            with bundle.open(name, "w") as entry:
                for _ in range(megabytes):
                    entry.write(_ZEROS)
    return archive


def _tar_gz_of_zeros(archive: Path, name: str, megabytes: int) -> Path:
    source = archive.parent / "tar-source" / name
    source.parent.mkdir(parents=True)
    with source.open("wb") as output:
        for _ in range(megabytes):
            output.write(_ZEROS)
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(source, arcname=name)
    shutil.rmtree(archive.parent / "tar-source")
    return archive


def _alice(tmp_path: Path, quota_mb: int):  # noqa: ANN202 - (Workspaces, UserWorkspace)
    spaces = Workspaces(tmp_path / "root", disk_quota_mb=quota_mb, max_upload_mb=1)
    return spaces, spaces.workspace_for(ALICE)


def _leftovers(folder: Path) -> list[str]:
    """What an extraction or cache build left in `folder` (partial folders and files included)."""
    return sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_bomb_is_refused_at_the_quota_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    spaces, space = _alice(tmp_path, quota_mb=2)
    if kind == "zip":
        bomb = _zip_of_zeros(space.datasets / "bomb.zip", {"cats/zeros.bin": 300})
    else:
        bomb = _tar_gz_of_zeros(space.datasets / "bomb.tar.gz", "cats/zeros.bin", 300)
    assert bomb.stat().st_size < MB  # well under the 1 MB upload limit

    with pytest.raises(QuotaExceededError) as refused:
        extract_archive(bomb, space.cache / "extracted")

    message = str(refused.value)
    size = (
        "~300.0 MB" if kind == "zip" else "at least 300.0 MB"
    )  # a zip's index gives the whole size; a tar is read member by member
    assert f"Unpacking {bomb.name} would need {size}" in message and "left of its 2.0 MB quota" in message
    assert "Nothing was extracted. Upload a smaller archive" in message and "delete old runs" in message
    assert str(space.root) not in message  # names the archive, never the server's folders
    assert _leftovers(space.cache / "extracted") == []
    assert spaces.disk_usage("alice", max_age_s=0).total <= 2 * MB


def test_an_archive_that_fits_is_extracted_and_counts_against_the_quota(tmp_path: Path) -> None:
    spaces, space = _alice(tmp_path, quota_mb=3)
    archive = _zip_of_zeros(space.datasets / "data.zip", {"cats/a.bin": 1, "dogs/b.bin": 1})

    root = extract_archive(archive, space.cache / "extracted")
    assert sorted(p.name for p in root.iterdir()) == ["cats", "dogs"]
    assert extract_archive(archive, space.cache / "extracted") == root  # reused: counts nothing new

    second = _zip_of_zeros(space.datasets / "more.zip", {"cats/c.bin": 1, "dogs/d.bin": 1})
    with pytest.raises(
        QuotaExceededError,
        match=r"Unpacking more\.zip would need ~2\.0 MB; your workspace has 1\.0 MB left of its 3\.0 MB quota",
    ):
        extract_archive(second, space.cache / "extracted")
    assert spaces.disk_usage("alice", max_age_s=0).total <= 3 * MB


def _extract_or_refuse(archive: str, target: str) -> str:
    """In a thread or another process: "extracted", or the refusal's message."""
    try:
        extract_archive(Path(archive), Path(target))
    except QuotaExceededError as refused:
        return str(refused)
    return "extracted"


@pytest.mark.parametrize("concurrency", ["threads", "processes"])
def test_archives_unpacked_at_once_by_one_user_stay_under_the_quota(tmp_path: Path, concurrency: str) -> None:
    spaces, space = _alice(tmp_path, quota_mb=3)
    archives = [
        str(_zip_of_zeros(space.datasets / f"part{i}.zip", {f"class{i}/zeros.bin": 1, f"other{i}/zeros.bin": 0}))
        for i in range(4)
    ]
    # Each unpacks to 1 MB and fits alone; two fit together beside the uploads, three do not.
    target = str(space.cache / "extracted")
    if concurrency == "threads":
        start = threading.Barrier(len(archives))

        def extract(archive: str) -> str:
            start.wait()
            return _extract_or_refuse(archive, target)

        with ThreadPoolExecutor(len(archives)) as pool:
            outcomes = list(pool.map(extract, archives))
    else:
        with ProcessPoolExecutor(len(archives), mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(pool.map(_extract_or_refuse, archives, [target] * len(archives)))

    assert outcomes.count("extracted") == 2, outcomes
    refusals = [outcome for outcome in outcomes if outcome != "extracted"]
    assert len(refusals) == 2 and all(
        "would need ~1.0 MB" in refusal and "of its 3.0 MB quota" in refusal for refusal in refusals
    )
    assert not any(name.startswith(".partial") for name in _leftovers(space.cache / "extracted"))
    assert spaces.disk_usage("alice", max_age_s=0).total <= 3 * MB


def test_personal_mode_has_no_quota_file_and_extracts_as_before(tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "workspace", single_user=True)
    space = spaces.workspace_for(LOCAL_USER)
    archive = _zip_of_zeros(space.datasets / "big.zip", {"cats/zeros.bin": 5})

    assert not (space.root / QUOTA_FILE).exists() and DiskBudget.find(space.cache) is None
    assert extract_archive(archive, space.cache / "extracted").is_dir()


def test_the_quota_file_follows_the_server_setting(tmp_path: Path) -> None:
    _, space = _alice(tmp_path, quota_mb=2)
    assert DiskBudget.find(space.cache / "images") == DiskBudget(space.root, 2 * MB)
    Workspaces(tmp_path / "root", disk_quota_mb=None).workspace_for(ALICE)  # the trainer switched the quota off
    assert DiskBudget.find(space.cache / "images") is None


@pytest.fixture()
def shape_examples(tmp_path: Path) -> list[Example]:
    root = make_shapes_dataset(tmp_path / "shapes", num_classes=2, images_per_class=10, image_size=24)
    return scan_dataset(root).examples


def test_an_image_cache_over_the_quota_is_refused_before_decoding(
    tmp_path: Path, shape_examples: list[Example]
) -> None:
    space = tmp_path / "alice"
    DiskBudget(space, quota_bytes=200_000).save()  # 20 images at 64 px need 245,760 bytes
    decoded: list[int] = []

    with pytest.raises(QuotaExceededError) as refused:
        build_image_cache(
            shape_examples, 64, space / "cache" / "images", progress=lambda done, total: decoded.append(done)
        )

    message = str(refused.value)
    assert (
        "The image cache of 20 images at 64 px would need ~0.2 MB; your workspace has 0.2 MB left of its 0.2 MB quota"
        in message
    )
    assert "Train at a smaller image size (Model page) or on fewer images, or make room" in message
    assert decoded == [] and _leftovers(space / "cache" / "images") == []
    with pytest.raises(QuotaExceededError, match=r"The image cache for this run \(20 images at 64 px\)"):
        check_image_cache_room([shape_examples[:10], shape_examples[10:]], 64, space / "cache" / "images")
    assert build_image_cache(shape_examples, 32, space / "cache" / "images").images.shape == (
        20,
        32,
        32,
        3,
    )  # 61 KB fit


def test_image_caches_built_at_once_reserve_their_full_size(tmp_path: Path, shape_examples: list[Example]) -> None:
    space = tmp_path / "alice"
    DiskBudget(
        space, quota_bytes=200_000
    ).save()  # 10 images at 64 px need 126,976 bytes: one such cache fits, two do not
    halves = [shape_examples[:10], shape_examples[10:]]
    start = threading.Barrier(2)

    def build(examples: list[Example]) -> str:
        start.wait()
        try:
            build_image_cache(examples, 64, space / "cache" / "images", workers=1)
        except QuotaExceededError as refused:
            return str(refused)
        return "built"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(build, halves))

    assert sorted(outcome == "built" for outcome in outcomes) == [False, True], outcomes
    assert workspace_bytes(space) <= 200_000


@dataclass
class _Upload:
    name: str
    data: bytes

    def getvalue(self) -> bytes:
        return self.data


def test_uploads_saved_from_several_tabs_at_once_stay_under_the_quota(tmp_path: Path) -> None:
    spaces, space = _alice(tmp_path, quota_mb=3)
    uploads = [_Upload(f"part{i}.zip", bytes([i]) * MB) for i in range(5)]  # each passed check_upload on its own
    start = threading.Barrier(len(uploads))

    def save(upload: _Upload) -> str:
        start.wait()
        try:
            save_uploaded_file(upload, space.datasets)
        except QuotaExceededError as refused:
            return str(refused)
        return "saved"

    with ThreadPoolExecutor(len(uploads)) as pool:
        outcomes = list(pool.map(save, uploads))

    assert outcomes.count("saved") == 2 and all(
        "Upload a smaller dataset" in outcome for outcome in outcomes if outcome != "saved"
    )
    assert spaces.disk_usage("alice", max_age_s=0).total <= 3 * MB


def test_a_feature_cache_over_the_quota_is_refused_before_the_backbone_runs(tmp_path: Path) -> None:
    import numpy as np

    from tl_core.config import ModelConfig
    from tl_core.models.transfer_model import build_transfer_model
    from tl_core.training.feature_cache import cached_features

    extractor = build_transfer_model(
        ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32), 3
    ).feature_extractor
    images = np.zeros((200, 32, 32, 3), np.uint8)  # 200 x 1280 float32 features: ~1 MB
    space = tmp_path / "alice"
    DiskBudget(space, quota_bytes=500_000).save()
    progress: list[int] = []

    with pytest.raises(
        QuotaExceededError, match=r"The feature cache of 200 examples \(1280 features each\) would need ~1\.0 MB"
    ):
        cached_features(
            extractor,
            images,
            cache_dir=space / "cache" / "features",
            key="k",
            progress=lambda done, total: progress.append(done),
        )
    assert progress == [] and _leftovers(space / "cache" / "features") == []
    small = cached_features(extractor, images[:20], cache_dir=space / "cache" / "features", key="k20")  # 100 KB fit
    assert small.path is not None and small.path.is_file() and not small.reused


def test_a_queued_run_whose_image_cache_would_pass_the_quota_fails_with_what_to_do(
    tmp_path: Path, shapes_dataset: Path
) -> None:
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.jobs.manager import JobManager
    from tl_core.jobs.worker import ProcessBackend
    from ui.state import UserJobs

    spaces, space = _alice(tmp_path, quota_mb=1)
    data = shutil.copytree(shapes_dataset, space.datasets / "shapes")  # 72 images: 1.9 MB of cache at 96 px
    manager = JobManager(space.store(), slots={"cpu": 1}, backend=ProcessBackend(warm_workers=False))
    try:
        config = RunConfig(
            data=DataConfig(source=str(data)),
            model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=96),
            train=TrainConfig(epochs=1, batch_size=16),
        )
        run_id = UserJobs(manager, space.store(), ALICE, spaces).submit(
            config
        )  # the workspace itself is far under 1 MB
        final = manager.wait(run_id, timeout_s=300)
    finally:
        manager.shutdown(stop_jobs=True)

    record = space.store().get(run_id)
    assert final.progress.status == record.status == "failed"
    assert record.error.startswith(
        "The image cache for this run (72 images at 96 px) would need ~1.9 MB; your workspace has "
    )
    assert (
        "left of its 1.0 MB quota. Train at a smaller image size (Model page) or on fewer images, or make room"
        in record.error
    )
    assert "The image cache for this run" in space.store().read_log(run_id)
    assert list((space.cache / "images").glob("*.npy")) == []
    assert spaces.disk_usage("alice", max_age_s=0).total <= MB


def _choose_archive(page, archive: Path) -> None:  # noqa: ANN001 - a Playwright page
    """Pick `archive` in the Data page's "Upload an archive" tab (not used until "Use this archive" is clicked)."""
    from playwright.sync_api import expect

    from tests.workshop_server import wait_idle

    page.locator("input[type=file]:not([webkitdirectory])").first.set_input_files(str(archive))
    wait_idle(page)
    page.get_by_role("tab", name="Upload an archive").click()  # the rerun after the upload shows the first tab again
    expect(page.get_by_role("button", name="Use this archive")).to_be_enabled()


@pytest.mark.slow
def test_zip_bombs_uploaded_in_the_browser_are_refused_and_the_workspace_stays_under_quota(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.workshop_server import launch_chromium, sign_in, wait_idle, workshop_server

    bomb = _zip_of_zeros(tmp_path / "bomb.zip", {"cats/zeros.bin": 300, "dogs/zeros.bin": 1})  # 0.3 MB
    parts = [
        _zip_of_zeros(tmp_path / f"part{i}.zip", {f"cats{i}/zeros.bin": 25, f"dogs{i}/zeros.bin": 0}) for i in range(3)
    ]
    quota = {"TRANSFERLAB_DISK_QUOTA_MB": "60", "TRANSFERLAB_MAX_UPLOAD_MB": "5"}
    with workshop_server(tmp_path, extra_env=quota, name="quota") as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        tabs = [browser.new_context(viewport={"width": 1280, "height": 1000}).new_page() for _ in parts]
        for tab in tabs:
            tab.set_default_timeout(60_000)
            sign_in(tab, server.url, "alice")

        # One bomb: 0.3 MB uploaded, 301 MB if unpacked.
        _choose_archive(tabs[0], bomb)
        tabs[0].get_by_role("button", name="Use this archive").click()
        expect(tabs[0].get_by_text("Unpacking bomb.zip would need ~301.0 MB")).to_be_visible()
        expect(tabs[0].get_by_text("left of its 60.0 MB quota")).to_be_visible()
        assert not list((server.user_root("alice") / "cache" / "extracted").iterdir())

        # Three archives of 25 MB each from three tabs at once: two fit in the quota together, the third does not.
        for tab, part in zip(tabs, parts):
            _choose_archive(tab, part)
        for tab in tabs:
            tab.get_by_role("button", name="Use this archive").click()
        for tab in tabs:
            expect(tab.get_by_text("it is unpacked when scanned")).to_be_visible()
            wait_idle(tab, timeout_ms=120_000)
        refused: list = []
        deadline = time.monotonic() + 60  # a busy machine (two test processes) draws the refusal a moment later
        while not refused and time.monotonic() < deadline:
            refused = [tab for tab in tabs if tab.get_by_text("would need ~25.0 MB").count()]
            tabs[0].wait_for_timeout(500)
        browser.close()

    alice = Workspaces(server.workspace, disk_quota_mb=60)
    assert len(refused) == 1
    assert len(list((server.user_root("alice") / "cache" / "extracted").iterdir())) == 2
    assert alice.disk_usage("alice", max_age_s=0).total <= 60 * MB
