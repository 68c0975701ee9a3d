"""Notifications, lists, markers, filters, preferences, tags and conversations through the client API.

Real instances on 127.0.0.1; remote activity arrives through real federation
(`network.drain()`). Every foreign id answers 404 and changes nothing (THREATS O5).
"""

from __future__ import annotations

from actors.local import create_local_account, get_local_account
from actors.remote import get_actor
from actors.webfinger import resolve_handle
from outbox import actions
from outbox.actions import PostRequest
from tests.api_calls import call, count, post
from tests.api_client import user_token
from tests.harness import Instance, Network


async def local_follow(inst: Instance, name: str, target: str) -> None:
    me, them = await get_local_account(inst.ctx.db, name), await get_local_account(inst.ctx.db, target)
    assert await actions.follow(inst.ctx, me, them) == "following"


async def test_notifications_from_a_remote_mention_filtered_dismissed_and_cleared(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    alice, carol = await user_token(alpha, "alice"), await user_token(alpha, "carol")
    await create_local_account(beta.ctx.db, beta.base, "bob", "password123")
    bob = await get_local_account(beta.ctx.db, "bob")
    alpha_domain = alpha.config.instance.domain
    await actions.follow(beta.ctx, bob, await get_actor(beta.ctx, await resolve_handle(beta.ctx, f"@alice@{alpha_domain}")))
    await network.drain()
    await actions.create_status(beta.ctx, bob, PostRequest(text=f"@alice@{alpha_domain} hello from beta"))
    await network.drain()

    code, listed, headers = await call(alpha, "GET", "/api/v1/notifications", alice)
    assert code == 200 and [n["type"] for n in listed] == ["mention", "follow"]
    mention, followed = listed
    assert mention["account"]["acct"] == f"bob@{beta.config.instance.domain}"
    assert "hello from beta" in mention["status"]["content"] and followed["status"] is None
    assert mention["group_key"] == f"ungrouped-{mention['id']}" and mention["created_at"].endswith("Z")
    assert 'rel="next"' in headers["Link"]

    _, only_mentions, _ = await call(alpha, "GET", "/api/v1/notifications?types[]=mention", alice)
    assert [n["id"] for n in only_mentions] == [mention["id"]]
    _, no_mentions, _ = await call(alpha, "GET", "/api/v1/notifications?exclude_types[]=mention", alice)
    assert [n["id"] for n in no_mentions] == [followed["id"]]
    _, by_bob, _ = await call(alpha, "GET", f"/api/v1/notifications?account_id={mention['account']['id']}", alice)
    assert len(by_bob) == 2
    _, older, _ = await call(alpha, "GET", f"/api/v1/notifications?max_id={mention['id']}", alice)
    assert [n["id"] for n in older] == [followed["id"]]

    code, one, _ = await call(alpha, "GET", f"/api/v1/notifications/{mention['id']}", alice)
    assert code == 200 and one["id"] == mention["id"]
    code, quiet, _ = await call(alpha, "POST", "/api/v2/filters", alice, json={
        "title": "quiet", "context": ["notifications"], "filter_action": "hide",
        "keywords_attributes": [{"keyword": "from beta"}]})
    assert code == 200
    _, filtered, _ = await call(alpha, "GET", "/api/v1/notifications", alice)
    assert [n["id"] for n in filtered] == [followed["id"]]
    await call(alpha, "DELETE", f"/api/v2/filters/{quiet['id']}", alice)
    _, unread, _ = await call(alpha, "GET", "/api/v1/notifications/unread_count", alice)
    assert unread == {"count": 2}
    await call(alpha, "POST", "/api/v1/markers", alice, data={"notifications[last_read_id]": followed["id"]})
    _, unread, _ = await call(alpha, "GET", "/api/v1/notifications/unread_count", alice)
    assert unread == {"count": 1}

    # someone else's notification id: not found, nothing removed
    for method, path in (("GET", f"/api/v1/notifications/{mention['id']}"),
                         ("POST", f"/api/v1/notifications/{mention['id']}/dismiss")):
        code, body, _ = await call(alpha, method, path, carol)
        assert code == 404 and body == {"error": "Record not found"}
    assert await count(alpha, "SELECT count(*) FROM notifications WHERE id = ?", int(mention["id"])) == 1

    code, body, _ = await call(alpha, "POST", f"/api/v1/notifications/{mention['id']}/dismiss", alice)
    assert code == 200 and body == {}
    code, _, _ = await call(alpha, "POST", f"/api/v1/notifications/{mention['id']}/dismiss", alice)
    assert code == 404
    _, listed, _ = await call(alpha, "GET", "/api/v1/notifications", alice)
    assert [n["id"] for n in listed] == [followed["id"]]
    code, body, _ = await call(alpha, "POST", "/api/v1/notifications/clear", alice)
    assert code == 200 and body == {}
    _, listed, _ = await call(alpha, "GET", "/api/v1/notifications", alice)
    assert listed == []
    code, _, _ = await call(alpha, "GET", "/api/v1/notifications", await user_token(alpha, "dave", scopes="read:statuses"))
    assert code == 403


async def test_lists_crud_membership_and_list_timeline(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob, carol = [await user_token(alpha, n) for n in ("alice", "bob", "carol")]
    await user_token(alpha, "dave")
    for name in ("bob", "carol"):
        await local_follow(alpha, "alice", name)
    accounts = {n: str((await get_local_account(alpha.ctx.db, n))["id"]) for n in ("bob", "carol", "dave")}

    code, created, _ = await call(alpha, "POST", "/api/v1/lists", alice, data={"title": "Friends"})
    assert code == 200 and created == {"id": created["id"], "title": "Friends", "replies_policy": "list",
                                       "exclusive": False}
    path = f"/api/v1/lists/{created['id']}"
    code, body, _ = await call(alpha, "POST", f"{path}/accounts", alice, data={"account_ids[]": accounts["bob"]})
    assert code == 200 and body == {}
    code, body, _ = await call(alpha, "POST", f"{path}/accounts", alice,
                               data=[("account_ids[]", accounts["carol"]), ("account_ids[]", accounts["dave"])])
    assert code == 422 and "followed" in body["error"]  # dave is not followed: nothing added, carol neither
    _, members, _ = await call(alpha, "GET", f"{path}/accounts", alice)
    assert [m["acct"] for m in members] == ["bob"]

    await post(alpha, bob, "bob on the list")
    await post(alpha, carol, "carol not on the list")
    _, timeline, _ = await call(alpha, "GET", f"/api/v1/timelines/list/{created['id']}", alice)
    assert [s["content"] for s in timeline] == ["<p>bob on the list</p>"]

    code, updated, _ = await call(alpha, "PUT", path, alice, data={"title": "Close", "replies_policy": "followed",
                                                                    "exclusive": "true"})
    assert code == 200 and updated["title"] == "Close" and updated["replies_policy"] == "followed" and updated["exclusive"]
    for bad in ({"replies_policy": "everyone"}, {"title": "x" * 1_000_000}, {"title": "  "}):
        code, body, _ = await call(alpha, "PUT", path, alice, data=bad)
        assert code == 422 and "error" in body
    code, _, _ = await call(alpha, "POST", "/api/v1/lists", alice, data={"title": "y" * 1_000_000})
    assert code == 422
    _, mine, _ = await call(alpha, "GET", "/api/v1/lists", alice)
    assert [(x["title"], x["replies_policy"]) for x in mine] == [("Close", "followed")]

    # someone else's list id: not found, nothing changed
    for method, sub, kw in (("GET", "", {}), ("PUT", "", {"data": {"title": "mine"}}), ("DELETE", "", {}),
                            ("GET", "/accounts", {}), ("DELETE", "/accounts", {"data": {"account_ids[]": accounts["bob"]}}),
                            ("POST", "/accounts", {"data": {"account_ids[]": accounts["carol"]}})):
        code, body, _ = await call(alpha, method, path + sub, carol, **kw)
        assert code == 404 and body == {"error": "Record not found"}, (method, sub)
    code, _, _ = await call(alpha, "GET", f"/api/v1/timelines/list/{created['id']}", carol)
    assert code == 404
    assert await count(alpha, "SELECT count(*) FROM list_accounts WHERE list_id = ?", int(created["id"])) == 1
    _, still, _ = await call(alpha, "GET", path, alice)
    assert still["title"] == "Close"

    code, body, _ = await call(alpha, "DELETE", f"{path}/accounts", alice, data={"account_ids[]": accounts["bob"]})
    assert code == 200 and (await call(alpha, "GET", f"{path}/accounts", alice))[1] == []
    code, body, _ = await call(alpha, "DELETE", path, alice)
    assert code == 200 and body == {}
    assert (await call(alpha, "GET", path, alice))[0] == 404


async def test_markers_round_trip(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice = await user_token(alpha, "alice")
    code, body, _ = await call(alpha, "GET", "/api/v1/markers?timeline[]=home&timeline[]=notifications", alice)
    assert code == 200 and body == {}
    code, saved, _ = await call(alpha, "POST", "/api/v1/markers", alice, data={"home[last_read_id]": "103206604258487607"})
    assert code == 200 and list(saved) == ["home"]
    assert saved["home"]["last_read_id"] == "103206604258487607" and saved["home"]["version"] == 1
    assert saved["home"]["updated_at"].endswith("Z")
    code, saved, _ = await call(alpha, "POST", "/api/v1/markers", alice, json={
        "home": {"last_read_id": "103206604258487608"}, "notifications": {"last_read_id": "5"}})
    assert code == 200 and saved["home"]["version"] == 2 and saved["notifications"]["version"] == 1
    code, body, _ = await call(alpha, "POST", "/api/v1/markers", alice, data={"home[last_read_id]": "not-an-id"})
    assert code == 422 and "error" in body
    _, read, _ = await call(alpha, "GET", "/api/v1/markers?timeline[]=home&timeline[]=notifications", alice)
    assert read["home"]["last_read_id"] == "103206604258487608" and read["home"]["version"] == 2
    assert read["notifications"]["last_read_id"] == "5"
    _, only_home, _ = await call(alpha, "GET", "/api/v1/markers?timeline[]=home", alice)
    assert list(only_home) == ["home"]


async def test_filters_hide_warn_literal_keywords_and_limits(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob, carol = [await user_token(alpha, n) for n in ("alice", "bob", "carol")]
    await local_follow(alpha, "alice", "bob")

    code, hide, _ = await call(alpha, "POST", "/api/v2/filters", alice, json={
        "title": "No spoilers at home", "context": ["home"], "filter_action": "hide",
        "keywords_attributes": [{"keyword": "spoilers", "whole_word": True}]})
    assert code == 200 and hide["filter_action"] == "hide" and hide["context"] == ["home"]
    assert hide["expires_at"] is None and hide["statuses"] == []
    assert [(k["keyword"], k["whole_word"]) for k in hide["keywords"]] == [("spoilers", True)]
    code, warn, _ = await call(alpha, "POST", "/api/v2/filters", alice, data={
        "title": "Careful", "context[]": "public", "expires_in": "3600",
        "keywords_attributes[0][keyword]": "spoilers", "keywords_attributes[1][keyword]": "a.*(b[",
        "keywords_attributes[1][whole_word]": "false"})
    assert code == 200 and warn["filter_action"] == "warn" and warn["expires_at"] is not None
    assert [k["keyword"] for k in warn["keywords"]] == ["spoilers", "a.*(b["]

    spoiler = await post(alpha, bob, "big Spoilers ahead")
    plain = await post(alpha, bob, "a calm post")
    literal = await post(alpha, bob, "regex a.*(b[ inside")
    lookalike = await post(alpha, bob, "aXXXb is not it")
    own = await post(alpha, alice, "my own spoilers stay")

    _, home, _ = await call(alpha, "GET", "/api/v1/timelines/home", alice)
    ids = [s["id"] for s in home]
    assert spoiler["id"] not in ids and {plain["id"], literal["id"], own["id"]} <= set(ids)
    assert all(s["filtered"] == [] for s in home)  # no warn filter in the home context

    _, public, _ = await call(alpha, "GET", "/api/v1/timelines/public", alice)
    by_id = {s["id"]: s for s in public}
    assert spoiler["id"] in by_id  # `hide` is for home only
    result = by_id[spoiler["id"]]["filtered"]
    assert [r["filter"]["id"] for r in result] == [warn["id"]]
    assert result[0]["keyword_matches"] == ["spoilers"] and result[0]["status_matches"] is None
    assert by_id[literal["id"]]["filtered"][0]["keyword_matches"] == ["a.*(b["]
    assert by_id[lookalike["id"]]["filtered"] == [] and by_id[plain["id"]]["filtered"] == []
    assert by_id[own["id"]]["filtered"] == []
    _, anonymous, _ = await call(alpha, "GET", "/api/v1/timelines/public")
    assert all(s["filtered"] == [] for s in anonymous) and len(anonymous) == len(public)

    # a filtered status, then keyword edits through the filter and the keyword endpoints
    code, entry, _ = await call(alpha, "POST", f"/api/v2/filters/{warn['id']}/statuses", alice,
                                data={"status_id": plain["id"]})
    assert code == 200 and entry["status_id"] == plain["id"]
    _, public, _ = await call(alpha, "GET", "/api/v1/timelines/public", alice)
    assert {s["id"]: s for s in public}[plain["id"]]["filtered"][0]["status_matches"] == [plain["id"]]
    code, edited, _ = await call(alpha, "PUT", f"/api/v2/filters/{warn['id']}", alice, json={
        "title": "Careful now", "keywords_attributes": [
            {"id": warn["keywords"][0]["id"], "_destroy": True},
            {"id": warn["keywords"][1]["id"], "keyword": "calm"}, {"keyword": "ahead", "whole_word": False}]})
    assert code == 200 and edited["title"] == "Careful now"
    assert [k["keyword"] for k in edited["keywords"]] == ["calm", "ahead"]
    code, added, _ = await call(alpha, "POST", f"/api/v2/filters/{warn['id']}/keywords", alice, data={"keyword": "x+y"})
    assert code == 200 and added["whole_word"] is True
    code, changed, _ = await call(alpha, "PUT", f"/api/v2/filters/keywords/{added['id']}", alice,
                                  data={"keyword": "x+z", "whole_word": "false"})
    assert code == 200 and changed == {"id": added["id"], "keyword": "x+z", "whole_word": False}
    _, v1, _ = await call(alpha, "GET", "/api/v1/filters", alice)
    assert {(f["phrase"], f["irreversible"]) for f in v1} == {("spoilers", True), ("calm", False), ("ahead", False),
                                                              ("x+z", False)}
    assert set(v1[0]) == {"id", "phrase", "context", "whole_word", "expires_at", "irreversible"}

    # bad input: 422, nothing stored
    keywords_before = await count(alpha, "SELECT count(*) FROM filter_keywords")
    filters_before = await count(alpha, "SELECT count(*) FROM filters")
    huge = "k" * 100_000
    for path, kw in (
        ("/api/v2/filters", {"json": {"title": "t", "context": ["home"], "keywords_attributes": [{"keyword": huge}]}}),
        (f"/api/v2/filters/{warn['id']}/keywords", {"data": {"keyword": huge}}),
        ("/api/v2/filters", {"json": {"title": "t", "context": ["everywhere"]}}),
        ("/api/v2/filters", {"json": {"title": "", "context": ["home"]}}),
        ("/api/v2/filters", {"json": {"title": "t", "context": ["home"], "filter_action": "explode"}}),
        ("/api/v2/filters", {"data": {"title": "t" * 1_000_000, "context[]": "home"}}),
    ):
        code, body, _ = await call(alpha, "POST", path, alice, **kw)
        assert code == 422 and ("Validation failed" in body["error"] or "too long" in body["error"]), body
    code, _, _ = await call(alpha, "PUT", f"/api/v2/filters/{warn['id']}", alice,
                            json={"title": "renamed", "keywords_attributes": [{"keyword": huge}]})
    assert code == 422
    assert await count(alpha, "SELECT count(*) FROM filter_keywords") == keywords_before
    assert await count(alpha, "SELECT count(*) FROM filters") == filters_before
    assert (await call(alpha, "GET", f"/api/v2/filters/{warn['id']}", alice))[1]["title"] == "Careful now"

    # someone else's filter, keyword, filtered status: not found, nothing changed
    for method, path, kw in (
        ("GET", f"/api/v2/filters/{warn['id']}", {}),
        ("PUT", f"/api/v2/filters/{warn['id']}", {"data": {"title": "mine"}}),
        ("DELETE", f"/api/v2/filters/{warn['id']}", {}),
        ("GET", f"/api/v2/filters/{warn['id']}/keywords", {}),
        ("POST", f"/api/v2/filters/{warn['id']}/keywords", {"data": {"keyword": "intruder"}}),
        ("PUT", f"/api/v2/filters/keywords/{added['id']}", {"data": {"keyword": "intruder"}}),
        ("DELETE", f"/api/v2/filters/keywords/{added['id']}", {}),
        ("POST", f"/api/v2/filters/{warn['id']}/statuses", {"data": {"status_id": spoiler["id"]}}),
        ("DELETE", f"/api/v2/filters/statuses/{entry['id']}", {}),
        ("GET", f"/api/v1/filters/{added['id']}", {}),
    ):
        code, body, _ = await call(alpha, method, path, carol, **kw)
        assert code == 404 and body == {"error": "Record not found"}, (method, path)
    _, after, _ = await call(alpha, "GET", f"/api/v2/filters/{warn['id']}", alice)
    assert after == {**edited, "keywords": [*edited["keywords"], changed], "statuses": [entry]}

    code, body, _ = await call(alpha, "DELETE", f"/api/v2/filters/{hide['id']}", alice)
    assert code == 200 and body == {}
    _, home, _ = await call(alpha, "GET", "/api/v1/timelines/home", alice)
    assert spoiler["id"] in [s["id"] for s in home]


async def test_preferences(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice = await user_token(alpha, "alice")
    code, prefs, _ = await call(alpha, "GET", "/api/v1/preferences", alice)
    assert code == 200 and prefs == {
        "posting:default:visibility": "public", "posting:default:sensitive": False,
        "posting:default:language": None, "reading:expand:media": "default", "reading:expand:spoilers": False,
    }
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE users SET settings_json = ? WHERE account_id = (SELECT id FROM accounts WHERE username = 'alice')",
                         ('{"privacy": "private", "sensitive": true, "language": "de", "expand_spoilers": true}',))
    _, prefs, _ = await call(alpha, "GET", "/api/v1/preferences", alice)
    assert prefs["posting:default:visibility"] == "private" and prefs["posting:default:language"] == "de"
    assert prefs["posting:default:sensitive"] is True and prefs["reading:expand:spoilers"] is True


async def test_followed_and_featured_tags(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, carol = await user_token(alpha, "alice"), await user_token(alpha, "carol")
    code, tag, _ = await call(alpha, "GET", "/api/v1/tags/Fedi", alice)
    assert code == 200 and tag["name"] == "fedi" and tag["following"] is False and tag["history"] == []
    assert tag["url"] == f"{alpha.base}/tags/fedi"
    code, tag, _ = await call(alpha, "POST", "/api/v1/tags/Fedi/follow", alice)
    assert code == 200 and tag["following"] is True and tag["id"].isdigit()
    _, followed, headers = await call(alpha, "GET", "/api/v1/followed_tags", alice)
    assert [t["name"] for t in followed] == ["fedi"] and "Link" in headers
    _, for_carol, _ = await call(alpha, "GET", "/api/v1/tags/fedi", carol)
    assert for_carol["following"] is False
    code, tag, _ = await call(alpha, "POST", "/api/v1/tags/fedi/unfollow", alice)
    assert code == 200 and tag["following"] is False
    assert (await call(alpha, "GET", "/api/v1/followed_tags", alice))[1] == []
    for bad in ("no-dashes", "1234", "x" * 101):
        code, body, _ = await call(alpha, "POST", f"/api/v1/tags/{bad}/follow", alice)
        assert code == 404 and "error" in body
    assert await count(alpha, "SELECT count(*) FROM followed_tags") == 0

    await post(alpha, alice, "about #fedi and #python")
    await post(alpha, alice, "more #python")
    _, suggested, _ = await call(alpha, "GET", "/api/v1/featured_tags/suggestions", alice)
    assert [t["name"] for t in suggested] == ["python", "fedi"]
    code, featured, _ = await call(alpha, "POST", "/api/v1/featured_tags", alice, data={"name": "#python"})
    assert code == 200 and featured["name"] == "python" and featured["statuses_count"] == 2
    assert featured["url"] == f"{alpha.base}/@alice/tagged/python" and featured["last_status_at"].endswith("Z")
    for bad in ({"name": "python"}, {"name": "not a tag"}, {"name": ""}):
        code, _, _ = await call(alpha, "POST", "/api/v1/featured_tags", alice, data=bad)
        assert code == 422
    _, mine, _ = await call(alpha, "GET", "/api/v1/featured_tags", alice)
    assert [f["id"] for f in mine] == [featured["id"]]
    _, suggested, _ = await call(alpha, "GET", "/api/v1/featured_tags/suggestions", alice)
    assert [t["name"] for t in suggested] == ["fedi"]
    code, body, _ = await call(alpha, "DELETE", f"/api/v1/featured_tags/{featured['id']}", carol)
    assert code == 404 and body == {"error": "Record not found"}
    assert await count(alpha, "SELECT count(*) FROM featured_tags") == 1
    code, body, _ = await call(alpha, "DELETE", f"/api/v1/featured_tags/{featured['id']}", alice)
    assert code == 200 and body == {} and (await call(alpha, "GET", "/api/v1/featured_tags", alice))[1] == []


async def test_conversations_between_two_local_users(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob, carol = [await user_token(alpha, n) for n in ("alice", "bob", "carol")]
    first = await post(alpha, alice, "@bob psst", visibility="direct")
    await post(alpha, alice, "a public post, not a conversation")

    _, bobs, headers = await call(alpha, "GET", "/api/v1/conversations", bob)
    assert len(bobs) == 1 and bobs[0]["unread"] is True and "Link" in headers
    assert [a["acct"] for a in bobs[0]["accounts"]] == ["alice"] and bobs[0]["last_status"]["id"] == first["id"]
    reply = await post(alpha, bob, "@alice hello back", visibility="direct", in_reply_to_id=first["id"])

    _, alices, _ = await call(alpha, "GET", "/api/v1/conversations", alice)
    assert len(alices) == 1 and alices[0]["last_status"]["id"] == reply["id"] and alices[0]["unread"] is True
    assert [a["acct"] for a in alices[0]["accounts"]] == ["bob"]
    _, bobs_again, _ = await call(alpha, "GET", "/api/v1/conversations", bob)
    assert [c["id"] for c in bobs_again] == [bobs[0]["id"]] and bobs_again[0]["last_status"]["id"] == reply["id"]

    conversation = alices[0]["id"]
    code, read, _ = await call(alpha, "POST", f"/api/v1/conversations/{conversation}/read", alice)
    assert code == 200 and read["unread"] is False and read["id"] == conversation
    assert (await call(alpha, "GET", "/api/v1/conversations", carol))[1] == []
    for method, path in (("POST", f"/api/v1/conversations/{conversation}/read"),
                         ("DELETE", f"/api/v1/conversations/{conversation}")):
        code, body, _ = await call(alpha, method, path, carol)
        assert code == 404 and body == {"error": "Record not found"}
    assert await count(alpha, "SELECT count(*) FROM conversations WHERE id = ?", int(conversation)) == 1

    code, body, _ = await call(alpha, "DELETE", f"/api/v1/conversations/{conversation}", alice)
    assert code == 200 and body == {}
    assert (await call(alpha, "GET", "/api/v1/conversations", alice))[1] == []
    again = await post(alpha, bob, "@alice still there?", visibility="direct", in_reply_to_id=reply["id"])
    _, back, _ = await call(alpha, "GET", "/api/v1/conversations", alice)
    assert len(back) == 1 and back[0]["last_status"]["id"] == again["id"] and back[0]["unread"] is True
    _, markers, _ = await call(alpha, "GET", "/api/v1/markers?timeline[]=conversations&timeline[]=home", alice)
    assert markers == {}
async def test_followed_tag_posts_reach_home(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, carol = await user_token(alpha, "alice"), await user_token(alpha, "carol")
    await call(alpha, "POST", "/api/v1/tags/gardening/follow", alice)
    tagged = await post(alpha, carol, "tomatoes #Gardening")
    untagged = await post(alpha, carol, "no tag here")
    unlisted = await post(alpha, carol, "quiet #gardening", visibility="unlisted")
    _, home, _ = await call(alpha, "GET", "/api/v1/timelines/home", alice)
    ids = [s["id"] for s in home]
    assert tagged["id"] in ids and untagged["id"] not in ids and unlisted["id"] not in ids


async def test_rails_array_of_hashes_form(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice = await user_token(alpha, "alice")
    code, created, _ = await call(alpha, "POST", "/api/v2/filters", alice, data=[
        ("title", "test"), ("context[]", "public"),
        ("keywords_attributes[][keyword]", "foo"), ("keywords_attributes[][whole_word]", "false"),
        ("keywords_attributes[][keyword]", "bar"), ("keywords_attributes[][whole_word]", "true")])
    assert code == 200, created
    assert [(k["keyword"], k["whole_word"]) for k in created["keywords"]] == [("foo", False), ("bar", True)]

