"""What an uploaded file is, decided from its bytes, its declared type and its name's extension.

A file is accepted when its bytes are something an agent can read (a PNG, JPEG, GIF or WebP image,
a PDF, a Word, Excel or PowerPoint document, or UTF-8 text) and neither its declared type nor its
extension claims something else. Executables are refused whatever they claim. A declared type
that says nothing (none at all, as Python ``requests`` sends; ``application/octet-stream``, as curl
sends for most extensions) is no claim: such files are judged by name and bytes alone.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass

from nanobot.core.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Kind:
    """A readable file kind: its usual extension, the extensions and declared types naming it."""

    suffix: str
    extensions: frozenset[str]
    types: frozenset[str]


def _words(words: str) -> frozenset[str]:
    return frozenset(words.split())


def _kind(suffix: str, extensions: str, types: str) -> Kind:
    return Kind(suffix, _words(extensions), _words(types))


_OOXML = "application/vnd.openxmlformats-officedocument."
PNG = _kind(".png", ".png", "image/png")
JPEG = _kind(".jpg", ".jpg .jpeg .jpe .jfif", "image/jpeg image/jpg image/pjpeg")
GIF = _kind(".gif", ".gif", "image/gif")
WEBP = _kind(".webp", ".webp", "image/webp")
PDF = _kind(".pdf", ".pdf", "application/pdf application/x-pdf")
DOCX = _kind(".docx", ".docx", f"{_OOXML}wordprocessingml.document application/zip")
XLSX = _kind(".xlsx", ".xlsx", f"{_OOXML}spreadsheetml.sheet application/zip")
PPTX = _kind(".pptx", ".pptx", f"{_OOXML}presentationml.presentation application/zip")
TEXT = _kind(".txt", "", "")  # any extension or type that names no other kind (see _claims_text)
BINARY_KINDS = (PNG, JPEG, GIF, WEBP, PDF, DOCX, XLSX, PPTX)

#: Declared types that say nothing about the file.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown"})
#: Extensions of formats not accepted (their bytes are refused anyway; a text file may not claim them).
OTHER_BINARY_EXTENSIONS = _words(
    ".doc .xls .ppt .docm .xlsm .pptm .dotm .odt .ods .odp .rtf .zip .gz .tgz .bz2 .xz .zst .7z .rar .tar "
    ".bmp .tif .tiff .ico .heic .heif .avif .svgz .mp3 .mp4 .m4a .wav .ogg .flac .mov .avi .mkv .webm "
    ".sqlite .db .pkl .npy .parquet .iso .img"
)
#: Extensions an operating system runs: refused whatever the bytes are.
EXECUTABLE_EXTENSIONS = _words(
    ".exe .dll .com .scr .msi .msp .cpl .sys .bat .cmd .ps1 .psm1 .vbs .vbe .wsf .wsh .hta .lnk .reg "
    ".jar .apk .app .dmg .pkg .deb .rpm .so .dylib .elf .run .appimage"
)
EXECUTABLE_TYPES = _words(
    "application/x-msdownload application/x-msdos-program application/x-dosexec application/x-executable "
    "application/vnd.microsoft.portable-executable application/x-sharedlib application/x-mach-binary "
    "application/x-elf application/java-archive application/vnd.android.package-archive "
    "application/x-msi application/x-ms-installer application/x-bat application/x-apple-diskimage"
)
#: Extensions under which a ``#!`` script is what it says (it is saved as text, never run).
SCRIPT_EXTENSIONS = _words(
    ".sh .bash .zsh .fish .ksh .py .pyw .rb .pl .pm .php .js .mjs .cjs .ts .lua .r .tcl .awk .sed .jl .swift"
)
#: Extensions that do name text (so a binary may not claim them).
TEXT_EXTENSIONS = (
    _words(
        ".txt .text .md .markdown .rst .csv .tsv .json .jsonl .ndjson .yaml .yml .toml .ini .cfg .conf .xml "
        ".html .htm .css .svg .log .tex .sql .c .h .cpp .hpp .java .go .rs .kt .cs .ipynb"
    )
    | SCRIPT_EXTENSIONS
)
_BINARY_TYPE_PREFIXES = ("image/", "audio/", "video/", "font/", "model/")
_KNOWN_BINARY_TYPES = frozenset(
    {t for kind in BINARY_KINDS for t in kind.types}
    | {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint", "application/gzip"}
    | {"application/x-7z-compressed", "application/x-rar-compressed", "application/x-tar"}
)
_TEXT_SUFFIXES = {"text/markdown": ".md", "text/csv": ".csv", "application/json": ".json"}
_EXECUTABLE_MAGIC = (
    b"\x7fELF",  # Linux, BSD
    b"\xfe\xed\xfa\xce",  # Mach-O (32, 64, both byte orders, universal/Java class)
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"\x00asm",  # WebAssembly
)
#: C0 controls that text does not hold (tab, newlines, form feed and escape are fine).
_CONTROL = bytes([*range(0x00, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
_MAX_NAME_BYTES = 120


@dataclass(frozen=True, slots=True)
class Upload:
    """A file judged acceptable: the suffix its bytes deserve and the safe name it is saved as."""

    kind: Kind
    name: str


def judge(data: bytes, declared: str | None, filename: str | None, param: str) -> Upload:
    """The accepted kind and safe name of an uploaded file, or an :class:`InvalidRequest`."""
    declared = (declared or "").split(";")[0].strip().lower()
    name = safe_name(filename)
    stem, extension = split_extension(name)
    shown = f"'{name}'" if filename else "The file"
    if extension in EXECUTABLE_EXTENSIONS or declared in EXECUTABLE_TYPES:
        raise _refused(f"{shown} is an executable; executables are not accepted.", param)
    kind = sniff(data, shown, param)
    claimed = declared if declared not in GENERIC_TYPES else None
    if kind is TEXT:
        if data.startswith(b"#!") and extension not in SCRIPT_EXTENSIONS:
            raise _mismatch(f"{shown} is a script ('#!') but is not named as one (e.g. .sh, .py).", param)
        if not _claims_text(claimed, extension):
            raise _mismatch(f"{shown} holds text, not what its name or declared type says.", param)
        if not extension:
            return Upload(kind, _named(stem, _TEXT_SUFFIXES.get(claimed or "", ".txt")))
        return Upload(kind, name)
    if claimed is not None and claimed not in kind.types:
        raise _mismatch(f"{shown} is declared {declared} but its bytes are a {kind.suffix} file.", param)
    if extension in kind.extensions:
        return Upload(kind, name)
    if extension is not None and _known(extension):
        raise _mismatch(f"{shown} is named {extension} but its bytes are a {kind.suffix} file.", param)
    return Upload(kind, _named(name, kind.suffix))


def sniff(data: bytes, shown: str, param: str) -> Kind:
    """What the bytes are; refuses executables and formats an agent cannot read."""
    if image := sniff_image(data):
        return image
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _office(data, shown, param)
    if data.startswith(_EXECUTABLE_MAGIC):
        raise _refused(f"{shown} is an executable; executables are not accepted.", param)
    if is_text(data):
        return TEXT
    if data.startswith(b"MZ"):
        raise _refused(f"{shown} is an executable; executables are not accepted.", param)
    raise _refused(
        f"{shown} is not an accepted file: send text (UTF-8), an image (PNG, JPEG, GIF, WebP), "
        "a PDF, or a Word, Excel or PowerPoint document.",
        param,
    )


def sniff_image(data: bytes) -> Kind | None:
    """The image kind the bytes really are, or ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def is_text(data: bytes) -> bool:
    """Whether the bytes are UTF-8 text (a byte-order mark allowed, no control characters)."""
    if len(data.translate(None, _CONTROL)) != len(data):  # deleting is ~5x faster than a regex
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _office(data: bytes, shown: str, param: str) -> Kind:
    """A Word, Excel or PowerPoint document (Office Open XML), by the parts its ZIP lists."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()  # reads the directory, inflates nothing
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, NotImplementedError):  # e.g. multi-disk
        names = []
    if "[Content_Types].xml" in names:
        if any(n.lower().endswith("vbaproject.bin") for n in names):
            raise _refused(f"{shown} holds macros; macro-enabled documents are not accepted.", param)
        for folder, kind in (("word/", DOCX), ("xl/", XLSX), ("ppt/", PPTX)):
            if any(n.startswith(folder) for n in names):
                return kind
    raise _refused(
        f"{shown} is a ZIP archive; only Word, Excel and PowerPoint documents are accepted.", param
    )


def _claims_text(claimed: str | None, extension: str | None) -> bool:
    if extension is not None and (extension in OTHER_BINARY_EXTENSIONS or _binary_extension(extension)):
        return False
    return claimed is None or not (
        claimed.startswith(_BINARY_TYPE_PREFIXES) or claimed in _KNOWN_BINARY_TYPES
    )


def _binary_extension(extension: str) -> bool:
    return any(extension in kind.extensions for kind in BINARY_KINDS)


def _known(extension: str) -> bool:
    return (
        extension in TEXT_EXTENSIONS or extension in OTHER_BINARY_EXTENSIONS or _binary_extension(extension)
    )


def safe_name(filename: str | None) -> str:
    """The client's file name, made safe to save: no folders, control or reserved characters,
    leading dots or surrounding spaces, at most 120 UTF-8 bytes with the extension kept."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = " ".join(unicodedata.normalize("NFC", base).split())  # tabs, newlines: one space
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C" and c not in '<>:"|?*')
    base = base.strip(" .")
    if not base:
        return "file"
    stem, extension = split_extension(base)
    return _named(stem, base[len(stem) :] if extension else "")


def split_extension(name: str) -> tuple[str, str | None]:
    """``(stem, extension)``: the extension lowercased, ``None`` when the name has none."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or not 1 <= len(extension) <= 16 or " " in extension:
        return name, None
    return stem, f".{extension.lower()}"


def _named(stem: str, suffix: str) -> str:
    """``stem + suffix``, the stem shortened so the whole stays within the name limit."""
    room = _MAX_NAME_BYTES - len(suffix.encode())
    short = stem.encode()[:room].decode("utf-8", "ignore").rstrip(" .")
    return f"{short or 'file'}{suffix}"


def _refused(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_file_type")


def _mismatch(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="file_type_mismatch")
