"""Pages from templates, with the headers every portal page carries."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

#: Scripts and styles only from the portal itself, no inline script, no framing, no referrer
#: (a sign-in link's token must not leak to a page it links to).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _when(value: Any) -> str:
    """An ISO time as people read it: 2026-12-02 08:15 UTC."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _shown(value: Any) -> str:
    """A value as a page shows it: text as it is, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _data(value: Any) -> Markup:
    """A value for a page's script, as JSON safe inside a <script type="application/json">."""
    text = json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text.replace("&", "\\u0026"))  # noqa: S704 (escaped just above)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pao.gateway.portal", "templates"),
        autoescape=True,
        # A key an item or request may leave out (support.email, ...) renders as nothing.
        undefined=jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["data"] = _data
    env.filters["shown"] = _shown
    return env


def page(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """The rendered page; `identity` (None when signed out) and `csrf` reach every template."""
    context.setdefault("csrf", "")
    context.setdefault("section", "")
    html = environment().get_template(template).render(path=request.path, **context)
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )
