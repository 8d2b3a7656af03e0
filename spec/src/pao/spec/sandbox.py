"""The template sandbox: Jinja2's immutable sandbox, PAO's filters, and limits on what a template
may cost (output size, loop size, nesting, render time, big intermediate values)."""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import string
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from pao.spec.filters import PAO_FILTERS, TemplateLimitError

#: Largest rendered template, in characters.
MAX_OUTPUT = 65_536
#: Largest `range(...)` a template may loop over.
MAX_RANGE = 1_000
#: Deepest nesting of `{% for %}` loops.
MAX_LOOP_DEPTH = 2
#: Longest a single render may run, in seconds.
RENDER_TIMEOUT = 0.25
#: Largest value a template may build on its way to the output: characters of a string, or
#: characters and items of a list or mapping, nested ones counted each time they appear.
MAX_VALUE = 262_144
#: Largest integer a template may compute, in bits.
MAX_INT_BITS = 4_096
#: Longest template source kept in a cache; longer ones are compiled each time they are used.
MAX_CACHED_SOURCE = 16_384

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

_SIZE_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


_CONTAINERS = list | tuple | dict | set | frozenset


def value_size(value: Any, limit: int = MAX_VALUE) -> int:
    """How big a value is once written out (see MAX_VALUE); stops counting past `limit`.

    Each distinct list is measured once, so `[a, a, a]` costs three times `a` to write but only
    one walk of `a` to measure.
    """
    seen: dict[int, int] = {}
    # Sizes measured earlier in this render, by id (the value is kept so that its id is not
    # reused): a loop that wraps a big list again and again measures it once.
    measured: dict[int, tuple[Any, int]] | None = getattr(_active, "sizes", None)
    if measured is None:
        measured = {}

    def size(v: Any) -> int:
        if isinstance(v, str | bytes):
            return len(v)
        if not isinstance(v, _CONTAINERS):
            return 1
        known = seen.get(id(v))
        if known is not None:
            return known
        earlier = measured.get(id(v))
        if earlier is not None and earlier[0] is v:
            return earlier[1]
        seen[id(v)] = limit + 1  # a value inside itself is too big to write out
        total = len(v)
        for child in v.items() if isinstance(v, dict) else v:
            total += size(child) if isinstance(child, _CONTAINERS | str | bytes) else 1
            if total > limit:
                break
        seen[id(v)] = total
        if len(measured) < MAX_VALUE:
            measured[id(v)] = (v, total)
        return total

    try:
        return size(value)
    except RecursionError:
        return limit + 1


def check_value(value: Any, what: str = "a value") -> Any:
    """`value`, or TemplateLimitError when it is bigger than MAX_VALUE or MAX_INT_BITS."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"{what}: a number of more than {MAX_INT_BITS} bits")
        return value
    size = value_size(value)
    if size > MAX_VALUE:
        raise TemplateLimitError(f"{what} of more than {MAX_VALUE} characters or items")
    return value


def _check_size(size: int, what: str) -> None:
    if size > MAX_VALUE:
        raise TemplateLimitError(f"{what} of {size} characters; the limit is {MAX_VALUE}")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_format(fmt: str, args: Any, percent: bool) -> None:
    """Refuse a format string whose widths or precisions would build a huge string."""
    if percent:
        specs = [w for m in _PERCENT_SPEC.finditer(fmt) for w in m.groups() if w]
    else:
        try:
            specs = [spec for _, _, spec, _ in string.Formatter().parse(fmt) if spec]
        except ValueError:
            return  # the format call itself reports the bad format string
    dynamic = any("*" in spec or "{" in spec for spec in specs)
    widths = [int(n) for spec in specs for n in re.findall(r"\d+", spec)]
    if dynamic:
        widths += [a for a in args if isinstance(a, int)]
    if any(w > MAX_VALUE for w in widths):
        raise TemplateLimitError(f"a format width beyond {MAX_VALUE} characters")


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a string method that would build a huge string; its arguments, made concrete."""
    name = getattr(obj, "__name__", "")
    # the sandbox hands out str.format wrapped; the wrapper keeps the method as __wrapped__
    owner = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)
    widths = (*args, *kwargs.values())
    if name in _SIZE_METHODS and any(isinstance(a, int) and a > MAX_VALUE for a in widths):
        raise TemplateLimitError(f"{name}() to more than {MAX_VALUE} characters")
    if not isinstance(owner, str | bytes):
        return args
    owner = _text(owner)
    if name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tab, int):
            _check_size(len(owner) + owner.count("\t") * tab, "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count")
        _check_replace(owner, _text(args[0]), _text(args[1]), count)
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max(
            (len(_text(v)) for v in args[0].values() if isinstance(v, str | bytes)), default=1
        )
        _check_size(len(owner) * longest, "translate()")
    elif name == "join" and args:
        items = list(args[0])
        _check_join(items, owner)
        return (items, *args[1:])
    elif name in ("format", "format_map"):
        values = list(args) + list(kwargs.values())
        if name == "format_map" and args and isinstance(args[0], dict):
            values = list(args[0].values())
        for value in values:
            check_value(value, "a format argument")
        _check_format(owner, values, percent=False)
    return args


