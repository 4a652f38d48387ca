"""Deciding what an upload is, and the name it is saved under (no I/O)."""

from __future__ import annotations

import io
import random
import zipfile

import pytest

from nanobot.api.media import unique_name
from nanobot.api.uploads import DOCX, PDF, PNG, PPTX, TEXT, XLSX, Kind, is_text, judge, safe_name
from nanobot.core.errors import InvalidRequest


def office(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "<x/>")
    return buffer.getvalue()


PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(16)


@pytest.mark.parametrize(
    ("data", "declared", "filename", "kind", "name"),
    [
        (b"# t\n", None, "notes.md", TEXT, "notes.md"),
        (b"# t\n", "application/octet-stream", "notes.md", TEXT, "notes.md"),
        (b"# t\n", "text/markdown; charset=utf-8", "notes", TEXT, "notes.md"),
        (b"\xef\xbb\xbfa,b\r\n1,2\r\n", "TEXT/CSV", "t.csv", TEXT, "t.csv"),
        (b"tab\tand\x0cfeed\x1b[0m", None, "log", TEXT, "log.txt"),
        (b"", None, "empty.txt", TEXT, "empty.txt"),
        (b"x = 1\n", "text/x-python", "m.py", TEXT, "m.py"),
        (b"plain", "application/x-unknown-text", "a.weird", TEXT, "a.weird"),
        (PNG_BYTES, None, "shot", PNG, "shot.png"),
        (PNG_BYTES, "image/png", "shot.backup", PNG, "shot.backup.png"),
        (b"%PDF-1.7\n", None, "p.PDF", PDF, "p.PDF"),
        (office("[Content_Types].xml", "word/document.xml"), None, "d.docx", DOCX, "d.docx"),
        (office("[Content_Types].xml", "xl/workbook.xml"), "application/zip", "s", XLSX, "s.xlsx"),
        (office("[Content_Types].xml", "ppt/presentation.xml"), None, "p.pptx", PPTX, "p.pptx"),
        (b"MZ is a company\n", None, "mz.txt", TEXT, "mz.txt"),
    ],
)
def test_accepted(data: bytes, declared: str | None, filename: str, kind: Kind, name: str) -> None:
    upload = judge(data, declared, filename, "files[0]")
    assert (upload.kind, upload.name) == (kind, name)


@pytest.mark.parametrize(
    ("data", "declared", "filename", "code"),
    [
        (b"\x7fELF\x02\x01\x01" + bytes(9), None, "x.pdf", "unsupported_file_type"),
        (b"\xcf\xfa\xed\xfe" + bytes(12), None, "x", "unsupported_file_type"),
        (b"\x00asm\x01\x00\x00\x00", None, "x.txt", "unsupported_file_type"),
        (b"MZ\x90\x00\x03\x00", None, "x.dat", "unsupported_file_type"),
        (b"echo", "application/x-msdownload", "x.txt", "unsupported_file_type"),
        (b"echo", None, "x.PS1", "unsupported_file_type"),
        (b"PK\x03\x04 truncated", None, "x.docx", "unsupported_file_type"),
        (office("a.txt"), None, "x.zip", "unsupported_file_type"),
        (
            office("[Content_Types].xml", "xl/a.xml", "xl/vbaProject.bin"),
            None,
            "x.xlsx",
            "unsupported_file_type",
        ),
        (b"ok\xff\xfe", None, "x.txt", "unsupported_file_type"),
        (b"#!/usr/bin/env python\n", None, "x.md", "file_type_mismatch"),
        (PNG_BYTES, "image/gif", "x.png", "file_type_mismatch"),
        (PNG_BYTES, "text/plain", "x", "file_type_mismatch"),
        (b"%PDF-1.4", None, "x.docx", "file_type_mismatch"),
        (b"text", "application/pdf", "x", "file_type_mismatch"),
        (b"text", None, "x.zip", "file_type_mismatch"),
        (b"text", "video/mp4", "x.txt", "file_type_mismatch"),
    ],
)
def test_refused(data: bytes, declared: str | None, filename: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        judge(data, declared, filename, "files[2]")
    assert (caught.value.code, caught.value.param, caught.value.status) == (code, "files[2]", 400)


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\x.md", "x.md"),
        ("C:\\Users\\me\\My Notes.MD", "My Notes.MD"),
        ("...hidden", "hidden"),
        ("..", "file"),
        ("", "file"),
        (None, "file"),
        ("a\x00b\r\nc\u200b\u202e.txt", "ab c.txt"),
        ('what?<is>:"this"|*.md', "whatisthis.md"),
        ("  spaced   out .md. ", "spaced out.md"),
        ("Re\u0301sume\u0301.md", "Résumé.md"),
    ],
)
def test_safe_name(raw: str | None, safe: str) -> None:
    assert safe_name(raw) == safe


def test_a_long_name_keeps_its_extension_within_120_bytes() -> None:
    name = safe_name("é" * 200 + ".docx")
    assert name.endswith(".docx") and len(name.encode()) <= 120
    assert name[:-5] == "é" * ((120 - 5) // 2)


def test_names_of_one_turn_never_collide() -> None:
    taken: set[str] = set()
    names = ["a.md", "a.md", "A.md", "a-2.md", "b", "b"]
    assert [unique_name(n, taken) for n in names] == ["a.md", "a-2.md", "A-3.md", "a-2-2.md", "b", "b-2"]


def test_text_is_utf8_without_control_characters() -> None:
    assert is_text("naïve ✓\n".encode())
    assert not is_text("naïve".encode("latin-1"))
    assert not is_text(b"a\x00b")
    assert not is_text("utf-16".encode("utf-16"))


def test_broken_zips_are_refused_never_raised() -> None:
    """A seeded sweep of damaged Office files: each one is accepted or refused with a 400,
    never an unexpected exception (zipfile raises NotImplementedError for multi-disk ZIPs)."""
    base = office("[Content_Types].xml", "word/document.xml", "word/styles.xml")
    rng = random.Random(17)
    outcomes: set[str] = set()
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            if rng.random() < 0.8 or len(data) < 8:
                data[rng.randrange(len(data))] = rng.randrange(256)
            else:
                data = data[: rng.randrange(4, len(data))]
        try:
            outcomes.add(judge(bytes(data), None, "x.docx", "files[0]").kind.suffix)
        except InvalidRequest as refused:
            outcomes.add(str(refused.code))
    assert {".docx", "unsupported_file_type"} <= outcomes
