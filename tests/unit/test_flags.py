"""Flag values: durations and listen addresses."""

from __future__ import annotations

import pytest

from exporter.app.flags import duration, parse_listen_address


@pytest.mark.parametrize(
    "text,seconds",
    [("300", 300), ("30s", 30), ("5m", 300), ("1h", 3600), ("1.5s", 1.5), ("250ms", 0.25)],
)
def test_duration(text, seconds):
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text,parsed",
    [(":9917", ("", 9917)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9917", ("::1", 9917))],
)
def test_listen_address(text, parsed):
    assert parse_listen_address(text) == parsed


@pytest.mark.parametrize("text", ["9917", "host:", ":0", ":70000", "localhost:http"])
def test_listen_address_rejects(text):
    with pytest.raises(ValueError):
        parse_listen_address(text)
