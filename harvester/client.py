"""The HTTP layer: one GET of one Diagnostic Flow path, nothing more.

The client knows URLs, basic auth and timeouts; it knows nothing of quotas, retries or storage.
Transport failures (timeouts, dropped connections, truncated bodies) all become one
:class:`TransportError` with a short reason, so the scheduler has a single thing to retry. When
the status line and headers did arrive (a body cut short), the error carries them: the reply's
``X-RateLimit-*`` and ``Date`` still tell the quota gate where the request was counted. The
session is injected, which is how tests and the demo point it at the simulator; the client turns
off aiohttp's own silent re-send of a GET whose connection was dropped (a send the quota gate
would never have granted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from harvester.credentials import Credentials

ACCEPT = "application/json"


class TransportError(Exception):
    """No usable HTTP reply arrived (timeout, connection dropped, body cut short).

    ``status`` and ``headers`` are set when the reply's head arrived before the failure.
    ``unreachable`` means no connection could be made (refused, no route, DNS): the request
    never reached the server, so it cost no quota and says nothing about the job.
    """

    def __init__(
        self,
        reason: str,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        unreachable: bool = False,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers
        self.unreachable = unreachable


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
        # aiohttp re-sends an idempotent request once, silently, when the server closes the
        # connection before replying (RFC 9112 section 9.3.1 allows it). Here every send costs
        # quota and the gate must grant each one, so retrying is the scheduler's job alone.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
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
        status: int | None = None
        headers: Mapping[str, str] | None = None
        try:
            async with self._session.get(
                self.url(path),
                headers={"Accept": ACCEPT, "Authorization": credentials.authorization.reveal()},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status, headers = resp.status, resp.headers
                body = await resp.read()
                return RawReply(resp.status, resp.headers, body)
        except TimeoutError:
            raise TransportError("timed out", status, headers) from None
        except aiohttp.ClientPayloadError:
            raise TransportError("reply body cut short", status, headers) from None
        except aiohttp.ServerDisconnectedError:
            raise TransportError("server closed the connection", status, headers) from None
        except aiohttp.ClientConnectorError as exc:  # before anything was sent
            reason = f"cannot connect ({type(exc).__name__})"
            raise TransportError(reason, unreachable=True) from None
        except aiohttp.ClientConnectionError as exc:
            reason = f"connection failed ({type(exc).__name__})"
            raise TransportError(reason, status, headers) from None
        except aiohttp.ClientResponseError as exc:
            raise TransportError(f"malformed HTTP reply ({exc.status})") from None
