"""Shared fixtures and helpers: small generated datasets, isolated workspaces and caches, a workshop server, `open_page`."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# App servers started by tests (AppTest, the browser tests) keep no worker waiting between jobs: each would
# hold ~0.7 GB until the test process ends. tests/test_warm_workers.py tests them, and the setting's plumbing.
os.environ.setdefault("TRANSFERLAB_WARM_WORKERS", "0")

from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 24 PNG images at 48 px: learnable, read-only for tests (copy before modifying)."""
    return make_shapes_dataset(
        tmp_path_factory.mktemp("shapes") / "data", num_classes=3, images_per_class=24, image_size=48
    )


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture()
def fastpath_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast paths on, whatever `TRANSFERLAB_FASTPATH` says: for the tests of a fast path itself, which also
    check its fallback with the switch off (the suite runs once more with it off: `make test`)."""
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", "1")


@pytest.fixture()
def workshop_server(tmp_path: Path):  # noqa: ANN201 - yields tests.workshop_server.WorkshopServer
    """A real workshop server (`python -m tl_core serve`) on loopback with tara (trainer), alice and bob."""
    from tests.workshop_server import workshop_server as start

    with start(tmp_path) as server:
        yield server


def open_page(at: AppTest, url_path: str) -> AppTest:
    """Switch `at` to the page app.py registered at `url_path` ("data", "model", ..., "trainer"); call `.run()` next.

    Reaches into AppTest on purpose: its public `switch_page` finds a page by its script file, and our pages are
    functions registered with `st.Page(function, url_path=...)`, which have none. So this looks the page up among
    the pages the last run registered (`_registered_pages`, by url pathname; the default page is served at "" but
    hashed from its url_path) and sets the page the next run asks for (`_page_hash`), as `switch_page` does once it
    has found a file's page. Run `at` once before, as with `switch_page`.

    Raises:
        ValueError: no page is registered at `url_path` for this session (any page before sign-in, the Trainer page
            for a student or in personal mode), as `switch_page` does for an unregistered file.
    """
    from streamlit.util import calc_hash

    pages = at._registered_pages
    found = [
        page_hash
        for page_hash, info in pages.items()
        if info.get("url_pathname") == url_path or page_hash == calc_hash(url_path)
    ]
    if not found:
        known = sorted(str(info.get("url_pathname")) for info in pages.values())
        raise ValueError(f"No page registered at url_path {url_path!r} in the last run; registered: {known}.")
    at._page_hash = found[0]
    return at


@pytest.fixture()
def managers():  # noqa: ANN201 - yields a JobManager factory
    """Build JobManagers through this, so their dispatchers and jobs stop when the test ends."""
    from tl_core.jobs.manager import JobManager

    made: list[JobManager] = []

    def make(*args, **kwargs) -> JobManager:
        made.append(JobManager(*args, **kwargs))
        return made[-1]

    yield make
    for manager in made:
        manager.shutdown(stop_jobs=True)
