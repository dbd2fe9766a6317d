"""Scrubbing: what is removed from a Sentry event before it leaves the process.

Sentry's own ``EventScrubber`` filters a fixed list of keys in a few places; it misses what a
background job leaks: the Dramatiq integration puts the whole message (arguments included) in
``contexts.dramatiq.data`` even with ``send_default_pii=False``, and exception messages, tracebacks
and log lines carry e-mail addresses, phone numbers, names and tokens. ``scrub_event`` removes:

- message arguments: ``args``/``kwargs`` are dropped from ``contexts.dramatiq.data``, and every
  argument value (the e-mail, the student's name) is redacted wherever it appears in the event text,
  so names are filtered from exception messages too when they came in as arguments;
- values of personal or secret keys (``name``, ``first_name``, ``email``, ``phone``, ``token``,
  ``password``, ``authorization``, ``api_key``, ``signature``…) in the user-data parts of the event;
- in every free text (exception values, messages, breadcrumbs, extra, tags, custom contexts):
  e-mail addresses, phone numbers (E.164 and national formats), bearer and API tokens (SendGrid
  ``SG.``, Stripe, GitHub, Slack, AWS, Twilio, Google, JWTs), ``password=…``-style pairs, URL
  credentials and long hex/base64 secrets;
- stack-frame local variables (they are the actor's arguments) and the user interface's ``user``
  except its id.

Structural fields (event and trace ids, SDK and runtime information, fingerprint, transaction name)
are left untouched so the event stays valid. Names that appear in free text without having been
arguments cannot be recognised; arguments are ids by convention (STYLE.md), which keeps that rare.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

FILTERED = "[Filtered]"

#: Contexts the SDK fills with facts about the machine, not about users: left as they are.
STRUCTURAL_CONTEXTS = frozenset(
    {"trace", "os", "runtime", "device", "app", "browser", "gpu", "culture", "cloud_resource", "otel"}
)

_SENSITIVE_WORDS = frozenset(
    {
        "email", "emails", "mail", "phone", "phones", "mobile", "msisdn", "tel", "telephone",
        "token", "tokens", "password", "passwd", "pwd", "passphrase", "secret", "secrets",
        "authorization", "auth", "cookie", "cookies", "apikey", "credential", "credentials",
        "ssn", "dob", "birthdate", "birthday", "address", "signature", "surname", "firstname",
        "lastname", "fullname", "username", "nickname", "recipient", "recipients",
    }
)  # fmt: skip
_SENSITIVE_KEYS = frozenset({"name", "names", "to", "cc", "bcc", "reply_to", "ip", "ip_address"})
_PERSONAL_NAME_PREFIXES = frozenset(
    {
        "first", "last", "full", "given", "family", "middle", "maiden", "legal", "preferred", "nick",
        "user", "display", "student", "parent", "guardian", "teacher", "instructor", "recipient",
        "contact", "sender", "person", "customer", "account",
    }
)  # fmt: skip
_SECRET_KEY_PREFIXES = frozenset(
    {"api", "signing", "private", "secret", "access", "auth", "encryption", "session", "license"}
)

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_KEY_VALUE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|authorization|signature)"
    r"(\"?'?\s*[:=]\s*\"?'?)(?!(?:bearer|basic|token)\s)([^\s\"'&,;]+)"
)
_KNOWN_TOKENS = re.compile(
    r"\bSG\.[\w-]{6,}(?:\.[\w-]+)?"  # SendGrid
    r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}"  # Stripe
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"  # GitHub
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|\bA(?:KIA|SIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\b(?:AC|SK)[0-9a-f]{32}\b"  # Twilio account / key SIDs
    r"|\bAIza[\w-]{35}"  # Google API keys (FCM)
    r"|\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]{5,}"  # JWTs
)
_HEX_SECRET = re.compile(r"\b[0-9a-fA-F]{32,}\b")
_BASE64_CANDIDATE = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_-]{32,}={0,2}(?![\w+/=-])")
_PHONE_CANDIDATE = re.compile(r"(?<![\w+/.:-])\+?\(?\d[\d ().-]{5,22}\d(?![\w.]?\d)(?!\w)")
_PHONE_GROUPED = re.compile(r"^\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{1,5}\)?){1,6}$")
_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")


def is_sensitive_key(key: str) -> bool:
    """Whether a mapping key names personal data or a secret (``email``, ``first_name``, ``apiKey``)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    if snake in _SENSITIVE_KEYS:
        return True
    words = [w for w in re.split(r"[^a-z0-9]+", snake) if w]
    if not words:
        return False
    if any(w in _SENSITIVE_WORDS for w in words):
        return True
    if words[-1] in ("name", "names") and len(words) > 1 and words[-2] in _PERSONAL_NAME_PREFIXES:
        return True
    return words[-1] == "key" and len(words) > 1 and words[-2] in _SECRET_KEY_PREFIXES


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if not 9 <= digits <= 15 or _DATE_LIKE.search(text):
        return text
    if text.startswith("+"):
        return FILTERED
    if text.isdigit():
        # A bare run of digits is an id or a timestamp unless it has a national trunk prefix.
        return FILTERED if text.startswith("0") and digits in (10, 11) else text
    if text.count(".") == 1 and not any(s in text for s in " -()"):
        return text  # a decimal number
    groups = re.findall(r"\d+", text)
    if "." in text and not any(s in text for s in " -()") and all(len(g) <= 3 for g in groups):
        return text  # an IP address or a version
    return FILTERED if _PHONE_GROUPED.match(text.strip()) else text


