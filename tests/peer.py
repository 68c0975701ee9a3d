"""A scripted ActivityPub peer for attack tests (THREATS.md S, A, P and X rows).

`Peer` is a real aiohttp server on 127.0.0.1 that fedi instances reach under a
test host name (through the network's host map). A test puts any document at
any URL (actor and key documents, notes, 410s, wrong ids, HTML answers), creates
actors with real RSA keys, counts the requests it gets, and signs POSTs to an
instance's inbox: correctly, or broken in exactly one way (`signed_headers`).

Signatures are made for the instance's configured base URL
(`http://alpha.test:PORT/...`) and the request carries that `Host`, while the
connection goes to 127.0.0.1:PORT, so the signed `host` is what fedi sees.
"""

from __future__ import annotations

import base64
import functools
import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from multidict import CIMultiDict

from fedi.clock import iso_seconds, now
from fedi.jsonutil import dumps
from fedi.signatures import digest_header, generate_private_key, http_date, public_key_pem
from tests.harness import Instance, Network

AS2 = "application/activity+json"
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
CONTEXT: list[Any] = ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"]
GOOD_NAMES = ("(request-target)", "host", "date", "digest")

_serial = itertools.count(1)
_key_draws = itertools.count(0)
KEY_POOL = 48


@functools.cache
def pooled_key(n: int) -> RSAPrivateKey:
    """RSA keys take ~70 ms to make; tests draw from a small shared pool."""
    return generate_private_key()


def fresh_key() -> RSAPrivateKey:
    """The next pooled key: distinct from the last KEY_POOL - 1 drawn, which is all one test needs."""
    return pooled_key(next(_key_draws) % KEY_POOL)


def body_of(activity: Any) -> bytes:
    return activity if isinstance(activity, bytes) else dumps(activity)


def rsa_sign(key: RSAPrivateKey) -> Callable[[bytes], bytes]:
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def signature_value(
    key_id: str,
    names: Iterable[str],
    values: dict[str, str],
    sign: Callable[[bytes], bytes],
    *,
    target: str,
    method: str = "post",
    algorithm: str | None = "rsa-sha256",
    created: int | None = None,
    expires: int | None = None,
) -> str:
    """A draft-cavage Signature header over `names`, built by hand so tests can bend every part."""
    names = tuple(names)
    lines = []
    for name in names:
        if name == "(request-target)":
            lines.append(f"{name}: {method} {target}")
        elif name == "(created)":
            lines.append(f"{name}: {created}")
        elif name == "(expires)":
            lines.append(f"{name}: {expires}")
        else:
            lines.append(f"{name}: {values[name]}")
    signature = base64.b64encode(sign("\n".join(lines).encode())).decode()
    params = [f'keyId="{key_id}"']
    if algorithm is not None:
        params.append(f'algorithm="{algorithm}"')
    if created is not None:
        params.append(f"created={created}")
    if expires is not None:
        params.append(f"expires={expires}")
    params += [f'headers="{" ".join(names)}"', f'signature="{signature}"']
    return ",".join(params)


@dataclass
class Reply:
    status: int
    text: str


@dataclass
class Doc:
    body: bytes
    status: int = 200
    content_type: str = AS2
    headers: dict[str, str] = field(default_factory=dict)


