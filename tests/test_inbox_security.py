"""THREATS.md rows that reach the inbox, each sent from outside as a real HTTP request.

A scripted peer (tests/peer.py) serves actor, key and object documents under test
host names and signs POSTs to a real fedi instance. For every row the test checks
the status, drains the instance's queues, and checks that the database did not
change (`snapshot`); for rows whose checks run after the 202 ("async" in
THREATS.md) the activity is queued but, once applied, changes nothing else.
Every group carries a positive control that goes down the same path and is
accepted, so each refusal is due to the one thing its case breaks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from actors.local import create_local_account, get_local_account, instance_signer
from actors.remote import get_actor
from fedi.clock import iso_seconds, now
from fedi.db import Row
from fedi.sanitize import sanitize_html
from fedi.signatures import http_date, public_key_pem
from fedi.web.render import render_string
from outbox import actions
from outbox.actions import PostRequest
from tests.harness import Instance, Network
from tests.peer import KEY_POOL, PUBLIC, Peer, PeerActor, Reply, body_of, fresh_key, pooled_key, rsa_sign, send

INBOX = "/users/alice/inbox"

# What "the database did not change" compares: whole rows, minus bookkeeping times.
TABLES = (
    "accounts", "statuses", "follows", "favourites", "blocks", "tombstones", "notifications", "mentions",
    "media_attachments", "status_edits", "home_feed", "inbox_activities", "deliveries",
)
VOLATILE = {"fetched_at", "updated_at", "locked_until", "attempts", "processed_at", "next_attempt_at",
            "last_status", "last_error", "state"}


async def snapshot(inst: Instance, *, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    # The instance actor's key pair is made at the first signed fetch; a refused request may be that
    # first fetch, and the key is ours, not anything the stranger sent: make it before comparing.
    await instance_signer(inst.ctx)
    out = {}
    for table in TABLES:
        if table not in skip:
            rows = await inst.ctx.db.fetchall(f"SELECT * FROM {table}")
            out[table] = sorted(repr([(k, r[k]) for k in r.keys() if k not in VOLATILE]) for r in rows)
    return out


async def refused(inst: Instance, reply: Reply, status: int, before: dict[str, Any], **kw: Any) -> None:
    """`status`, and after draining the queues the database is as it was."""
    assert reply.status == status, f"expected {status}, got {reply.status} {reply.text}"
    await inst.drain()
    assert await snapshot(inst, **kw) == before


async def outcome(inst: Instance, activity: dict[str, Any]) -> str | None:
    """After draining: how the worker recorded the activity (None if it was never stored)."""
    await inst.drain()
    return await inst.ctx.db.fetchval("SELECT state FROM inbox_activities WHERE activity_id = ?", (activity["id"],))


async def status_row(inst: Instance, uri: str) -> Row | None:
    return await inst.ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ?", (uri,))


async def known(inst: Instance, *actors: PeerActor) -> None:
    """Fetch actors before an attack, so that refusals can be checked against an unchanged database."""
    for actor in actors:
        await get_actor(inst.ctx, actor.id)


async def local(inst: Instance, username: str = "alice") -> Row:
    row = await get_local_account(inst.ctx.db, username)
    assert row is not None
    return row


# No one logs in here: every local account skips scrypt (`alpha`, `peer` and `mallory` come from conftest).
pytestmark = pytest.mark.usefixtures("cheap_local_accounts")


@pytest.fixture
async def other(network: Network) -> AsyncIterator[Peer]:
    p = await Peer(network, "other.test").start()
    yield p
    await p.close()


# --------------------------------------------------------------------------------------------
# Positive control: the path every refusal below is measured against


async def test_control_signed_create_is_accepted_and_stored(alpha: Instance, mallory: PeerActor) -> None:
    for path in (INBOX, "/inbox"):
        act = mallory.create(f"<p>hello via {path}</p>")
        reply = await mallory.post(alpha, act, path)
        assert reply.status == 202, reply.text
        assert await outcome(alpha, act) == "processed"
        row = await status_row(alpha, act["object"]["id"])
        assert row is not None and f"hello via {path}" in row["content"] and row["visibility"] == "public"


# --------------------------------------------------------------------------------------------
# S1–S6, S8, S9: signature-level failures are 401 (senders retry those), never 500


def _hmac_with_public_pem(actor: PeerActor) -> Callable[[bytes], bytes]:
    secret = public_key_pem(actor.key).encode()
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


Bend = Callable[[PeerActor, Instance, bytes], tuple[bytes, Any]]
MINUTE = 60


def signed(**kw: Any) -> Bend:
    return lambda m, inst, body: (body, m.signed_headers(inst, INBOX, body, **kw))


def dated(minutes: float) -> Bend:
    """Signed with a Date this many minutes from now (computed when the case runs, not at import)."""
    return lambda m, inst, body: (body, m.signed_headers(inst, INBOX, body, date=http_date(now() + minutes * MINUTE)))


def _without_signature(m: PeerActor, inst: Instance, body: bytes) -> tuple[bytes, Any]:
    headers = m.signed_headers(inst, INBOX, body)
    del headers["Signature"]
    return body, headers


def _tampered(m: PeerActor, inst: Instance, body: bytes) -> tuple[bytes, Any]:
    headers = m.signed_headers(inst, INBOX, body)
    return body.replace(b"hello", b"hellO", 1), headers


def _two_digests(m: PeerActor, inst: Instance, body: bytes) -> tuple[bytes, Any]:
    headers = m.signed_headers(inst, INBOX, body)
    return body, [*headers.items(), ("Digest", headers["Digest"])]


def _replayed_host(m: PeerActor, inst: Instance, body: bytes) -> tuple[bytes, Any]:
    # A request signed for delivery to another server, replayed here unchanged (Host included).
    return body, m.signed_headers(inst, INBOX, body, host="beta.test:8080")


def _rehosted(m: PeerActor, inst: Instance, body: bytes) -> tuple[bytes, Any]:
    headers = m.signed_headers(inst, INBOX, body, host="beta.test:8080")
    return body, {**headers, "Host": inst.config.instance.domain}


def _signature_edit(edit: Callable[[str, PeerActor], str]) -> Bend:
    def bend(m: PeerActor, inst: Instance, body: bytes) -> tuple[bytes, Any]:
        headers = m.signed_headers(inst, INBOX, body)
        return body, {**headers, "Signature": edit(headers["Signature"], m)}
    return bend


def _sha256_b64(body: bytes, length: int = 32) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()[:length]).decode()


CREATED = ("(request-target)", "host", "(created)", "digest")
EXPIRES = ("(request-target)", "host", "(created)", "(expires)", "digest")

SIGNATURE_CASES: dict[str, tuple[Bend, int]] = {
    "control: rsa-sha256": (signed(), 202),
    "control: hs2019 (GoToSocial)": (signed(algorithm="hs2019"), 202),
    "control: no algorithm": (signed(algorithm=None), 202),
    "control: (created) instead of Date": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, names=CREATED, algorithm="hs2019", created=int(now()))), 202),
    "control: Date 50 min old": (dated(-50), 202),
    "control: Date 59 min ahead": (dated(59), 202),
    "control: digest name in lower case": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, digest="sha-256=" + _sha256_b64(b))), 202),
    "S1 no Signature header": (_without_signature, 401),
    "S2 body changed by one byte": (_tampered, 401),
    "S3 digest not signed": (signed(names=("(request-target)", "host", "date")), 401),
    "S3 neither date nor (created) signed": (signed(names=("(request-target)", "host", "digest")), 401),
    "S4 SHA-512 digest only": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, digest="SHA-512=" + base64.b64encode(hashlib.sha512(b).digest()).decode())), 401),
    "S4 digest not base64": (signed(digest="SHA-256=not*base64!"), 401),
    "S4 31-byte digest": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, digest="SHA-256=" + _sha256_b64(b, 31))), 401),
    "S4 two Digest headers": (_two_digests, 401),
    "S5 signed for the shared inbox": (lambda m, i, b: (b, m.signed_headers(i, "/inbox", b)), 401),
    "S5 signed for another user's inbox": (lambda m, i, b: (b, m.signed_headers(i, "/users/bob/inbox", b)), 401),
    "S5 signed for another Host, sent with ours": (_rehosted, 401),
    "S5 replayed from another server, its Host kept": (_replayed_host, 401),
    "S6 Date 66 min old": (dated(-66), 401),
    "S6 Date 61 min ahead": (dated(61), 401),
    "S6 Date unparsable": (signed(date="yesterday at noon"), 401),
    "S6 Date in UTC not GMT": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, date=http_date().replace("GMT", "UTC"))), 401),
    "S6 (expires) in the past": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, names=EXPIRES, algorithm="hs2019", created=int(now()) - 600, expires=int(now()) - 300)), 401),
    "S8 hmac-sha256 keyed with the public PEM": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, algorithm="hmac-sha256", sign=_hmac_with_public_pem(m))), 401),
    "S9 hs2019 with that HMAC": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, algorithm="hs2019", sign=_hmac_with_public_pem(m))), 401),
    "S9 no algorithm, that HMAC": (lambda m, i, b: (b, m.signed_headers(
        i, INBOX, b, algorithm=None, sign=_hmac_with_public_pem(m))), 401),
    "S9 algorithm none": (signed(algorithm="none"), 401),
    "S9 unbalanced quotes": (_signature_edit(lambda s, m: s.replace('#main-key"', "#main-key", 1)), 401),
    "S9 duplicate keyId": (_signature_edit(lambda s, m: f'keyId="{m.id}#other",' + s), 401),
    "S9 7 KB signature value": (_signature_edit(
        lambda s, m: s.rsplit('signature="', 1)[0] + 'signature="' + "A" * 7000 + '"'), 401),
    # aiohttp's HTTP parser refuses header fields over 8190 bytes before fedi sees them.
    "S9 64 KB Signature header": (_signature_edit(lambda s, m: s + ',pad="' + "A" * 65536 + '"'), 400),
}


# Cases that fail only when the signature is checked against the key (fetched once more, for rotation).
NEEDS_THE_KEY = {case for case in SIGNATURE_CASES if case.startswith("S5")} | {
    "S9 hs2019 with that HMAC", "S9 no algorithm, that HMAC", "S9 7 KB signature value",
}


@pytest.mark.parametrize("case", SIGNATURE_CASES)
async def test_signature_level_failures_are_401(alpha: Instance, mallory: PeerActor, case: str) -> None:
    bend, status = SIGNATURE_CASES[case]
    act = mallory.create("hello")
    body, headers = bend(mallory, alpha, body_of(act))
    if status == 202:
        reply = await send(alpha, INBOX, body, headers)
        assert reply.status == 202, reply.text
        assert await outcome(alpha, act) == "processed"
        return
    await known(alpha, mallory)
    before = await snapshot(alpha)
    fetches = mallory.peer.hits["/users/mallory"]
    reply = await send(alpha, INBOX, body, headers)
    await refused(alpha, reply, status, before)
    if case not in NEEDS_THE_KEY:
        # Refused on the headers alone: the key was not even refetched.
        assert mallory.peer.hits["/users/mallory"] == fetches


async def test_s5_post_signature_replayed_as_get(alpha: Instance, mallory: PeerActor) -> None:
    body = body_of(mallory.create())
    before = await snapshot(alpha)
    reply = await send(alpha, INBOX, None, mallory.signed_headers(alpha, INBOX, body), method="GET")
    await refused(alpha, reply, 405, before)  # the inbox has no GET: nothing reads the replayed signature


# --------------------------------------------------------------------------------------------
# S7: replays inside the window


async def test_s7_exact_replay_is_stored_once(alpha: Instance, mallory: PeerActor) -> None:
    act = mallory.create("once")
    body = body_of(act)
    headers = mallory.signed_headers(alpha, INBOX, body)
    for _ in range(3):
        assert (await send(alpha, INBOX, body, headers)).status == 202
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM inbox_activities") == 1
    await alpha.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses WHERE uri = ?", (act["object"]["id"],)) == 1


async def test_s7_follow_replayed_after_its_undo_is_not_resurrected(alpha: Instance, mallory: PeerActor) -> None:
    alice = await local(alpha)
    follow = mallory.activity("Follow", alice["uri"])
    body = body_of(follow)
    headers = mallory.signed_headers(alpha, INBOX, body)
    assert (await send(alpha, INBOX, body, headers)).status == 202
    await alpha.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM follows") == 1
    assert (await mallory.post(alpha, mallory.activity("Undo", follow))).status == 202
    await alpha.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM follows") == 0
    before = await snapshot(alpha)
    # the captured request byte for byte, and the same activity freshly signed
    for replay in (headers, mallory.signed_headers(alpha, INBOX, body)):
        await refused(alpha, await send(alpha, INBOX, body, replay), 202, before)


# --------------------------------------------------------------------------------------------
# S11: the key must belong to the actor, both ways


def _key_doc(peer: Peer, path: str, owner: str, key: Any) -> str:
    key_id = peer.url(path)
    peer.serve(key_id, {"id": key_id, "type": "Key", "owner": owner, "publicKeyPem": public_key_pem(key)})
    return key_id


async def test_s11_key_and_actor_must_name_each_other(alpha: Instance, peer: Peer, other: Peer) -> None:
    mallory, victim = peer.actor("mallory"), peer.actor("victim")
    stray = fresh_key()
    # GoToSocial-style separate key document, listed by its actor: accepted (the control).
    gts_key = _key_doc(peer, "/users/gts/main-key", peer.url("/users/gts"), stray)
    gts = peer.actor("gts", key=stray, key_id=gts_key)
    act = gts.create("separate key doc")
    assert (await gts.post(alpha, act)).status == 202
    assert await outcome(alpha, act) == "processed"

    await known(alpha, mallory, victim)
    cases: list[tuple[str, int]] = [
        # a key document naming mallory as owner, but mallory's actor lists another key
        (_key_doc(peer, "/keys/unlisted", mallory.id, stray), 401),
        # a key document naming an owner on another host
        (_key_doc(peer, "/keys/foreign-owner", other.url("/users/olga"), stray), 401),
        # the actor's own document, whose publicKey.id is not this keyId
        (f"{mallory.id}#second-key", 401),
    ]
    # an actor document whose key names another owner
    odd = peer.actor("odd", key=stray)
    odd.extra["publicKey"] = {"id": odd.key_id, "owner": victim.id, "publicKeyPem": public_key_pem(stray)}
    odd.publish()
    cases.append((odd.key_id, 401))
    # the owner lists the key, but the owner is not the activity's actor: authenticated, not authorised
    cases.append((victim.key_id, 403))
    before = await snapshot(alpha, skip=("accounts",))
    for key_id, status in cases:
        signer_key = stray if key_id != victim.key_id else victim.key
        act = mallory.create("whose key?")
        body = body_of(act)
        headers = mallory.signed_headers(alpha, INBOX, body, key_id=key_id, sign=rsa_sign(signer_key))
        await refused(alpha, await send(alpha, INBOX, body, headers), status, before, skip=("accounts",))
    for who in (mallory, victim):
        row = await alpha.ctx.db.fetchone("SELECT public_key_id FROM accounts WHERE uri = ?", (who.id,))
        assert row["public_key_id"] == who.key_id


# --------------------------------------------------------------------------------------------
# S12: look-alike key hosts are other origins


@dataclass
class LookAlike:
    key_id: Callable[[Peer, Peer], str]  # (victim's server, a second server on victim.test's name) -> keyId
    status: int


def attacker_key() -> Any:
    """One key, outside the rotating pool, for every look-alike document."""
    return pooled_key(KEY_POOL)


def _attacker_actor(where: Peer, base: str) -> str:
    return PeerActor(where, "v", attacker_key(), base=base).key_id


HOMOGRAPH = "v\u0456ctim.test".encode("idna").decode()  # Cyrillic і
LOOK_ALIKES = {
    # mastodon.soc + /ial: another host whose path continues the victim's name
    "host+path splice, own actor": LookAlike(lambda v, p2: _attacker_actor(v, f"http://victim.tes:{v.port}/t"), 403),
    "host+path splice, key claims the victim": LookAlike(
        lambda v, p2: _key_doc_at(v, f"http://victim.tes:{v.port}/t/key", v.url("/users/v")), 401),
    "trailing dot": LookAlike(lambda v, p2: f"http://victim.test.:{v.port}/users/v#main-key", 401),
    "upper case": LookAlike(lambda v, p2: f"http://VICTIM.TEST:{v.port}/users/v#main-key", 401),
    "xn-- homograph": LookAlike(lambda v, p2: _attacker_actor(v, f"http://{HOMOGRAPH}:{v.port}"), 403),
    "userinfo": LookAlike(lambda v, p2: f"http://victim.test:{v.port}@victim.tes:{v.port}/t/users/v#main-key", 401),
    "another port": LookAlike(lambda v, p2: _attacker_actor(p2, p2.base), 403),
    "another port, key claims the victim": LookAlike(
        lambda v, p2: _key_doc_at(p2, p2.url("/key"), v.url("/users/v")), 401),
}


def _key_doc_at(where: Peer, key_id: str, owner: str) -> str:
    where.serve(key_id, {"id": key_id, "type": "Key", "owner": owner, "publicKeyPem": public_key_pem(attacker_key())})
    return key_id


@pytest.mark.parametrize("case", LOOK_ALIKES)
async def test_s12_look_alike_key_hosts_are_other_origins(network: Network, alpha: Instance, case: str) -> None:
    for name in ("victim.tes", HOMOGRAPH):
        network.host_map[name] = "127.0.0.1"
    home = await Peer(network, "victim.test").start()
    second = await Peer(network, "victim.test").start()  # same name, another port
    try:
        victim = home.actor("v")
        act = victim.create("only the victim may say this")
        assert (await victim.post(alpha, act)).status == 202  # control: the genuine key
        await alpha.drain()
        before = await snapshot(alpha, skip=("accounts",))
        look_alike = LOOK_ALIKES[case]
        key_id = look_alike.key_id(home, second)
        forged = victim.create("forged")
        body = body_of(forged)
        headers = victim.signed_headers(alpha, INBOX, body, key_id=key_id, sign=rsa_sign(attacker_key()))
        await refused(alpha, await send(alpha, INBOX, body, headers), look_alike.status, before, skip=("accounts",))
        row = await alpha.ctx.db.fetchone(
            "SELECT public_key_id, public_key_pem FROM accounts WHERE uri = ?", (victim.id,))
        assert (row["public_key_id"], row["public_key_pem"]) == (victim.key_id, public_key_pem(victim.key))
    finally:
        await home.close()
        await second.close()


# --------------------------------------------------------------------------------------------
# S13: keyId and actor URLs on private addresses are never connected to


class Listener:
    """A TCP port that counts connections (and closes them)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> Listener:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    lst = await Listener().start()
    yield lst
    await lst.close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address any socket in this process tries to connect to."""
    seen: list[Any] = []
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        seen.append(address)
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


async def _send_with_key_id(inst: Instance, signer: PeerActor, key_id: str, actor: str | None = None) -> Reply:
    act = signer.create("from a private address")
    if actor is not None:
        act["actor"] = act["object"]["attributedTo"] = actor
    body = body_of(act)
    return await send(inst, INBOX, body, signer.signed_headers(inst, INBOX, body, key_id=key_id))


async def test_s13_metadata_address_is_never_fetched(
    network: Network, alpha: Instance, mallory: PeerActor, connects: list[Any]
) -> None:
    network.host_map["metadata.test"] = "169.254.169.254"
    before = await snapshot(alpha)
    for key_id in ("http://169.254.169.254/latest/meta-data/#main-key",
                   "http://metadata.test/latest/meta-data/#main-key"):
        await refused(alpha, await _send_with_key_id(alpha, mallory, key_id), 401, before)
    assert not [a for a in connects if a[0] == "169.254.169.254"]
    # control: the same log does see the instance's own outgoing fetches
    assert (await mallory.post(alpha, mallory.create())).status == 202
    assert ("127.0.0.1", mallory.peer.port) in connects


async def test_s13_loopback_key_refused_by_a_strict_instance(
    network: Network, alpha: Instance, peer: Peer, listener: Listener
) -> None:
    mallory = peer.actor("mallory")
    strict = await network.add("strict.test", federation={"allow_private_networks": []})
    await create_local_account(strict.ctx.db, strict.base, "alice", "password123")
    loopback = f"http://127.0.0.1:{listener.port}/"
    before = await snapshot(strict)
    await refused(strict, await _send_with_key_id(strict, mallory, loopback + "#main-key"), 401, before)
    await refused(strict, await _send_with_key_id(strict, mallory, loopback, actor=loopback), 401, before)
    # a name that resolves to loopback is refused after DNS, too
    await refused(strict, await mallory.post(strict, mallory.create()), 401, before)
    assert listener.connections == 0 and peer.hits["/users/mallory"] == 0
    # an actor URL on loopback, signed by someone else, is refused before anything is fetched
    before_alpha = await snapshot(alpha, skip=("accounts",))
    await refused(alpha, await _send_with_key_id(alpha, mallory, mallory.key_id, actor=loopback), 403, before_alpha,
                  skip=("accounts",))
    assert listener.connections == 0
    # control: alpha allows 127.0.0.0/8 (the test harness), so the listener does count its fetch
    before_alpha = await snapshot(alpha)
    await refused(alpha, await _send_with_key_id(alpha, mallory, loopback + "#main-key"), 401, before_alpha)
    assert listener.connections >= 1


# --------------------------------------------------------------------------------------------
# Who may say what: S10, S14, A1, A2, A4, A6, A8, A12 (refused before storing: 403)


@dataclass
class Scene:
    alpha: Instance
    mallory: PeerActor
    victim: PeerActor  # same host as mallory
    olga: PeerActor  # another host
    victim_note: dict[str, Any]  # stored on alpha, followers-only
    victim_like: dict[str, Any]  # victim's Like of alice's post, stored on alpha
    alice: Row
    alice_post: Row


@pytest.fixture
async def scene(alpha: Instance, peer: Peer, other: Peer) -> Scene:
    mallory, victim, olga = peer.actor("mallory"), peer.actor("victim"), other.actor("olga")
    await known(alpha, mallory, victim, olga)
    alice = await local(alpha)
    post = await actions.create_status(alpha.ctx, alice, PostRequest(text="alice's post"))
    create = victim.create("victim's words", to=[f"{victim.id}/followers"], cc=[])
    like = victim.activity("Like", post["uri"])
    for act in (create, like):
        assert (await victim.post(alpha, act)).status == 202
        assert await outcome(alpha, act) == "processed"
    return Scene(alpha, mallory, victim, olga, create["object"], like, alice, post)


def _update_person_with_key(subject: PeerActor, actor: PeerActor, key: Any) -> dict[str, Any]:
    doc = dict(subject.doc, publicKey={"id": subject.key_id, "owner": subject.id, "publicKeyPem": public_key_pem(key)})
    return actor.activity("Update", doc)


def _as_actor(act: dict[str, Any], actor: str) -> dict[str, Any]:
    act["actor"] = actor
    if isinstance(act["object"], dict) and "attributedTo" in act["object"]:
        act["object"]["attributedTo"] = actor
    return act


Case = Callable[[Scene], tuple[PeerActor, dict[str, Any]]]

AUTHORITY_CASES: dict[str, tuple[Case, int]] = {
    "control: own note": (lambda s: (s.mallory, s.mallory.create("mine")), 202),
    "control: victim deletes own note": (lambda s: (s.victim, s.victim.activity("Delete", s.victim_note["id"])), 202),
    "control: victim undoes own Like": (lambda s: (s.victim, s.victim.activity("Undo", s.victim_like)), 202),
    "S10 keyId on one host, actor on another": (lambda s: (s.mallory, s.olga.create("olga said")), 403),
    "S14 Update of another actor with a new key": (
        lambda s: (s.mallory, _update_person_with_key(s.victim, s.victim, s.mallory.key)), 403),
    "S14 same, as the signer's own Update": (
        lambda s: (s.mallory, _update_person_with_key(s.victim, s.mallory, s.mallory.key)), 403),
    "A1 object id on another host": (lambda s: (s.mallory, s.mallory.create("x", id=s.olga.id + "/notes/1")), 403),
    "A1 activity id on another host": (lambda s: (s.mallory, dict(s.mallory.create("x"), id=s.olga.id + "/a/1")), 403),
    "A2 attributedTo another actor on the same host": (
        lambda s: (s.mallory, s.mallory.create("x", attributedTo=s.victim.id)), 403),
    "A4 Update of another actor's note, claiming it": (lambda s: (s.mallory, s.mallory.activity(
        "Update", dict(s.victim_note, attributedTo=s.mallory.id, content="pwned", updated=iso_seconds(now()))
    )), 403),
    "A4 Update of another actor's note, as its author": (lambda s: (s.mallory, s.mallory.activity(
        "Update", dict(s.victim_note, content="pwned", updated=iso_seconds(now()))
    )), 403),
    "A4 Delete of another actor's note": (lambda s: (s.mallory, s.mallory.activity("Delete", s.victim_note["id"])), 403),
    "A4 Delete of another actor's note as Tombstone": (lambda s: (s.mallory, s.mallory.activity(
        "Delete", {"id": s.victim_note["id"], "type": "Tombstone"})), 403),
    "A4 Undo of another actor's Like": (lambda s: (s.mallory, s.mallory.activity("Undo", s.victim_like)), 403),
    "A6 Accept of a Follow never sent": (lambda s: (s.mallory, s.mallory.activity(
        "Accept", s.mallory.id + "/follows/1")), 403),
    "A6 Accept of an embedded Follow never sent": (lambda s: (s.mallory, s.mallory.activity(
        "Accept", {"type": "Follow", "actor": s.alice["uri"], "object": s.mallory.id})), 403),
    "A6 Reject of a Follow never sent": (lambda s: (s.mallory, s.mallory.activity(
        "Reject", s.mallory.id + "/follows/1")), 403),
    "A8 actor is our own account": (lambda s: (s.mallory, _as_actor(s.mallory.create("x"), s.alice["uri"])), 403),
    "A8 object id on our domain": (
        lambda s: (s.mallory, s.mallory.create("x", id=f"{s.alpha.base}/users/alice/statuses/1")), 403),
    "A12 forwarded, LD-signed activity of another host": (lambda s: (s.mallory, dict(
        s.olga.create("forwarded"), signature={
            "type": "RsaSignature2017", "creator": s.olga.key_id, "created": iso_seconds(now()),
            "signatureValue": base64.b64encode(b"\0" * 256).decode()})), 403),
}


@pytest.mark.parametrize("case", AUTHORITY_CASES)
async def test_signer_must_have_authority(scene: Scene, case: str) -> None:
    build, status = AUTHORITY_CASES[case]
    signer, act = build(scene)
    before = await snapshot(scene.alpha)
    reply = await signer.post(scene.alpha, act)
    if status == 202:
        assert reply.status == 202, reply.text
        assert await outcome(scene.alpha, act) == "processed"
        assert await snapshot(scene.alpha) != before
        return
    await refused(scene.alpha, reply, status, before)


async def test_a3_create_reusing_a_stored_id_changes_nothing(scene: Scene) -> None:
    before = await snapshot(scene.alpha, skip=("inbox_activities",))
    public = {"to": [PUBLIC], "cc": [], "content": "now public"}
    for actor in (scene.mallory, scene.victim):  # another author on the same host, and the author itself
        note = dict(scene.victim_note, attributedTo=actor.id, **public)
        act = actor.activity("Create", note, to=[PUBLIC])
        assert (await actor.post(scene.alpha, act)).status == 202
        assert await outcome(scene.alpha, act) == "ignored"
    assert await snapshot(scene.alpha, skip=("inbox_activities",)) == before
    row = await status_row(scene.alpha, scene.victim_note["id"])
    assert row["visibility"] == "private" and "victim's words" in row["content"]


async def test_a4_undo_by_bare_uri_of_another_actors_activity_changes_nothing(scene: Scene) -> None:
    before = await snapshot(scene.alpha, skip=("inbox_activities",))
    act = scene.mallory.activity("Undo", scene.victim_like["id"])
    assert (await scene.mallory.post(scene.alpha, act)).status == 202
    assert await outcome(scene.alpha, act) == "ignored"
    assert await snapshot(scene.alpha, skip=("inbox_activities",)) == before


async def test_a4_delete_of_an_unseen_note_cannot_suppress_its_author(scene: Scene) -> None:
    """A Delete for an id we never saw can only speak for the deleting actor's own objects."""
    create = scene.victim.create("posted after mallory's pre-emptive Delete")
    delete = scene.mallory.activity("Delete", create["object"]["id"])
    assert (await scene.mallory.post(scene.alpha, delete)).status == 202
    await scene.alpha.drain()
    assert (await scene.victim.post(scene.alpha, create)).status == 202
    assert await outcome(scene.alpha, create) == "processed"
    row = await status_row(scene.alpha, create["object"]["id"])
    assert row is not None and row["deleted_at"] is None


