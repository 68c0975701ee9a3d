"""The `fedi` command as an admin uses it: real subprocesses, real files, real servers on 127.0.0.1."""

from __future__ import annotations

import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from importlib import resources
from pathlib import Path

import pytest

from tests.processes import REPO_ROOT, FediProcess, FediProcesses, fedi_env, run_cli, wait_for, write_config

PASSWORD = "correct horse battery"
AS2 = "application/activity+json"


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[FediProcesses]:
    with FediProcesses(tmp_path) as p:
        yield p


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command: exit 1 and exactly one line on stderr, starting with "fedi:"."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedi: "), result.stderr
    return lines[0]


def get(url: str, accept: str = AS2) -> int:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_init_writes_documented_defaults_and_creates_database(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    result = run_cli("init", config=config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"wrote {config}" in result.stdout
    defaults = resources.files("fedi").joinpath("default_config.toml").read_text()
    assert config.read_text() == defaults
    assert defaults == (REPO_ROOT / "config.toml").read_text(), "the shipped defaults and the documented file differ"
    db = tmp_path / "fedi.sqlite3"  # relative to the config file's folder
    assert db.exists() and f"database ready at {db}" in result.stdout
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        actor = conn.execute("SELECT uri, private_key_pem IS NOT NULL, public_key_pem IS NOT NULL FROM accounts"
                             " WHERE actor_type = 'Application'").fetchall()
    assert {"accounts", "statuses", "follows", "deliveries", "inbox_activities"} <= tables
    assert actor == [("http://localhost:8080/actor", 1, 1)]  # init makes the instance key pair up front

    # a second init keeps the admin's file as it is
    config.write_text(defaults + "\n# edited by the admin\n")
    assert run_cli("init", config=config, cwd=tmp_path).returncode == 0
    assert config.read_text().endswith("# edited by the admin\n")

    other = tmp_path / "prod" / "config.toml"
    other.parent.mkdir()
    result = run_cli("init", "--domain", "social.example:8443", "--scheme", "https", config=other)
    assert result.returncode == 0, result.stderr
    assert "instance domain social.example:8443 (https://social.example:8443)" in result.stdout
    assert 'domain = "social.example:8443"' in other.read_text() and 'scheme = "https"' in other.read_text()


def test_account_create_list_and_refusals(procs: FediProcesses) -> None:
    inst = procs.add("one")
    assert "database ready" in inst.ok("init")
    out = inst.ok("account", "create", "alice", "--admin", stdin=PASSWORD + "\n")
    assert out.strip() == f"created admin account @alice@{inst.domain}"
    inst.create_account("bob")

    assert "taken" in one_error_line(inst.cli("account", "create", "alice", stdin=PASSWORD + "\n"))
    assert "taken" in one_error_line(inst.cli("account", "create", "ALICE", stdin=PASSWORD + "\n"))
    assert "username" in one_error_line(inst.cli("account", "create", "no spaces!", stdin=PASSWORD + "\n"))
    assert "username" in one_error_line(inst.cli("account", "create", "x" * 31, stdin=PASSWORD + "\n"))
    assert "8 characters" in one_error_line(inst.cli("account", "create", "carol", stdin="short\n"))
    assert "no password" in one_error_line(inst.cli("account", "create", "carol", stdin=""))

    rows = {line.split("\t")[0]: line.split("\t") for line in inst.ok("account", "list").splitlines()}
    assert set(rows) == {"alice", "bob"}, rows  # refused names left nothing behind
    assert rows["alice"][2] == "admin"
    assert "admin" not in rows["bob"][2]
    assert inst.query("SELECT count(*) FROM users")[0][0] == 2

    assert "no active local account" in one_error_line(inst.cli("account", "suspend", "nobody"))
    assert inst.ok("account", "suspend", "bob").strip() == "suspended @bob"
    assert "suspended" in [line.split("\t") for line in inst.ok("account", "list").splitlines()][1][2]
    assert "no active local account" in one_error_line(inst.cli("account", "suspend", "bob"))
    assert "no active local account" in one_error_line(inst.cli("post", "bob", "still here?"))


def test_fedi_config_environment_variable(tmp_path: Path) -> None:
    config = tmp_path / "site" / "fedi.toml"
    config.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_cli("init", config=config).returncode == 0
    with_env = fedi_env(FEDI_CONFIG=str(config))
    result = run_cli("account", "create", "dora", cwd=elsewhere, env=with_env, stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    result = run_cli("account", "list", cwd=elsewhere, env=with_env)
    assert result.returncode == 0 and result.stdout.startswith("dora\t"), result
    assert not (elsewhere / "fedi.sqlite3").exists()  # the database sits next to the config file
    # without it, ./config.toml is looked for, and its absence is one clear line
    assert "config.toml not found" in one_error_line(run_cli("account", "list", cwd=elsewhere))
    # --config wins over $FEDI_CONFIG
    missing = elsewhere / "missing.toml"
    assert str(missing) in one_error_line(run_cli("account", "list", config=missing, cwd=elsewhere, env=with_env))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[instance]\ndomian = \"example.org\"\n", "unknown key [instance] domian"),
        ("[instanse]\ndomain = \"example.org\"\n", "unknown section [instanse]"),
        ("[server]\nport = \"eighty\"\n", "[server] port must be a number"),
        ("[server]\nport = 70000\n", "port must be between 1 and 65535"),
        ("[instance]\nscheme = \"ftp\"\n", "scheme must be"),
        ("[instance]\ndomain = \"https://example.org/\"\n", "is not a host[:port]"),
        ("[federation]\nallow_private_networks = \"127.0.0.0/8\"\n", "must be a list of strings"),
        ("[federation]\nallow_private_networks = [\"loopback\"]\n", "'loopback' is not a network"),
        ("[instance\ndomain = 1\n", "config.toml:"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    for args in (("account", "list"), ("serve",), ("init",)):
        line = one_error_line(run_cli(*args, config=config, cwd=tmp_path))
        assert expected in line, line
    assert not (tmp_path / "fedi.sqlite3").exists()


def test_unusable_paths_are_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    line = one_error_line(run_cli("init", config=missing / "config.toml", cwd=tmp_path))
    assert str(missing / "config.toml") in line and "No such file or directory" in line
    config = write_config(tmp_path / "config.toml", {"database": {"path": str(missing / "fedi.sqlite3")}})
    for args in (("init",), ("account", "list"), ("serve",)):
        line = one_error_line(run_cli(*args, config=config, cwd=tmp_path, timeout=15))
        assert line == f"fedi: database {missing / 'fedi.sqlite3'}: unable to open database file", line
    assert "Is a directory" in one_error_line(run_cli("account", "list", config=tmp_path, cwd=tmp_path))
    assert "FEDI_LOG=LOUD" in one_error_line(run_cli("queue", config=config, env=fedi_env(FEDI_LOG="loud")))


def test_serve_explains_itself_and_suspension_answers_410(procs: FediProcesses) -> None:
    inst = procs.add("one")
    inst.start()
    out = inst.stdout()
    assert f"fedi listening on http://127.0.0.1:{inst.port} as {inst.base}" in out
    assert "fedi account create NAME --admin" in out
    # accounts can be created and suspended while the server runs
    inst.create_account("carol")
    assert get(f"{inst.base}/users/carol") == 200
    assert get(f"{inst.base}/@carol", "text/html") == 200  # the profile page the README points to
    assert get(f"{inst.base}/.well-known/webfinger?resource=acct:carol@{inst.domain}", "application/jrd+json") == 200
    inst.ok("account", "suspend", "carol")
    assert get(f"{inst.base}/users/carol") == 410
    assert get(f"{inst.base}/@carol") == 410

    # a second server on the same port: one line, no traceback
    busy = procs.add("two", server={"port": inst.port})
    line = one_error_line(busy.cli("serve", timeout=15))
    assert f"cannot listen on 127.0.0.1:{inst.port}" in line
    # SIGTERM is a clean shutdown
    assert inst.stop() == 0, inst.logs()


def feed_has(inst: FediProcess, reader: str, text: str) -> bool:
    """`reader`'s home feed on `inst` shows a status containing `text` (read from the SQLite file)."""
    rows = inst.query(
        "SELECT s.content FROM home_feed h JOIN statuses s ON s.id = h.status_id"
        " JOIN accounts a ON a.id = h.account_id"
        " WHERE a.domain IS NULL AND a.username = ? AND s.content LIKE ? AND s.deleted_at IS NULL",
        (reader, f"%{text}%"),
    )
    return bool(rows)


def follow_state(inst: FediProcess, follower: str, target_uri: str) -> str | None:
    rows = inst.query(
        "SELECT f.state FROM follows f JOIN accounts a ON a.id = f.account_id JOIN accounts t ON t.id = f.target_account_id"
        " WHERE a.domain IS NULL AND a.username = ? AND t.uri = ?",
        (follower, target_uri),
    )
    return rows[0][0] if rows else None


def test_two_instances_follow_and_post_from_the_command_line(procs: FediProcesses) -> None:
    """The README story: two servers, accounts by CLI, follow by handle, post, and it arrives."""
    one, two = procs.add("one"), procs.add("two")
    for inst, name in ((one, "alice"), (two, "bob")):
        inst.ok("init")
        inst.create_account(name, "--admin")
        inst.start()
    detail = procs.logs

    # the CLI resolves the handle and queues the Follow; the running server's worker sends it
    out = one.ok("follow", "alice", f"@bob@{two.domain}")
    assert out.strip() == f"alice -> {two.base}/users/bob: requested"
    wait_for(lambda: follow_state(one, "alice", f"{two.base}/users/bob") == "accepted", 15, "bob's Accept", detail=detail)

    assert one.ok("queue").startswith("deliveries:")
    status_uri = two.ok("post", "bob", "hello from two").strip()
    assert status_uri.startswith(f"{two.base}/users/bob/statuses/")
    wait_for(lambda: feed_has(one, "alice", "hello from two"), 15, "bob's post in alice's feed", detail=detail)

    # and back: bob follows alice, alice posts, bob sees it
    two.ok("follow", "bob", f"alice@{one.domain}")
    wait_for(lambda: follow_state(two, "bob", f"{one.base}/users/alice") == "accepted", 15, "alice's Accept", detail=detail)
    one.ok("post", "alice", "hello from **one**")
    wait_for(lambda: feed_has(two, "bob", "hello from <strong>one</strong>"), 15, "alice's post in bob's feed",
             detail=detail)

    # following again is idempotent, and a handle that does not exist is one line
    assert one.ok("follow", "alice", f"@bob@{two.domain}").strip().endswith(": following")
    one_error_line(one.cli("follow", "alice", f"@nobody@{two.domain}"))

    # every delivery shows as delivered in `fedi queue`
    def all_delivered() -> bool:
        return all(inst.query("SELECT count(*) FROM deliveries WHERE state != 'delivered'")[0][0] == 0
                   for inst in (one, two))

    wait_for(all_delivered, 15, "empty delivery queues", detail=detail)
    queue = one.ok("queue")
    assert f"  {two.domain}\tdelivered\t" in queue, queue  # Follow and Create went to two
    assert "pending" not in queue and "unavailable" not in queue, queue
    assert "inbox:\n  processed\t" in queue, queue
    queue_two = two.ok("queue")
    assert f"  {one.domain}\tdelivered\t" in queue_two, queue_two