class PeerActor:
    """A Person on a peer, with its own key; its document is served at its id."""

    def __init__(self, peer: Peer, username: str, key: RSAPrivateKey, *, base: str | None = None,
                 key_id: str | None = None, **extra: Any) -> None:
        self.peer = peer
        self.username = username
        self.id = f"{base or peer.base}/users/{username}"
        self.key_id = key_id or f"{self.id}#main-key"
        self.key = key
        self.extra = extra
        self.publish()

    @property
    def doc(self) -> dict[str, Any]:
        return {
            "@context": CONTEXT,
            "id": self.id,
            "type": "Person",
            "preferredUsername": self.username,
            "inbox": f"{self.id}/inbox",
            "outbox": f"{self.id}/outbox",
            "followers": f"{self.id}/followers",
            "publicKey": {"id": self.key_id, "owner": self.id, "publicKeyPem": public_key_pem(self.key)},
            **self.extra,
        }

    def publish(self) -> None:
        self.peer.serve(self.id, self.doc)

    def rotate(self, key: RSAPrivateKey) -> None:
        """A new key at the origin (what a real key rotation looks like)."""
        self.key = key
        self.publish()

    # -- building activities ----------------------------------------------------------

    def note(self, content: str = "hello", **fields: Any) -> dict[str, Any]:
        return {
            "id": f"{self.id}/notes/{next(_serial)}",
            "type": "Note",
            "attributedTo": self.id,
            "content": content,
            "published": iso_seconds(now()),
            "to": [PUBLIC],
            "cc": [f"{self.id}/followers"],
            **fields,
        }

    def activity(self, kind: str, obj: Any, **fields: Any) -> dict[str, Any]:
        return {
            "@context": CONTEXT,
            "id": f"{self.id}/activities/{next(_serial)}",
            "type": kind,
            "actor": self.id,
            "object": obj,
            **fields,
        }

    def create(self, content: str = "hello", **note_fields: Any) -> dict[str, Any]:
        note = self.note(content, **note_fields)
        return self.activity("Create", note, to=note["to"], cc=note["cc"])

    # -- signing and sending ----------------------------------------------------------

    def signed_headers(
        self,
        inst: Instance,
        path: str,
        body: bytes,
        *,
        names: Iterable[str] = GOOD_NAMES,
        key_id: str | None = None,
        sign: Callable[[bytes], bytes] | None = None,
        algorithm: str | None = "rsa-sha256",
        date: str | None = None,
        digest: str | None = None,
        host: str | None = None,
        created: int | None = None,
        expires: int | None = None,
        method: str = "post",
    ) -> dict[str, str]:
        """The headers of a POST to `inst` at `path`; valid unless a keyword bends them."""
        values = {
            "host": host or inst.config.instance.domain,
            "date": date or http_date(),
            "digest": digest or digest_header(body),
            "content-type": AS2,
        }
        signature = signature_value(
            key_id or self.key_id, names, values, sign or rsa_sign(self.key),
            target=path, method=method, algorithm=algorithm, created=created, expires=expires,
        )
        return {"Host": values["host"], "Date": values["date"], "Digest": values["digest"],
                "Content-Type": AS2, "Signature": signature}

    async def post(self, inst: Instance, activity: Any, path: str = "/users/alice/inbox", **sign: Any) -> Reply:
        """Sign and deliver `activity` (dict or raw bytes) to `inst` at `path`."""
        body = body_of(activity)
        return await send(inst, path, body, self.signed_headers(inst, path, body, **sign))


async def send(inst: Instance, path: str, body: Any, headers: Any, method: str = "POST") -> Reply:
    """One plain HTTP request to the instance (connecting to 127.0.0.1, whatever `Host` says)."""
    assert inst.session is not None
    async with inst.session.request(method, inst.url(path), data=body, headers=CIMultiDict(headers)) as resp:
        return Reply(resp.status, await resp.text())


class Peer:
    """A fake remote server: documents by URL (or path), request counting, an inbox that says 202."""

    def __init__(self, network: Network, name: str = "evil.test") -> None:
        self.network = network
        self.name = name
        self.port = 0
        self.docs: dict[str, Doc] = {}
        self.hits: Counter[str] = Counter()
        self.received: list[tuple[str, bytes]] = []
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://{self.name}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    async def start(self) -> Peer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.network.host_map[self.name] = "127.0.0.1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def actor(self, username: str, **kw: Any) -> PeerActor:
        return PeerActor(self, username, kw.pop("key", None) or fresh_key(), **kw)

    def serve(self, where: str, doc: Any = None, *, status: int = 200, content_type: str = AS2,
              body: bytes | None = None, headers: dict[str, str] | None = None) -> None:
        """Answer GETs of `where` (a full URL, matched with its Host, or a bare path)."""
        raw = body if body is not None else (dumps(doc) if doc is not None else b"")
        self.docs[where.split("#", 1)[0]] = Doc(raw, status, content_type, headers or {})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        if request.method == "POST":
            self.received.append((request.path, await request.read()))
            return web.Response(status=202)
        doc = self.docs.get(f"http://{request.host}{request.path_qs}") or self.docs.get(request.path_qs)
        if doc is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=doc.body, status=doc.status, headers={"Content-Type": doc.content_type, **doc.headers})
