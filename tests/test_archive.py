"""Archive extraction: the usual formats, one wrapping folder, reuse, and refusal of unsafe archives."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from tl_core.data.archive import extract_archive, is_archive
from tl_core.data.synthetic import make_shapes_dataset
from tl_core.errors import DataError


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_shapes_dataset(tmp_path / "shapes", num_classes=2, images_per_class=3, image_size=16)


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _zip_folder(folder: Path, archive: Path, *, wrap: str | None) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            bundle.write(path, f"{wrap}/{relative}" if wrap else relative)
        bundle.writestr("__MACOSX/._red_circle", b"resource fork")  # clutter that must not block unwrapping
    return archive


def _tar_folder(folder: Path, archive: Path, *, wrap: str | None, mode: str) -> Path:
    with tarfile.open(archive, mode) as bundle:
        for path in sorted(folder.iterdir()):
            bundle.add(path, arcname=f"{wrap}/{path.name}" if wrap else path.name)
    return archive


def _zip_with(archive: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, data in entries:
            bundle.writestr(name, data)
    return archive


def _tar_with(archive: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(archive, "w") as bundle:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            bundle.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return archive


@pytest.mark.parametrize("wrap", [None, "my_dataset"])
@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_extracts_and_unwraps_one_top_folder(tmp_path: Path, dataset: Path, kind: str, wrap: str | None) -> None:
    archive = tmp_path / f"data.{kind}"
    if kind == "zip":
        _zip_folder(dataset, archive, wrap=wrap)
    else:
        _tar_folder(dataset, archive, wrap=wrap, mode="w:gz" if kind == "tar.gz" else "w")

    root = extract_archive(archive, tmp_path / "extracted")

    assert sorted(p.name for p in root.iterdir() if p.name != "__MACOSX") == ["green_square", "red_circle"]
    assert [f for f in _files_under(root) if not f.startswith("__MACOSX")] == _files_under(dataset)
    assert (root / "red_circle" / "red_circle_0000.png").read_bytes() == (
        dataset / "red_circle" / "red_circle_0000.png"
    ).read_bytes()
    assert root.is_relative_to(tmp_path / "extracted")


def test_same_archive_twice_reuses_the_folder(tmp_path: Path, dataset: Path) -> None:
    archive = _zip_folder(dataset, tmp_path / "data.zip", wrap=None)
    target = tmp_path / "extracted"
    first = extract_archive(archive, target)
    marker = first / "red_circle" / "marker.txt"
    marker.write_text("still here")  # a fresh extraction would not have it

    second = extract_archive(archive, target)

    assert second == first and marker.is_file()
    assert len(list(target.iterdir())) == 1

    changed = _zip_with(tmp_path / "other.zip", [("a/1.png", b"x"), ("b/1.png", b"y")])
    assert extract_archive(changed, target) != first


@pytest.mark.parametrize("name", ["../evil.txt", "good/../../evil.txt", "/tmp/abs_evil.txt", "..\\evil.txt"])
def test_zip_entries_leaving_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    archive = _zip_with(tmp_path / "bad.zip", [("cats/1.png", b"fine"), (zipfile.ZipInfo(name), b"evil")])
    target = tmp_path / "deep" / "extracted"

    with pytest.raises(DataError, match="unsafe entry"):
        extract_archive(archive, target)

    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert not Path("/tmp/abs_evil.txt").exists()
    assert list(target.iterdir()) == []  # nothing half-extracted is left


def test_zip_symlink_entry_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("cats/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip_with(tmp_path / "link.zip", [(link, b"/etc/passwd")])

    with pytest.raises(DataError, match="symbolic link"):
        extract_archive(archive, tmp_path / "extracted")


@pytest.mark.parametrize("link_type", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_links_are_refused(tmp_path: Path, link_type: bytes) -> None:
    link = tarfile.TarInfo("cats/passwd.png")
    link.type = link_type
    link.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path / "bad.tar", [(tarfile.TarInfo("cats/1.png"), b"fine"), (link, b"")])

    with pytest.raises(DataError, match="contains a link 'cats/passwd.png' -> '/etc/passwd'"):
        extract_archive(archive, tmp_path / "extracted")
    assert list((tmp_path / "extracted").iterdir()) == []


def test_tar_absolute_path_is_refused(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "abs.tar", [(tarfile.TarInfo("/tmp/abs_evil_tar.txt"), b"evil")])

    with pytest.raises(DataError, match="unsafe entry"):
        extract_archive(archive, tmp_path / "extracted")
    assert not Path("/tmp/abs_evil_tar.txt").exists()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_total_size_cap(tmp_path: Path, kind: str) -> None:
    entries = [("cats/big.bin", b"\0" * 5_000), ("dogs/big.bin", b"\0" * 5_000)]
    if kind == "zip":
        archive = _zip_with(tmp_path / "bomb.zip", entries)  # type: ignore[arg-type]
    else:
        archive = _tar_with(tmp_path / "bomb.tar", [(tarfile.TarInfo(name), data) for name, data in entries])

    with pytest.raises(DataError, match="max_total_bytes"):
        extract_archive(archive, tmp_path / "extracted", max_total_bytes=8_000)
    assert extract_archive(archive, tmp_path / "extracted", max_total_bytes=10_000).is_dir()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_file_count_cap(tmp_path: Path, kind: str) -> None:
    entries = [(f"cats/{i}.png", b"x") for i in range(5)]
    if kind == "zip":
        archive = _zip_with(tmp_path / "many.zip", entries)  # type: ignore[arg-type]
    else:
        archive = _tar_with(tmp_path / "many.tar", [(tarfile.TarInfo(name), data) for name, data in entries])

    with pytest.raises(DataError, match="max_files"):
        extract_archive(archive, tmp_path / "extracted", max_files=4)
    assert len(_files_under(extract_archive(archive, tmp_path / "extracted", max_files=5))) == 5


def test_damaged_or_missing_archive_is_a_data_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match="broken.zip"):
        extract_archive(broken, tmp_path / "extracted")
    with pytest.raises(DataError, match="does not exist"):
        extract_archive(tmp_path / "missing.zip", tmp_path / "extracted")


def test_is_archive() -> None:
    assert all(is_archive(name) for name in ["a.zip", "b.TAR", "c.tar.gz", "d.tgz", "e.tar.xz"])
    assert not any(is_archive(name) for name in ["a.csv", "b.png", "folder", "c.gz"])
