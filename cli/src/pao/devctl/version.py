"""devctl's version (the one place it is written; the wheel's metadata reads it) and which servers
this devctl can talk to.

The rule, checked by `devctl version`: a server fits when it serves the REST API version devctl
speaks (`API_VERSION`, the `/api/v1` prefix of every call) and is at least `MIN_SERVER_VERSION`,
the oldest server release with every endpoint this devctl calls. Raise `MIN_SERVER_VERSION` in the
release whose commands start using a newer endpoint; a newer server within the same API version
always fits, because the API only grows within a version.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

__version__ = "0.1.0"

API_VERSION = "v1"
MIN_SERVER_VERSION = "0.1.0"


def server_mismatch(server_version: str | None, server_api_version: str | None) -> str | None:
    """Why a server reporting these versions does not fit this devctl, or None when it does."""
    if server_api_version is not None and server_api_version != API_VERSION:
        return (
            f"the server serves API {server_api_version} and devctl {__version__} speaks "
            f"{API_VERSION}; install the devctl released with the server"
        )
    try:
        server = Version(server_version or "")
    except InvalidVersion:
        return f"the server reports version {server_version!r}, which devctl cannot compare"
    if server.release < Version(MIN_SERVER_VERSION).release:
        return (
            f"the server ({server_version}) is older than {MIN_SERVER_VERSION}, the oldest "
            f"devctl {__version__} supports; upgrade the server or install an older devctl"
        )
    return None