async def test_a6_accept_by_a_non_followee(scene: Scene) -> None:
    victim_row = await get_actor(scene.alpha.ctx, scene.victim.id)
    assert await actions.follow(scene.alpha.ctx, scene.alice, victim_row) == "requested"
    await scene.alpha.drain()
    follow_uri = await scene.alpha.ctx.db.fetchval("SELECT uri FROM follows")
    before = await snapshot(scene.alpha)
    embedded = {"id": follow_uri, "type": "Follow", "actor": scene.alice["uri"], "object": scene.victim.id}
    for obj in (follow_uri, embedded, dict(embedded, id=None)):
        await refused(scene.alpha, await scene.mallory.post(scene.alpha, scene.mallory.activity("Accept", obj)),
                      403, before)
    # control: the followee's own Accept
    accept = scene.victim.activity("Accept", follow_uri)
    assert (await scene.victim.post(scene.alpha, accept)).status == 202
    assert await outcome(scene.alpha, accept) == "processed"
    assert await scene.alpha.ctx.db.fetchval("SELECT state FROM follows") == "accepted"


async def test_s14_key_changes_only_through_the_origin(scene: Scene) -> None:
    victim = scene.victim
    old_pem = public_key_pem(victim.key)
    new_key = fresh_key()
    # the actor's own Update carrying a new key: accepted, but the key is refetched, not read
    update = _update_person_with_key(victim, victim, new_key)
    assert (await victim.post(scene.alpha, update)).status == 202
    assert await outcome(scene.alpha, update) == "processed"
    pem = await scene.alpha.ctx.db.fetchval("SELECT public_key_pem FROM accounts WHERE uri = ?", (victim.id,))
    assert pem == old_pem
    # a real rotation at the origin is followed (refetch once on a failed verification)
    victim.rotate(new_key)
    act = victim.create("with my new key")
    assert (await victim.post(scene.alpha, act)).status == 202
    assert await outcome(scene.alpha, act) == "processed"
    pem = await scene.alpha.ctx.db.fetchval("SELECT public_key_pem FROM accounts WHERE uri = ?", (victim.id,))
    assert pem == public_key_pem(new_key)


