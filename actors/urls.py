"""The URLs fedi mints for local objects (Mastodon's layout, so peers and people recognise them)."""

from __future__ import annotations


def actor(base: str, username: str) -> str:
    return f"{base}/users/{username}"


def key_id(actor_uri: str) -> str:
    return f"{actor_uri}#main-key"


def profile(base: str, username: str) -> str:
    return f"{base}/@{username}"


def status(base: str, username: str, status_id: int) -> str:
    return f"{base}/users/{username}/statuses/{status_id}"


def status_url(base: str, username: str, status_id: int) -> str:
    return f"{base}/@{username}/{status_id}"


def activity(base: str, activity_id: int) -> str:
    return f"{base}/activities/{activity_id}"


def tag(base: str, name: str) -> str:
    return f"{base}/tags/{name}"


def instance_actor(base: str) -> str:
    return f"{base}/actor"


def shared_inbox(base: str) -> str:
    return f"{base}/inbox"
