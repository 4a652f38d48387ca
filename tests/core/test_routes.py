"""The metrics label of a path: every route the server answers has its own, the rest one."""

from __future__ import annotations

import pytest

from nanobot.api.access import route_of


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/", "/"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/responses", "/v1/responses"),
        ("/v1/responses/resp_1", "/v1/responses/{response_id}"),
        ("/v1/messages", "/v1/messages"),
        ("/v1/messages/count_tokens", "/v1/messages/count_tokens"),
        ("/v1/models/nanobot", "/v1/models/{model_id}"),
        ("/ui/app.js", "/ui/{file}"),
        ("/v1/responses/", "unknown"),
        ("/etc/passwd", "unknown"),
    ],
)
def test_every_route_has_a_bounded_label(path: str, label: str) -> None:
    assert route_of(path) == label
