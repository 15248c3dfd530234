"""The HTTP layer: one GET of one Diagnostic Flow path, nothing more.

The client knows URLs, basic auth and timeouts; it knows nothing of quotas, retries or storage.
Transport failures (timeouts, dropped connections, truncated bodies) all become one
:class:`TransportError` with a short reason, so the scheduler has a single thing to retry. The
session is injected, which is how tests and the demo point it at the simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from harvester.credentials import Credentials

ACCEPT = "application/json"


class TransportError(Exception):
    """No usable HTTP reply arrived (timeout, connection dropped, body cut short)."""


@dataclass(frozen=True, slots=True)
class RawReply:
    """Status, headers and the body exactly as received."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class ApiClient:
    """GETs paths below the API base URL with basic auth and a total timeout."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, timeout_seconds: float
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    def url(self, path: str) -> str:
        """The full URL of ``path`` (no credentials in it, ever)."""
        return self._base_url + path

    async def get(self, path: str, credentials: Credentials) -> RawReply:
        """Send one GET; any HTTP status is a reply, only transport failures raise."""
        try:
            async with self._session.get(
                self.url(path),
                headers={"Accept": ACCEPT, "Authorization": credentials.authorization.reveal()},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                return RawReply(resp.status, resp.headers, body)
        except TimeoutError:
            raise TransportError("timed out") from None
        except aiohttp.ClientPayloadError:
            raise TransportError("reply body cut short") from None
        except aiohttp.ServerDisconnectedError:
            raise TransportError("server closed the connection") from None
        except aiohttp.ClientConnectionError as exc:
            raise TransportError(f"connection failed ({type(exc).__name__})") from None
        except aiohttp.ClientResponseError as exc:
            raise TransportError(f"malformed HTTP reply ({exc.status})") from None
