"""Redaction and size limits for what events record about a call's arguments.

The enforcer decides on the real arguments; only the copy written into events is cleaned, and it is
cleaned on the emitter thread (`build_event`), never on the thread making the call. One pass does three
things, so no value is walked twice:

- **masking**: strings matching a pattern (API keys, tokens, JWTs, private keys, the mailbox of emails
  (`[REDACTED:email]@corp.example`), card numbers that pass the Luhn check, by default, plus `redact=`
  patterns) are replaced, match by match, with `[REDACTED:<name>]`; values under a sensitive key
  (`password`, `token`, `api_key`, ... plus `redact_keys=`) are replaced whole;
- **limits**: strings longer than `MAX_STRING` characters, containers with more than `MAX_ITEMS`
  entries, nesting deeper than `MAX_DEPTH`, and more than `MAX_TOTAL` characters in all are cut with a
  visible marker, so a 100 MB argument costs at most a few hundred KB of event;
- **safety**: bytes and strings that are not valid UTF-8 (lone surrogates from `surrogateescape`) become
  valid text, so the event can always be encoded; anything else becomes JSON-safe as `_models.json_safe`
  does (which has no limits, hence this module).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thoth_nb._config import ThothConfig

__all__ = [
    "DEFAULT_KEYS",
    "DEFAULT_PATTERNS",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_STRING",
    "MAX_TOTAL",
    "Redactor",
    "compile_patterns",
    "redact_args",
    "redact_text",
    "redactor_for",
    "redactor_for_options",
]

MAX_STRING = 4096  # characters kept of one string
MAX_ITEMS = 200  # entries kept of one dict or list
MAX_DEPTH = 8  # containers nested deeper are replaced by a marker
MAX_TOTAL = 65536  # characters of strings kept across one argument tree

#: name -> regular expression; each match is replaced by `[REDACTED:name]`
DEFAULT_PATTERNS: dict[str, str] = {
    "private_key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
    "jwt": r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
    "bearer": r"\b(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{12,}",
    "api_key": r"\b(?:sk|pk|rk)[-_](?:[A-Za-z0-9]+[-_])?[A-Za-z0-9]{16,}\b"
               r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}"
               r"|\bAIza[0-9A-Za-z_-]{35}\b",
    # `password=...`, `"token": "..."`, `secret: ...` inside free text, and `user:pass@` in URLs
    "password": r"(?<![A-Za-z0-9])(?i:password|passwd|pwd|secret|token|api[_-]?key)[\"']?\s*[:=]\s*[\"']?"
                r"[^\s\"'&,;}]+|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
    # the mailbox only: the domain stays, so replay and policy tests of domain rules ("no mail outside
    # corp.example") decide recorded calls as they were decided live
    "email": r"\b[A-Za-z0-9._%+-]+(?=@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b)",
    # digits of a card brand's prefix and length that pass the Luhn check (see `_is_card`)
    "card_number": r"\b[2-6]\d(?:[ -]?\d){11,17}\b",
}

_DIGIT = re.compile(r"\d")
_MEMO_CHARS = 256  # strings up to this long are remembered, at most _MEMO_SIZE of them (~1 MB)
_MEMO_SIZE = 4096
_FLAT_ITEMS = 32  # a dict this small of short plain values takes the fast path
_SMALL_INT = 10**12  # 12 digits at most: cannot be a card number

#: a default pattern can only match a (lower-cased) string passing its precheck: plain substring tests,
#: far cheaper than the patterns, so most strings (paths, queries, ids) skip every regex
_PRECHECKS: dict[str, Callable[[str], bool]] = {
    "private_key": lambda s: "-----begin" in s,
    "jwt": lambda s: "eyj" in s,
    "bearer": lambda s: "bearer" in s or "basic" in s,
    "api_key": lambda s: "k-" in s or "k_" in s or "akia" in s or "asia" in s or ("gh" in s and "_" in s)
    or "xox" in s or "aiza" in s,
    "password": lambda s: "passw" in s or "pwd" in s or "secret" in s or "token" in s or "key" in s or "://" in s,
    "email": lambda s: "@" in s,
    "card_number": lambda s: _DIGIT.search(s) is not None,
}

#: dict keys (case-insensitive, `-`/`_` ignored) whose values are masked whole
DEFAULT_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "passphrase", "secret", "clientsecret", "token", "accesstoken",
    "refreshtoken", "idtoken", "sessiontoken", "apikey", "authorization", "cookie", "setcookie",
    "privatekey", "secretkey", "accesskey", "credentials", "credential", "cardnumber", "cvv", "cvc", "ssn",
)


_CARD = re.compile(r"4(?:\d{12}|\d{15}|\d{18})|5[1-5]\d{14}|2[2-7]\d{14}|3[47]\d{13}|3[068]\d{12}|35\d{14}"
                   r"|6\d{15,18}")


def _is_card(digits: str) -> bool:
    """A brand's prefix and length (Visa, Mastercard, Amex, Diners, JCB, Discover/UnionPay) and the Luhn
    check: keeps millisecond timestamps, order numbers and phone numbers readable."""
    return _CARD.fullmatch(digits) is not None and _luhn(digits)


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        number = ord(char) - 48
        if position % 2:
            number = number * 2 - 9 if number > 4 else number * 2
        total += number
    return total % 10 == 0


def _normal_key(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def compile_patterns(patterns: Mapping[str, str] | Iterable[str] | str | None) -> dict[str, re.Pattern[str]]:
    """`redact=` as a dict name -> regex, a list of regexes (named custom, custom2, ...) or one regex.
    Raises ValueError naming the pattern that does not compile."""
    if patterns is None:
        return {}
    if isinstance(patterns, str):
        patterns = [patterns]
    named: dict[str, str]
    if not isinstance(patterns, (Mapping, Iterable)):
        raise ValueError(f"redact must be a regex, a list of regexes or a dict name -> regex; got {patterns!r}")
    if isinstance(patterns, Mapping):
        named = {str(k): v for k, v in patterns.items()}
    else:
        named = {}
        for i, pattern in enumerate(patterns):
            named["custom" if i == 0 else f"custom{i + 1}"] = pattern
    out: dict[str, re.Pattern[str]] = {}
    for name, pattern in named.items():
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"redaction pattern {name!r} must be a non-empty regular expression string; "
                             f"got {pattern!r}")
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"redaction pattern name {name!r} must be letters, digits or _")
        try:
            out[name] = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise ValueError(f"redaction pattern {name!r} is not a valid regular expression ({exc}): "
                             f"{pattern!r}") from None
    return out


class Redactor:
    """Masks and bounds one argument tree; build once per configuration (`redactor_for`)."""

    __slots__ = ("_cards", "_key_memo", "_keys", "_memo", "_patterns", "enabled")

    def __init__(self, patterns: Mapping[str, re.Pattern[str]], keys: Iterable[str]) -> None:
        self._cards = "card_number" in patterns
        # each pattern runs only when its cheap literal precheck passes: most strings (paths, queries,
        # ids) skip every regex, which keeps redaction near 1 us per string on the emitter thread
        self._patterns = [(name, pattern, _PRECHECKS.get(name), functools.partial(self._replace, name))
                          for name, pattern in patterns.items()]
        self._keys = frozenset(_normal_key(k) for k in keys)
        self._memo: dict[str, str] = {}  # short strings recur (paths, names): mask each once
        self._key_memo: dict[str, str] = {}  # argument name -> its mask, or "" when not sensitive
        self.enabled = bool(patterns or self._keys)

    @staticmethod
    def _replace(name: str, match: re.Match[str]) -> str:
        if name == "card_number" and not _is_card(re.sub(r"\D", "", match.group())):
            return match.group()
        return f"[REDACTED:{name}]"

    def text(self, value: str) -> str:
        """Mask one string, first cut to `MAX_STRING` and made valid UTF-8."""
        if len(value) <= _MEMO_CHARS:
            found = self._memo.get(value)
            if found is None:
                if len(self._memo) >= _MEMO_SIZE:
                    self._memo.clear()
                found = self._memo[value] = self._mask(value)
            return found
        return self._mask(value)

    def _mask(self, value: str) -> str:
        if len(value) > MAX_STRING:
            value = value[:MAX_STRING] + f"...[truncated {len(value) - MAX_STRING} chars]"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates (surrogateescape): keep what is readable
                value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        lowered = value.lower()
        for _name, pattern, precheck, replace in self._patterns:
            if precheck is not None and not precheck(lowered):
                continue
            masked = pattern.sub(replace, value)
            if masked is not value:
                value, lowered = masked, masked.lower()
        return value

    def _key_mask(self, key: str) -> str:
        """`[REDACTED:name]` for a sensitive argument name, else ""."""
        found = self._key_memo.get(key)
        if found is None:
            if len(self._key_memo) >= _MEMO_SIZE:
                self._key_memo.clear()
            normal = _normal_key(key)
            found = self._key_memo[key] = f"[REDACTED:{normal}]" if normal in self._keys else ""
        return found

    def tree(self, value: Any) -> Any:
        """A JSON-safe, masked, size-bounded copy of `value`."""
        if type(value) is dict and len(value) <= _FLAT_ITEMS:
            flat = self._flat(value)
            if flat is not None:
                return flat
        return self._walk(value, 0, [MAX_TOTAL], set())

    def _flat(self, value: dict[Any, Any]) -> dict[str, Any] | None:
        """The common case, a few short plain values, without the general walk (None: not that case)."""
        out: dict[str, Any] = {}
        for key, item in value.items():
            kind = type(item)
            if type(key) is not str or len(key) > 64 or not key.isascii():
                return None
            if item is not None and (mask := self._key_mask(key)):
                out[key] = mask
            elif kind is str:
                if len(item) > _MEMO_CHARS:
                    return None
                out[key] = self.text(item)
            elif item is None or kind is bool or (kind is int and -_SMALL_INT < item < _SMALL_INT):
                out[key] = item
            else:
                return None
        return out

    def _walk(self, value: Any, depth: int, budget: list[int], seen: set[int]) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if self._cards and 13 <= len(digits := str(abs(value))) <= 19 and _is_card(digits):
                return "[REDACTED:card_number]"
            return value
        if isinstance(value, float):
            return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value[: MAX_STRING * 4])
            value = raw.decode("utf-8", "replace") + (f"...[truncated {len(value) - len(raw)} bytes]"
                                                      if len(value) > len(raw) else "")
        if isinstance(value, str):
            if budget[0] <= 0:
                return "[truncated: size limit]"
            out = self.text(value)
            if len(out) > budget[0]:
                out = out[: budget[0]] + "...[truncated: size limit]"
            budget[0] -= len(out)
            return out
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            if depth >= MAX_DEPTH:
                return "[truncated: nesting]"
            if id(value) in seen:
                return "[circular]"
            seen.add(id(value))
            try:
                return self._container(value, depth, budget, seen)
            finally:
                seen.discard(id(value))
        from thoth_nb._models import json_safe

        return self._walk(json_safe(value), depth, budget, seen)

    def _container(self, value: Any, depth: int, budget: list[int], seen: set[int]) -> Any:
        size = len(value)
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for count, (key, item) in enumerate(value.items()):
                if count >= MAX_ITEMS or budget[0] <= 0:
                    out["[truncated]"] = f"{size - count} more entries"
                    break
                name = key if isinstance(key, str) else str(key)
                name = self.text(name) if len(name) > 64 or not name.isascii() else name
                if item is not None and (mask := self._key_mask(name)):
                    out[name] = mask
                else:
                    out[name] = self._walk(item, depth + 1, budget, seen)
            return out
        items: Iterable[Any] = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        kept: list[Any] = []
        for count, item in enumerate(items):
            if count >= MAX_ITEMS or budget[0] <= 0:
                kept.append(f"[truncated: {size - count} more items]")
                break
            kept.append(self._walk(item, depth + 1, budget, seen))
        return kept


@functools.lru_cache(maxsize=64)
def _cached(patterns: tuple[tuple[str, str], ...], keys: tuple[str, ...], defaults: bool) -> Redactor:
    named = dict(DEFAULT_PATTERNS) if defaults else {}
    clash = [name for name, _ in patterns if name in named]
    if clash:
        raise ValueError(f"pattern name(s) {', '.join(clash)} already name a default pattern; pick another name")
    named.update(patterns)
    return Redactor(compile_patterns(named), (*DEFAULT_KEYS, *keys) if defaults else keys)


def redactor_for_options(patterns: Mapping[str, str], keys: Iterable[str], defaults: bool) -> Redactor:
    """The (cached) redactor for these options; ValueError when they do not compile together."""
    return _cached(tuple(patterns.items()), tuple(keys), defaults)


def redactor_for(config: ThothConfig) -> Redactor:
    """The (cached) redactor of one configuration."""
    return redactor_for_options(config.redact, config.redact_keys, config.redact_defaults)


def redact_args(value: Any, config: ThothConfig) -> Any:
    """What an event records of a call's arguments: masked, bounded, JSON-safe."""
    return redactor_for(config).tree(value)


def redact_text(value: str, config: ThothConfig) -> str:
    """What an event records of a free-text field (an error message)."""
    return redactor_for(config).text(value)
