"""Images and uploads: checked, saved under generated names, handed over, removed; both stacks."""

from __future__ import annotations

import base64
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
    assert [Path(p).name for p in paths] == ["0.png", "1.txt"]
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