# --------------------------------------------------------------------------------------------
# A5, A7: objects are taken from their origin, by id, with an ActivityPub type


async def test_a5_embedded_boosted_note_is_ignored_for_the_origins_copy(alpha: Instance, peer: Peer) -> None:
    mallory, victim = peer.actor("mallory"), peer.actor("victim")
    genuine = victim.note("genuine words")
    peer.serve(genuine["id"], genuine)
    forged = dict(genuine, content="forged words", to=[PUBLIC])
    boost = mallory.activity("Announce", forged, to=[PUBLIC])
    assert (await mallory.post(alpha, boost)).status == 202
    assert await outcome(alpha, boost) == "processed"
    row = await status_row(alpha, genuine["id"])
    author = await alpha.ctx.db.fetchval("SELECT uri FROM accounts WHERE id = ?", (row["account_id"],))
    assert "genuine words" in row["content"] and author == victim.id
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses WHERE content LIKE '%forged%'") == 0
    assert peer.hits[genuine["id"].split(peer.base)[1]] == 1

    # an embedded note the origin does not serve is dropped, boost and all
    missing = victim.note("never published")
    before = await snapshot(alpha, skip=("inbox_activities",))
    boost = mallory.activity("Announce", missing, to=[PUBLIC])
    assert (await mallory.post(alpha, boost)).status == 202
    assert await outcome(alpha, boost) == "ignored"
    assert await snapshot(alpha, skip=("inbox_activities",)) == before


