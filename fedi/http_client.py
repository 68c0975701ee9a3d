"""The one outbound HTTP client (THREATS.md D1–D8, S13).

Every outgoing request goes through `HttpClient` so that the private-address
guard, the total deadline, the byte cap (counted after decompression), manual
redirect handling with re-signing, and strict JSON parsing cannot be skipped by
a caller that forgot one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from urllib.parse import urlsplit
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from fedi.config import FederationConfig
from fedi.http_post import BadResponse, ConnectFailed, Disconnected, Poster
from fedi.jsonutil import JsonError, loads_strict
from fedi.netguard import AddressPolicy, BlockedAddress, GuardedResolver, check_host
from fedi.signatures import AS2_CONTENT_TYPE, DEFAULT_ACCEPT, load_private_key, sign_request

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

AS2_ACCEPT = DEFAULT_ACCEPT
_AP_TYPES = frozenset({"application/activity+json", "application/ld+json"})
_JSON_TYPES = _AP_TYPES | {"application/jrd+json", "application/json"}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_EXCERPT_CHARS = 500
#: A POST response is only read for its excerpt; the status carries the outcome.
_POST_READ_BYTES = 8192
_CHUNK = 65536
_UNSAFE_HEAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than tab


class FetchError(Exception):
    """A request that did not produce a usable answer; `.reason` is one short line."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason if status is None else f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Signer:
    """Whose key signs a request: the actor's key id and private key, kept as PEM and
    parsed on the first signature (so a process that never signs never loads `cryptography`)."""

    key_id: str
    private_key_pem: str

    @property
    def private_key(self) -> RSAPrivateKey:
        return load_private_key(self.private_key_pem)  # cached by PEM


@dataclass(frozen=True)
class FetchResult:
    url: str  # the final URL after redirects (callers compare it with the document id)
    status: int
    document: dict[str, Any]


@dataclass(frozen=True)
class PostResult:
    status: int
    headers: dict[str, str]  # lower-cased names
    excerpt: str


def _is_literal(host: str) -> bool:
    """An IP-literal host (aiohttp's test); `check_host` has refused every other spelling of one."""
    return ":" in host or host.replace(".", "").isdigit()