def _base64_secret(match: re.Match[str]) -> str:
    text = match.group(0)
    mixed = (
        any(c.isdigit() for c in text) and any(c.isupper() for c in text) and any(c.islower() for c in text)
    )
    return FILTERED if mixed else text


def scrub_text(text: str, values: Iterable[str] = ()) -> str:
    """Redact argument ``values`` (whole words) and personal data or secrets found in ``text``."""
    for value in values:
        if value in text:
            text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", FILTERED, text)
    text = _URL_CREDENTIALS.sub(FILTERED + "@", text)
    text = _EMAIL.sub(FILTERED, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{FILTERED}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{FILTERED}", text)
    text = _KNOWN_TOKENS.sub(FILTERED, text)
    text = _HEX_SECRET.sub(FILTERED, text)
    text = _BASE64_CANDIDATE.sub(_base64_secret, text)
    return _PHONE_CANDIDATE.sub(_phone, text)


def argument_values(*arguments: Any) -> list[str]:
    """The strings worth redacting from text found in message arguments, longest first.

    Strings of three characters or more, and numbers of six digits or more (phone numbers sent as
    integers); small numbers and booleans are not personal and would match everywhere.
    """
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, str):
            if len(value.strip()) >= 3:
                found.add(value.strip())
        elif isinstance(value, int | float):
            if len(str(abs(int(value)))) >= 6:
                found.add(str(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    for argument in arguments:
        walk(argument)
    return sorted(found, key=len, reverse=True)


def scrub_data(value: Any, values: Iterable[str] = ()) -> Any:
    """Scrub user data: filter sensitive keys' values and scrub every string, recursively."""
    values = tuple(values)
    if isinstance(value, dict):
        return {
            k: FILTERED
            if isinstance(k, str) and is_sensitive_key(k) and v not in (None, "")
            else scrub_data(v, values)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_data(item, values) for item in value]
    if isinstance(value, str):
        return scrub_text(value, values)
    return value


def _scrub_frames(holder: Any) -> None:
    frames = holder.get("stacktrace", {}).get("frames") if isinstance(holder, dict) else None
    for frame in frames if isinstance(frames, list) else ():
        if isinstance(frame, dict):
            frame.pop("vars", None)


def _map_strings(container: dict[str, Any], key: str, scrub: Callable[[str], str]) -> None:
    if isinstance(container.get(key), str):
        container[key] = scrub(container[key])


def scrub_event(event: dict[str, Any], values: Iterable[str] = ()) -> dict[str, Any]:
    """Scrub a Sentry event in place (and return it); ``values`` are extra strings to redact.

    The arguments found in ``contexts.dramatiq.data`` are added to ``values`` before they are removed.
    """
    redact = list(values)
    contexts = event.get("contexts")
    if isinstance(contexts, dict):
        dramatiq_data = (contexts.get("dramatiq") or {}).get("data")
        if isinstance(dramatiq_data, dict):
            redact += argument_values(dramatiq_data.pop("args", None), dramatiq_data.pop("kwargs", None))
    redact = sorted(set(redact), key=len, reverse=True)

    def text(value: str) -> str:
        return scrub_text(value, redact)

    def data(value: Any) -> Any:
        return scrub_data(value, redact)

    _map_strings(event, "message", text)
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        _map_strings(logentry, "message", text)
        _map_strings(logentry, "formatted", text)
        if "params" in logentry:
            logentry["params"] = data(logentry["params"])
    for part in ("exception", "threads"):
        for item in (event.get(part) or {}).get("values") or ():
            if isinstance(item, dict):
                _map_strings(item, "value", text)
                _scrub_frames(item)
    for name in ("extra", "request"):
        if name in event:
            event[name] = data(event[name])
    if isinstance(event.get("tags"), dict):
        event["tags"] = {k: text(v) if isinstance(v, str) else v for k, v in event["tags"].items()}
    if isinstance(event.get("user"), dict):
        event["user"] = {k: v for k, v in event["user"].items() if k == "id"}
    if isinstance(contexts, dict):
        for name, context in contexts.items():
            if name not in STRUCTURAL_CONTEXTS:
                contexts[name] = data(context)
    breadcrumbs = event.get("breadcrumbs")
    crumbs = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else breadcrumbs
    for crumb in crumbs if isinstance(crumbs, list) else ():
        if isinstance(crumb, dict):
            _map_strings(crumb, "message", text)
            if "data" in crumb:
                crumb["data"] = data(crumb["data"])
    for span in event.get("spans") or ():
        if isinstance(span, dict):
            _map_strings(span, "description", text)
            if "data" in span:
                span["data"] = data(span["data"])
    return event
