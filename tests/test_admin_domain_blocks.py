"""The Mastodon admin API for domain blocks/allows, block-list import and export, and the CLI.

API requests go to a running instance over HTTP with real OAuth tokens; the CLI
runs as `python -m fedi.cli` subprocesses against a real config and database.
Every refusal is checked to have changed nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from actors.local import create_local_account
from fedi.moderation.csv_io import ListError, apply_list, export_csv, parse_list, preview, summary
from tests.api_calls import call
from tests.api_client import user_token
from tests.harness import Instance, Network
from tests.processes import run_cli, write_config
from tests.test_moderation_domains import follow, user

BLOCKS = "/api/v1/admin/domain_blocks"
ADMIN_SCOPES = "read write admin:read admin:write"

# As Mastodon's admin export writes it (Ruby's CSV: `true`/`false`), plus the spellings lists use in the wild.
MASTODON_CSV = """#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate
spam.example,suspend,true,true,"Spam, harassment and ""free"" crypto",false
hate.example,suspend,TRUE,True,Hate speech,true
loud.example,silence,false,false,,false
media.example,noop,1,0,Unlabelled NSFW media,False
BÜCHER.example.,silence,false,false,Nicht moderiert,false
"""


async def admin_token(inst: Instance, scopes: str = ADMIN_SCOPES) -> str:
    if await inst.ctx.db.fetchval("SELECT 1 FROM accounts WHERE username = 'root'") is None:
        await create_local_account(inst.ctx.db, inst.base, "root", "password123", admin=True)
    return await user_token(inst, "root", scopes, create=False)


async def counts(inst: Instance) -> tuple[int, int]:
    db = inst.ctx.db
    return await db.fetchval("SELECT count(*) FROM domain_blocks"), await db.fetchval("SELECT count(*) FROM audit_log")


async def test_admin_domain_blocks_api(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await admin_token(alpha)
    root_id = await alpha.ctx.db.fetchval("SELECT id FROM accounts WHERE username = 'root'")
    status, body, _ = await call(alpha, "POST", BLOCKS, token, json={
        "domain": "Spam.EXAMPLE.", "severity": "suspend", "reject_media": False, "public_comment": "",
        "private_comment": "from list X", "obfuscate": True})
    assert status == 200, body
    assert body == {"id": body["id"], "domain": "spam.example", "digest": hashlib.sha256(b"spam.example").hexdigest(),
                    "created_at": body["created_at"], "severity": "suspend", "reject_media": False,
                    "reject_reports": False, "private_comment": "from list X", "public_comment": "", "obfuscate": True}
    assert body["id"].isdigit() and body["created_at"].endswith("Z")
    status, silenced, _ = await call(alpha, "POST", BLOCKS, token, data={"domain": "loud.example", "severity": "silence",
                                                                        "reject_reports": "true"})
    assert status == 200 and silenced["reject_reports"] is True and silenced["public_comment"] is None

    before = await counts(alpha)
    for payload, words in (
        ({"domain": "spam.example", "severity": "silence"}, "already blocked"),
        ({"domain": "sub.spam.example", "severity": "suspend"}, "already blocked"),
        ({"domain": "sub.loud.example", "severity": "noop"}, "already blocked"),
    ):
        status, body, _ = await call(alpha, "POST", BLOCKS, token, json=payload)
        assert status == 422 and words in body["error"], body
        assert body["existing_domain_block"]["domain"] in ("spam.example", "loud.example")
    for payload, words in (({"domain": "x.example", "severity": "obliterate"}, "severity"),
                           ({"domain": "not a domain"}, "not a domain"), ({"severity": "suspend"}, "blank"),
                           ({"domain": "alpha.test"}, "own domain")):
        status, body, _ = await call(alpha, "POST", BLOCKS, token, json=payload)
        assert status == 422 and words in body["error"], body
    assert await counts(alpha) == before, "refusals store nothing"
    status, stricter, _ = await call(alpha, "POST", BLOCKS, token, json={"domain": "sub.loud.example", "severity": "suspend"})
    assert status == 200 and stricter["severity"] == "suspend", "a stricter block under a weaker one is allowed"

    status, listed, headers = await call(alpha, "GET", BLOCKS, token)
    assert status == 200 and [b["domain"] for b in listed] == ["sub.loud.example", "loud.example", "spam.example"]
    assert headers["Link"] == f'<{alpha.base}{BLOCKS}?limit=100&min_id={listed[0]["id"]}>; rel="prev"', "no next: no more"
    status, page, headers = await call(alpha, "GET", BLOCKS + "?limit=2", token)
    assert [b["domain"] for b in page] == ["sub.loud.example", "loud.example"]
    link = headers["Link"]
    assert link.startswith(f'<{alpha.base}{BLOCKS}?limit=2&max_id={page[-1]["id"]}>; rel="next", <')
    assert link.endswith(f'min_id={page[0]["id"]}>; rel="prev"')
    status, rest, headers = await call(alpha, "GET", f"{BLOCKS}?limit=2&max_id={page[-1]['id']}", token)
    assert [b["domain"] for b in rest] == ["spam.example"] and 'rel="next"' not in headers["Link"]

    block_url = f"{BLOCKS}/{silenced['id']}"
    assert (await call(alpha, "GET", block_url, token))[1] == silenced
    assert (await call(alpha, "GET", f"{BLOCKS}/999", token))[0] == 404
    assert (await call(alpha, "GET", f"{BLOCKS}/abc", token))[0] == 404
    status, updated, _ = await call(alpha, "PUT", block_url, token, json={
        "domain": "LOUD.example", "severity": "suspend", "public_comment": "", "reject_media": True})
    assert status == 200 and (updated["severity"], updated["public_comment"], updated["reject_media"]) == ("suspend", "", True)
    before = await counts(alpha)
    for payload in ({"domain": "other.example", "severity": "noop"}, {"severity": "nuke"}):
        status, body, _ = await call(alpha, "PUT", block_url, token, json=payload)
        assert status == 422, body
    assert await counts(alpha) == before and (await call(alpha, "GET", block_url, token))[1] == updated
    status, body, _ = await call(alpha, "DELETE", block_url, token)
    assert (status, body) == (200, {})
    assert (await call(alpha, "GET", block_url, token))[0] == 404
    actions = await alpha.ctx.db.fetchall("SELECT account_id, action, target FROM audit_log ORDER BY id")
    assert [(a["action"], a["target"]) for a in actions] == [
        ("domain_block.create", "spam.example"), ("domain_block.create", "loud.example"),
        ("domain_block.create", "sub.loud.example"), ("domain_block.update", "loud.example"),
        ("domain_block.remove", "loud.example")]
    assert {a["account_id"] for a in actions} == {root_id}

    # Who may: no token 401; a non-admin (even holding admin scopes) 403; a read-only admin token cannot write.
    assert (await call(alpha, "GET", BLOCKS))[0] == 401
    await create_local_account(alpha.ctx.db, alpha.base, "joe", "password123")
    joe = await user_token(alpha, "joe", ADMIN_SCOPES, create=False)
    assert (await call(alpha, "GET", BLOCKS, joe))[0] == 403
    assert (await call(alpha, "POST", BLOCKS, joe, json={"domain": "x.example"}))[0] == 403
    reader = await admin_token(alpha, "admin:read:domain_blocks")
    assert (await call(alpha, "GET", BLOCKS, reader))[0] == 200
    assert (await call(alpha, "POST", BLOCKS, reader, json={"domain": "x.example"}))[0] == 403

    # The public list: user-facing limits only, obfuscated as Mastodon does.
    status, public, _ = await call(alpha, "GET", "/api/v1/instance/domain_blocks")
    assert status == 200 and public == [
        {"domain": "spam.****ple", "digest": hashlib.sha256(b"spam.example").hexdigest(), "severity": "suspend",
         "comment": ""},
        {"domain": "sub.loud.example", "digest": hashlib.sha256(b"sub.loud.example").hexdigest(), "severity": "suspend",
         "comment": None}]


async def test_public_list_visibility_and_domain_allows(network: Network) -> None:
    users_only = await network.add("beta.test", moderation={"domain_blocks_visibility": "users"})
    admins_only = await network.add("gamma.test", moderation={"domain_blocks_visibility": "admins"})
    public = "/api/v1/instance/domain_blocks"
    assert (await call(users_only, "GET", public))[0] == 404
    assert (await call(users_only, "GET", public, await user_token(users_only, "joe")))[0] == 200
    assert (await call(admins_only, "GET", public, await user_token(admins_only, "joe")))[0] == 404
    token = await admin_token(admins_only)
    assert (await call(admins_only, "GET", public, token))[0] == 200

    status, allow, _ = await call(admins_only, "POST", "/api/v1/admin/domain_allows", token, json={"domain": "Friend.test"})
    assert status == 200 and allow["domain"] == "friend.test" and set(allow) == {"id", "domain", "created_at"}
    assert (await call(admins_only, "POST", "/api/v1/admin/domain_allows", token, json={"domain": "friend.test"}))[1] == allow
    assert (await call(admins_only, "GET", "/api/v1/admin/domain_allows", token))[1] == [allow]
    assert (await call(admins_only, "GET", f"/api/v1/admin/domain_allows/{allow['id']}", token))[1] == allow
    assert (await call(admins_only, "POST", "/api/v1/admin/domain_allows", token, json={"domain": "a..b"}))[0] == 422
    assert (await call(admins_only, "DELETE", f"/api/v1/admin/domain_allows/{allow['id']}", token))[:2] == (200, {})
    assert (await call(admins_only, "GET", "/api/v1/admin/domain_allows", token))[1] == []


async def test_csv_round_trip_and_list_formats(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    parsed = parse_list(MASTODON_CSV)
    assert parsed.format == "csv" and len(parsed.entries) == 5
    await apply_list(alpha.ctx, None, parsed, "domain_blocks.csv")
    rows = await alpha.ctx.db.fetchall("SELECT * FROM domain_blocks ORDER BY domain")
    exported = export_csv(rows)
    assert exported == (
        "#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate\n"
        "hate.example,suspend,true,true,Hate speech,true\n"
        "loud.example,silence,false,false,,false\n"
        "media.example,noop,true,false,Unlabelled NSFW media,false\n"
        'spam.example,suspend,true,true,"Spam, harassment and ""free"" crypto",false\n'
        "xn--bcher-kva.example,silence,false,false,Nicht moderiert,false\n")
    await apply_list(beta.ctx, None, parse_list(exported), "from-alpha.csv")
    assert export_csv(await beta.ctx.db.fetchall("SELECT * FROM domain_blocks ORDER BY domain")) == exported
    assert summary(await apply_list(beta.ctx, None, parse_list(exported), "again.csv"))["unchanged"] == 5
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM audit_log") == 1, "an import changing nothing leaves no audit row"

    # JSON as the public endpoint serves it (obfuscated entries cannot be applied and are listed as skipped).
    async with alpha.session.get(alpha.url("/api/v1/instance/domain_blocks")) as resp:
        served = await resp.text()
    from_json = parse_list(served)
    assert from_json.format == "json" and [s.reason for s in from_json.skipped] == ["obfuscated domain"]
    assert {e.spec.domain: e.spec.public_comment for e in from_json.entries}["spam.example"].startswith("Spam, ")

    plain = parse_list("# my list\nA.example\n\nb.example.\nA.example\n")
    assert plain.format == "text" and [e.spec.domain for e in plain.entries] == ["a.example", "b.example"]
    assert [(s.line, s.reason) for s in plain.skipped] == [(5, "repeats line 2")]
    assert {e.spec.severity for e in plain.entries} == {"suspend"}
    headerless = parse_list("c.example,silence\nd.example\n", "csv")
    assert [(e.spec.domain, e.spec.severity) for e in headerless.entries] == [("c.example", "silence"), ("d.example", "suspend")]
    bare_header = parse_list("domain,severity,reject_media,comment\ne.example,SILENCE,yes,hi\n")
    assert vars(bare_header.entries[0].spec) == {
        "domain": "e.example", "severity": "silence", "reject_media": True, "reject_reports": False,
        "private_comment": None, "public_comment": "hi", "obfuscate": False}


async def test_bad_lists_change_nothing_and_big_lists_are_fast(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    for text, words in (
        ("#domain,#severity\nok.example,suspend\nbad.example,banned\n", "line 3: severity"),
        ("#domain,#reject_media\nok.example,maybe\n", "line 2: reject_media must be true or false"),
        ("#domain\nok.example\nnot a domain\n", "line 3: "),
        ('{"domain": "x.example"}', "array of objects"),
        ('[{"domain": "x.example", "severity": 3}]', "entry 1: severity"),
        ("#domain,#severity\n\"unterminated,suspend\n", "line"),
    ):
        with pytest.raises(ListError, match=words):
            parse_list(text)
    assert await counts(alpha) == (0, 0)

    # A preview says how many local follows each row would cut, and changes nothing.
    alice, bob = await user(alpha, "alice"), await user(beta, "bob")
    await follow(alpha, alice, beta, "bob")
    await follow(beta, bob, alpha, "alice")
    await network.drain()
    planned = await preview(alpha.ctx, parse_list("#domain,#severity\nbeta.test,suspend\nquiet.example,silence\n"))
    assert [(p.domain, p.change, p.severs) for p in planned] == [("beta.test", "add", 2), ("quiet.example", "add", 0)]
    assert await counts(alpha) == (0, 0) and await alpha.ctx.db.fetchval("SELECT count(*) FROM follows") == 2

    rows = ["#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate"] + [
        f"h{i}.spam{i % 97}.example,{'suspend' if i % 3 else 'silence'},{'true' if i % 2 else 'false'},false,"
        f'"comment {i}, quoted",false' for i in range(50_000)]
    started = time.perf_counter()
    big = parse_list("\n".join(rows) + "\n")
    parsed_in = time.perf_counter() - started
    planned = await preview(alpha.ctx, big)
    planned_in = time.perf_counter() - started - parsed_in
    print(f"\n50,000-row list: parsed in {parsed_in:.2f} s, previewed in {planned_in:.2f} s")
    assert len(big.entries) == 50_000 and summary(planned)["add"] == 50_000
    assert parsed_in < 5 and planned_in < 5
    with pytest.raises(ListError, match="line 50002"):
        parse_list("\n".join(rows) + "\nlast.example,suspend,sometimes,false,,false\n")
    assert await counts(alpha) == (0, 0)


def cli(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = run_cli(*args, config=config, stdin=stdin)
    return result.returncode, result.stdout, result.stderr


def test_cli_commands(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {
        "instance": {"domain": "cli.test", "scheme": "http"}, "database": {"path": str(tmp_path / "db.sqlite3")}})
    code, out, err = cli(config, "domain-block", "add", "Spam.Example", "--reject-media", "--public-comment", "")
    assert (code, out.strip()) == (0, "blocked spam.example: suspend (reject_media)"), err
    code, out, _ = cli(config, "domain-block", "add", "spam.example", "--severity", "silence", "--no-reject-media")
    assert out.strip() == "updated block on spam.example: silence (-)"
    for args, words in ((("domain-block", "add", "x.example", "--severity", "nuke"), "severity must be one of"),
                        (("domain-block", "add", "a..b"), "not a valid"),
                        (("domain-block", "remove", "never.example"), "is not blocked")):
        code, out, err = cli(config, *args)
        assert code == 1 and len(err.splitlines()) == 1 and err.startswith("fedi: ") and words in err, err
    listing = tmp_path / "list.csv"
    listing.write_text(MASTODON_CSV)
    code, out, _ = cli(config, "domain-block", "import", str(listing), "--preview")
    assert code == 0 and "line 2: update spam.example suspend\n" in out
    assert "would: 4 add, 1 update, 0 unchanged, 0 skip; 0 local follows cut" in out
    assert cli(config, "domain-block", "list")[1].count("\n") == 1, "a preview applies nothing"
    bad = tmp_path / "bad.csv"
    bad.write_text(MASTODON_CSV + "more.example,maybe\n")
    code, _, err = cli(config, "domain-block", "import", str(bad))
    assert (code, err) == (1, f"fedi: {bad}: line 7: severity must be one of noop, silence, suspend, not 'maybe'\n")
    assert cli(config, "domain-block", "list")[1].count("\n") == 1, "nothing of a bad list is applied"
    code, out, _ = cli(config, "domain-block", "import", str(listing))
    assert code == 0 and "did: 4 add, 1 update, 0 unchanged, 0 skip" in out, out
    code, out, _ = cli(config, "domain-block", "import", "-", "--format", "text", stdin="plain.example\n")
    assert code == 0 and "did: 1 add" in out
    assert cli(config, "domain-block", "export")[1] == (
        "#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate\n"
        "hate.example,suspend,true,true,Hate speech,true\n"
        "loud.example,silence,false,false,,false\n"
        "media.example,noop,true,false,Unlabelled NSFW media,false\n"
        "plain.example,suspend,false,false,,false\n"
        'spam.example,suspend,true,true,"Spam, harassment and ""free"" crypto",false\n'
        "xn--bcher-kva.example,silence,false,false,Nicht moderiert,false\n")
    exported = json.loads(cli(config, "domain-block", "export", "--format", "json")[1])
    assert exported[0] == {"domain": "hate.example", "digest": hashlib.sha256(b"hate.example").hexdigest(),
                           "severity": "suspend", "comment": "Hate speech", "reject_media": True,
                           "reject_reports": True, "obfuscate": True}
    assert cli(config, "domain-block", "remove", "plain.example")[0] == 0
    assert "plain.example" not in cli(config, "domain-block", "list")[1]
    assert cli(config, "federation", "mode", "allowlist")[1].strip() == "federation_mode: allowlist"
    assert cli(config, "federation", "authorized-fetch", "all")[1].strip() == "authorized_fetch: all"
    assert cli(config, "domain-allow", "add", "Friend.test")[1].strip() == "allowed friend.test"
    assert cli(config, "domain-allow", "list")[1].strip() == "friend.test"
    assert cli(config, "domain-allow", "remove", "friend.test")[0] == 0
    assert cli(config, "domain-allow", "list")[1].strip() == "(no allowed domains)"