def _blocked_cause(exc: BaseException) -> BlockedAddress | None:
    """The BlockedAddress behind an aiohttp connection error, if the guard caused it."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, BlockedAddress):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return None


def redirect_target(current: URL, location: str | None, status: int) -> URL:
    """Where a redirect points, refusing an https→http downgrade (D5).

    The result still has to pass `HttpClient._target` (scheme, address guard).
    """
    if not location:
        raise FetchError(status, "redirect without Location")
    try:
        new = current.join(URL(location))
    except (ValueError, TypeError):
        raise FetchError(status, "invalid redirect Location") from None
    if current.scheme == "https" and new.scheme == "http":
        raise FetchError(status, "redirect from https to http")
    return new


class HttpClient:
    """One aiohttp session with every outbound safeguard applied."""

    def __init__(
        self, config: FederationConfig, user_agent: str, host_map: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.user_agent = user_agent
        self.policy = AddressPolicy(config.allow_private_networks)
        self._host_map = host_map
        self._session: aiohttp.ClientSession | None = None
        self._poster: Poster | None = None

    async def start(self) -> None:
        """Create the session; must run inside the event loop that will use it."""
        if self._session is not None:
            return
        resolver = GuardedResolver(self.policy, host_map=self._host_map)
        self._poster = Poster(resolver)  # POSTs (delivery); the same guard decides where they may go
        # Delivery keeps its own per-host limit; these only bound sockets overall.
        connector = aiohttp.TCPConnector(resolver=resolver, limit=100, limit_per_host=8)
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # D6: a proxy from the environment would bypass the guard
            auto_decompress=True,
            timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_seconds),
            headers={"User-Agent": self.user_agent},
        )

    async def close(self) -> None:
        if self._poster is not None:
            poster, self._poster = self._poster, None
            await poster.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _require(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient.start() has not been called")
        return self._session

    def _target(self, url: str | URL, status: int | None = None) -> URL:
        """Validate a URL we are about to request (initial or redirect hop)."""
        try:
            target = url if isinstance(url, URL) else URL(url)
        except (ValueError, TypeError):
            raise FetchError(status, "invalid URL") from None
        if target.scheme not in ("http", "https"):
            raise FetchError(status, f"unsupported URL scheme {target.scheme!r}")
        if not target.raw_host:
            raise FetchError(status, "URL has no host")
        if target.raw_user is not None or target.raw_password is not None:
            raise FetchError(status, "URL carries credentials")
        try:
            check_host(self.policy, target.raw_host)
        except BlockedAddress as exc:
            raise FetchError(status, f"blocked address: {exc}") from None
        return target.with_fragment(None)

    def _headers(
        self, method: str, url: URL, signer: Signer | None,
        accept: str | None = None, body: bytes | None = None,
    ) -> dict[str, str]:
        if signer is None:
            headers = {"Accept": accept} if accept else {}
        else:
            # Signed per hop: the signature covers this URL's host and path.
            headers = sign_request(method, str(url), signer.key_id, signer.private_key,
                                   body=body, accept=accept)
        headers["User-Agent"] = self.user_agent
        return headers

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Total deadline over the whole exchange (D7) and one error type for callers."""
        try:
            async with asyncio.timeout(self.config.request_timeout_seconds):
                yield
        except FetchError:
            raise
        except TimeoutError:
            raise FetchError(None, "timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            blocked = _blocked_cause(exc)
            if blocked is not None:
                raise FetchError(None, f"blocked address: {blocked}") from None
            if isinstance(exc, aiohttp.ClientConnectorError):
                raise FetchError(None, f"connection failed: {exc.os_error.strerror or exc.os_error}") from None
            raise FetchError(None, f"request failed: {type(exc).__name__}") from None

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, refused once its decompressed size passes the cap (D7, D8)."""
        limit = self.config.max_response_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise FetchError(resp.status, "response too large")
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            buf += chunk
            if len(buf) > limit:
                resp.close()
                raise FetchError(resp.status, "response too large")
        return bytes(buf)

    def _next_hop(self, current: URL, resp: aiohttp.ClientResponse) -> URL:
        return self._target(redirect_target(current, resp.headers.get("Location"), resp.status), resp.status)

    async def fetch_json(
        self, url: str, signer: Signer | None = None, accept: str = AS2_ACCEPT,
        allow_json: bool = False,
    ) -> FetchResult:
        """GET a JSON document, following at most `max_redirects` checked hops.

        Only ActivityPub media types are accepted unless `allow_json` (WebFinger,
        NodeInfo) also admits application/json and application/jrd+json.
        """
        session = self._require()
        allowed_types = _JSON_TYPES if allow_json else _AP_TYPES
        target = self._target(url)
        final = url
        async with self._guard():
            max_hops = max(0, self.config.max_redirects)
            for hop in range(max_hops + 1):
                headers = self._headers("GET", target, signer, accept=accept)
                async with session.get(target, headers=headers, allow_redirects=False) as resp:
                    status = resp.status
                    if status in _REDIRECT_STATUSES:
                        if hop == max_hops:
                            raise FetchError(status, "too many redirects")
                        target = self._next_hop(target, resp)
                        final = str(target)
                        continue
                    if not 200 <= status < 300:
                        raise FetchError(status, f"HTTP {status}")
                    if resp.content_type not in allowed_types:
                        raise FetchError(status, f"unexpected content type {resp.content_type[:80]!r}")
                    body = await self._read_capped(resp)
                break
        try:
            document = loads_strict(body)
        except JsonError as exc:
            raise FetchError(status, f"invalid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise FetchError(status, "JSON body is not an object")
        return FetchResult(url=final, status=status, document=document)

    async def post(
        self, url: str, body: bytes, signer: Signer | None,
        content_type: str = AS2_CONTENT_TYPE,
    ) -> PostResult:
        """POST without following redirects; any HTTP status is returned, not raised.

        Sent by `fedi.http_post` (a lean keep-alive HTTP/1.1 transport: delivery is
        most of our outgoing traffic) through the same guards as every request:
        the URL checks here, the guarded resolver for names, the total deadline.
        """
        self._require()
        poster = self._poster
        assert poster is not None
        target = self._target(url)
        text = str(target)
        headers = self._headers("POST", target, signer, body=body)
        headers["Content-Type"] = content_type
        if "Host" not in headers:  # unsigned: sign_request did not set it
            headers["Host"] = urlsplit(text).netloc.rpartition("@")[2]
        lines = [f"POST {target.raw_path_qs} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        if _UNSAFE_HEAD.search("\t".join(lines)):  # header injection (a tab is allowed, so one search does)
            raise FetchError(None, "invalid header value")
        head = "\r\n".join(lines) + "\r\n\r\n"
        host = target.raw_host
        assert host is not None and target.port is not None  # _target checked both
        limit = min(self.config.max_response_bytes, _POST_READ_BYTES)
        try:  # what _guard does, spelled out (one generator less per delivery)
            async with asyncio.timeout(self.config.request_timeout_seconds):
                response = await poster.post(target.scheme, host, target.port, _is_literal(host),
                                             head.encode("utf-8") + body, limit)
        except ConnectFailed as exc:
            raise FetchError(None, f"connection failed: {exc}") from None
        except Disconnected:
            raise FetchError(None, "request failed: server disconnected") from None
        except BadResponse as exc:
            raise FetchError(None, f"request failed: {exc}") from None
        except TimeoutError:
            raise FetchError(None, "timed out") from None
        except BlockedAddress as exc:  # the resolver found only refused addresses
            raise FetchError(None, f"blocked address: {exc}") from None
        except OSError as exc:
            raise FetchError(None, f"request failed: {type(exc).__name__}") from None
        return PostResult(
            status=response.status,
            headers=response.headers,
            excerpt=response.body.decode("utf-8", "replace")[:_EXCERPT_CHARS],
        )

    async def get_text(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        """GET a text document (a block list), following checked redirects: (status, headers, text).

        Any final status is returned, not raised (a 304 answers a conditional GET); only a 2xx
        body is read, capped like every response and decoded as UTF-8 (a BOM dropped).
        `headers` adds request headers such as If-None-Match. Connection failures raise FetchError.
        """
        session = self._require()
        target = self._target(url)
        hops = 0
        async with self._guard():
            while True:
                sent = {**(headers or {}), **self._headers("GET", target, None)}
                async with session.get(target, headers=sent, allow_redirects=False) as resp:
                    if resp.status not in _REDIRECT_STATUSES:
                        body = await self._read_capped(resp) if 200 <= resp.status < 300 else b""
                        answer = {k.lower(): v for k, v in resp.headers.items()}
                        return resp.status, answer, body.decode("utf-8-sig", "replace")
                    if hops >= max(0, self.config.max_redirects):
                        raise FetchError(resp.status, "too many redirects")
                    hops += 1
                    target = self._next_hop(target, resp)
