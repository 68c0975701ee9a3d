"""Reports (local, forwarded as Flag, received), admin reports and account actions, measures, keyword rules.

Everything runs against real fedi instances on 127.0.0.1; every refusal is a
JSON 4xx that leaves the database as it was.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors.local import create_local_account, get_local_account
from actors.remote import get_actor
from actors.webfinger import resolve_handle
from fedi.config import ConfigError, config_from_dict
from fedi.moderation.blocks import BlockSpec, create_block
from fedi.moderation.keyword_rules import check_rules
from outbox import actions
from outbox.actions import PostRequest
from tests.api_calls import call, count
from tests.api_client import user_token
from tests.harness import Instance, Network

ADMIN_SCOPES = "read write follow push admin:read admin:write"
REPORT_KEYS = {"id", "action_taken", "action_taken_at", "category", "comment", "forwarded", "created_at",
               "status_ids", "rule_ids", "target_account"}
ADMIN_REPORT_KEYS = {"id", "action_taken", "action_taken_at", "category", "comment", "forwarded", "created_at",
                     "updated_at", "account", "target_account", "assigned_account", "action_taken_by_account",
                     "statuses", "rules"}
ADMIN_ACCOUNT_KEYS = {"id", "username", "domain", "created_at", "email", "ip", "ips", "locale", "invite_request",
                      "role", "confirmed", "approved", "disabled", "silenced", "suspended", "sensitized", "account",
                      "created_by_application_id", "invited_by_account_id"}


async def admin_token(inst: Instance, name: str = "admin") -> str:
    await create_local_account(inst.ctx.db, inst.base, name, "password123", admin=True)
    return await user_token(inst, name, scopes=ADMIN_SCOPES, create=False)


async def local(inst: Instance, name: str) -> Any:
    row = await get_local_account(inst.ctx.db, name)
    assert row is not None
    return row


async def follow(inst: Instance, name: str, target: Instance, target_name: str) -> Any:
    """`name` on `inst` follows `target_name` on `target`; returns the target's row on `inst`."""
    uri = await resolve_handle(inst.ctx, f"@{target_name}@{target.config.instance.domain}")
    remote = await get_actor(inst.ctx, uri)
    await actions.follow(inst.ctx, await local(inst, name), remote)
    return remote


async def post(inst: Instance, name: str, text: str) -> Any:
    return await actions.create_status(inst.ctx, await local(inst, name), PostRequest(text=text))


async def test_instance_rules_and_reports_that_name_them(network: Network) -> None:
    rules = ["Be kind.", "No spam.", "Mark sensitive media."]
    alpha = await network.add("alpha.test", instance={"rules": rules})
    admin = await admin_token(alpha)
    alice = await user_token(alpha, "alice")
    await user_token(alpha, "bob")
    bob_row = await local(alpha, "bob")
    expected = [{"id": str(n), "text": text, "hint": ""} for n, text in enumerate(rules, start=1)]
    for path in ("/api/v1/instance/rules", "/api/v1/instance", "/api/v2/instance"):
        code, body, _ = await call(alpha, "GET", path, None)
        assert code == 200 and (body if path.endswith("rules") else body["rules"]) == expected, path
    for rule_ids in (["4"], ["0"], ["2", "9"]):  # not this server's rules: refused, nothing stored
        code, err, _ = await call(alpha, "POST", "/api/v1/reports", alice, json={
            "account_id": str(bob_row["id"]), "category": "violation", "rule_ids": rule_ids})
        assert code == 422 and "rule_ids" in err["error"], rule_ids
    assert await count(alpha, "SELECT count(*) FROM reports") == 0
    code, report, _ = await call(alpha, "POST", "/api/v1/reports", alice, json={
        "account_id": str(bob_row["id"]), "category": "violation", "rule_ids": ["2", "3"]})
    assert code == 200 and report["rule_ids"] == ["2", "3"]
    code, one, _ = await call(alpha, "GET", f"/api/v1/admin/reports/{report['id']}", admin)
    assert code == 200 and one["rules"] == expected[1:]


def test_rules_in_config_are_checked() -> None:
    for bad in ([""], ["   "], ["x" * 1001], ["ok"] * 101, "Be kind.", [1]):
        with pytest.raises(ConfigError):
            config_from_dict({"instance": {"rules": bad}})
    assert config_from_dict({"instance": {"rules": ["Be kind."]}}).instance.rules == ("Be kind.",)


