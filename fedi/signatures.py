"""draft-cavage HTTP signatures as Mastodon and GoToSocial speak them.

Signing, parsing and verification are done here with `cryptography` directly:
`httpsig` takes the algorithm from the attacker's header and checks neither Date
nor Digest (see THREATS.md S8/S9), so it only serves as a cross-check in tests.
Every refusal is a `SignatureError` whose `.reason` is safe to show the peer.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

AS2_CONTENT_TYPE = "application/activity+json"
DEFAULT_ACCEPT = 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
MAX_SIGNATURE_HEADER = 8192
#: Mastodon's default lifetime of a signature after its Date/(created).
EXPIRY_SECONDS = 300
#: Key sizes we verify: below is forgeable, above costs too much CPU per request.
MIN_KEY_BITS, MAX_KEY_BITS = 1024, 8192

_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# One `name=value` parameter followed by a comma or the end. The quoted string is
# written "unrolled" (runs of plain characters between escapes): the same language
# as `(?:[^"\\]|\\.)*`, still linear on hostile input, and 4× faster on a 344-character
# base64 signature because the engine no longer tries an alternation per character.
_PARAM = re.compile(
    rf'[ \t]*({_TCHAR})[ \t]*=[ \t]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|({_TCHAR}))[ \t]*(?:,|\Z)', re.DOTALL
)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_INTEGER = re.compile(r"[0-9]{1,15}")
# RFC 1123 as Ruby's Time.httpdate accepts it: two-digit day, GMT only.
_HTTP_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_ALGORITHMS = frozenset({"rsa-sha256", "hs2019"})


@functools.cache
def _crypto() -> SimpleNamespace:
    """`cryptography`, imported on first use: ~7 MB and ~25 ms that an idle instance,
    a CLI command or a page view never needs. Cached, so a call costs a dict lookup."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    return SimpleNamespace(
        rsa=rsa, serialization=serialization, pkcs1v15=padding.PKCS1v15(), sha256=hashes.SHA256(),
        InvalidSignature=InvalidSignature, UnsupportedAlgorithm=UnsupportedAlgorithm,
    )


def preload_crypto() -> None:
    """Import `cryptography` now, for a process whose work is signing."""
    _crypto()


class SignatureError(Exception):
    """A request whose signature we refuse; the inbox answers 401 with `.reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParsedSignature:
    key_id: str
    algorithm: str  # "rsa-sha256" or "hs2019" (also when the header had none)
    headers: tuple[str, ...]  # lower-case signed header names, in signing order
    signature: bytes
    created: int | None
    expires: int | None


def digest_header(body: bytes) -> str:
    """The Digest header Mastodon requires on every signed POST."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def http_date(now: float | None = None) -> str:
    """RFC 1123 date in GMT: the only form Mastodon's Time.httpdate accepts."""
    return _http_date(int(time.time() if now is None else now))


@functools.lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    # One formatting per second however many requests are signed in it (a fan-out signs thousands).
    return email.utils.formatdate(second, usegmt=True)


def sign_request(
    method: str,
    url: str,
    key_id: str,
    private_key: rsa.RSAPrivateKey,
    body: bytes | None = None,
    accept: str | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """Headers for an outgoing request, signed the way Mastodon signs its own.

    `date` rather than `(created)` is signed because Pleroma/Akkoma cannot verify
    `(created)` (INTEROP.md pitfall 17).
    """
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Host": parts.netloc.rpartition("@")[2], "Date": http_date(now)}
    if method.upper() == "POST":
        headers["Digest"] = digest_header(body or b"")
        headers["Content-Type"] = AS2_CONTENT_TYPE
        names = ("(request-target)", "host", "date", "digest")
    else:
        headers["Accept"] = accept or DEFAULT_ACCEPT
        names = ("(request-target)", "host", "date", "accept")
    lines = [f"(request-target): {method.lower()} {target}"]
    lines += [f"{name}: {headers[name.capitalize()]}" for name in names[1:]]
    crypto = _crypto()
    signature = private_key.sign("\n".join(lines).encode("utf-8"), crypto.pkcs1v15, crypto.sha256)
    headers["Signature"] = (
        f'keyId="{key_id}",algorithm="rsa-sha256",headers="{" ".join(names)}",'
        f'signature="{base64.b64encode(signature).decode("ascii")}"'
    )
    return headers


def _parse_params(value: str) -> dict[str, str]:
    """Split `k="v",k2=v2` into a dict, refusing anything ambiguous."""
    params: dict[str, str] = {}
    pos = 0
    while pos < len(value):
        match = _PARAM.match(value, pos)
        if match is None:
            raise SignatureError("malformed Signature header")
        name = match.group(1).lower()
        if name in params:
            raise SignatureError(f"duplicate Signature parameter {name}")
        quoted = match.group(2)
        params[name] = _UNESCAPE.sub(r"\1", quoted) if quoted is not None else match.group(3)
        pos = match.end()
    return params


def _integer_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw):
        raise SignatureError(f"invalid {name} parameter")
    return int(raw)