def _text(value: Any) -> Any:
    """Bytes as text of the same length, for measuring; anything else as it is."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _shape(value: Any) -> tuple[int, int]:
    """Items (nested ones each time they appear) and depth of nesting of a value."""
    seen: dict[int, tuple[int, int]] = {}

    def shape(v: Any) -> tuple[int, int]:
        if not isinstance(v, _CONTAINERS):
            return 0, 0
        known = seen.get(id(v))
        if known is not None:
            return known
        seen[id(v)] = (MAX_VALUE + 1, 0)
        items, depth = len(v), 0
        for child in v.items() if isinstance(v, dict) else v:
            if not isinstance(child, _CONTAINERS):
                continue
            child_items, child_depth = shape(child)
            items, depth = items + child_items, max(depth, child_depth)
            if items > MAX_VALUE:
                break
        seen[id(v)] = (items, depth + 1)
        return items, depth + 1

    try:
        return shape(value)
    except RecursionError:
        return MAX_VALUE + 1, MAX_VALUE + 1


def _check_indented(value: Any, indent: int, what: str) -> None:
    """Refuse writing a value out with `indent` per level when the indentation alone is huge
    (each item of a deeply nested value is written on its own line, indented to its depth)."""
    items, depth = _shape(value)
    _check_size(value_size(value) + items * indent * depth, what)


def bounded_json(value: Any, indent: Any = None) -> str:
    """PAO's `json`, refusing a result bigger than MAX_VALUE."""
    if indent:
        width = len(indent) if isinstance(indent, str) else int(indent)
        _check_indented(value, width, "json()")
    return PAO_FILTERS["json"](value, indent)


def bounded_yaml(value: Any) -> str:
    """PAO's `yaml`, refusing a result bigger than MAX_VALUE."""
    _check_indented(value, 2, "yaml()")
    return PAO_FILTERS["yaml"](value)


def _check_replace(text: str, old: Any, new: Any, count: Any) -> None:
    old, new = str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    _check_size(len(text) + found * (len(new) - len(old)), "replace()")


def _check_join(items: list[Any], separator: str) -> None:
    size = sum(value_size(i) for i in items) + len(separator) * max(len(items) - 1, 0)
    _check_size(size, "join()")


@pass_eval_context
def bounded_replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
    """jinja2's `replace`, refusing a result bigger than MAX_VALUE."""
    _check_replace(str(s), old, new, count)
    return _JINJA_FILTERS["replace"](eval_ctx, s, old, new, count)