async def test_local_report_bad_input_and_admin_review(network: Network) -> None:
    alpha = await network.add("alpha.test")
    admin = await admin_token(alpha)
    alice, bob = await user_token(alpha, "alice"), await user_token(alpha, "bob")
    bob_row, alice_row = await local(alpha, "bob"), await local(alpha, "alice")
    spam = await post(alpha, "bob", "buy my stuff")
    mine = await post(alpha, "alice", "my own post")

    code, report, _ = await call(alpha, "POST", "/api/v1/reports", alice, json={
        "account_id": str(bob_row["id"]), "status_ids": [str(spam["id"])], "comment": "spam", "category": "spam"})
    assert code == 200, report
    assert set(report) == REPORT_KEYS and report["status_ids"] == [str(spam["id"])]
    assert report["category"] == "spam" and report["forwarded"] is False and report["action_taken"] is False
    assert report["target_account"]["id"] == str(bob_row["id"]) and report["rule_ids"] is None

    bad = [
        ({"account_id": str(bob_row["id"]), "status_ids": [str(mine["id"])]}, 422),  # not the reported account's
        ({"account_id": str(bob_row["id"]), "category": "hate"}, 422),
        ({"account_id": str(bob_row["id"]), "status_ids": ["12ab"]}, 422),
        ({"account_id": str(alice_row["id"])}, 422),  # oneself
        ({"account_id": "999999"}, 404),
        ({}, 422),
    ]
    for body, expected in bad:
        code, err, _ = await call(alpha, "POST", "/api/v1/reports", alice, json=body)
        assert code == expected and "error" in err, (body, code, err)
    # a 1 MB comment as a form (a JSON body with such a string is a 400 from the strict JSON reader)
    code, err, _ = await call(alpha, "POST", "/api/v1/reports", alice,
                              data={"account_id": str(bob_row["id"]), "comment": "x" * 1_000_000})
    assert code == 422 and "comment" in err["error"]
    assert await count(alpha, "SELECT count(*) FROM reports") == 1
    code, _, _ = await call(alpha, "POST", "/api/v1/reports", bob, json={"account_id": str(alice_row["id"])})
    assert code == 200

    # admin review: list (unresolved by default), paging, assign, resolve, reopen; non-admins refused
    code, _, _ = await call(alpha, "GET", "/api/v1/admin/reports", alice)
    assert code == 403
    code, listed, headers = await call(alpha, "GET", "/api/v1/admin/reports?limit=1", admin)
    assert code == 200 and len(listed) == 1 and 'rel="next"' in headers["Link"]
    assert set(listed[0]) == ADMIN_REPORT_KEYS and set(listed[0]["account"]) == ADMIN_ACCOUNT_KEYS
    rid = report["id"]
    code, one, _ = await call(alpha, "GET", f"/api/v1/admin/reports/{rid}", admin)
    assert code == 200 and [s["id"] for s in one["statuses"]] == [str(spam["id"])]
    admin_id = str((await local(alpha, "admin"))["id"])
    code, one, _ = await call(alpha, "POST", f"/api/v1/admin/reports/{rid}/assign_to_self", admin)
    assert code == 200 and one["assigned_account"]["id"] == admin_id
    code, one, _ = await call(alpha, "POST", f"/api/v1/admin/reports/{rid}/unassign", admin)
    assert one["assigned_account"] is None
    code, one, _ = await call(alpha, "POST", f"/api/v1/admin/reports/{rid}/resolve", admin)
    assert one["action_taken"] is True and one["action_taken_by_account"]["id"] == admin_id
    _, open_reports, _ = await call(alpha, "GET", "/api/v1/admin/reports", admin)
    _, resolved, _ = await call(alpha, "GET", "/api/v1/admin/reports?resolved=true", admin)
    assert rid not in {r["id"] for r in open_reports} and [r["id"] for r in resolved] == [rid]
    code, one, _ = await call(alpha, "POST", f"/api/v1/admin/reports/{rid}/reopen", admin)
    assert one["action_taken"] is False and one["action_taken_at"] is None
    code, _, _ = await call(alpha, "POST", "/api/v1/admin/reports/424242/resolve", admin)
    assert code == 404
    code, log, _ = await call(alpha, "GET", "/api/v1/admin/fedi/audit_log?target_type=report", admin)
    assert [e["action"] for e in log] == ["reopen", "resolve", "unassign", "assign_to_self"]
    assert all(e["account_id"] == admin_id and e["target"] == rid for e in log)


