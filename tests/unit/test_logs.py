"""What the console log renderer prints of a failure: the traceback, never a frame's locals."""

from __future__ import annotations

import sys
import uuid

from pao.shared.logs import console_renderer


def fail_holding(token: str) -> None:
    resolved = f"Bearer {token}"
    raise RuntimeError(f"the call failed ({len(resolved)} characters sent)")


def test_a_traceback_on_the_console_shows_no_local_variable() -> None:
    token = f"console-locals-{uuid.uuid4().hex}"  # not in the source the traceback quotes
    try:
        fail_holding(token)
    except RuntimeError:
        exc_info = sys.exc_info()

    line = console_renderer()(None, "error", {"event": "call failed", "exc_info": exc_info})

    assert "RuntimeError" in line
    assert "fail_holding" in line
    assert token not in line