REFETCH_CASES: dict[str, tuple[Callable[[Peer, Peer, dict[str, Any]], None], bool]] = {
    "control: served by its origin": (lambda p, o, n: p.serve(n["id"], n), True),
    "A7 id differs from the requested URL": (lambda p, o, n: p.serve(n["id"], dict(n, id=n["id"] + "x")), False),
    "A7 text/html": (lambda p, o, n: p.serve(n["id"], n, content_type="text/html"), False),
    "A7 application/json": (lambda p, o, n: p.serve(n["id"], n, content_type="application/json"), False),
    "A7 410 Gone": (lambda p, o, n: p.serve(n["id"], {"id": n["id"], "type": "Tombstone"}, status=410), False),
    "A7 redirect to another host serving the same id": (lambda p, o, n: (
        p.serve(n["id"], status=302, headers={"Location": o.url("/copy")}), o.serve("/copy", n)), False),
}


@pytest.mark.parametrize("case", REFETCH_CASES)
async def test_a7_refetched_object_must_come_from_its_id(alpha: Instance, peer: Peer, other: Peer, case: str) -> None:
    mallory, victim = peer.actor("mallory"), peer.actor("victim")
    await known(alpha, mallory, victim)
    serve, stored = REFETCH_CASES[case]
    note = victim.note("boosted")
    serve(peer, other, note)
    before = await snapshot(alpha, skip=("inbox_activities",))
    boost = mallory.activity("Announce", note["id"], to=[PUBLIC])
    assert (await mallory.post(alpha, boost)).status == 202
    assert await outcome(alpha, boost) == ("processed" if stored else "ignored")
    assert (await status_row(alpha, note["id"]) is not None) == stored
    if not stored:
        assert await snapshot(alpha, skip=("inbox_activities",)) == before


