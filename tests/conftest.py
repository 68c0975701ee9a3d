from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import actors.local
from actors.local import create_local_account
from tests.harness import Instance, Network
from tests.peer import Peer, PeerActor, fresh_key


@pytest.fixture(autouse=True)
def pooled_account_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """New accounts draw real RSA keys from a rotating pool instead of generating each (~70 ms).

    Every key drawn within one test is distinct (see tests/peer.py), so ownership checks
    still mean something; subprocess tests generate their own.
    """
    monkeypatch.setattr(actors.local, "generate_private_key", fresh_key)


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    net = Network(tmp_path)
    yield net
    await net.close()


@pytest.fixture
def cheap_local_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local accounts skip scrypt (~170 ms), for tests where no one logs in (keys come from the pool above)."""
    monkeypatch.setattr(actors.local, "hash_password", lambda password: "unusable")


@pytest.fixture
async def alpha(network: Network, cheap_local_accounts: None) -> Instance:
    """alpha.test with one local account, alice, who never logs in (a module may define its own `alpha`)."""
    inst = await network.add("alpha.test")
    await create_local_account(inst.ctx.db, inst.base, "alice", "password123")
    return inst


@pytest.fixture
async def peer(network: Network) -> AsyncIterator[Peer]:
    """A scripted peer at evil.test (tests/peer.py)."""
    p = await Peer(network, "evil.test").start()
    yield p
    await p.close()


@pytest.fixture
def mallory(peer: Peer) -> PeerActor:
    return peer.actor("mallory")
