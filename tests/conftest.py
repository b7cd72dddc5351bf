"""Shared fixtures: small generated datasets and isolated workspaces and caches."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# App servers started by tests (AppTest, the browser tests) keep no worker waiting between jobs: each would
# hold ~0.7 GB until the test process ends. tests/test_warm_workers.py tests them, and the setting's plumbing.
os.environ.setdefault("TRANSFERLAB_WARM_WORKERS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 24 PNG images at 48 px: learnable, read-only for tests (copy before modifying)."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "data", num_classes=3, images_per_class=24, image_size=48)


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture()
def workshop_server(tmp_path: Path):  # noqa: ANN201 - yields tests.workshop_server.WorkshopServer
    """A real workshop server (`python -m tl_core serve`) on loopback with tara (trainer), alice and bob."""
    from tests.workshop_server import workshop_server as start

    with start(tmp_path) as server:
        yield server