async def test_a7_actor_document_must_come_from_its_id(alpha: Instance, peer: Peer, other: Peer) -> None:
    """An open redirect on the victim's host must not let another host publish the victim's key."""
    victim = peer.actor("victim")
    await known(alpha, victim)
    attacker_key = fresh_key()
    hop = peer.url("/redirect?to=elsewhere")
    fake = dict(victim.doc, publicKey={"id": hop + "#main-key", "owner": victim.id,
                                       "publicKeyPem": public_key_pem(attacker_key)})
    other.serve("/fake-victim", fake)
    peer.serve(hop, status=302, headers={"Location": other.url("/fake-victim")})
    before = await snapshot(alpha)
    act = victim.create("impersonated")
    body = body_of(act)
    headers = victim.signed_headers(alpha, INBOX, body, key_id=hop + "#main-key", sign=rsa_sign(attacker_key))
    await refused(alpha, await send(alpha, INBOX, body, headers), 401, before)
    # and the same for a refetch of the actor itself, redirected off its host
    peer.serve(victim.id, status=302, headers={"Location": other.url("/fake-victim")})
    other.serve("/fake-victim", dict(victim.doc, publicKey={
        "id": victim.key_id, "owner": victim.id, "publicKeyPem": public_key_pem(attacker_key)}))
    headers = victim.signed_headers(alpha, INBOX, body, sign=rsa_sign(attacker_key))
    await refused(alpha, await send(alpha, INBOX, body, headers), 401, before)


