"""The outbound client against real local servers (THREATS.md D1–D8, S13)."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest
from aiohttp import web
from yarl import URL

from fedi import signatures
from fedi.config import FederationConfig
from fedi.http_client import AS2_ACCEPT, FetchError, HttpClient, Signer, redirect_target

AP = "application/activity+json"
UA = "fedi-test/1.0 (+http://alpha.test/)"
LOCAL = replace(FederationConfig(), allow_private_networks=("127.0.0.0/8",))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    port: int
    hits: list[web.Request] = field(default_factory=list)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[dict[str, Handler]], Awaitable[Server]]]:
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> Server:
        server = Server(port=0)

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            server.hits.append(request)
            return await handler(request)

        app = web.Application(middlewares=[count])
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        server.port = runner.addresses[0][1]
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Awaitable[HttpClient]]]:
    clients: list[HttpClient] = []

    async def make(config: FederationConfig = LOCAL, host_map: dict[str, str] | None = None) -> HttpClient:
        client = HttpClient(config, UA, host_map=host_map)
        await client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def doc(data: object = None, content_type: str = AP, status: int = 200) -> Handler:
    body = json.dumps({"id": "x", "type": "Note"} if data is None else data).encode()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, headers={"Content-Type": content_type})

    return handler


def raw(body: bytes, content_type: str = AP) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


def redirect(location: Callable[[web.Request], str] | str, status: int = 302) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        where = location(request) if callable(location) else location
        return web.Response(status=status, headers={"Location": where})

    return handler


class ConnectionCounter:
    """A raw listener that answers every connection with a valid AS2 document,
    so a guard bypass would show up as a successful fetch and a count > 0."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/activity+json\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def counter() -> AsyncIterator[ConnectionCounter]:
    c = ConnectionCounter()
    await c.start()
    yield c
    await c.close()


# --- happy paths -----------------------------------------------------------


async def test_fetch_by_ip_and_by_mapped_name(serve, client_for) -> None:
    server = await serve({"/note": doc({"id": "n1"})})
    client = await client_for(LOCAL, host_map={"alpha.test": "127.0.0.1"})
    result = await client.fetch_json(server.url("/note"))
    assert (result.url, result.status, result.document) == (server.url("/note"), 200, {"id": "n1"})
    result = await client.fetch_json(server.url("/note", host="alpha.test"))
    assert result.document == {"id": "n1"}
    assert server.hits[1].headers["Host"] == f"alpha.test:{server.port}"
    assert all(h.headers["User-Agent"] == UA for h in server.hits)
    assert server.hits[0].headers["Accept"] == AS2_ACCEPT


async def test_ld_json_with_profile_is_accepted(serve, client_for) -> None:
    ctype = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
    server = await serve({"/": doc(content_type=ctype)})
    assert (await (await client_for()).fetch_json(server.url())).document["type"] == "Note"


# --- D1–D4, S13: private addresses, zero connections ------------------------

BLOCKED_LITERALS = [
    "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "198.18.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255",  # D1
    "[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::127.0.0.1]",
    "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[fe80::1]", "[fd00::1]",  # D2
    "2130706433", "0x7f.1", "127.1", "0177.0.0.1",  # D3
]


@pytest.mark.parametrize("host", BLOCKED_LITERALS)
async def test_private_literals_refused_with_zero_connections(host, counter, client_for) -> None:
    client = await client_for(FederationConfig())
    with pytest.raises(FetchError) as info:
        await client.fetch_json(f"http://{host}:{counter.port}/users/a")
    assert info.value.status is None
    assert info.value.reason.startswith("blocked address")
    with pytest.raises(FetchError, match="blocked address"):
        await client.post(f"http://{host}:{counter.port}/inbox", b"{}", None)
    assert counter.connections == 0


@pytest.mark.parametrize("host", ["evil.test", "localhost"])
async def test_names_resolving_to_private_refused_at_connect(host, counter, client_for) -> None:
    client = await client_for(FederationConfig(), host_map={"evil.test": "127.0.0.1"})
    with pytest.raises(FetchError, match="blocked address") as info:
        await client.fetch_json(f"http://{host}:{counter.port}/")
    assert info.value.status is None
    assert counter.connections == 0


async def test_counter_is_reachable_when_allowed(counter, client_for) -> None:
    """Control for the zero-connection tests: the listener does answer."""
    result = await (await client_for()).fetch_json(f"http://127.0.0.1:{counter.port}/")
    assert result.document == {} and counter.connections == 1


async def test_local_server_refused_by_default(serve, client_for) -> None:
    server = await serve({"/": doc()})
    client = await client_for(FederationConfig(), host_map={"alpha.test": "127.0.0.1"})
    for url in (server.url(), server.url(host="alpha.test"), server.url(host="localhost")):
        with pytest.raises(FetchError, match="blocked address"):
            await client.fetch_json(url)
    assert server.hits == []


