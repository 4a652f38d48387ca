"""Images and files sent with a turn: decoded, checked against their bytes, saved, removed.

Validation happens before the turn is accepted (bad media is a 400/413 like any bad input);
files are written only when the turn starts and removed when it ends, unless configured to
stay. A file keeps its client's name, made safe (:func:`nanobot.api.uploads.safe_name`) and
unique within its turn; inline images are named ``image.png``, ``image-2.png``, ...
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from nanobot.api.uploads import GIF, JPEG, PNG, WEBP, judge, sniff_image, split_extension
from nanobot.core.errors import InvalidRequest, PayloadTooLarge

IMAGE_TYPES = {"image/png": PNG, "image/jpeg": JPEG, "image/gif": GIF, "image/webp": WEBP}
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[^;,]*)*;base64,(?P<data>.*)", re.S)


@dataclass(frozen=True, slots=True)
class Attachment:
    """One checked piece of media, still in memory, and the safe name it is saved under."""

    data: bytes
    name: str


class MediaStore:
    """Checks media against ``max_bytes`` and the allowed types; writes it under ``directory``."""

    def __init__(
        self, directory: Path | None = None, *, max_bytes: int = 10 * 1024 * 1024, keep: bool = False
    ):
        self.directory = directory or Path(tempfile.gettempdir()) / "nanobot-media"
        self.max_bytes = max_bytes
        self.keep = keep
        self._cleanups: set[asyncio.Future[None]] = set()

    def from_data_url(self, url: str, param: str) -> Attachment:
        """Decode a base64 ``data:`` image URL."""
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise InvalidRequest(
                "An image URL must be 'data:<type>;base64,<data>'.", param=param, code="invalid_image"
            )
        if len(match["data"]) * 3 // 4 > self.max_bytes:
            raise self._too_large(param)
        try:
            data = base64.b64decode(match["data"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                "The image is not valid base64.", param=param, code="invalid_image"
            ) from None
        return self.image(data, match["type"].lower(), param)

    def image(self, data: bytes, declared: str, param: str) -> Attachment:
        """Check that ``data`` is an image of the ``declared`` type and not too large."""
        if len(data) > self.max_bytes:
            raise self._too_large(param)
        if declared not in IMAGE_TYPES:
            raise InvalidRequest(
                f"Image type '{declared}' is not accepted; send one of {', '.join(IMAGE_TYPES)}.",
                param=param,
                code="invalid_image",
            )
        kind = IMAGE_TYPES[declared]
        if sniff_image(data) is not kind:
            raise InvalidRequest(
                f"The image's bytes are not {declared}, as its declared type says.",
                param=param,
                code="invalid_image",
            )
        return Attachment(data, f"image{kind.suffix}")

    def file(self, data: bytes, declared: str | None, filename: str | None, param: str) -> Attachment:
        """An uploaded file whose bytes, declared type and name agree on something an agent reads
        (see :mod:`nanobot.api.uploads`), under its client's name made safe."""
        if len(data) > self.max_bytes:
            raise self._too_large(param)
        return Attachment(data, judge(data, declared, filename, param).name)

    @asynccontextmanager
    async def saved(self, attachments: tuple[Attachment, ...]) -> AsyncIterator[list[str]]:
        """Write the attachments for one turn; remove them afterwards unless ``keep`` is set.

        The files are written and removed in a worker thread: file I/O never holds the loop.
        """
        if not attachments:
            yield []
            return
        folder = self.directory / uuid.uuid4().hex
        writing = asyncio.ensure_future(asyncio.to_thread(_write_all, folder, attachments))
        try:
            yield await asyncio.shield(writing)
        finally:
            # Its own task, so a second cancel cannot skip the removal (a cancelled turn still
            # waits for its files to be written, to remove them all).
            cleanup = asyncio.ensure_future(self._finish(writing, folder))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            await asyncio.shield(cleanup)

    async def _finish(self, writing: asyncio.Future[list[str]], folder: Path) -> None:
        await asyncio.wait((writing,))
        if not self.keep:
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    def _too_large(self, param: str) -> PayloadTooLarge:
        return PayloadTooLarge(f"A media item exceeds the {self.max_bytes} byte limit.", param=param)


def _write_all(folder: Path, attachments: tuple[Attachment, ...]) -> list[str]:
    folder.mkdir(parents=True, mode=0o700)
    taken: set[str] = set()
    paths = []
    for item in attachments:
        path = folder / unique_name(item.name, taken)
        with path.open("xb") as file:  # "x": never over an existing file
            file.write(item.data)
        paths.append(str(path))
    return paths


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext``, ... if a name equal up to case is ``taken``
    (which it joins): two files of one turn never share a path, on any file system."""
    stem, extension = split_extension(name)
    suffix = name[len(stem) :] if extension else ""
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    taken.add(candidate.lower())
    return candidate
