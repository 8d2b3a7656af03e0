"""The gateway serves its OpenAPI document to anyone, unsigned."""

from __future__ import annotations

import aiohttp
import pytest

from pao.contracts.openapi import document

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_openapi_document_is_served_unsigned(gateway: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway}/api/v1/openapi.json") as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            assert r.headers["X-Correlation-ID"]
            assert await r.json() == document()
        async with http.get(f"{gateway}/api/v1/auth/whoami") as r:
            assert r.status == 401, "the document's neighbours still need a signature"