# --- D5: redirects -----------------------------------------------------------


async def test_redirects_followed_and_resigned(serve, client_for) -> None:
    key = signatures.generate_private_key()
    signer = Signer("http://alpha.test/actor#main-key", signatures.private_key_pem(key))
    server = await serve({
        "/a": redirect(lambda r: f"http://beta.test:{r.url.port}/b?x=1"),
        "/b": redirect("/c", status=301),
        "/c": doc({"id": "final"}),
    })
    client = await client_for(LOCAL, host_map={"alpha.test": "127.0.0.1", "beta.test": "127.0.0.1"})
    result = await client.fetch_json(server.url("/a", host="alpha.test"), signer=signer)
    assert result.url == server.url("/c", host="beta.test")
    assert result.document == {"id": "final"}
    assert [h.path_qs for h in server.hits] == ["/a", "/b?x=1", "/c"]
    assert [h.headers["Host"] for h in server.hits] == [
        f"alpha.test:{server.port}", f"beta.test:{server.port}", f"beta.test:{server.port}"]
    sigs = set()
    for hit in server.hits:
        parsed = signatures.parse_signature(hit.headers["Signature"])
        assert parsed.key_id == signer.key_id
        signatures.verify_signature(parsed, "GET", hit.raw_path.split("?")[0], hit.query_string,
                                    hit.headers, key.public_key())
        sigs.add(parsed.signature)
    assert len(sigs) == 3


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/", "http://[::1]:{port}/", "http://10.0.0.1/",
    "http://2130706433:{port}/", "file:///etc/passwd", "gopher://127.0.0.1:{port}/_x",
    "http://evil.test:{port}/",
])
async def test_redirect_to_forbidden_target_refused(target, serve, client_for) -> None:
    server = await serve({"/": redirect(lambda r: target.format(port=r.url.port)), "/x": doc()})
    client = await client_for(LOCAL, host_map={"evil.test": "10.1.2.3"})
    with pytest.raises(FetchError) as info:
        await client.fetch_json(server.url())
    assert "blocked address" in info.value.reason or "scheme" in info.value.reason
    assert len(server.hits) == 1


async def test_too_many_redirects(serve, client_for) -> None:
    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.json_response({"id": "end"}, content_type=AP)
        raise web.HTTPFound(f"/hop/{n - 1}")

    server = await serve({"/hop/{n}": hop})
    client = await client_for(replace(LOCAL, max_redirects=3))
    assert (await client.fetch_json(server.url("/hop/3"))).url == server.url("/hop/0")
    server.hits.clear()
    with pytest.raises(FetchError, match="too many redirects"):
        await client.fetch_json(server.url("/hop/4"))
    assert len(server.hits) == 4


def test_redirect_target_rules() -> None:
    here = URL("https://alpha.test/users/a")
    assert redirect_target(here, "/users/b", 301) == URL("https://alpha.test/users/b")
    assert redirect_target(here, "https://beta.test/x", 302) == URL("https://beta.test/x")
    assert redirect_target(URL("http://alpha.test/"), "https://alpha.test/", 301).scheme == "https"
    for location, reason in [("http://alpha.test/users/a", "https to http"),
                             ("//evil.test:80/", None), (None, "without Location"), ("", "without Location")]:
        if reason is None:
            assert redirect_target(here, location, 302).scheme == "https"  # scheme-relative keeps https
            continue
        with pytest.raises(FetchError, match=reason) as info:
            redirect_target(here, location, 302)
        assert info.value.status == 302


# --- responses we refuse ------------------------------------------------------


async def test_status_and_content_type_errors(serve, client_for) -> None:
    server = await serve({
        "/gone": doc(status=410), "/missing": doc(status=404),
        "/html": doc(content_type="text/html; charset=utf-8"),
        "/json": doc(content_type="application/json"),
        "/jrd": doc({"subject": "acct:a@alpha.test"}, content_type="application/jrd+json"),
        "/list": doc([1, 2]),
        "/dup": raw(b'{"id":"a","id":"b"}'),
        "/deep": raw(b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
        "/bad": raw(b"{nope"),
        "/nan": raw(b'{"a": NaN}'),
    })
    client = await client_for()
    for path, status, reason in [
        ("/gone", 410, "HTTP 410"), ("/missing", 404, "HTTP 404"),
        ("/html", 200, "content type"), ("/json", 200, "content type"), ("/jrd", 200, "content type"),
        ("/list", 200, "not an object"), ("/dup", 200, "invalid JSON"),
        ("/deep", 200, "invalid JSON"), ("/bad", 200, "invalid JSON"), ("/nan", 200, "invalid JSON"),
    ]:
        with pytest.raises(FetchError) as info:
            await client.fetch_json(server.url(path))
        assert (info.value.status, reason in info.value.reason) == (status, True), path
    json_accept = "application/jrd+json, application/json"
    result = await client.fetch_json(server.url("/jrd"), accept=json_accept, allow_json=True)
    assert result.document["subject"] == "acct:a@alpha.test"
    assert (await client.fetch_json(server.url("/json"), accept=json_accept, allow_json=True)).status == 200
    with pytest.raises(FetchError, match="content type"):
        await client.fetch_json(server.url("/html"), allow_json=True)


# --- D7, D8: size and time ----------------------------------------------------


async def test_oversize_body_aborted(serve, client_for) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": AP})
        await resp.prepare(request)
        try:
            for _ in range(48):  # 3 MB, chunked: no Content-Length to refuse early
                await resp.write(b" " * 65536)
        except ConnectionError:
            pass
        return resp

    async def declared(request: web.Request) -> web.Response:
        return web.Response(body=b" " * 3_000_000, content_type=AP)

    server = await serve({"/stream": stream, "/declared": declared})
    client = await client_for()
    for path in ("/stream", "/declared"):
        with pytest.raises(FetchError, match="too large") as info:
            await client.fetch_json(server.url(path))
        assert info.value.status == 200


async def test_gzip_bomb_capped_on_decompressed_size(serve, client_for) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=9)
    assert len(bomb) < 100_000

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Type": AP, "Content-Encoding": "gzip"})

    server = await serve({"/": handler})
    with pytest.raises(FetchError, match="too large"):
        await (await client_for()).fetch_json(server.url())


