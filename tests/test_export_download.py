"""Workshop security, issue 24 item 12: the export's download link is unguessable and short-lived.

Streamlit serves download bytes at `/media/<id>.zip` to anyone who asks, cookie or not. The page used to hand
the bundle to Streamlit on every run, so its link was live for as long as the owner's page showed the button.
Now nothing is served until the owner clicks (a deferred download, fetched over her own websocket session);
the bytes then carry 128 random bits, so the id (a hash of the bytes) cannot be derived from the model, and
Streamlit drops the file at the second script run that ends after the click.
"""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.memory_media_file_storage import _calculate_file_id

from tl_core.data.synthetic import make_shapes_dataset
from ui.predictions import bundle_for_download

MEDIA_ZIP = re.compile(rb"/media/[0-9a-f]{32}\.zip")
NONCE_COMMENT = re.compile(rb"TransferLab export [0-9a-f]{32}")


def status_without_cookie(url: str) -> int:
    """A plain GET with no cookie, no session and no proxy (the server is on loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_every_download_of_a_bundle_has_other_bytes_and_so_another_address(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("labels.txt", "cat\ndog\n")
        archive.writestr(
            "model.keras", b"\0" * 2_000_000
        )  # over 1 MiB: Streamlit then hashes only the head, middle and tail

    first, second = bundle_for_download(bundle), bundle_for_download(bundle)

    for served in (first, second):
        with zipfile.ZipFile(io.BytesIO(served)) as archive:
            assert archive.read("labels.txt") == b"cat\ndog\n" and NONCE_COMMENT.fullmatch(archive.comment)
    ids = {_calculate_file_id(data, "application/zip", "model.zip") for data in (bundle.read_bytes(), first, second)}
    assert len(ids) == 3, "knowing the bundle's exact bytes does not give the address of a download"


@pytest.mark.slow
def test_the_export_link_exists_only_after_the_owners_click_and_expires(workshop_server, tmp_path: Path) -> None:  # noqa: ANN001
    """In Chromium on a real workshop server: alice exports her run; the link is checked from outside her session."""
    from playwright.sync_api import expect, sync_playwright

    from tests.workshop_server import ARTIFACTS, launch_chromium, sign_in, wait_idle

    data = make_shapes_dataset(tmp_path / "shapes", num_classes=3, images_per_class=8, image_size=32)
    trained = workshop_server.train_tiny_run("alice", data)
    assert trained.returncode == 0, trained.stderr[-2000:]

    frames: list[bytes] = []  # every message the server sent alice's page, in order

    def record(websocket) -> None:  # noqa: ANN001
        websocket.on(
            "framereceived", lambda payload: frames.append(payload if isinstance(payload, bytes) else payload.encode())
        )

    def runs_finished() -> int:
        count = 0
        for frame in frames:
            message = ForwardMsg()
            message.ParseFromString(frame)
            count += message.WhichOneof("type") == "script_finished"
        return count

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 1400}, accept_downloads=True)
        page.set_default_timeout(120_000)
        page.on("websocket", record)
        sign_in(page, workshop_server.url, "alice")
        page.get_by_test_id("stSidebarNav").get_by_text("Predict & export", exact=True).click()
        wait_idle(page)
        page.get_by_role("tab", name="Export").click()
        main_block = page.locator("[data-testid=stMain]")
        for label in ("TensorFlow SavedModel", "TensorFlow Lite (.tflite)"):  # the Keras file alone exports in seconds
            main_block.locator(f"button[aria-label='Remove {label}']:visible").click()
            wait_idle(page)
        main_block.get_by_role("button", name="Build the export bundle").click()
        download_button = main_block.get_by_role("button", name="Download the bundle (.zip)")
        expect(download_button).to_be_visible(timeout=120_000)  # building loads the model and writes the zip
        wait_idle(page)
        page.screenshot(path=str(ARTIFACTS / "security-export-link.png"), full_page=True)

        # Before the click: the button is on her page, but no /media/...zip address was ever sent or shown.
        assert any(b"Download the bundle (.zip)" in frame for frame in frames), "the button's element reached the page"
        assert not any(MEDIA_ZIP.search(frame) for frame in frames), "no download address exists before the click"
        assert not MEDIA_ZIP.search(page.content().encode())

        with page.expect_download() as started:
            download_button.click()
        download = started.value
        served = Path(download.path()).read_bytes()
        url = download.url
        file_id = re.fullmatch(r".*/media/([0-9a-f]{32})\.zip", url).group(1)
        assert url.startswith(workshop_server.url)
        assert " " not in download.suggested_filename and download.suggested_filename.endswith(".zip")
        with zipfile.ZipFile(io.BytesIO(served)) as archive:
            assert {"model.keras", "labels.txt", "MODEL_CARD.md"} <= set(archive.namelist())
            assert NONCE_COMMENT.fullmatch(archive.comment), "128 random bits in the served bytes"
        # The id is a hash of the served bytes (so it names no session), and those bytes hold the random comment:
        # the bundle as written on the server, which anyone with the same model could rebuild, hashes elsewhere.
        assert _calculate_file_id(served, "application/zip", download.suggested_filename) == file_id
        on_disk = next((workshop_server.user_root("alice") / "cache" / "exports").rglob("*.zip")).read_bytes()
        assert _calculate_file_id(on_disk, "application/zip", download.suggested_filename) != file_id

        # Lifetime: Streamlit keeps a clicked download through one script run and drops it at the next.
        assert status_without_cookie(url) == 200, "served (to whoever has the address) right after the click"
        for expected in (200, 404):
            finished = runs_finished()
            page.locator("body").press("r")  # Streamlit's rerun shortcut: one more run of her page
            for _ in range(1200):  # until that run's script_finished message arrives
                if runs_finished() > finished:
                    break
                page.wait_for_timeout(100)
            wait_idle(page)
            assert runs_finished() == finished + 1, "exactly one more run of her page"
            assert status_without_cookie(url) == expected

        # Another click makes new bytes, so a new address; the old one stays dead.
        with page.expect_download() as again:
            download_button.click()
        assert again.value.url != url and status_without_cookie(url) == 404
        assert page.locator("[data-testid=stException]").count() == 0
        browser.close()
