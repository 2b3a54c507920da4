"""The log's lines go to sys.stderr as it is when each line is written."""

from __future__ import annotations

import io
import sys

from exporter import logs


def test_a_line_goes_to_the_stderr_of_its_moment_not_the_first_lines(monkeypatch):
    first, then = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("info")
    log = logs.get_logger()
    log.info("first_line", n=1)
    first.close()  # a stream closed since (a test's capture, a redirected daemon's)
    monkeypatch.setattr(sys, "stderr", then)
    log.warning("second_line", n=2)
    assert "event=second_line" in then.getvalue() and "n=2" in then.getvalue()
    logs.configure()
