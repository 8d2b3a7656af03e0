"""The template sandbox: Jinja2's immutable sandbox, PAO's filters, and limits on what a template
may cost (output size, loop size, nesting, render time, big intermediate values)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from pao.spec.filters import PAO_FILTERS, TemplateLimitError

#: Largest rendered template, in characters.
MAX_OUTPUT = 65_536
#: Largest `range(...)` a template may loop over.
MAX_RANGE = 1_000
#: Deepest nesting of `{% for %}` loops.
MAX_LOOP_DEPTH = 2
#: Longest a single render may run, in seconds (enforced on the main thread, where PAO renders).
RENDER_TIMEOUT = 0.25

#: Jinja2 built-in filters templates may use; the others (HTML escaping, padding to a width,
#: random, ...) have no use in a ticket or a Terraform variable or can build huge values.
BUILTIN_FILTERS = frozenset(
    {
        "upper",
        "lower",
        "title",
        "capitalize",
        "default",
        "d",
        "replace",
        "trim",
        "truncate",
        "join",
        "length",
        "count",
        "first",
        "last",
        "list",
        "int",
        "float",
        "string",
        "round",
        "abs",
        "sort",
        "unique",
        "reverse",
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "min",
        "max",
        "sum",
        "items",
        "dictsort",
        "wordcount",
        "urlencode",
        "striptags",
    }
)

_SIZE_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def bounded_range(*args: int) -> range:
    """`range`, refusing more than MAX_RANGE items."""
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitError(f"range of {len(rng)} items; the limit is {MAX_RANGE}")
    return rng


class PaoSandbox(ImmutableSandboxedEnvironment):
    """Sandboxed, immutable, strict about undefined values, and bounded."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and (len(seq) * times > MAX_OUTPUT)
                ):
                    raise TemplateLimitError(
                        f"a repeated value of {len(seq) * times} items; the limit is {MAX_OUTPUT}"
                    )
        if (
            operator == "**"
            and isinstance(right, int)
            and (right > 256 or (isinstance(left, int) and abs(left) > 1 and right > 64))
        ):
            raise TemplateLimitError("exponent too large")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        name = getattr(__obj, "__name__", "")
        if name in _SIZE_METHODS and any(
            isinstance(a, int) and a > MAX_OUTPUT for a in (*args, *kwargs.values())
        ):
            raise TemplateLimitError(f"{name}() to more than {MAX_OUTPUT} characters")
        return super().call(__context, __obj, *args, **kwargs)


def make_environment() -> PaoSandbox:
    """The one environment PAO parses and renders templates with."""
    env = PaoSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters = {name: f for name, f in env.filters.items() if name in BUILTIN_FILTERS}
    env.filters.update(PAO_FILTERS)
    env.globals.clear()
    env.globals.update({"range": bounded_range, "dict": dict, "namespace": Namespace})
    return env


ENVIRONMENT = make_environment()


# --- render time ------------------------------------------------------------------------------


class RenderTimeout(TemplateLimitError):
    """A render ran past RENDER_TIMEOUT."""


_active = threading.local()


def _on_alarm(signum: int, frame: Any) -> None:
    if getattr(_active, "deadline", False):
        raise RenderTimeout(f"rendering took longer than {RENDER_TIMEOUT * 1000:.0f} ms")


_handler_installed = False


@contextlib.contextmanager
def deadline(seconds: float = RENDER_TIMEOUT) -> Iterator[None]:
    """Interrupt a render that runs longer than `seconds`.

    A timer signal can only interrupt the main thread; elsewhere the output-size checks and the
    loop limits still bound a render, and this is a no-op.
    """
    global _handler_installed
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _handler_installed:
        signal.signal(signal.SIGALRM, _on_alarm)
        _handler_installed = True
    _active.deadline = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _active.deadline = False
