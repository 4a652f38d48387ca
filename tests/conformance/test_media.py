"""Images and uploads: checked, saved under safe names, handed over, removed; both stacks."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conftest import Serve
from tests.support.sse import data_events

pytestmark = pytest.mark.asyncio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 64


def image_message(data: bytes, kind: str = "image/png", text: str = "what is this?") -> dict[str, Any]:
    url = f"data:{kind};base64,{base64.b64encode(data).decode()}"
    return {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ]
    }


class MediaAgent:
    """Records what it was given and what the files held while the turn ran."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str], list[bytes]]] = []

    async def process_direct(self, *, content: str, media: list[str] | None = None, **kwargs: Any) -> str:
        paths = media or []
        self.seen.append((content, paths, [Path(p).read_bytes() for p in paths]))
        return "seen"


@pytest.mark.parametrize("stream", [False, True])
async def test_inline_image_is_saved_passed_and_removed(serve: Serve, tmp_path: Path, stream: bool) -> None:
    agent = MediaAgent()
    client = await serve(agent, media_dir=tmp_path)
    response = await client.post("/v1/chat/completions", json={**image_message(PNG), "stream": stream})
    assert response.status_code == 200
    if stream:
        assert data_events(response.content)[-1] == "[DONE]"
    [(content, paths, blobs)] = agent.seen
    assert content == "what is this?"
    assert blobs == [PNG]
    assert Path(paths[0]).suffix == ".png"
    assert Path(paths[0]).is_relative_to(tmp_path)
    assert not Path(paths[0]).exists()
    assert list(tmp_path.iterdir()) == []


async def test_keep_media_leaves_the_files(serve: Serve, tmp_path: Path) -> None:
    agent = MediaAgent()
    client = await serve(agent, media_dir=tmp_path, keep_media=True)
    assert (
        await client.post("/v1/chat/completions", json=image_message(JPEG, "image/jpeg"))
    ).status_code == 200
    assert Path(agent.seen[0][1][0]).read_bytes() == JPEG


@pytest.mark.parametrize(
    ("message", "status", "code"),
    [
        (image_message(PNG, "image/jpeg"), 400, "invalid_image"),
        (image_message(b"<svg/>", "image/svg+xml"), 400, "invalid_image"),
        (image_message(b"plain text", "image/png"), 400, "invalid_image"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
                    }
                ]
            },
            400,
            "invalid_image",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,abc"}}]}
                ]
            },
            400,
            "invalid_image",
        ),
        (image_message(PNG + b"\x00" * 5000), 413, "request_too_large"),
    ],
)
async def test_bad_images_are_refused(
    serve: Serve, tmp_path: Path, message: dict[str, Any], status: int, code: str
) -> None:
    agent = MediaAgent()
    client = await serve(agent, media_dir=tmp_path, max_media_bytes=4096)
    response = await client.post("/v1/chat/completions", json={**message, "stream": True})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"] == "messages[0].content"
    assert agent.seen == []


async def test_multipart_upload(serve: Serve, tmp_path: Path) -> None:
    agent = MediaAgent()
    client = await serve(agent, media_dir=tmp_path)
    files = [
        ("files", ("../../etc/passwd.png", PNG, "image/png")),
        ("files", ("notes.txt", b"some notes", "text/plain")),
    ]
    data = {"message": "look at these", "session_id": "up-1", "model": "nanobot", "stream": "true"}
    response = await client.post("/v1/chat/completions", data=data, files=files)
    assert response.status_code == 200, response.text
    assert data_events(response.content)[-1] == "[DONE]"
    [(content, paths, blobs)] = agent.seen
    assert content == "look at these"
    assert blobs == [PNG, b"some notes"]
    assert [Path(p).name for p in paths] == ["passwd.png", "notes.txt"]
    assert all(Path(p).is_relative_to(tmp_path) for p in paths)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "files", "status", "param"),
    [
        ({}, [], 400, "message"),
        ({"message": "x", "stream": "maybe"}, [], 400, "stream"),
        ({"message": "x", "session_id": "bad id"}, [], 400, "session_id"),
        (
            {"message": "x"},
            [("files", ("a.exe", b"MZ\x90\x00", "application/x-msdownload"))],
            400,
            "files[0]",
        ),
        ({"message": "x"}, [("files", ("a.png", b"not a png", "image/png"))], 400, "files[0]"),
        ({"message": "x"}, [("files", ("big.txt", b"x" * 5000, "text/plain"))], 413, "files"),
    ],
)
async def test_bad_uploads_are_refused(
    serve: Serve, tmp_path: Path, data: dict[str, str], files: list[Any], status: int, param: str
) -> None:
    agent = MediaAgent()
    client = await serve(agent, media_dir=tmp_path, max_media_bytes=4096)
    # (None, value) parts are plain form fields: this forces multipart even without a file.
    parts = [(name, (None, value)) for name, value in data.items()] + files or [("other", (None, ""))]
    response = await client.post("/v1/chat/completions", files=parts)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param
    assert agent.seen == []