@pass_eval_context
def bounded_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
    """jinja2's `join`, refusing a result bigger than MAX_VALUE."""
    items = list(value)
    _check_join(items, str(d))
    return _JINJA_FILTERS["join"](eval_ctx, items, d, attribute)


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose arguments and result are held to MAX_VALUE, and that keeps the deadline."""

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        tick()
        for arg in (*args, *kwargs.values()):
            check_value(arg, f"the input of {name}")
        result = func(*args, **kwargs)
        return check_value(result, f"the result of {name}")

    return bounded


def bounded_range(*args: int) -> range:
    """`range`, refusing more than MAX_RANGE items."""
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitError(f"range of {len(rng)} items; the limit is {MAX_RANGE}")
    return rng


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `~` and list, tuple and dict literals through the sandbox's size check: neither
    goes through `call_binop` or `call`, and both can nest references to one value into a huge one
    (`{% set b = a ~ a %}`, `[a, a, a]`)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - jinja2's name
        self.write("environment.concat_bounded((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:  # noqa: N802 - jinja2's name
        self.write("environment.checked(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:  # noqa: N802 - jinja2's name
        self.write("environment.checked(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:  # noqa: N802 - jinja2's name
        if node.ctx != "load":
            super().visit_Tuple(node, frame)
            return
        self.write("environment.checked(")
        super().visit_Tuple(node, frame)
        self.write(")")


class PaoSandbox(ImmutableSandboxedEnvironment):
    """Sandboxed, immutable, strict about undefined values, and bounded: every value a template
    builds is checked against MAX_VALUE before it is built where it could be huge, and after."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                    _check_size(value_size(seq) * times, "a repeated value")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise TemplateLimitError(f"a number of more than {MAX_INT_BITS} bits")
        if operator == "+" and isinstance(left, str | bytes | list | tuple):
            _check_size(value_size(left) + value_size(right), "a joined value")
        if operator == "%" and isinstance(left, str | bytes):
            values = right if isinstance(right, tuple) else (right,)
            for value in values:
                check_value(value, "a format argument")
            _check_format(_text(left), values, percent=True)
        if (
            operator == "**"
            and isinstance(right, int)
            and (right > 256 or (isinstance(left, int) and abs(left) > 1 and right > 64))
        ):
            raise TemplateLimitError("exponent too large")
        return check_value(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        tick()
        args = _check_method(__obj, args, kwargs)
        return check_value(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def checked(self, value: Any) -> Any:
        """A literal list, tuple or dict, held to MAX_VALUE."""
        tick()
        return check_value(value, "a literal")

    def concat_bounded(self, parts: tuple[Any, ...]) -> str:
        """`a ~ b ~ c`, held to MAX_VALUE."""
        tick()
        texts = [str(check_value(p, "a joined value")) for p in parts]
        _check_size(sum(map(len, texts)), "a joined value")
        return "".join(texts)


def _finalize(value: Any) -> Any:
    """Each `{{ value }}` before it is written out: written out, a list repeating a list may be
    far bigger than it is in memory."""
    tick()
    return check_value(value, "an output value")


_JINJA_FILTERS = ImmutableSandboxedEnvironment().filters
_BOUNDED_FILTERS = {
    "replace": bounded_replace,
    "join": bounded_join,
    "json": bounded_json,
    "yaml": bounded_yaml,
}


def make_environment() -> PaoSandbox:
    """The one environment PAO parses and renders templates with."""
    env = PaoSandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        finalize=_finalize,
    )
    chosen = {name: f for name, f in env.filters.items() if name in BUILTIN_FILTERS}
    chosen.update(PAO_FILTERS)
    chosen.update(_BOUNDED_FILTERS)
    env.filters = {name: _bounded_filter(name, f) for name, f in chosen.items()}
    env.globals.clear()
    env.globals.update({"range": bounded_range, "dict": dict, "namespace": Namespace})
    return env


ENVIRONMENT = make_environment()


def source_cache(maxsize: int) -> Callable[[Callable[[str], Any]], Any]:
    """An LRU cache of what is made from a template's source (templates come from requests too:
    the cache holds at most `maxsize` of them, none longer than MAX_CACHED_SOURCE)."""

    def decorate(func: Callable[[str], Any]) -> Any:
        cached = functools.lru_cache(maxsize=maxsize)(func)

        @functools.wraps(func)
        def lookup(source: str) -> Any:
            return func(source) if len(source) > MAX_CACHED_SOURCE else cached(source)

        lookup.cache_info = cached.cache_info  # type: ignore[attr-defined]
        lookup.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return lookup

    return decorate


# --- render time ------------------------------------------------------------------------------


class RenderTimeout(TemplateLimitError):
    """A render ran past RENDER_TIMEOUT."""


_active = threading.local()


def _timed_out() -> RenderTimeout:
    return RenderTimeout(
        f"rendering took longer than {RENDER_TIMEOUT * 1000:.0f} ms of processor time"
    )


def tick() -> None:
    """Stop a render past its deadline; the sandbox's hooks call this at every step.

    The deadline is the rendering thread's processor time, not the clock's: what it guards
    against is a template that burns the processor, and a busy machine that keeps a render
    waiting must not make a valid request fail.
    """
    until = getattr(_active, "until", None)
    if until is not None and time.thread_time() > until:
        raise _timed_out()


def _on_alarm(signum: int, frame: Any) -> None:
    if not getattr(_active, "deadline", False):
        return
    left = _active.until - time.thread_time()
    if left <= 0:
        raise _timed_out()
    # The clock ran out before the processor time did (the render waited): look again later.
    signal.setitimer(signal.ITIMER_REAL, max(left, 0.005))


_handler_installed = False


@contextlib.contextmanager
def deadline(seconds: float = RENDER_TIMEOUT) -> Iterator[None]:
    """Stop a render that runs longer than `seconds`, on any thread.

    `seconds` are the rendering thread's processor time (see `tick`). Every hook of the sandbox
    (calls, operators, attributes, filters, outputs) checks it, so a render in a worker thread
    stops at its next step; on the main thread a timer signal also interrupts a step that runs
    long between hooks.
    """
    global _handler_installed
    outer = getattr(_active, "until", None)
    if outer is None:
        _active.until = time.thread_time() + seconds
        _active.sizes = {}
    try:
        if threading.current_thread() is not threading.main_thread() or outer is not None:
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
    finally:
        if outer is None:
            _active.until = None
            _active.sizes = None
