"""Decoding every supported format and pixel mode to 8-bit RGB, and naming each way a file can be bad."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data.images import IMAGE_EXTENSIONS, ImageDecodeError, decode_image, inspect_image, load_image_array
from tl_core.errors import DataError

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _close(actual: tuple[int, ...] | np.ndarray, expected: tuple[int, ...], tolerance: int = 6) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected, dtype=int)) <= tolerance))


def test_jpeg_exif_orientation_6_swaps_sides_and_rotates(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = RED  # left half red, right half blue as stored
    pixels[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)

    image = decode_image(path)

    assert image.mode == "RGB" and image.size == (20, 40)
    array = np.asarray(image)
    assert _close(array[5, 10], RED, 30) and _close(array[35, 10], BLUE, 30)  # stored left is now on top
    header = inspect_image(path)
    assert (header.width, header.height) == (20, 40)


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("P", (8, 8), 1)
    palette_image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    opaque = tmp_path / "palette.png"
    palette_image.save(opaque)
    transparent = tmp_path / "palette_transparent.png"
    palette_image.save(transparent, transparency=1)

    assert Image.open(opaque).mode == "P"
    assert np.asarray(decode_image(opaque))[0, 0].tolist() == [10, 200, 30]
    assert np.asarray(decode_image(transparent))[0, 0].tolist() == [255, 255, 255]


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    pixels[0, 1] = (255, 0, 0, 0)  # fully transparent becomes white
    pixels[0, 2] = (0, 0, 0, 128)  # half-transparent black becomes mid grey
    path = tmp_path / "alpha.png"
    Image.fromarray(pixels, "RGBA").save(path)

    array = np.asarray(decode_image(path))

    assert array[0, 0].tolist() == [255, 0, 0]
    assert array[0, 1].tolist() == [255, 255, 255]
    assert _close(array[0, 2], (127, 127, 127), 2)


def test_16_bit_grayscale_is_scaled_to_8_bit(tmp_path: Path) -> None:
    pixels = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode in {"I;16", "I"}

    array = np.asarray(decode_image(path))

    assert array.dtype == np.uint8 and array.shape == (1, 4, 3)
    assert array[0, :, 0].tolist() == [0, 128, 255, 4]  # by the 16-bit range, not clipped at 255


def test_float_tiff_in_unit_range_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(path)

    assert np.asarray(decode_image(path))[0, :, 1].tolist() == [0, 128, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # no cyan, full magenta and yellow: red
    assert Image.open(path).mode == "CMYK"

    image = decode_image(path)

    assert image.mode == "RGB" and _close(np.asarray(image)[8, 8], RED, 10)


def test_gif_gives_the_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "animated.gif"
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(path).n_frames == 2

    assert np.asarray(decode_image(path))[4, 4].tolist() == list(RED)


@pytest.mark.parametrize(
    ("image_format", "suffix"), [("WEBP", ".webp"), ("TIFF", ".tif"), ("BMP", ".bmp"), ("PNG", ".png")]
)
def test_lossless_formats_round_trip(tmp_path: Path, image_format: str, suffix: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    path = tmp_path / f"image{suffix}"
    Image.fromarray(pixels).save(path, format=image_format, **({"lossless": True} if image_format == "WEBP" else {}))

    assert suffix in IMAGE_EXTENSIONS
    assert np.array_equal(np.asarray(decode_image(path)), pixels)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (5, 5), 77).save(path)

    assert np.asarray(decode_image(path))[2, 2].tolist() == [77, 77, 77]


def test_load_image_array_squashes_to_square_uint8(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (64, 16), BLUE).save(path)

    array = load_image_array(path, 24)

    assert array.shape == (24, 24, 3) and array.dtype == np.uint8
    assert np.all(array == np.array(BLUE, np.uint8))


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def _corrupt_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), RED).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[60:90] = b"\x00" * 30  # damage the compressed pixel data, keep the header
    return bytes(data)


def test_a_large_jpeg_decodes_at_a_reduced_scale_never_below_the_target_and_looks_the_same(tmp_path: Path) -> None:
    rows, cols = np.mgrid[0:600, 0:800]
    pixels = np.stack([cols * 255 // 799, rows * 255 // 599, np.full_like(rows, 90)], axis=-1).astype(
        np.uint8
    )  # smooth gradients
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 600 wide, 800 high
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=92)

    assert decode_image(path).size == (600, 800)
    assert decode_image(path, at_least=64).size == (75, 100)  # 1/8 scale: both sides still >= 64
    assert decode_image(path, at_least=150).size == (150, 200)  # 1/4 scale
    assert decode_image(path, at_least=200).size == (300, 400)  # 1/2: at 1/4 the short side (150) would be too small
    assert decode_image(path, at_least=400).size == (600, 800)  # no reduction keeps both sides >= 400
    reduced = load_image_array(path, 64).astype(int)
    full = np.asarray(decode_image(path).resize((64, 64), Image.Resampling.BILINEAR), dtype=int)
    assert reduced.shape == (64, 64, 3)
    assert np.abs(reduced - full).mean() < 2.0 and np.abs(reduced - full).max() <= 12


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("empty.png", b"", "zero-bytes"),
        ("notes.jpg", b"these are my notes, not a picture", "not-an-image"),
        ("half.jpg", _truncated_jpeg(), "truncated"),
        ("damaged.png", _corrupt_png(), "corrupt"),
    ],
)
def test_bad_files_raise_decode_errors_with_a_kind(tmp_path: Path, name: str, content: bytes, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    for reader in (decode_image, inspect_image):
        with pytest.raises(ImageDecodeError) as caught:
            reader(path)
        assert caught.value.kind == kind
        assert name in str(caught.value) and caught.value.fix in str(caught.value)
    assert issubclass(ImageDecodeError, DataError)


def test_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (50, 40), RED).save(path)

    with pytest.raises(ImageDecodeError) as caught:
        decode_image(path, max_pixels=1_999)
    assert caught.value.kind == "too-large" and "max_pixels" in str(caught.value)
    assert decode_image(path, max_pixels=2_000).size == (50, 40)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        decode_image(tmp_path / "nowhere.png")


def test_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "enormous.png"
    with path.open("wb") as stream:
        stream.truncate(3 << 20)  # 3 MiB on disk, far more than 100 pixels can need

    with pytest.raises(ImageDecodeError) as caught:
        inspect_image(path, max_pixels=100)
    assert caught.value.kind == "too-large" and "bytes on disk" in str(caught.value)