def parse_signature(value: str) -> ParsedSignature:
    """Parse a Signature header; any input that is not clearly valid is refused."""
    if not isinstance(value, str) or not value.strip():
        raise SignatureError("missing Signature header")
    if len(value) > MAX_SIGNATURE_HEADER:
        raise SignatureError("Signature header too long")
    params = _parse_params(value)
    key_id = params.get("keyid")
    if not key_id:
        raise SignatureError("Signature has no keyId")
    algorithm = params.get("algorithm", "hs2019").lower()
    if algorithm not in _ALGORITHMS:
        raise SignatureError("unsupported signature algorithm")
    if "signature" not in params:
        raise SignatureError("Signature has no signature")
    try:
        signature = base64.b64decode(params["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not base64") from None
    if not signature:
        raise SignatureError("empty signature")
    default = "date" if algorithm == "rsa-sha256" else "(created)"
    names = tuple(params.get("headers", default).lower().split())
    if not names:
        raise SignatureError("Signature signs no headers")
    return ParsedSignature(
        key_id=key_id,
        algorithm=algorithm,
        headers=names,
        signature=signature,
        created=_integer_param(params, "created"),
        expires=_integer_param(params, "expires"),
    )


def _header_values(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """Lower-cased name -> every value; items() of a multidict yields repeats too."""
    values: dict[str, list[str]] = {}
    for name, value in headers.items():
        values.setdefault(name.lower(), []).append(value)
    return values


def _single(values: dict[str, list[str]], name: str) -> str:
    found = values.get(name, [])
    if len(found) != 1:
        raise SignatureError(f"expected exactly one {name.capitalize()} header")
    return found[0]


@functools.lru_cache(maxsize=256)  # a busy peer sends many requests within one second
def _parse_http_date(value: str) -> float:
    if not _HTTP_DATE.fullmatch(value.strip()):
        raise SignatureError("invalid Date header")
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (ValueError, TypeError, IndexError, OverflowError):
        raise SignatureError("invalid Date header") from None


def _check_time(moment: float, now: float, window: int) -> None:
    if moment > now + window:
        raise SignatureError("signature date is in the future")
    if moment < now - window - EXPIRY_SECONDS:
        raise SignatureError("signature date is too old")


def _check_digest(values: dict[str, list[str]], body: bytes) -> None:
    """Mastodon's verify_body_digest!: one header, its SHA-256 must match the raw body."""
    sha256 = None
    for item in _single(values, "digest").split(","):
        algorithm, _, encoded = item.strip().partition("=")
        if algorithm.lower() == "sha-256":
            if sha256 is not None:
                raise SignatureError("duplicate SHA-256 digest")
            sha256 = encoded.strip()
    if sha256 is None:
        raise SignatureError("Digest has no SHA-256 value")
    try:
        claimed = base64.b64decode(sha256, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("Digest is not base64") from None
    if len(claimed) != 32:
        raise SignatureError("Digest has the wrong length")
    if not hmac.compare_digest(claimed, hashlib.sha256(body).digest()):
        raise SignatureError("Digest does not match the body")


def check_request(
    parsed: ParsedSignature,
    method: str,
    headers: Mapping[str, str],
    body: bytes | None,
    now: float,
    window: int,
) -> None:
    """Mastodon's strength, time-window and Digest rules; no cryptography yet."""
    signed = set(parsed.headers)
    if "date" not in signed and "(created)" not in signed:
        raise SignatureError("signature must cover date or (created)")
    if "(request-target)" not in signed and "digest" not in signed:
        raise SignatureError("signature must cover (request-target) or digest")
    is_post = method.upper() == "POST"
    if is_post and "digest" not in signed:
        raise SignatureError("POST signature must cover digest")
    if method.upper() == "GET" and "host" not in signed:
        raise SignatureError("GET signature must cover host")
    values = _header_values(headers)
    if "(created)" in signed:
        if parsed.created is None:
            raise SignatureError("(created) is signed but missing")
        _check_time(parsed.created, now, window)
    if "date" in signed:
        _check_time(_parse_http_date(_single(values, "date")), now, window)
    if "(expires)" in signed and parsed.expires is None:
        raise SignatureError("(expires) is signed but missing")
    if parsed.expires is not None and parsed.expires < now:
        raise SignatureError("signature has expired")
    if is_post or "digest" in signed:
        _check_digest(values, body or b"")


def _signing_string(parsed: ParsedSignature, method: str, target: str, values: dict[str, list[str]]) -> bytes:
    lines = []
    for name in parsed.headers:
        if name == "(request-target)":
            lines.append(f"{name}: {method.lower()} {target}")
        elif name in ("(created)", "(expires)"):
            moment = parsed.created if name == "(created)" else parsed.expires
            if moment is None:
                raise SignatureError(f"{name} is signed but missing")
            lines.append(f"{name}: {moment}")
        elif name in values:
            lines.append(f"{name}: {', '.join(v.strip() for v in values[name])}")
        else:
            raise SignatureError(f"signed header {name} is missing")
    try:
        # aiohttp decodes header bytes with surrogateescape; this restores them.
        return "\n".join(lines).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise SignatureError("undecodable header value") from None


def verify_signature(
    parsed: ParsedSignature,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    public_key: object,
) -> None:
    """Check the RSA-SHA256 signature over the request as received.

    `path` must be the raw (still percent-encoded) path. Like Mastodon and GtS we
    try `(request-target)` with the query string, then without it.
    """
    crypto = _crypto()
    if not isinstance(public_key, crypto.rsa.RSAPublicKey):
        raise SignatureError("unsupported key type")
    values = _header_values(headers)
    targets = [f"{path}?{query}", path] if query else [path]
    for target in targets:
        data = _signing_string(parsed, method, target, values)
        try:
            public_key.verify(parsed.signature, data, crypto.pkcs1v15, crypto.sha256)
            return
        except crypto.InvalidSignature:
            continue
    raise SignatureError("signature does not verify")


@functools.lru_cache(maxsize=1024)
def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """Remote actors' keys, cached by PEM text; unusable keys are a SignatureError."""
    crypto = _crypto()
    try:
        key = crypto.serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError, crypto.UnsupportedAlgorithm, UnicodeEncodeError):
        raise SignatureError("invalid public key") from None
    if not isinstance(key, crypto.rsa.RSAPublicKey):
        raise SignatureError("unsupported key type")
    if not MIN_KEY_BITS <= key.key_size <= MAX_KEY_BITS:
        raise SignatureError("unsupported key size")
    return key


@functools.lru_cache(maxsize=256)
def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """Our own keys; loading costs ~40 ms, hence the cache and the skipped validation."""
    crypto = _crypto()
    key = crypto.serialization.load_pem_private_key(
        pem.encode("utf-8"), password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, crypto.rsa.RSAPrivateKey):
        raise TypeError("fedi keys are RSA")
    return key


def generate_private_key() -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key: what Mastodon generates and what every peer can verify."""
    return _crypto().rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_pem(key: rsa.RSAPrivateKey) -> str:
    ser = _crypto().serialization
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode("ascii")


def public_key_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """SubjectPublicKeyInfo PEM, the form actor documents carry in publicKeyPem."""
    crypto = _crypto()
    public = key.public_key() if isinstance(key, crypto.rsa.RSAPrivateKey) else key
    ser = crypto.serialization
    return public.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
