"""The one error type devctl reports: a code, a message, a suggestion, the correlation id."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CliError(Exception):
    """Printed as one line on stderr; the process exits non-zero."""

    code: str
    message: str
    suggestion: str | None = None
    correlation_id: str | None = None
    status: int | None = None
    details: list[dict[str, object]] = field(default_factory=list)
    exit_code: int = 1

    def one_line(self) -> str:
        parts = [f"error {self.code}: {self.message.rstrip('.')}."]
        for detail in self.details[:5]:
            message = str(detail.get("message", "")).rstrip(".")
            if not message or message == self.message.rstrip("."):
                continue
            where = detail.get("field")
            parts.append(f"[{where}] {message}." if where else f"{message}.")
        if len(self.details) > 5:
            parts.append(f"(+{len(self.details) - 5} more)")
        if self.suggestion:
            parts.append(self.suggestion.rstrip(".") + ".")
        if self.correlation_id:
            parts.append(f"(correlation id {self.correlation_id})")
        return " ".join(parts)
