"""``multipart/form-data`` turns: ``message``, ``session_id``, ``model``, ``stream``, ``files``.

Parsed with python-multipart (the streaming parser Starlette uses), fed the already size-capped
body; each file is judged by its bytes, declared type and name (:mod:`nanobot.api.uploads`)
and capped at the media limit. A file part with an empty name and no bytes (a browser's file
input left empty) is no file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from nanobot.api.media import Attachment, MediaStore
from nanobot.api.request import ChatRequest, Message, check_session_id
from nanobot.core.errors import InvalidRequest, PayloadTooLarge

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    def disposition(self) -> tuple[str, str | None]:
        _, options = parse_options_header(self.headers.get("content-disposition", b""))
        filename = options.get(b"filename")
        return options.get(b"name", b"").decode("utf-8", "replace"), (
            filename.decode("utf-8", "replace") if filename is not None else None
        )


class _Collector:
    """Callbacks for :class:`MultipartParser` that gather parts, refusing oversize ones."""

    def __init__(self, max_part: int, max_parts: int) -> None:
        self.parts: list[_Part] = []
        self._max_part = max_part
        self._max_parts = max_parts
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_field,
            "on_header_value": self._on_value,
            "on_header_end": self._on_header_end,
            "on_part_data": self._on_data,
        }

    def _on_part_begin(self) -> None:
        if len(self.parts) >= self._max_parts:
            raise InvalidRequest(
                f"The form has more than {self._max_parts} parts.", param="files", code="too_many_files"
            )
        self.parts.append(_Part())

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._field.decode("latin-1").lower()
        self.parts[-1].headers[name] = self._value
        self._field = self._value = b""

    def _on_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        part.data += data[start:end]
        if len(part.data) > self._max_part:
            raise PayloadTooLarge(f"A form part exceeds the {self._max_part} byte limit.", param="files")


#: Form fields besides files (``message``, ``session_id``, ``model``, ``stream``) and some slack.
_FIELD_PARTS = 8


def parse_form(
    body: bytes, content_type: str, media: MediaStore, max_files: int = 64
) -> tuple[ChatRequest, tuple[Attachment, ...]]:
    """A chat turn from a multipart form with at most ``max_files`` files."""
    try:
        _, options = parse_options_header(content_type.encode("latin-1"))
    except UnicodeEncodeError:
        raise InvalidRequest("The multipart Content-Type is not latin-1 text.", code="invalid_form") from None
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidRequest("The multipart body has no boundary.", code="invalid_form")
    collector = _Collector(media.max_bytes, max_files + _FIELD_PARTS)
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise InvalidRequest(f"The multipart body is malformed: {exc}.", code="invalid_form") from None
    fields: dict[str, str] = {}
    files: list[Attachment] = []
    for part in collector.parts:
        name, filename = part.disposition()
        if name == "files" or filename is not None:
            if filename == "" and not part.data:
                continue  # a browser's file input with no file chosen
            if len(files) == max_files:
                raise InvalidRequest(
                    f"At most {max_files} files are accepted.", param="files", code="too_many_files"
                )
            declared = part.headers.get("content-type")
            files.append(
                media.file(
                    bytes(part.data),
                    declared.decode("latin-1") if declared is not None else None,
                    filename,
                    f"files[{len(files)}]",
                )
            )
        else:
            fields[name] = part.data.decode("utf-8", "replace")
    return _request(fields, bool(files)), tuple(files)


#: The instruction an agent gets for files sent with no message (nanobot does the same).
FILES_PROMPT = "Please look at the attached files."


def _request(fields: dict[str, str], has_files: bool) -> ChatRequest:
    message = fields.get("message", "")
    if not message.strip():
        if not has_files:
            raise InvalidRequest("The form needs a non-empty 'message' field or a file.", param="message")
        message = FILES_PROMPT
    stream = fields.get("stream", "").strip().lower()
    if stream not in _TRUE | _FALSE:
        raise InvalidRequest("'stream' must be true or false.", param="stream", code="invalid_type")
    return ChatRequest(
        messages=(Message("user", message),),
        model=fields.get("model") or None,
        stream=stream in _TRUE,
        session_id=check_session_id(fields.get("session_id") or None, "session_id"),
    )