# --------------------------------------------------------------------------------------------
# A9, A10, A13: what a stored note is and is not


async def test_a9_url_on_another_host_is_not_canonical(alpha: Instance, mallory: PeerActor, other: Peer) -> None:
    foreign = mallory.create("link elsewhere", url=other.url("/looks-official"))
    own = mallory.create("link home", url=mallory.id + "/pretty")
    for act in (foreign, own):
        assert (await mallory.post(alpha, act)).status == 202
    await alpha.drain()
    assert (await status_row(alpha, foreign["object"]["id"]))["url"] == foreign["object"]["id"]
    assert (await status_row(alpha, own["object"]["id"]))["url"] == mallory.id + "/pretty"  # control


async def test_a10_deleted_note_is_not_resurrected(alpha: Instance, mallory: PeerActor) -> None:
    create = mallory.create("short-lived")
    for act in (create, mallory.activity("Delete", create["object"]["id"])):
        assert (await mallory.post(alpha, act)).status == 202
        assert await outcome(alpha, act) == "processed"
    # the same Create replayed under a new activity id, and a Create for an id deleted before it was seen
    again = mallory.activity("Create", create["object"])
    early = mallory.create("deleted before it arrived")
    assert (await mallory.post(alpha, mallory.activity("Delete", early["object"]["id"]))).status == 202
    await alpha.drain()
    before = await snapshot(alpha, skip=("inbox_activities",))
    for act in (again, early):
        assert (await mallory.post(alpha, act)).status == 202
        assert await outcome(alpha, act) == "ignored"
    assert await snapshot(alpha, skip=("inbox_activities",)) == before
    assert (await status_row(alpha, create["object"]["id"]))["deleted_at"] is not None