async def test_forwarded_report_arrives_as_flag(network: Network) -> None:
    alpha = await network.add("alpha.test", instance={"rules": ["No spam."]})
    beta = await network.add("beta.test")
    alice = await user_token(alpha, "alice")
    beta_admin = await admin_token(beta)
    await create_local_account(beta.ctx.db, beta.base, "bob", "password123")
    bob_on_alpha = await follow(alpha, "alice", beta, "bob")
    await network.drain()
    spam = await post(beta, "bob", "remote spam")
    await network.drain()
    spam_on_alpha = await alpha.ctx.db.fetchone("SELECT id FROM statuses WHERE uri = ?", (spam["uri"],))
    assert spam_on_alpha is not None

    code, report, _ = await call(alpha, "POST", "/api/v1/reports", alice, json={
        "account_id": str(bob_on_alpha["id"]), "status_ids": [str(spam_on_alpha["id"])],
        "comment": "please look", "category": "violation", "rule_ids": ["1"], "forward": True})
    assert code == 200 and report["forwarded"] is True and report["rule_ids"] == ["1"]
    flag = await alpha.ctx.db.fetchone("SELECT * FROM outbox_activities WHERE type = 'Flag'")
    assert flag["account_id"] == alpha.ctx.instance_actor_id  # sent by the instance, not by alice
    await network.drain()

    received = await beta.ctx.db.fetchall("SELECT * FROM reports")
    assert len(received) == 1
    bob = await local(beta, "bob")
    assert received[0]["target_account_id"] == bob["id"] and received[0]["comment"] == "please look"
    code, listed, _ = await call(beta, "GET", "/api/v1/admin/reports", beta_admin)
    assert code == 200 and len(listed) == 1
    assert listed[0]["account"]["account"]["uri"] == f"{alpha.base}/actor"
    assert listed[0]["category"] == "violation" and [s["uri"] for s in listed[0]["statuses"]] == [spam["uri"]]
    # a local (non-forwarded) report about a remote account sends nothing
    code, _, _ = await call(alpha, "POST", "/api/v1/reports", alice, json={"account_id": str(bob_on_alpha["id"])})
    assert code == 200 and await count(alpha, "SELECT count(*) FROM outbox_activities WHERE type = 'Flag'") == 1

    # beta stops taking reports from alpha (a noop block with reject_reports): the next Flag is ignored
    await create_block(beta.ctx, None, BlockSpec("alpha.test", severity="noop", reject_reports=True))
    code, _, _ = await call(alpha, "POST", "/api/v1/reports", alice, json={
        "account_id": str(bob_on_alpha["id"]), "comment": "again", "forward": "true"})
    assert code == 200
    await network.drain()
    assert await count(beta, "SELECT count(*) FROM reports") == 1
    flags = await beta.ctx.db.fetchall("SELECT state, result FROM inbox_activities WHERE type = 'Flag' ORDER BY id")
    assert [f["state"] for f in flags] == ["processed", "ignored"] and "rejected" in flags[1]["result"]


async def test_admin_account_actions(network: Network) -> None:
    alpha = await network.add("alpha.test")
    admin = await admin_token(alpha)
    alice = await user_token(alpha, "alice")
    carol = await user_token(alpha, "carol")
    carol_row = await local(alpha, "carol")
    code, _, _ = await call(alpha, "POST", "/api/v1/reports", alice, json={"account_id": str(carol_row["id"])})
    report_id = await alpha.ctx.db.fetchval("SELECT id FROM reports")

    code, shown, _ = await call(alpha, "GET", f"/api/v1/admin/accounts/{carol_row['id']}", admin)
    assert code == 200 and set(shown) == ADMIN_ACCOUNT_KEYS and shown["suspended"] is False
    path = f"/api/v1/admin/accounts/{carol_row['id']}/action"
    for body in ({"type": "delete"}, {"type": "suspend", "report_id": "999"}, {"type": "suspend", "text": "x" * 6000}):
        code, err, _ = await call(alpha, "POST", path, admin, json=body)
        assert code == 422 and "error" in err, body
    code, _, _ = await call(alpha, "POST", path, alice, json={"type": "suspend"})
    assert code == 403
    assert (await local(alpha, "carol"))["suspended_at"] is None and await count(alpha, "SELECT count(*) FROM audit_log") == 0

    code, body, _ = await call(alpha, "POST", path, admin, json={"type": "suspend", "report_id": str(report_id),
                                                                  "text": "harassment"})
    assert code == 200 and body == {}
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/users/carol"), headers={"Accept": "application/activity+json"}) as resp:
        assert resp.status == 410
    code, _, _ = await call(alpha, "GET", "/api/v1/accounts/verify_credentials", carol)
    assert code == 401
    report = await alpha.ctx.db.fetchone("SELECT * FROM reports WHERE id = ?", (report_id,))
    assert report["action_taken_at"] is not None
    actions_logged = [r["action"] for r in await alpha.ctx.db.fetchall("SELECT action FROM audit_log ORDER BY id")]
    assert actions_logged == ["resolve", "suspend"]
    code, shown, _ = await call(alpha, "POST", f"/api/v1/admin/accounts/{carol_row['id']}/unsuspend", admin)
    assert code == 200 and shown["suspended"] is False

    for kind, column in (("sensitive", "sensitized_at"), ("silence", "silenced_at")):
        code, _, _ = await call(alpha, "POST", path, admin, json={"type": kind})
        assert code == 200 and (await local(alpha, "carol"))[column] is not None
    code, _, _ = await call(alpha, "POST", path, admin, json={"type": "disable"})
    assert code == 200 and await count(alpha, "SELECT disabled FROM users WHERE account_id = ?", carol_row["id"]) == 1
    code, shown, _ = await call(alpha, "GET", f"/api/v1/admin/accounts/{carol_row['id']}", admin)
    assert shown["disabled"] and shown["silenced"] and shown["sensitized"]