async def test_small_gzip_body_is_decoded(serve, client_for) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"id": "z"}'),
                            headers={"Content-Type": AP, "Content-Encoding": "gzip"})

    server = await serve({"/": handler})
    assert (await (await client_for()).fetch_json(server.url())).document == {"id": "z"}


async def test_dribbling_server_aborted_at_total_deadline(serve, client_for) -> None:
    async def dribble(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": AP})
        await resp.prepare(request)
        try:
            for _ in range(40):
                await resp.write(b" ")
                await asyncio.sleep(0.5)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    server = await serve({"/": dribble})
    client = await client_for(replace(LOCAL, request_timeout_seconds=1.5))
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        await client.fetch_json(server.url())
    assert 1.4 < time.monotonic() - started < 3.0


# --- D6: proxies from the environment --------------------------------------


async def test_proxy_environment_ignored(serve, client_for, monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = await serve({"/": doc()})
    result = await (await client_for()).fetch_json(server.url())
    assert result.status == 200 and len(server.hits) == 1


# --- POST ----------------------------------------------------------------------


async def test_post_signed_returns_status_headers_excerpt(serve, client_for) -> None:
    key = signatures.generate_private_key()
    signer = Signer("http://alpha.test/users/a#main-key", signatures.private_key_pem(key))
    seen: dict[str, object] = {}

    async def inbox(request: web.Request) -> web.Response:
        body = await request.read()
        parsed = signatures.parse_signature(request.headers["Signature"])
        signatures.check_request(parsed, "POST", request.headers, body, time.time(), 3600)
        signatures.verify_signature(parsed, "POST", request.raw_path, request.query_string,
                                    request.headers, key.public_key())
        seen.update(body=body, key_id=parsed.key_id, ctype=request.headers["Content-Type"],
                    ua=request.headers["User-Agent"])
        return web.Response(status=202, text="é" * 1000, headers={"Retry-After": "5"})

    server = await serve({"/inbox": inbox, "/moved": redirect("/inbox", status=307)})
    client = await client_for(LOCAL, host_map={"alpha.test": "127.0.0.1"})
    result = await client.post(server.url("/inbox", host="alpha.test"), b'{"type":"Follow"}', signer)
    assert result.status == 202
    assert result.headers["retry-after"] == "5"
    assert result.excerpt == "é" * 500
    assert seen == {"body": b'{"type":"Follow"}', "key_id": signer.key_id, "ctype": AP, "ua": UA}
    moved = await client.post(server.url("/moved"), b"{}", signer)
    assert moved.status == 307 and [h.path for h in server.hits] == ["/inbox", "/moved"]


async def test_post_connection_failures(serve, client_for) -> None:
    client = await client_for(replace(LOCAL, request_timeout_seconds=1.5))
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError) as info:
        await client.post(f"http://127.0.0.1:{port}/inbox", b"{}", None)
    assert info.value.status is None and "connection failed" in info.value.reason

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    server = await serve({"/": slow})
    with pytest.raises(FetchError, match="timed out") as info:
        await client.post(server.url(), b"{}", None)
    assert info.value.status is None


async def test_not_started_and_bad_urls(client_for) -> None:
    with pytest.raises(RuntimeError):
        await HttpClient(LOCAL, UA).fetch_json("http://127.0.0.1/")
    client = await client_for()
    for url in ("ftp://127.0.0.1/", "http:///nohost", "http://user:pw@127.0.0.1/", "not a url"):
        with pytest.raises(FetchError) as info:
            await client.fetch_json(url)
        assert info.value.status is None
