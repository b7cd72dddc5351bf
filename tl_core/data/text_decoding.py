"""Reading a document's bytes as text: which encoding, whether it is text at all, and the length cap.

Bytes are decoded as UTF-8 (a UTF-8 or UTF-16 byte-order mark is honoured), else as Windows-1252
(`FALLBACK_ENCODING`); bytes with NULs or many control characters are binary, not text. A document is
cut at `MAX_DOCUMENT_CHARS`, and only enough bytes for that many characters are read from a file.
Used by the folder scan (`tl_core.data.text_dataset`) and the CSV/TSV reader (`tl_core.data.text_table`).

Example:
    >>> decode_bytes("naïve".encode("cp1252"))
    ('naïve', 'cp1252')
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from tl_core.errors import DataError

MAX_DOCUMENT_CHARS = 10_000  # ~1,700 words: far beyond the 256 tokens a model reads by default, bounds memory
FALLBACK_ENCODING = "cp1252"  # Windows-1252: what non-UTF-8 English text files usually are
BINARY_CONTROL_FRACTION = 0.3
_READ_BYTES = MAX_DOCUMENT_CHARS * 4 + 4  # enough bytes for MAX_DOCUMENT_CHARS characters in any encoding we read


@dataclass(frozen=True)
class DecodedText:
    """A document's text (cut at `MAX_DOCUMENT_CHARS`), the encoding it was read with, and its full length."""

    text: str
    encoding: str
    characters: int  # characters read (a lower bound when `read_all` is False)
    read_all: bool  # False: the file is longer than what was read

    @property
    def truncated(self) -> bool:
        return not self.read_all or self.characters > MAX_DOCUMENT_CHARS


def is_binary(data: bytes) -> bool:
    """True for bytes that are not text: a NUL, or mostly control characters in the first 4 KiB."""
    if b"\x00" in data:
        return True
    controls = sum(1 for byte in data[:4096] if byte < 32 and byte not in (9, 10, 12, 13))
    return bool(data) and controls / min(len(data), 4096) > BINARY_CONTROL_FRACTION


def decode_bytes(data: bytes, *, complete: bool = True) -> tuple[str, str]:
    """Text and encoding name: UTF-16 or UTF-8 by byte-order mark, else UTF-8, else `FALLBACK_ENCODING`.

    Args:
        data: the bytes.
        complete: False when `data` is only the start of a file (a cut multi-byte character is dropped).

    Returns:
        (text, "utf-8" | "utf-8-sig" | "utf-16" | FALLBACK_ENCODING).
    """
    boms = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
    for encoding in [name for bom, name in boms if data.startswith(bom)] + ["utf-8"]:
        try:
            return codecs.getincrementaldecoder(encoding)("strict").decode(data, final=complete), encoding
        except UnicodeDecodeError:
            continue
    return data.decode(FALLBACK_ENCODING, errors="replace"), FALLBACK_ENCODING


def fit_document(text: str, encoding: str, more_bytes: bool) -> DecodedText:
    """`text` as a `DecodedText`: line ends made "\\n", cut at `MAX_DOCUMENT_CHARS` (`more_bytes`: the source went on)."""
    text = text.replace("\r\n", "\n")
    return DecodedText(text[:MAX_DOCUMENT_CHARS], encoding, len(text), not more_bytes)


def read_text_file(path: Path) -> DecodedText:
    """A text file's (possibly truncated) text; raises DataError naming binary or unreadable files."""
    try:
        with path.open("rb") as stream:
            data = stream.read(_READ_BYTES + 1)
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error}): check it exists and is readable.") from error
    if is_binary(data[:_READ_BYTES]) and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            f"{path.name} is binary, not text (it contains NUL or control bytes): export it as plain UTF-8 text (.txt) or remove it."
        )
    more = len(data) > _READ_BYTES
    text, encoding = decode_bytes(data[:_READ_BYTES], complete=not more)
    return fit_document(text, encoding, more)
