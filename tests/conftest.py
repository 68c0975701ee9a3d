from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import actors.local
from tests.harness import Network
from tests.peer import fresh_key


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
