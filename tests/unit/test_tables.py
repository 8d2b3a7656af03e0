"""Tables at any terminal width: ids, statuses and times stay whole on one line."""

from __future__ import annotations

import io
import uuid

import pytest
from rich.console import Console

from pao.devctl.output import is_essential, table_for

COLUMNS = ["request", "item", "status", "requester", "created", "escalated"]


def _requests(n: int = 3) -> list[tuple[str, ...]]:
    return [
        (
            str(uuid.uuid4()),
            "postgresql-standard",
            "waiting_approval",
            "dana.someone@example.com",
            f"2026-12-01T22:0{i}:00",
            "level 1 (high): paged the owning team",
        )
        for i in range(n)
    ]


def _printed(columns: list[str], rows: list[tuple[str, ...]], width: int) -> list[str]:
    out = io.StringIO()
    screen = Console(width=width, file=out, color_system=None)
    screen.print(table_for(columns, rows, width=width, title="requests"), crop=False)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [60, 80, 120])
def test_every_id_status_and_time_is_printed_whole_on_one_line(width: int) -> None:
    rows = _requests()
    lines = _printed(COLUMNS, rows, width)
    for request_id, _, status, _, created, _ in rows:
        assert any(request_id in line for line in lines), f"{request_id} cut at {width}"
        assert any(created in line for line in lines)
        assert any(status in line for line in lines)
    assert not any("…" in line for line in lines)


@pytest.mark.parametrize("width", [60, 80, 120])
def test_nothing_is_wider_than_the_terminal_when_an_id_fits(width: int) -> None:
    lines = _printed(COLUMNS, _requests(), width)
    assert max(len(line) for line in lines) <= width


def test_a_wide_terminal_shows_every_column() -> None:
    lines = _printed(COLUMNS, _requests(), 200)
    header = next(line for line in lines if "request" in line and "item" in line)
    for column in COLUMNS:
        assert column in header
    assert not any("not shown" in line for line in lines)


def test_a_narrow_terminal_drops_optional_columns_from_the_right_and_says_so() -> None:
    lines = _printed(COLUMNS, _requests(), 100)
    text = "\n".join(lines)
    header = next(line for line in lines if "request" in line and "status" in line)
    assert "escalated" not in header
    assert "not shown at this width" in text
    assert "escalated" in text.split("not shown at this width")[1]
    for essential in ("request", "status", "created"):
        assert essential in header


def test_below_the_essential_columns_width_each_row_becomes_a_block() -> None:
    rows = _requests(2)
    lines = _printed(COLUMNS, rows, 60)
    assert [line for line in lines if line.startswith("request:")] == [
        f"request:   {rows[0][0]}",
        f"request:   {rows[1][0]}",
    ]
    assert "requester: dana.someone@example.com" in lines


def test_an_id_longer_than_a_tiny_terminal_gets_a_line_of_its_own() -> None:
    rows = _requests(1)
    lines = _printed(COLUMNS, rows, 40)
    assert lines[lines.index("request:") + 1] == f"  {rows[0][0]}"


def test_cell_values_are_shown_as_they_are_not_read_as_markup() -> None:
    lines = _printed(["id", "note"], [("a1", "[bold]kept[/bold]")], 80)
    assert any("[bold]kept[/bold]" in line for line in lines)


@pytest.mark.parametrize(
    ("column", "essential"),
    [
        ("id", True),
        ("request", True),
        ("resource_id", True),
        ("status", True),
        ("state", True),
        ("created", True),
        ("expires_at", True),
        ("waiting since", True),
        ("item", False),
        ("requester", False),
        ("reason", False),
    ],
)
def test_columns_are_essential_by_name(column: str, essential: bool) -> None:
    assert is_essential(column) is essential
