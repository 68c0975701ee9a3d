"""Running fedi instances as third-party client apps see them (Mastodon.py, toot).

Apps are given `http://127.0.0.1:PORT` as the instance URL; the instance's own
name (`alpha.test:PORT`) appears in the URLs it hands out (streaming, media).
`TestDns` is the DNS the test machine lacks: it sends requests for those names to
127.0.0.1 with the original `Host`, as a resolver would. `sign_in` is the browser:
it fetches the real `/oauth/authorize` page, fills the form it finds there and
submits it, so a template or route change that breaks sign-in breaks the test.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit, urlunsplit

import requests

from tests.harness import Instance, Network

PASSWORD = "correct horse battery"


def api_base(inst: Instance) -> str:
    """The URL an app is pointed at: the loopback address, not the configured domain."""
    return f"http://127.0.0.1:{inst.port}"


class TestDns(requests.Session):
    """A requests session that resolves the network's instance names to 127.0.0.1."""

    __test__ = False

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(url if isinstance(url, str) else url.decode())
        for inst in self.network.instances:
            if parts.netloc == inst.config.instance.domain:
                kwargs["headers"] = {**(kwargs.get("headers") or {}), "Host": parts.netloc}
                url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{inst.port}"))
        return super().request(method, url, *args, **kwargs)


class _FormParser(HTMLParser):
    """The first form of a page: its action, its named inputs, and its first submit button."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}
        self.inputs: list[str] = []
        self.submit: tuple[str, str] | None = None
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done:
            self._in_form, self.action, self.method = True, a.get("action", ""), a.get("method", "get").lower()
        elif self._in_form and tag == "input" and "name" in a:
            if a.get("type") == "hidden":
                self.fields[a["name"]] = a.get("value", "")
            else:
                self.inputs.append(a["name"])
        elif self._in_form and tag == "button" and a.get("type", "submit") == "submit" and self.submit is None:
            self.submit = (a.get("name", ""), a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def sign_in(session: requests.Session, authorize_url: str, username: str, password: str) -> requests.Response:
    """Open the authorize page, fill in the sign-in form and press its first button, as a browser does.

    Returns the answer to the form's POST without following a redirect."""
    page = session.get(authorize_url, timeout=10)
    assert page.status_code == 200, (page.status_code, page.text[:500])
    form = _FormParser()
    form.feed(page.text)
    assert form.action is not None and form.method == "post", "no sign-in form on the authorize page"
    assert {"username", "password"} <= set(form.inputs), form.inputs
    data = dict(form.fields, username=username, password=password)
    if form.submit and form.submit[0]:
        data[form.submit[0]] = form.submit[1]
    return session.post(urljoin(page.url, form.action), data=data, allow_redirects=False, timeout=10)


def code_from_redirect(answer: requests.Response, redirect_uri: str) -> str:
    """The authorization code from the redirect to the app's registered URI."""
    assert answer.status_code in (302, 303), (answer.status_code, answer.text[:500])
    location = answer.headers["Location"]
    assert location.startswith(redirect_uri + "?"), location
    return parse_qs(urlsplit(location).query)["code"][0]


def code_from_page(answer: requests.Response) -> str:
    """The code shown on the out-of-band page (`urn:ietf:wg:oauth:2.0:oob`), read as a person would."""

    class Code(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.code: str | None = None
            self._inside = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self._inside = tag == "code" and ("id", "code") in attrs

        def handle_data(self, data: str) -> None:
            if self._inside and data.strip():
                self.code, self._inside = data.strip(), False

    assert answer.status_code == 200, (answer.status_code, answer.text[:500])
    parser = Code()
    parser.feed(answer.text)
    assert parser.code, answer.text[:500]
    return parser.code