async def test_upload_over_the_request_limit_is_413(serve: Serve, tmp_path: Path) -> None:
    client = await serve(MediaAgent(), media_dir=tmp_path, max_body_bytes=2000)
    files = [("files", (f"{i}.txt", b"x" * 600, "text/plain")) for i in range(4)]
    response = await client.post("/v1/chat/completions", data={"message": "x"}, files=files)
    assert response.status_code == 413


async def test_malformed_multipart_is_400(serve: Serve) -> None:
    client = await serve(MediaAgent())
    headers = {"Content-Type": "multipart/form-data; boundary=zzz"}
    response = await client.post("/v1/chat/completions", content=b"--zzz\r\nnonsense", headers=headers)
    assert response.status_code == 400
    headers = {"Content-Type": "multipart/form-data"}
    response = await client.post("/v1/chat/completions", content=b"x", headers=headers)
    assert response.status_code == 400


# Uploads as real clients send them: curl types most files application/octet-stream, Python
# requests sends no Content-Type at all. The form is built by hand so a part can lack the header.

ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56)
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
NOTES = "# Notes\n\nCafé at 9, résumé due — ok ✓\n".encode()


def office(folder: str, *extra: str) -> bytes:
    """A tiny real Office Open XML file: a ZIP with [Content_Types].xml and its folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("_rels/.rels", "<Relationships/>")
        archive.writestr(f"{folder}document.xml", "<document/>")
        for name in extra:
            archive.writestr(name, b"\x00")
    return buffer.getvalue()


DOCX, XLSX, PPTX = office("word/"), office("xl/"), office("ppt/")

Part = tuple[str, str | None, str | None, bytes]  # field name, file name, Content-Type, bytes


def form(*parts: Part, message: str | None = "look") -> tuple[bytes, dict[str, str]]:
    """A multipart body and its headers; a part whose type is ``None`` has no Content-Type."""
    boundary = "nanobot-test-boundary"
    chunks = []
    fields: list[Part] = [("message", None, None, message.encode())] if message is not None else []
    for name, filename, kind, data in [*fields, *parts]:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
            disposition += f'; filename="{escaped}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if kind is not None:
            head += f"Content-Type: {kind}\r\n"
        chunks.append(head.encode() + b"\r\n" + data + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def upload(serve: Serve, tmp_path: Path, *parts: Part, message: str | None = "look") -> Any:
    agent = MediaAgent()
    client = await serve(agent, media_dir=tmp_path)
    body, headers = form(*parts, message=message)
    response = await client.post("/v1/chat/completions", content=body, headers=headers)
    return agent, response


CURL = "application/octet-stream"
REQUESTS = None


@pytest.mark.parametrize("declared", [CURL, REQUESTS], ids=["curl", "requests"])
async def test_files_typed_by_name_and_bytes_reach_the_agent_under_their_names(
    serve: Serve, tmp_path: Path, declared: str | None
) -> None:
    files = {
        "notes.md": NOTES,
        "data.csv": b"name,qty\nfoo,1\n",
        "config.json": b'{"a": 1}',
        "readme.txt": b"plain words\n",
        "report.docx": DOCX,
        "sheet.xlsx": XLSX,
        "deck.pptx": PPTX,
        "paper.pdf": PDF,
        "photo.PNG": PNG,
        "résumé.md": NOTES,
    }
    parts = [("files", name, declared, data) for name, data in files.items()]
    agent, response = await upload(serve, tmp_path, *parts)
    assert response.status_code == 200, response.text
    [(content, paths, blobs)] = agent.seen
    assert content == "look"
    assert [Path(p).name for p in paths] == list(files)
    assert blobs == list(files.values())
    assert len({Path(p).parent for p in paths}) == 1
    assert list(tmp_path.iterdir()) == []


async def test_a_file_without_an_extension_gets_the_one_its_bytes_deserve(
    serve: Serve, tmp_path: Path
) -> None:
    parts = [
        ("files", "photo", REQUESTS, PNG),
        ("files", "Q3 report v2.5", CURL, DOCX),
        ("files", "notes", "text/markdown", NOTES),
        ("files", "README", REQUESTS, b"hello\n"),
        ("files", "", "text/plain", b"unnamed"),  # a name-less part with bytes is still a file
    ]
    agent, response = await upload(serve, tmp_path, *parts)
    assert response.status_code == 200, response.text
    [(_, paths, _)] = agent.seen
    assert [Path(p).name for p in paths] == [
        "photo.png",
        "Q3 report v2.5.docx",
        "notes.md",
        "README.txt",
        "file.txt",
    ]


async def test_names_are_made_safe_and_kept_apart(serve: Serve, tmp_path: Path) -> None:
    parts = [
        ("files", "../../etc/passwd", REQUESTS, b"root:x:0:0\n"),
        ("files", "..\\x.md", CURL, b"# x\n"),
        ("files", "C:\\Users\\me\\notes.md", CURL, b"one"),
        ("files", "notes.md", CURL, b"two"),
        ("files", "NOTES.md", CURL, b"three"),
        ("files", ".env", REQUESTS, b"KEY=1\n"),
        ("files", "a\x01b\u202e.txt", REQUESTS, b"ctl"),
        ("files", "x" * 300 + ".md", CURL, b"long"),
    ]
    agent, response = await upload(serve, tmp_path, *parts)
    assert response.status_code == 200, response.text
    [(_, paths, blobs)] = agent.seen
    names = [Path(p).name for p in paths]
    assert names[:7] == ["passwd.txt", "x.md", "notes.md", "notes-2.md", "NOTES-3.md", "env.txt", "ab.txt"]
    assert names[7].endswith(".md") and names[7].startswith("xxx") and len(names[7].encode()) <= 120
    assert blobs == [p[3] for p in parts]
    folder = Path(paths[0]).parent
    assert folder.parent == tmp_path
    assert all(Path(p).parent == folder for p in paths)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("part", "code"),
    [
        (("files", "data.txt", REQUESTS, b"\x00\x01\x02\xff\xfe binary"), "unsupported_file_type"),
        (("files", "data.txt", "text/plain", bytes(range(256))), "unsupported_file_type"),
        (("files", "paper.pdf", "application/pdf", ELF), "unsupported_file_type"),
        (("files", "paper.pdf", CURL, ELF), "unsupported_file_type"),
        (("files", "tool", REQUESTS, ELF), "unsupported_file_type"),
        (("files", "setup.exe", CURL, b"MZ\x90\x00\x03\x00\x00\x00" + bytes(56)), "unsupported_file_type"),
        (("files", "run.bat", REQUESTS, b"echo hi\r\n"), "unsupported_file_type"),
        (("files", "macro.docx", CURL, office("word/", "word/vbaProject.bin")), "unsupported_file_type"),
        (("files", "bundle.docx", CURL, office("other/")), "unsupported_file_type"),
        (("files", "notes.txt", REQUESTS, b"#!/bin/sh\nrm -rf ~\n"), "file_type_mismatch"),
        (("files", "notes", REQUESTS, b"#!/bin/sh\nrm -rf ~\n"), "file_type_mismatch"),
        (("files", "photo.txt", REQUESTS, PNG), "file_type_mismatch"),
        (("files", "photo.jpg", "image/jpeg", PNG), "file_type_mismatch"),
        (("files", "report.docx", "application/pdf", DOCX), "file_type_mismatch"),
        (("files", "report.pdf", REQUESTS, DOCX), "file_type_mismatch"),
        (("files", "paper.pdf", REQUESTS, b"just text"), "file_type_mismatch"),
        (("files", "notes.md", "image/png", NOTES), "file_type_mismatch"),
    ],
)
async def test_executables_and_contradicting_files_are_refused(
    serve: Serve, tmp_path: Path, part: Part, code: str
) -> None:
    agent, response = await upload(serve, tmp_path, ("files", "ok.md", CURL, b"fine"), part)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "files[1]")
    assert agent.seen == []
    assert list(tmp_path.iterdir()) == []


async def test_a_shell_script_named_as_one_is_text(serve: Serve, tmp_path: Path) -> None:
    agent, response = await upload(serve, tmp_path, ("files", "deploy.sh", REQUESTS, b"#!/bin/sh\necho hi\n"))
    assert response.status_code == 200, response.text
    assert [Path(p).name for p in agent.seen[0][1]] == ["deploy.sh"]


async def test_a_browsers_empty_file_input_is_no_file(serve: Serve, tmp_path: Path) -> None:
    agent, response = await upload(serve, tmp_path, ("files", "", CURL, b""))
    assert response.status_code == 200, response.text
    assert agent.seen == [("look", [], [])]