async def test_a10_late_create_from_a_deleted_actor_is_dropped(alpha: Instance, mallory: PeerActor) -> None:
    await known(alpha, mallory)
    delete = mallory.activity("Delete", mallory.id)
    assert (await mallory.post(alpha, delete)).status == 202
    assert await outcome(alpha, delete) == "processed"
    mallory.peer.serve(mallory.id, {"id": mallory.id, "type": "Tombstone"}, status=410)
    before = await snapshot(alpha, skip=("inbox_activities",))
    late = mallory.create("posted by a deleted account")  # a delivery retry still signed with the cached key
    assert (await mallory.post(alpha, late)).status == 202
    assert await outcome(alpha, late) == "ignored"
    assert await snapshot(alpha, skip=("inbox_activities",)) == before


@pytest.mark.parametrize("public", [PUBLIC, "as:Public", "Public"])
async def test_a13_every_spelling_of_public_is_public(alpha: Instance, mallory: PeerActor, public: str) -> None:
    act = mallory.create("for everyone", to=[public])
    assert (await mallory.post(alpha, act)).status == 202
    await alpha.drain()
    assert (await status_row(alpha, act["object"]["id"]))["visibility"] == "public"


async def test_a13_json_ld_context_is_never_fetched_nor_obeyed(alpha: Instance, mallory: PeerActor) -> None:
    peer = mallory.peer
    peer.serve("/context.jsonld", {"@context": {"actor": "as:object", "object": "as:actor"}},
               content_type="application/ld+json")
    alice = await local(alpha)
    # Read with the fixed AS term map, this is "mallory follows alice"; expanded with the
    # remote context (or the inline alias) it would say "alice follows mallory".
    for context in (peer.url("/context.jsonld"), {"actor": "as:object", "object": "as:actor"}):
        follow = mallory.activity("Follow", alice["uri"])
        follow["@context"] = ["https://www.w3.org/ns/activitystreams", context]
        assert (await mallory.post(alpha, follow)).status == 202
        assert await outcome(alpha, follow) == "processed"
    rows = await alpha.ctx.db.fetchall(
        "SELECT f.uri, a.uri AS follower, t.uri AS target FROM follows f JOIN accounts a ON a.id = f.account_id"
        " JOIN accounts t ON t.id = f.target_account_id"
    )
    assert [(r["follower"], r["target"]) for r in rows] == [(mallory.id, alice["uri"])]
    assert peer.hits["/context.jsonld"] == 0


# --------------------------------------------------------------------------------------------
# P1–P7: the body itself


async def test_p1_oversized_bodies_are_413_before_parsing(alpha: Instance, mallory: PeerActor) -> None:
    await known(alpha, mallory)
    limit = alpha.config.server.max_body_bytes
    before = await snapshot(alpha)

    def padded(size: int) -> bytes:
        body = body_of(mallory.create("PAD"))
        return body.replace(b"PAD", b"x" * (size - len(body) + 3))

    big = padded(int(limit * 1.01))
    assert len(big) > limit
    await refused(alpha, await send(alpha, INBOX, big, mallory.signed_headers(alpha, INBOX, big)), 413, before)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    reply = await send(alpha, INBOX, chunks(), mallory.signed_headers(alpha, INBOX, big))
    await refused(alpha, reply, 413, before)
    # control: just under the cap the body is read and parsed (and refused for its content length)
    small = padded(limit - 1000)
    await refused(alpha, await send(alpha, INBOX, small, mallory.signed_headers(alpha, INBOX, small)), 400, before)


def _note_with(**fields: Any) -> Callable[[PeerActor], bytes]:
    return lambda m: body_of(m.create("body", **fields))


def _activity_with(**fields: Any) -> Callable[[PeerActor], bytes]:
    return lambda m: body_of(dict(m.create("body"), **fields))


def _spliced(old: bytes, new: bytes) -> Callable[[PeerActor], bytes]:
    """A valid Create whose content "RAW" has its bytes `old` replaced by `new` (no JSON encoder would)."""
    return lambda m: body_of(m.create("RAW")).replace(old, new, 1)