async def test_silenced_remote_account_leaves_public_timeline(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    admin = await admin_token(alpha)
    await user_token(alpha, "alice")
    await create_local_account(beta.ctx.db, beta.base, "dave", "password123")
    dave = await follow(alpha, "alice", beta, "dave")
    await network.drain()
    await post(beta, "dave", "loud post")
    await network.drain()

    async def public_accts() -> list[str]:
        code, body, _ = await call(alpha, "GET", "/api/v1/timelines/public")
        assert code == 200
        return [s["account"]["acct"] for s in body]

    assert await public_accts() == [f"dave@{beta.config.instance.domain}"]
    path = f"/api/v1/admin/accounts/{dave['id']}/action"
    code, err, _ = await call(alpha, "POST", path, admin, json={"type": "disable"})
    assert code == 422 and "error" in err  # remote accounts have no login to disable
    code, _, _ = await call(alpha, "POST", path, admin, json={"type": "silence"})
    assert code == 200
    assert await public_accts() == []


async def test_measures_tolerate_missing_dates(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    admin = await admin_token(alpha)
    await create_local_account(beta.ctx.db, beta.base, "bob", "password123")
    await user_token(alpha, "alice")
    await follow(alpha, "alice", beta, "bob")
    await network.drain()
    domain = beta.config.instance.domain
    keys = ["instance_follows", "new_users", "active_users", "interactions", "opened_reports", "resolved_reports",
            "no_such_key"]
    for dates in ({}, {"start_at": "yesterday", "end_at": "2022-13-45"}):
        code, body, _ = await call(alpha, "POST", "/api/v1/admin/measures", admin,
                                   json={"keys": keys, "instance_follows": {"domain": domain}, **dates})
        assert code == 200 and [m["key"] for m in body] == keys[:-1]
        follows = body[0]
        assert follows["total"] == "1" and len(follows["data"]) == 30
        assert follows["data"][-1]["value"] == "1" and follows["data"][-1]["date"].endswith("T00:00:00Z")
        users = body[1]
        assert users["total"] == "2" and users["previous_total"] == "0"  # admin and alice
    code, body, _ = await call(alpha, "POST", "/api/v1/admin/measures", admin, data={
        "keys[]": "new_users", "start_at": "2024-01-01", "end_at": "2024-01-03T12:00:00Z"})
    assert [d["date"] for d in body[0]["data"]] == ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z",
                                                   "2024-01-03T00:00:00Z"]
    assert body[0]["total"] == "0"
    code, _, _ = await call(alpha, "POST", "/api/v1/admin/measures", await user_token(alpha, "eve"),
                            json={"keys": ["new_users"]})
    assert code == 403


async def test_keyword_rules_reject_and_hold(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    admin = await admin_token(alpha)
    await user_token(alpha, "alice")
    await create_local_account(beta.ctx.db, beta.base, "bob", "password123")
    await follow(alpha, "alice", beta, "bob")
    await network.drain()
    rules_path = "/api/v1/admin/fedi/keyword_rules"
    for body in ({"pattern": ""}, {"pattern": "x", "kind": "regex"}, {"pattern": "x", "action": "delete"},
                 {"pattern": "two words", "kind": "hashtag"}, {"pattern": "y" * 201}, {"pattern": "a\x01b"}):
        code, err, _ = await call(alpha, "POST", rules_path, admin, json=body)
        assert code == 422 and "error" in err, body
    assert await count(alpha, "SELECT count(*) FROM keyword_rules") == 0
    code, reject_rule, _ = await call(alpha, "POST", rules_path, admin, json={"pattern": "Buy Cheap"})
    assert code == 200 and reject_rule["action"] == "reject" and reject_rule["whole_word"] is True
    code, review_rule, _ = await call(alpha, "POST", rules_path, admin,
                                      json={"pattern": "#SpamTag", "kind": "hashtag", "action": "review"})
    assert code == 200 and review_rule["pattern"] == "spamtag"
    code, _, _ = await call(alpha, "POST", rules_path, admin, json={"pattern": "buy cheap"})
    assert code == 422  # the same rule twice

    rejected = await post(beta, "bob", "Please buy cheap pills now")
    fine = await post(beta, "bob", "I won't buy cheaply made things")  # whole word: no match
    held_one = await post(beta, "bob", "hello #SpamTag friends")
    held_two = await post(beta, "bob", "more #spamtag")
    await network.drain()
    stored = {r["uri"] for r in await alpha.ctx.db.fetchall("SELECT uri FROM statuses")}
    assert fine["uri"] in stored and not {rejected["uri"], held_one["uri"], held_two["uri"]} & stored
    states = {r["state"] for r in await alpha.ctx.db.fetchall(
        "SELECT state FROM inbox_activities WHERE type = 'Create'")}
    assert states == {"processed", "ignored", "held"}
    code, hits, _ = await call(alpha, "GET", f"{rules_path}/{reject_rule['id']}/hits", admin)
    assert len(hits) == 1 and "buy cheap" in hits[0]["excerpt"] and hits[0]["actor_uri"].endswith("/users/bob")
    _, listed_rules, _ = await call(alpha, "GET", rules_path, admin)
    assert [r["hits_count"] for r in listed_rules] == [1, 2]

    code, held, _ = await call(alpha, "GET", "/api/v1/admin/fedi/held", admin)
    assert code == 200 and {h["object_id"] for h in held} == {held_one["uri"], held_two["uri"]}
    by_object = {h["object_id"]: h["id"] for h in held}
    code, _, _ = await call(alpha, "POST", f"/api/v1/admin/fedi/held/{by_object[held_one['uri']]}/release", admin)
    assert code == 200
    code, _, _ = await call(alpha, "POST", f"/api/v1/admin/fedi/held/{by_object[held_two['uri']]}/drop", admin)
    assert code == 200
    code, _, _ = await call(alpha, "POST", f"/api/v1/admin/fedi/held/{by_object[held_two['uri']]}/release", admin)
    assert code == 404  # dropped for good
    await network.drain()
    stored = {r["uri"] for r in await alpha.ctx.db.fetchall("SELECT uri FROM statuses")}
    assert held_one["uri"] in stored and held_two["uri"] not in stored
    assert await count(alpha, "SELECT count(*) FROM keyword_rule_hits") == 3  # the release did not log again
    _, log, _ = await call(alpha, "GET", "/api/v1/admin/fedi/audit_log", admin)
    assert [e["action"] for e in log] == ["drop", "release", "create", "create"]


async def test_keyword_matching_is_linear_on_hostile_text(network: Network) -> None:
    alpha = await network.add("alpha.test")
    admin = await admin_token(alpha)
    for pattern, kind in (("@@@@@x", "keyword"), ("#a#b#c", "keyword"), ("@#", "keyword"), ("a", "hashtag")):
        code, _, _ = await call(alpha, "POST", "/api/v1/admin/fedi/keyword_rules", admin,
                                json={"pattern": pattern, "kind": kind, "whole_word": pattern != "@#"})
        assert code == 200
    runs = ("@" * 997 + "#" * 3) * 99  # with the 1 KB content warning: 100 KB of '@' and '#' runs
    note = {"id": "https://evil.test/notes/1", "type": "Note", "attributedTo": "https://evil.test/users/x",
            "content": f"<p>{runs}</p>", "summary": runs[:1000],
            "tag": [{"type": "Hashtag", "name": "#" + "b" * 100}]}
    activity = {"id": "https://evil.test/activities/1", "actor": "https://evil.test/users/x"}
    started = time.perf_counter()
    verdict = await check_rules(alpha.ctx, activity, note)
    elapsed = time.perf_counter() - started
    print(f"keyword rules on a 100 KB post of '@'/'#' runs: {elapsed * 1000:.1f} ms")
    assert verdict == "reject" and elapsed < 0.1  # "@#" (not whole word) matches; the others do not
    excerpt = await alpha.ctx.db.fetchval("SELECT excerpt FROM keyword_rule_hits")
    assert "@#" in excerpt and len(excerpt) <= 90
