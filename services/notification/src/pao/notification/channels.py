"""Channels deliver one notice each: JSON webhooks, Slack incoming webhooks and SMTP e-mail.

Every failure is a DeliveryError that says whether trying again may help (a timeout, a 503, a
429, a 4xx SMTP reply) or not (a 400, a 404, a 5xx SMTP reply). Messages name the channel, never
its URL or credentials: a Slack webhook URL is itself a secret.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

import aiohttp
import aiosmtplib

from pao.notification.notices import Notice
from pao.notification.routing import (
    EmailChannelConfig,
    Routing,
    RoutingError,
    SlackChannelConfig,
    WebhookChannelConfig,
)

_ERROR_BODY_LIMIT = 200


class DeliveryError(Exception):
    """A notice was not delivered; `transient` says whether a later attempt may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class Channel(Protocol):
    """Something that delivers a notice or raises DeliveryError."""

    name: str

    async def send(self, notice: Notice) -> None:
        """Deliver `notice`; return only once the receiving end accepted it."""
        ...


async def _post_json(
    session: aiohttp.ClientSession,
    *,
    channel: str,
    url: str,
    payload: dict[str, object],
    headers: Mapping[str, str],
    timeout: float,
) -> None:
    try:
        async with session.post(
            url, json=payload, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if 200 <= response.status < 300:
                return
            body = (await response.text(errors="replace")).strip()[:_ERROR_BODY_LIMIT]
            transient = response.status == 429 or response.status >= 500
            detail = f": {body}" if body else ""
            raise DeliveryError(f"{channel}: HTTP {response.status}{detail}", transient=transient)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # aiohttp's messages name host and port at most, never the path where tokens live.
        reason = str(exc) or type(exc).__name__
        raise DeliveryError(f"{channel}: {reason}", transient=True) from exc


class WebhookChannel:
    """POSTs the notice's JSON payload to a URL, with the configured headers."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._url = url
        self._session = session
        self._headers = dict(headers or {})
        self._timeout = timeout

    async def send(self, notice: Notice) -> None:
        """POST the payload; 2xx is delivered, 429/5xx/network errors transient, 4xx permanent."""
        headers = {**self._headers, "X-PAO-Event-ID": str(notice.event_id)}
        await _post_json(
            self._session,
            channel=self.name,
            url=self._url,
            payload=notice.payload,
            headers=headers,
            timeout=self._timeout,
        )


class SlackChannel:
    """POSTs a Slack incoming-webhook message (the notice's payload: text and blocks)."""

    def __init__(
        self, name: str, *, url: str, session: aiohttp.ClientSession, timeout: float = 10.0
    ) -> None:
        self.name = name
        self._url = url
        self._session = session
        self._timeout = timeout

    async def send(self, notice: Notice) -> None:
        """POST the message; 2xx is delivered, 429/5xx/network errors transient, 4xx permanent."""
        await _post_json(
            self._session,
            channel=self.name,
            url=self._url,
            payload=notice.payload,
            headers={},
            timeout=self._timeout,
        )


def _smtp_transient(code: int) -> bool:
    return 400 <= code < 500


class EmailChannel:
    """Sends the notice as a plain-text mail to its address through an SMTP server."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        sender: str,
        starttls: bool = True,
        use_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._host = host
        self._port = port
        self._sender = sender
        self._starttls = starttls
        self._use_tls = use_tls
        self._username = username
        self._password = password
        self._timeout = timeout

    def message(self, notice: Notice) -> EmailMessage:
        """The mail for `notice`: Subject, From, To, Date, Message-ID and a plain-text body."""
        if not notice.address:
            raise DeliveryError(f"{self.name}: the notice has no e-mail address", transient=False)
        message = EmailMessage()
        message["Subject"] = notice.subject
        message["From"] = self._sender
        message["To"] = notice.address
        message["Date"] = formatdate(usegmt=True)
        # Derived from what makes the notice unique, so a mail that did go out twice (a crash
        # between send and bookkeeping) carries one id that mail clients fold together.
        # Short enough to stay on one header line.
        digest = hashlib.sha256(f"{notice.recipient}\0{notice.channel}".encode()).hexdigest()[:12]
        domain = self._sender.rpartition("@")[2] or "pao"
        message["Message-ID"] = f"<{notice.event_id.hex}.{digest}@{domain}>"
        message.set_content(notice.text)
        return message

    async def send(self, notice: Notice) -> None:
        """Send the mail; connection errors and 4xx replies are transient, 5xx permanent."""
        message = self.message(notice)
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                start_tls=self._starttls,
                use_tls=self._use_tls,
                username=self._username,
                password=self._password,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise DeliveryError(
                f"{self.name}: recipient refused: "
                + "; ".join(f"{r.code} {r.message}" for r in exc.recipients),
                transient=all(_smtp_transient(code) for code in codes),
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{self.name}: SMTP {exc.code} {exc.message}", transient=_smtp_transient(exc.code)
            ) from exc
        except OSError as exc:
            # Connection refused, reset or timed out; aiosmtplib's own such errors are OSErrors.
            raise DeliveryError(
                f"{self.name}: {exc or type(exc).__name__}", transient=True
            ) from exc
        except aiosmtplib.SMTPException as exc:
            # Anything else (STARTTLS not offered, no AUTH) is the configuration's to fix.
            raise DeliveryError(f"{self.name}: {exc}", transient=False) from exc


def _email_channel(
    name: str, config: EmailChannelConfig, environ: Mapping[str, str]
) -> EmailChannel:
    password = None
    if config.password_env:
        password = environ.get(config.password_env)
        if password is None:
            raise RoutingError(
                f"channels.{name}.password_env: environment variable {config.password_env}"
                " is not set"
            )
    return EmailChannel(
        name,
        host=config.host,
        port=config.port,
        sender=config.sender,
        starttls=config.starttls,
        use_tls=config.use_tls,
        username=config.username,
        password=password,
        timeout=config.timeout_seconds,
    )


def build_channels(
    routing: Routing,
    session: aiohttp.ClientSession,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Channel]:
    """A channel for each one the routing declares, by name; SMTP passwords come from `environ`."""
    channels: dict[str, Channel] = {}
    for name, config in routing.channels.items():
        if isinstance(config, WebhookChannelConfig):
            channels[name] = WebhookChannel(
                name,
                url=config.url,
                session=session,
                headers=config.headers,
                timeout=config.timeout_seconds,
            )
        elif isinstance(config, SlackChannelConfig):
            channels[name] = SlackChannel(
                name, url=config.url, session=session, timeout=config.timeout_seconds
            )
        else:
            channels[name] = _email_channel(name, config, environ)
    return channels
