"""Workshop security, issue 24 item 1: a dataset reads only files in the user's own area or the shared datasets.

A CSV's rows (absolute paths, `../..`) and links inside a folder could name any file on the server: other
users' images, or `/etc/shadow` to learn whether it exists. With readable roots set, such files are skipped
with one message that says nothing about whether they exist, in the scan, in a run and on the Data page.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tl_core.config import DataConfig
from tl_core.data.image_dataset import scan_dataset
from tl_core.data.prep import prepare_dataset
from tl_core.data.synthetic import make_shapes_dataset
from tl_core.data.text_dataset import scan_text_dataset
from tl_core.errors import DataError
from tl_core.runs.store import RunStore


@pytest.fixture()
def server_tree(tmp_path: Path, shapes_dataset: Path) -> dict[str, Path]:
    """alice's images in her area; bob's area with his own images; a shared datasets folder."""
    users = tmp_path / "workspace" / "users"
    alice_images = users / "alice" / "datasets" / "private"
    make_shapes_dataset(alice_images, num_classes=2, images_per_class=6, image_size=32, seed=7)
    bob = users / "bob"
    bob_images = bob / "datasets" / "mine"
    make_shapes_dataset(bob_images, num_classes=2, images_per_class=6, image_size=32, seed=8)
    shared = tmp_path / "workspace" / "datasets"
    shared.mkdir(parents=True)
    return {"alice_images": alice_images, "bob": bob, "bob_images": bob_images, "shared": shared}


def bob_roots(tree: dict[str, Path]) -> tuple[str, ...]:
    return (str(tree["bob"]), str(tree["shared"]))


def alice_files(tree: dict[str, Path]) -> list[Path]:
    return sorted(tree["alice_images"].rglob("*.png"))


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path,label\n" + "".join(f"{file},{label}\n" for file, label in rows))
    return path


def test_csv_rows_naming_other_users_files_are_refused(server_tree: dict[str, Path]) -> None:
    csv_dir = server_tree["bob"] / "datasets"
    own = [(str(p.relative_to(csv_dir)), p.parent.name) for p in sorted(server_tree["bob_images"].rglob("*.png"))]
    stolen_absolute = [(str(p), p.parent.name) for p in alice_files(server_tree)[:3]]
    stolen_relative = [(os.path.relpath(p, csv_dir), p.parent.name) for p in alice_files(server_tree)[3:6]]
    assert all(row[0].startswith("../../alice/") for row in stolen_relative)
    csv_path = write_csv(csv_dir / "mixed.csv", own + stolen_absolute + stolen_relative)

    report = scan_dataset(csv_path, readable_roots=bob_roots(server_tree))

    used = {Path(example.path) for example in report.examples}
    assert used == {p.resolve() for p in server_tree["bob_images"].rglob("*.png")}, "only bob's own images are used"
    outside = [problem for problem in report.problems if problem.kind == "outside-workspace"]
    assert len(outside) == 6
    assert all("outside your workspace and the shared datasets" in problem.message for problem in outside)
    # Without roots (personal mode) the same CSV still reads every row.
    assert len(scan_dataset(csv_path).examples) == len(own) + 6


def test_the_message_does_not_tell_whether_a_file_exists(server_tree: dict[str, Path], tmp_path: Path) -> None:
    csv_dir = server_tree["bob"] / "datasets"
    own = [(str(p.relative_to(csv_dir)), p.parent.name) for p in sorted(server_tree["bob_images"].rglob("*.png"))]
    existing = tmp_path / "secret.png"
    existing.write_bytes(alice_files(server_tree)[0].read_bytes())
    missing = tmp_path / "no-such-file.png"
    probes = [(str(existing), "a"), (str(missing), "a"), ("/etc/passwd", "a"), ("/etc/no-such-file", "a")]
    csv_path = write_csv(csv_dir / "probe.csv", own + probes)

    report = scan_dataset(csv_path, readable_roots=bob_roots(server_tree))

    messages = {
        problem.file: problem.message for problem in report.problems if problem.file in {row[0] for row in probes}
    }
    assert set(messages) == {row[0] for row in probes}, report.problems
    templates = {message.replace(name, "<path>").split(": ", 1)[1] for name, message in messages.items()}
    assert len(templates) == 1, f"existing and missing files must read the same: {messages}"
    assert not any(
        word in message
        for message in messages.values()
        for word in ("does not exist", "not an image", "cannot be read")
    )


def test_a_header_row_naming_an_outside_file_is_judged_the_same_whether_it_exists_or_not(
    server_tree: dict[str, Path],
) -> None:
    csv_dir = server_tree["bob"] / "datasets"
    own = "".join(
        f"{p.relative_to(csv_dir)},{p.parent.name}\n" for p in sorted(server_tree["bob_images"].rglob("*.png"))
    )
    counts = []
    for probe in ("/etc/passwd", "/etc/no-such-file"):
        csv_path = csv_dir / "header-probe.csv"
        csv_path.write_text(f"{probe},label\n{own}")  # no header: is the first row data or a header?
        report = scan_dataset(csv_path, readable_roots=bob_roots(server_tree))
        counts.append((report.files_seen, report.files_skipped, [p.kind for p in report.problems]))
    assert counts[0] == counts[1]


def test_links_inside_a_folder_that_lead_elsewhere_are_not_read(server_tree: dict[str, Path]) -> None:
    folder = server_tree["bob_images"]
    class_dir = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    (class_dir / "stolen.png").symlink_to(alice_files(server_tree)[0])

    report = scan_dataset(folder, readable_roots=bob_roots(server_tree))

    assert not any("alice" in example.path for example in report.examples)
    assert [p.kind for p in report.problems if p.file and p.file.endswith("stolen.png")] == ["outside-workspace"]


def test_text_documents_linked_from_elsewhere_are_not_read(tmp_path: Path) -> None:
    bob = tmp_path / "users" / "bob"
    secret = tmp_path / "users" / "alice" / "diary.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("alice's secret diary")
    for label in ("sport", "politics"):
        folder = bob / "news" / label
        folder.mkdir(parents=True)
        for index in range(6):
            (folder / f"{index}.txt").write_text(f"{label} story number {index} with some words")
    (bob / "news" / "sport" / "linked.txt").symlink_to(secret)

    report = scan_text_dataset(bob / "news", readable_roots=(str(bob),))

    assert not any("alice" in example.path for example in report.examples)
    assert [p.kind for p in report.problems if p.file == "sport/linked.txt"] == ["outside-workspace"]


def test_a_run_applies_the_roots_of_its_config(server_tree: dict[str, Path]) -> None:
    csv_dir = server_tree["bob"] / "datasets"
    rows = [(str(p), p.parent.name) for p in alice_files(server_tree)]
    csv_path = write_csv(csv_dir / "only-alice.csv", rows)
    store = RunStore(server_tree["bob"])
    config = DataConfig(source=str(csv_path), readable_roots=bob_roots(server_tree))

    with pytest.raises(DataError, match="fewer than 2 classes"):
        prepare_dataset(config, store)
    # A stored config (JSON lists) keeps its roots, so a resumed run is held to them too.
    assert DataConfig(source=str(csv_path), readable_roots=list(bob_roots(server_tree))).readable_roots == bob_roots(
        server_tree
    )


def test_readable_roots_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute folder paths"):
        DataConfig(source="data", readable_roots=("relative/folder",))


@pytest.mark.slow
def test_bob_cannot_see_alices_images_through_a_csv_upload(workshop_server, tmp_path: Path) -> None:  # noqa: ANN001
    """In Chromium on a real workshop server: bob uploads a CSV naming alice's images and server files."""
    from playwright.sync_api import expect, sync_playwright

    from tests.workshop_server import ARTIFACTS, launch_chromium, sign_in, wait_idle

    alice_images = workshop_server.user_root("alice") / "datasets" / "holiday"
    make_shapes_dataset(alice_images, num_classes=2, images_per_class=8, image_size=32, seed=3)
    rows = [(str(p), p.parent.name) for p in sorted(alice_images.rglob("*.png"))[:8]]
    rows += [
        (os.path.join("..", "..", "alice", "datasets", "holiday", p.parent.name, p.name), p.parent.name)
        for p in sorted(alice_images.rglob("*.png"))[8:]
    ]
    rows += [("/etc/shadow", "secrets"), ("/etc/no-such-file", "secrets")]
    upload = write_csv(tmp_path / "upload" / "alice.csv", rows)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        page.set_default_timeout(60_000)
        sign_in(page, workshop_server.url, "bob")
        page.get_by_role("tab", name="Upload an archive").click()
        page.get_by_test_id("stFileUploader").filter(has_text="A .zip").locator("input[type=file]").set_input_files(
            str(upload)
        )
        use = page.get_by_role("button", name="Use this archive")
        expect(use).to_be_enabled()
        use.click()
        wait_idle(page)
        expect(page.get_by_text("outside your workspace and the shared datasets").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "security-csv-rows.png"), full_page=True)
        text = page.locator("[data-testid=stMain]").inner_text()
        assert "does not exist" not in text and "not an image" not in text, "the page must not tell which files exist"
        assert page.locator("[data-testid=stMain] [data-testid=stImage]").count() == 0, "no thumbnail of alice's images"
        browser.close()
