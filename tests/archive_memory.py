"""How much memory building an archive takes, for tests/test_exports.py and by hand:

    .venv/bin/python -m tests.archive_memory 200 2000

Each post is stored with 1.5 KB of incompressible text and one picture, so the archive grows
with the post count; tracemalloc's peak (Python allocations while the archive is written)
should not.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

from actors.local import create_local_account, get_local_account
from fedi.app import close_context, open_context
from fedi.clock import now
from fedi.portability.archive_export import build_archive
from tests.harness import test_config


async def measure(folder: Path, posts: int) -> tuple[int, int]:
    """(tracemalloc peak in bytes, archive size in bytes) for an account with `posts` posts."""
    folder.mkdir(parents=True, exist_ok=True)
    config = test_config(folder, "memory.test", 8080)
    ctx = await open_context(config)
    try:
        await create_local_account(ctx.db, ctx.base_url, "alice", "unused password")
        alice = await get_local_account(ctx.db, "alice")
        assert alice is not None
        media = Path(config.media_path) / "attachments"
        media.mkdir(parents=True, exist_ok=True)
        ts = now()
        async with ctx.db.write() as tx:
            for i in range(posts):
                status_id = tx.new_id()
                uri = f"{ctx.base_url}/users/alice/statuses/{status_id}"
                await tx.execute(
                    "INSERT INTO statuses (id, uri, url, account_id, local, content, visibility, to_json, cc_json,"
                    " published_at, created_at) VALUES (?, ?, ?, ?, 1, ?, 'public', ?, '[]', ?, ?)",
                    (status_id, uri, uri, alice["id"], f"<p>{os.urandom(750).hex()}</p>",
                     '["https://www.w3.org/ns/activitystreams#Public"]', ts + i, ts + i))
                name = f"attachments/{i}.png"
                (Path(config.media_path) / name).write_bytes(os.urandom(2048))
                await tx.execute(
                    "INSERT INTO media_attachments (id, status_id, account_id, type, media_type, file_path,"
                    " description, created_at) VALUES (?, ?, ?, 'image', 'image/png', ?, 'noise', ?)",
                    (tx.new_id(), status_id, alice["id"], name, ts))
        out = folder / "archive.zip"
        gc.collect()
        tracemalloc.start()
        try:
            await build_archive(ctx, alice, str(out))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak, out.stat().st_size
    finally:
        await close_context(ctx)


def main(counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            peak, size = asyncio.run(measure(Path(tmp) / str(n), n))
            print(f"{n} posts: archive {size:,} bytes, peak traced memory {peak:,} bytes")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [200, 2000])
