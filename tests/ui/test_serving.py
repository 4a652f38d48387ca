"""How the page is served, on both stacks through real HTTP: its headers, its caching, its size,
``--no-ui``, and the browser guard letting the page's own requests through (and no others)."""

from __future__ import annotations

import gzip
import re

import httpx
import pytest

from nanobot.agents.echo import EchoAgent
from nanobot.api.ui import CSP
from nanobot.config import parse_args
from tests.ui.conftest import Serve

HI = {"messages": [{"role": "user", "content": "hi"}]}


def assets(client: httpx.Client) -> dict[str, httpx.Response]:
    page = client.get("/")
    found = {"/": page}
    for path in re.findall(r'(?:src|href)="(ui/[^"?]+)\?v=', page.text):
        found[path] = client.get("/" + path)
    return found


def test_page_and_files_carry_csp_nosniff_and_revalidate(serve: Serve) -> None:
    with httpx.Client(base_url=serve(EchoAgent(), api_key="k")) as client:  # no key needed for the page
        found = assets(client)
        assert set(found) == {"/", "ui/app.js", "ui/app.css"}
        types = {"/": "text/html", "ui/app.js": "text/javascript", "ui/app.css": "text/css"}
        for path, response in found.items():
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(types[path])
            assert response.headers["content-security-policy"] == CSP
            assert "script-src 'self'" in CSP and "default-src 'self'" in CSP and "unsafe-inline" not in CSP
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-cache"
            again = client.get("/" + path.lstrip("/"), headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        assert "<script>" not in found["/"].text  # no inline script: the CSP would refuse it
        assert client.get("/ui/nothing.js").status_code == 404
        assert client.get("/v1/models").status_code == 401  # the API still needs the key


def test_the_page_names_its_files_by_their_content(serve: Serve) -> None:
    with httpx.Client(base_url=serve(EchoAgent())) as client:
        versions = set(re.findall(r'\?v=([0-9a-f]+)"', client.get("/").text))
    assert len(versions) == 1  # a new version of the files is a new URL: no stale cache


def test_everything_the_page_downloads_is_under_100_kb_gzipped(serve: Serve) -> None:
    with httpx.Client(base_url=serve(EchoAgent())) as client:
        total = sum(len(gzip.compress(r.content, 9)) for r in assets(client).values())
    assert total < 100 * 1024, total


def test_no_ui_makes_the_page_a_404(serve: Serve) -> None:
    with httpx.Client(base_url=serve(EchoAgent(), ui=False)) as client:
        for path in ("/", "/ui/app.js"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["message"] == f"Invalid URL (GET {path})."
            assert "content-security-policy" not in response.headers
        assert client.post("/v1/chat/completions", json=HI).status_code == 200


@pytest.mark.parametrize(
    ("argv", "environ", "off"),
    [
        ([], {}, False),
        (["--no-ui"], {}, True),
        ([], {"NANOBOT_NO_UI": "1"}, True),
        ([], {"NANOBOT_NO_UI": "0"}, False),
    ],
)
def test_no_ui_flag_and_variable(argv: list[str], environ: dict[str, str], off: bool) -> None:
    settings = parse_args(["serve", *argv], environ)
    assert settings.no_ui is off
    assert settings.service_options()["ui"] is not off


def test_guard_lets_the_page_itself_in_and_no_other_page(serve: Serve) -> None:
    url = serve(EchoAgent())  # no key: the browser guard is on
    port = url.rsplit(":", 1)[1]
    with httpx.Client(base_url=url) as client:

        def chat(origin: str, host: str | None = None) -> int:
            headers = {"Origin": origin, **({"Host": host} if host else {})}
            return client.post("/v1/chat/completions", json=HI, headers=headers).status_code

        assert chat(f"http://127.0.0.1:{port}") == 200  # the page, opened at 127.0.0.1
        assert chat(f"http://localhost:{port}", f"localhost:{port}") == 200  # opened at localhost
        assert chat(f"http://[::1]:{port}", f"[::1]:{port}") == 200
        assert chat("http://127.0.0.1:3000") == 403  # another local page
        assert chat(f"http://localhost:{port}") == 403  # names another host than the request's
        assert chat(f"http://evil.example:{port}", f"evil.example:{port}") == 403  # rebinding
        assert chat("null") == 403
