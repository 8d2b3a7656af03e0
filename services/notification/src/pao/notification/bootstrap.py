"""Wiring the notification service: request events -> notices in the outbox -> channels."""

from __future__ import annotations

from datetime import timedelta

from pao.notification import MIGRATIONS, requests
from pao.notification.channels import build_channels
from pao.notification.outbox import OutboxSender, sample_depth
from pao.notification.routing import load_routing
from pao.shared.metrics import sample_every
from pao.shared.runtime import Scope

__all__ = ["MIGRATIONS", "start"]


async def start(scope: Scope) -> None:
    """The consumer that plans notices, and the sender that delivers them."""
    settings = scope.settings
    routing = load_routing(settings.notifications_file)
    notifier = requests.Notifier(
        routing,
        gateway_url=settings.public_url or f"http://{settings.http_host}:{settings.http_port}",
    )
    await scope.consume(requests.CONSUMER, requests.handlers(notifier))
    channels = build_channels(routing, await scope.session())
    sender = OutboxSender(
        scope.pool, channels, stale_after=timedelta(seconds=settings.notification_stale_seconds)
    )
    scope.spawn("notification-sender", sender.run(scope.stop))
    scope.spawn("notification-metrics", sample_every(scope.stop, lambda: sample_depth(scope.pool)))
