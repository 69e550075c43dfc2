"""Parsers of published records: TXT strings, MX, TLSA, MTA-STS, TLSRPT and `mailto:` URIs.

Pure functions on plain values. The gathering uses them to decide what to ask next (the report
mailboxes of a TLSRPT record, the policy host of an MTA-STS record); the checks use them to judge.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailward.compliance.observations import Answer

STS_MAX_AGE = 31557600


def txt_strings(record: str) -> str:
    """A TXT rdata in presentation form (`"a" "b"`) as its concatenated value (RFC 7208 §3.3)."""
    parts: list[str] = []
    i = 0
    while i < len(record):
        if record[i] == '"':
            j = i + 1
            buf = []
            while j < len(record) and record[j] != '"':
                if record[j] == "\\" and j + 1 < len(record):
                    if record[j + 1 : j + 4].isdigit():
                        buf.append(chr(int(record[j + 1 : j + 4])))
                        j += 4
                        continue
                    buf.append(record[j + 1])
                    j += 2
                    continue
                buf.append(record[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            i += 1
    return "".join(parts)


def txt_values(answer: Answer, prefix: str) -> list[str]:
    """The values of an answer's TXT records that start with `prefix` (e.g. `v=STSv1`)."""
    return [v for v in (txt_strings(r) for r in answer.records) if v.startswith(prefix)]


def parse_mx(records: Sequence[str]) -> tuple[list[str], bool]:
    """(exchanges by preference, null MX) of an MX RRset in presentation form (RFC 7505)."""
    exchanges: list[tuple[int, str]] = []
    null = False
    for record in records:
        pref, _, host = record.strip().partition(" ")
        host = host.strip().rstrip(".").lower()
        if host:
            exchanges.append((int(pref), host))
        else:
            null = True
    # A null MX among real ones is a misconfiguration (RFC 7505 §3); senders use the others.
    return [h for _, h in sorted(exchanges)], null and not exchanges


@dataclass(frozen=True)
class TLSA:
    usage: int
    selector: int
    mtype: int
    data: str

    @classmethod
    def parse(cls, text: str) -> TLSA:
        usage, selector, mtype, *data = text.split()
        return cls(int(usage), int(selector), int(mtype), "".join(data).lower())

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data[:16]}..."


# -- MTA-STS --------------------------------------------------------------------------------------


def parse_sts_txt(value: str) -> tuple[str | None, str | None]:
    """(id, error) of an `_mta-sts` TXT value (RFC 8461 §3.1)."""
    if not value.startswith("v=STSv1"):
        return None, "does not start with v=STSv1"
    fields: dict[str, str] = {}
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep:
            return None, f"field {part!r} is not key=value"
        fields.setdefault(key.strip(), val.strip())
    sts_id = fields.get("id")
    if sts_id is None:
        return None, "no id= field"
    if not re.fullmatch(r"[A-Za-z0-9]{1,32}", sts_id):
        return None, f"id {sts_id!r} is not 1-32 letters and digits"
    return sts_id, None


@dataclass
class STSPolicy:
    version: str | None = None
    mode: str | None = None
    max_age: int | None = None
    mx: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_sts_policy(text: str) -> STSPolicy:
    """RFC 8461 §3.2; CRLF or LF line ends (erratum 6253), first occurrence of a key wins."""
    policy = STSPolicy()
    seen: set[str] = set()
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            policy.errors.append(f"line {number}: {line[:40]!r} is not key: value")
            continue
        key, value = key.strip(), value.strip()
        if key == "mx":
            if not re.fullmatch(r"(\*\.)?([A-Za-z0-9-]{1,63}\.)+[A-Za-z0-9-]{1,63}\.?", value):
                policy.errors.append(f"line {number}: mx {value!r} is not a host pattern")
            policy.mx.append(value.lower().rstrip("."))
            continue
        if key in seen:
            continue
        seen.add(key)
        if key == "version":
            policy.version = value
        elif key == "mode":
            policy.mode = value
        elif key == "max_age":
            if re.fullmatch(r"[0-9]{1,10}", value):
                policy.max_age = int(value)
            else:
                policy.errors.append(f"max_age {value!r} is not a number")
    if policy.version != "STSv1":
        policy.errors.append(f"version is {policy.version!r}, not 'STSv1'")
    if policy.mode not in ("enforce", "testing", "none"):
        policy.errors.append(f"mode is {policy.mode!r}, not enforce|testing|none")
    if policy.max_age is None:
        policy.errors.append("no valid max_age")
    elif policy.max_age > STS_MAX_AGE:
        policy.errors.append(f"max_age {policy.max_age} exceeds {STS_MAX_AGE}")
    if policy.mode in ("enforce", "testing") and not policy.mx:
        policy.errors.append("no mx: line although mode is not none")
    return policy


def mx_matches_pattern(host: str, pattern: str) -> bool:
    """RFC 8461 §4.1: exact, or `*.` matching exactly one left-most label."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return host == pattern


# -- TLSRPT -------------------------------------------------------------------------------------


def parse_tlsrpt(value: str) -> tuple[list[str], str | None]:
    """(rua URIs, error) of an `_smtp._tls` TXT value (RFC 8460 §3)."""
    if not re.match(r"v=TLSRPTv1\s*(;|$)", value):
        return [], "does not start with v=TLSRPTv1"
    rua: list[str] | None = None
    for part in value.split(";")[1:]:
        key, sep, val = part.strip().partition("=")
        if key.strip() == "rua" and sep:
            rua = [u.strip() for u in val.split(",") if u.strip()]
    if not rua:
        return [], "no rua= field"
    for uri in rua:
        if not re.fullmatch(r"(mailto:[^\s,!;@]+@[^\s,!;@]+|https://[^\s,!;]+)", uri):
            return rua, f"rua URI {uri!r} is neither mailto: nor https:"
    return rua, None


def tlsrpt_rua(answer: Answer | None) -> list[str]:
    """The rua URIs of the one valid `v=TLSRPTv1` record, or none (TR-RPT-01 judges the rest)."""
    if answer is None or not answer.ok:
        return []
    values = txt_values(answer, "v=TLSRPTv1")
    if len(values) != 1:
        return []
    rua, error = parse_tlsrpt(values[0])
    return [] if error else rua


# A host name in A-labels (RFC 1123 §2.1); mail domains carry no underscores.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")


def mailto_domains(uri: str) -> tuple[list[str], str | None]:
    """(domains, error): the mailbox domains of a `mailto:` URI (RFC 6068 §2).

    Header fields after `?` are dropped; the addresses are percent-decoded (so `%2C` separates
    two of them and `%40` is an `@`), the domain after the last `@` is lower-cased, its trailing
    dot dropped and a Unicode name turned into A-labels. An address literal (`[192.0.2.1]`)
    is returned as it is: no DNS route to look up.
    """
    if uri[:7].lower() != "mailto:":
        return [], "not a mailto: URI"
    to = urllib.parse.unquote(uri[7:].split("?", 1)[0], errors="replace")
    domains: list[str] = []
    for address in to.split(","):
        local, at, domain = address.strip().rpartition("@")
        if not at or not local or not domain:
            return domains, f"{address.strip()!r} is not local-part@domain"
        domain = domain.strip().rstrip(".").lower()
        if not (domain.startswith("[") and domain.endswith("]")):
            try:
                domain = domain.encode("idna").decode("ascii")
            except UnicodeError:
                return domains, f"{domain!r} is not a valid domain name"
            if not _HOSTNAME.fullmatch(domain) or len(domain) > 253:
                return domains, f"{domain!r} is not a valid domain name"
        if domain not in domains:
            domains.append(domain)
    return domains, None