BODY_CASES: dict[str, tuple[Callable[[PeerActor], bytes], int]] = {
    "control: a plain Create": (lambda m: body_of(m.create("body")), 202),
    "P2 [ x 5000": (lambda m: b"[" * 5000 + b"]" * 5000, 400),
    'P2 {"a": x 5000': (lambda m: b'{"a":' * 5000 + b"1" + b"}" * 5000, 400),
    "P3 5000-digit integer": (_spliced(b'"RAW"', b"1" * 5000), 400),
    "P3 duplicate id keys": (lambda m: b'{"id":"' + m.id.encode() + b'/a/other",' + body_of(m.create())[1:], 400),
    "P4 actor as a 2-element array": (lambda m: body_of(dict(m.create(), actor=[m.id, m.id + "2"])), 400),
    "P4 id as an object": (lambda m: body_of(dict(m.create(), id={"id": m.id + "/a/1"})), 400),
    "P4 to with 10k entries": (_activity_with(to=[f"http://x.test/u/{i}" for i in range(10_000)]), 400),
    "P4 100k tags": (_note_with(tag=[0] * 100_000), 400),
    "P6 1k attachments": (lambda m: body_of(m.create("body", attachment=[
        {"type": "Document", "mediaType": "image/png", "url": f"{m.id}/m/{i}.png"} for i in range(1000)])), 400),
    "P6 5k mentions": (lambda m: body_of(m.create("body", tag=[
        {"type": "Mention", "href": f"{m.id}{i}", "name": f"@u{i}"} for i in range(5000)])), 400),
    "P6 150k characters of content": (lambda m: body_of(m.create("x" * 150_000)), 400),
    "P7 invalid UTF-8": (_spliced(b"RAW", b"\xff\xfe"), 400),
    "P7 lone surrogate escape": (_spliced(b"RAW", b"\\ud800"), 400),
    "P7 NUL escape": (_spliced(b"RAW", b"a\\u0000b"), 400),
    "P7 raw NUL byte": (_spliced(b"RAW", b"a\x00b"), 400),
    "P7 activity published 99999-01-01": (_activity_with(published="99999-01-01"), 400),
    "P7 note published 99999-01-01": (_note_with(published="99999-01-01"), 400),
    "P7 note published not ISO 8601": (_note_with(published="Tue, 01 Oct 2024 10:00:00 GMT"), 400),
}


@pytest.mark.parametrize("case", BODY_CASES)
async def test_malformed_bodies_are_400(alpha: Instance, mallory: PeerActor, case: str) -> None:
    make, status = BODY_CASES[case]
    await known(alpha, mallory)
    body = make(mallory)
    before = await snapshot(alpha)
    reply = await send(alpha, INBOX, body, mallory.signed_headers(alpha, INBOX, body))
    if status == 202:
        assert reply.status == 202, reply.text
        await alpha.drain()
        assert await snapshot(alpha) != before
        return
    await refused(alpha, reply, status, before)


async def test_p5_wrong_content_type_is_415(alpha: Instance, mallory: PeerActor) -> None:
    await known(alpha, mallory)
    before = await snapshot(alpha)
    body = body_of(mallory.create())
    for media in ("text/plain", "application/x-www-form-urlencoded", "text/html"):
        headers = {**mallory.signed_headers(alpha, INBOX, body), "Content-Type": media}
        await refused(alpha, await send(alpha, INBOX, body, headers), 415, before)
    headers = {**mallory.signed_headers(alpha, INBOX, body), "Content-Type": 'application/ld+json; profile="x"'}
    assert (await send(alpha, INBOX, body, headers)).status == 202  # control


async def test_p6_poll_with_10k_options_is_stored_without_them(alpha: Instance, mallory: PeerActor) -> None:
    options = [{"type": "Note", "name": f"o{i}", "replies": {"totalItems": 0}} for i in range(10_000)]
    act = mallory.create("a big poll", type="Question", oneOf=options)
    assert (await mallory.post(alpha, act)).status == 202
    assert await outcome(alpha, act) == "processed"
    assert "a big poll" in (await status_row(alpha, act["object"]["id"]))["content"]


# --------------------------------------------------------------------------------------------
# X1, X2: remote HTML is sanitised on the way in and names are escaped on the way out

XSS = (
    '<p>ok</p><script>alert(1)</script><img src=x onerror="alert(1)"><a href="javascript:alert(1)">j</a>'
    '<a href="data:text/html,<script>alert(1)</script>">d</a><svg onload="alert(1)"><circle/></svg>'
    '<iframe src="http://evil.test/"></iframe><form action="http://evil.test/"><input name=a></form>'
    '<p style="background:url(x)" onclick="alert(1)">styled</p><a href="https://fine.test/" onmouseover="x()">ok</a>'
)
DANGEROUS = ("<script", "onerror", "onload", "onclick", "onmouseover", "javascript:", "data:", "<svg", "<iframe",
             "<form", "<input", "style=", "<img")
NAME = "&lt;script&gt;alert(1)&lt;/script&gt;<b>Mal</b>"


async def test_x1_x2_remote_html_is_sanitised_and_names_escaped(alpha: Instance, peer: Peer) -> None:
    mallory = peer.actor(
        "mallory", name=NAME, summary=XSS,
        attachment=[{"type": "PropertyValue", "name": "<i>site</i><script>x()</script>", "value": XSS}],
    )
    act = mallory.create(XSS, summary="<b>cw</b><script>alert(1)</script>", attachment=[
        {"type": "Document", "mediaType": "image/png", "url": mallory.id + "/a.png",
         "name": "<img src=x onerror=alert(1)>alt"}])
    assert (await mallory.post(alpha, act)).status == 202
    assert await outcome(alpha, act) == "processed"

    status = await status_row(alpha, act["object"]["id"])
    assert status["content"] == sanitize_html(XSS)
    assert "ok" in status["content"] and 'href="https://fine.test/"' in status["content"]
    account = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE uri = ?", (mallory.id,))
    alt = await alpha.ctx.db.fetchval("SELECT description FROM media_attachments WHERE status_id = ?", (status["id"],))
    assert alt == "alt" and status["summary"] == "cw"
    for html in (status["content"], account["summary"], account["fields_json"]):
        assert not [d for d in DANGEROUS if d in html.lower()], html
    assert account["display_name"] == "<script>alert(1)</script>Mal"  # plain text, entities decoded
    assert "<i>" not in account["fields_json"] and "<script>" not in account["fields_json"]

    # X2: the page template escapes the remote name; the sanitised content is kept as is
    page = render_string("status.html", {
        "instance": alpha.config.instance, "base_url": alpha.base, "status": status, "author": account,
        "display_name": account["display_name"], "handle": f"@{account['username']}@{account['domain']}",
        "title": account["display_name"],
    })
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;Mal" in page
    assert status["content"] in page

    # and a real page over HTTP, with a display name that is HTML
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE accounts SET display_name = ? WHERE username = 'alice'", ("<script>x()</script>",))
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/@alice"), headers={"Accept": "text/html"}) as resp:
        text = await resp.text()
    assert resp.status == 200 and "<script>x()" not in text and "&lt;script&gt;x()&lt;/script&gt;" in text

