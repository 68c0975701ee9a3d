"""fediverse-pasture's verify_actor, a checker nobody here wrote, run against a real `fedi serve`.

Pasture serves six test actors and, given our actor's URI, fetches it and posts
to its inbox as each of them:

| actor  | preferredUsername | signed POST | its actor document needs a signed GET |
|--------|-------------------|-------------|---------------------------------------|
| alice  | yes               | no          | no                                    |
| bob    | yes               | yes         | no                                    |
| claire | yes               | yes         | yes (authorized fetch)                |
| dean   | no                | no          | no                                    |
| emily  | no                | yes         | no                                    |
| frank  | no                | yes         | yes                                   |

Pasture's own verdict (see `fediverse_pasture/verify_actor.py`): alice must *not*
get in, bob and claire must (claire only if we sign the fetch of her key), and
WebFinger for preferredUsername@host must give back the actor id. Dean posts
unsigned like alice. Emily and frank have no preferredUsername, which fedi
requires of every actor (actors.remote.parse_actor, as Mastodon does), so their
signed posts are refused: that is a choice, pinned here so changing it is deliberate.

fedi runs as a subprocess on 127.0.0.1:PORT (pasture cannot use the harness's
host map); pasture runs in this process under uvicorn on another port.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.processes import FediProcess, FediProcesses

EXPECTED = {
    "alice": {"get_actor": True, "post_inbox": False},
    "bob": {"get_actor": True, "post_inbox": True},
    "claire": {"get_actor": True, "post_inbox": True},
    "dean": {"get_actor": True, "post_inbox": False},
    "emily": {"get_actor": True, "post_inbox": False},
    "frank": {"get_actor": True, "post_inbox": False},
}


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[FediProcesses]:
    with FediProcesses(tmp_path) as p:
        yield p


@pytest.fixture
async def pasture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """verify_actor on 127.0.0.1 under uvicorn in this event loop; yields its base URL."""
    # verify_actor calls logging.basicConfig(DEBUG) on import; keep the root logger as it was.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import uvicorn
    from fediverse_pasture.verify_actor import build_app

    root.setLevel(level)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)

    monkeypatch.chdir(tmp_path)  # build_app reads and writes ./data.toml (the actors' keys)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = build_app(only_generate_config=False, domain=f"127.0.0.1:{port}", https=False, timeout=10)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(150):
            if server.started or task.done():
                break
            await asyncio.sleep(0.1)
        assert server.started, "pasture did not start" + (f": {task.exception()!r}" if task.done() else "")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()
        sock.close()


async def verify(pasture: str, actor_uri: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(pasture + "/", params={"actor_uri": actor_uri},
                               headers={"Accept": "application/json"}) as response:
            assert response.status == 200, await response.text()
            return dict(await response.json())


def check(report: dict[str, Any], inst: FediProcess) -> None:
    result = report["result"]
    got = {name: {k: result[name][k] for k in ("get_actor", "post_inbox")} for name in EXPECTED}
    assert got == EXPECTED and result["webfinger"] is True, (
        f"pasture result {result}\npasture log {report['messages']}\n{inst.logs()}"
    )


async def test_verify_actor_accepts_signed_and_refuses_unsigned(procs: FediProcesses, pasture: str) -> None:
    inst = procs.add("fedi")
    inst.create_account("alice")
    await asyncio.to_thread(inst.start)

    check(await verify(pasture, f"{inst.base}/users/alice"), inst)
    # the same through WebFinger, as a person would type it
    check(await verify(pasture, f"acct:alice@{inst.domain}"), inst)

    # what got in was stored, signed by bob's and claire's keys; nothing unsigned was
    signers = {row[0] for row in inst.query("SELECT signer_key_id FROM inbox_activities")}
    assert {s.split("#")[0].rsplit("/", 1)[-1] for s in signers} == {"bob", "claire"}, signers
    assert inst.query("SELECT count(*) FROM inbox_activities WHERE type = 'EchoRequest'")[0][0] == 0
