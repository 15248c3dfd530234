"""The wire: one HTTP request below the API base URL, its reply read within bounds.

The transport knows URLs, the session, timeouts, proxies and TLS; it knows nothing of quotas,
retries, credentials or storage. It answers with the reply as received (:class:`RawReply`, any
status) or raises :class:`SendFailed` carrying the outcome a failure amounts to:

- no connection (refused, no route): :class:`~harvester.api.outcomes.Unreachable`, nothing sent;
- a host that does not resolve, or TLS that fails (a plain-HTTP server behind an ``https`` URL, a
  certificate no trusted CA signed): :class:`~harvester.api.outcomes.Misconfigured`, since
  waiting will not fix ``api.base_url``. A resolver failure after the API has answered in this
  run is a network blip instead (Unreachable): the name did resolve before;
- anything after the request left (timeout, dropped connection, body cut short):
  :class:`~harvester.api.outcomes.NoReply`, with the reply's head when it arrived, since its
  ``X-RateLimit-*`` and ``Date`` still tell the quota gate where the request was counted.

A reply's body is read up to ``api.max_reply_bytes`` and no further (a broken server or proxy
must not fill the memory). Sessions from :func:`open_session` trust the system's CAs,
``SSL_CERT_FILE`` and ``api.ca_bundle``, and requests honour ``HTTPS_PROXY``/``HTTP_PROXY``/
``NO_PROXY`` as aiohttp's ``trust_env`` reads them. The proxy is looked up once per transport
(there is one host), not per request: ``trust_env`` does it per request in a worker thread, twice
(proxy and ``.netrc``), which cost ~15% of a pull's CPU at 1,000 requests/s.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from harvester.api.outcomes import Head, Misconfigured, NoReply, Unreachable
from harvester.config import ApiConfig
from harvester.errors import ConfigError

# Bytes read from the socket at a time while a body is read within its cap.
READ_CHUNK_BYTES = 256 * 1024
# What is kept of a reply over the cap, for the quarantine: its first MiB shows what it was (an
# HTML page, a runaway list) without putting megabytes into the raw archive and memory.
OVERSIZED_KEPT_BYTES = 2**20


class SendFailed(Exception):
    """No usable reply: ``outcome`` says what that means (never sent, misconfigured, lost)."""

    def __init__(self, outcome: Unreachable | Misconfigured | NoReply) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class RawReply:
    """Status, headers and the body as received; ``oversized`` when the body was longer than
    ``api.max_reply_bytes``: then ``body`` is its first :data:`OVERSIZED_KEPT_BYTES` at most
    (nothing when its Content-Length said so before it was read)."""

    head: Head
    body: bytes
    oversized: bool = False

    @property
    def status(self) -> int:
        return self.head.status


def tls_context(api: ApiConfig) -> ssl.SSLContext:
    """The system's trusted CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR`` as OpenSSL reads them, at the
    time of the call) plus ``api.ca_bundle``: a company's own CA added to the usual ones."""
    context = ssl.create_default_context()
    if api.ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(api.ca_bundle))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"[api] ca_bundle: {api.ca_bundle} holds no usable CA certificate (PEM): {exc}"
            ) from None
    return context


def open_session(api: ApiConfig) -> aiohttp.ClientSession:
    """A session for the API: ``concurrency`` connections, our CAs (proxies: see Transport)."""
    connector = aiohttp.TCPConnector(limit=api.concurrency, ssl=tls_context(api))
    return aiohttp.ClientSession(connector=connector)


def env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY`` by scheme,
    none when ``NO_PROXY`` covers its host), with its credentials, as ``trust_env`` reads them."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


class Transport:
    """Sends requests below ``api.base_url`` on an injected session (tests and the demo point it
    at the simulator) with a total timeout, and reads each reply within its size cap."""

    def __init__(
        self, session: aiohttp.ClientSession, api: ApiConfig, *, proxy_from_env: bool = False
    ) -> None:
        # aiohttp re-sends an idempotent request once, silently, when the server closes the
        # connection before replying (RFC 9112 section 9.3.1 allows it). Here every send costs
        # quota and the gate must grant each one, so retrying is the scheduler's job alone.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        self.session = session
        self._base_url = api.base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=api.timeout_seconds)
        self._max_bytes = api.max_reply_bytes
        self._answered = False  # the API has replied at least once in this session's life
        proxy = env_proxy(self._base_url) if proxy_from_env else (None, None)
        self._proxy, self._proxy_auth = proxy

    def url(self, path: str) -> str:
        """The full URL of ``path`` (no credentials in it, ever)."""
        return self._base_url + path

    async def send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None = None,
    ) -> RawReply:
        """Send one request; any HTTP status is a reply, every failure raises SendFailed."""
        head: Head | None = None
        try:
            async with self.session.request(
                method,
                self.url(path),
                headers=headers,
                data=data,
                timeout=self._timeout,
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            ) as resp:
                head = Head(resp.status, resp.headers)
                self._answered = True
                body, oversized = await self._read(resp)
                return RawReply(head, body, oversized)
        except TimeoutError:
            raise SendFailed(NoReply(head, "transport: timed out")) from None
        except aiohttp.ClientPayloadError:
            raise SendFailed(NoReply(head, "transport: reply body cut short")) from None
        except aiohttp.ServerDisconnectedError:
            raise SendFailed(NoReply(head, "transport: server closed the connection")) from None
        except aiohttp.ClientConnectorError as exc:  # before anything was sent (TLS included)
            raise SendFailed(self._not_connected(exc, f"{method} {self.url(path)}")) from None
        except aiohttp.ClientConnectionError as exc:
            reason = f"transport: connection failed ({type(exc).__name__})"
            raise SendFailed(NoReply(head, reason)) from None
        except aiohttp.ClientResponseError as exc:
            reason = f"transport: malformed HTTP reply ({exc.status})"
            raise SendFailed(NoReply(None, reason)) from None

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """The body, or its first ``max_reply_bytes`` when it is longer (the rest left unread:
        the connection is closed rather than drained)."""
        limit = self._max_bytes
        if resp.content_length is not None:
            if resp.content_length > limit:
                resp.close()
                return b"", True
            return await resp.read(), False  # the common case: one read of a known length
        body = bytearray()
        async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                resp.close()
                return bytes(body[:OVERSIZED_KEPT_BYTES]), True
        return bytes(body), False

    def _not_connected(
        self, exc: aiohttp.ClientConnectorError, request: str
    ) -> Unreachable | Misconfigured:
        host = exc.host
        if isinstance(exc, aiohttp.ClientSSLError):
            return Misconfigured(_tls_reason(exc))
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return Unreachable(f"{request}: cannot connect to the proxy ({type(exc).__name__})")
        if isinstance(exc.os_error, socket.gaierror):
            if not self._answered:
                return Misconfigured(f"cannot resolve the host {host!r} (DNS: {exc.os_error})")
            return Unreachable(f"{request}: cannot resolve the host {host!r} (DNS)")
        return Unreachable(f"{request}: cannot connect ({type(exc).__name__})")


def _tls_reason(exc: aiohttp.ClientSSLError) -> str:
    """What went wrong with TLS, in words a user can act on."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        detail = exc.certificate_error
        why = getattr(detail, "verify_message", None) or str(detail)
        return (
            f"TLS: the server's certificate is not trusted ({why}); if a proxy or a private CA "
            "signs it, name its CA file in api.ca_bundle or SSL_CERT_FILE"
        )
    cause = getattr(exc, "os_error", None) or exc
    why = getattr(cause, "reason", None) or type(cause).__name__
    return f"TLS handshake failed ({why}); is the server really https?"
