"""Pure rules: parsers and verdicts on plain values (records, policies, certificates, suites).

No I/O here, so every rule is unit-tested with literal inputs.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

# TR-02102-2 Table 1 (as encoded in BSI TaSK), TLS 1.2, in OpenSSL names. CCM_8 is not listed.
ALLOWED_TLS12_SUITES = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384",
        "ECDHE-ECDSA-AES128-CCM", "ECDHE-ECDSA-AES256-CCM",
        "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384",
        "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA256",
        "DHE-RSA-AES128-CCM", "DHE-RSA-AES256-CCM",
        "DHE-DSS-AES128-GCM-SHA256", "DHE-DSS-AES256-GCM-SHA384",
        "DHE-DSS-AES128-SHA256", "DHE-DSS-AES256-SHA256",
    }
)  # fmt: skip
# TR-03116-4 §2.2.1.2: CHACHA20 only at lower priority than the mandatory AES-128-GCM suite.
LOWER_PRIORITY_SUITES = frozenset({"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"})
# TR-03116-4 §2.3: TLS 1.3 suites (CHACHA20 and CCM_8 are not listed).
ALLOWED_TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_AES_128_CCM_SHA256"}
)
TLS13_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)
MANDATORY_SUITE = {"ec": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa": "ECDHE-RSA-AES128-GCM-SHA256"}
RFC8624_ALGORITHMS = {8: "RSASHA256", 13: "ECDSAP256SHA256", 14: "ECDSAP384SHA384",
                      15: "ED25519", 16: "ED448"}  # fmt: skip
STS_MAX_AGE = 31557600


@dataclass(frozen=True)
class SuiteVerdict:
    ok: bool
    tolerated: bool  # only acceptable under TR-03108 §4.3.2 (opportunistic SMTP)
    message: str


def judge_suites(suites: list[str], server_order: bool | None, key_type: str) -> SuiteVerdict:
    """TR-TLS-03: accepted TLS 1.2 suites against the allow-list and the server's order."""
    if not suites:
        return SuiteVerdict(True, False, "no TLS 1.2 suites accepted (TLS 1.3 only)")
    mandatory = MANDATORY_SUITE.get(key_type)
    outside = [
        s
        for s in suites
        if s not in ALLOWED_TLS12_SUITES
        and not (
            s in LOWER_PRIORITY_SUITES
            and mandatory in suites
            and suites.index(mandatory) < suites.index(s)
        )
    ]
    order = "server order" if server_order else "client order (server order not enforced)"
    if not outside:
        return SuiteVerdict(True, False, f"{len(suites)} suites, all allow-listed ({order})")
    first_outside = min(suites.index(s) for s in outside)
    allowed_positions = [i for i, s in enumerate(suites) if s not in outside]
    low_priority = (
        bool(server_order) and bool(allowed_positions) and max(allowed_positions) < first_outside
    )
    listed = ", ".join(outside[:6]) + (" ..." if len(outside) > 6 else "")
    if low_priority:
        return SuiteVerdict(False, True, f"not allow-listed, at lowest priority: {listed}")
    where = "preferred first" if first_outside == 0 else f"at position {first_outside + 1}"
    return SuiteVerdict(False, False, f"not allow-listed ({where}, {order}): {listed}")


def is_pfs(cipher: str, version: str) -> bool:
    return version == "TLSv1.3" or cipher.startswith(("ECDHE-", "DHE-"))


# -- certificates -------------------------------------------------------------------------------


def load_chain(chain: tuple[bytes, ...]) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(der) for der in chain]


def key_type(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    return type(key).__name__


def key_size_problem(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.key_size >= 250 else f"EC key of {key.curve.key_size} bit"
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= 3000 else f"RSA key of {key.key_size} bit (< 3000)"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    return f"unsupported key type {type(key).__name__}"


def cert_names(cert: x509.Certificate) -> list[str]:
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    names += [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return names


def wildcard_names(cert: x509.Certificate) -> list[str]:
    return [n for n in cert_names(cert) if "*" in n]


def profile_problems(cert: x509.Certificate) -> list[str]:
    """TR-TLS / TR-03116-4 §6.1.2 rules for an end-entity certificate."""
    problems = []
    try:
        ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
        if not ku.critical:
            problems.append("KeyUsage not critical")
    except x509.ExtensionNotFound:
        problems.append("no KeyUsage")
    has_crl = has_ocsp = False
    try:
        cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS)
        has_crl = True
    except x509.ExtensionNotFound:
        pass
    try:
        aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
        has_ocsp = any(
            d.access_method == AuthorityInformationAccessOID.OCSP
            for d in aia.value  # type: ignore[attr-defined]
        )
    except x509.ExtensionNotFound:
        pass
    if not (has_crl or has_ocsp):
        problems.append("neither a CRL distribution point nor an OCSP URL")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if lifetime > timedelta(days=3 * 366):
        problems.append(f"validity of {lifetime.days} days (> 3 years)")
    return problems


def signature_problem(cert: x509.Certificate, now: datetime) -> str | None:
    """TR-03116-4 §6.1.4: ECDSA or RSASSA-PSS with SHA-2; PKCS#1 v1.5 only until 2025."""
    oid_name = cert.signature_algorithm_oid._name
    digest = cert.signature_hash_algorithm
    digest_name = digest.name if digest else "none"
    if digest_name in ("md5", "sha1"):
        return f"{oid_name} uses {digest_name}"
    params = cert.signature_algorithm_parameters
    if isinstance(params, padding.PKCS1v15) and now.year > 2025:
        return f"{oid_name} (RSASSA-PKCS1-v1_5, allowed only until 2025)"
    return None


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


# -- DANE ---------------------------------------------------------------------------------------


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


def _tlsa_digest(cert: x509.Certificate, selector: int, mtype: int) -> str:
    if selector == 0:
        blob = cert.public_bytes(serialization.Encoding.DER)
    else:
        blob = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if mtype == 1:
        return hashlib.sha256(blob).hexdigest()
    if mtype == 2:
        return hashlib.sha512(blob).hexdigest()
    return blob.hex()


def tlsa_matches(record: TLSA, chain: list[x509.Certificate]) -> bool:
    """RFC 7672 semantics: DANE-EE(3) against the leaf, DANE-TA(2) against a chain element."""
    if not chain:
        return False
    if record.usage == 3:
        candidates = chain[:1]
    elif record.usage == 2:
        candidates = chain[1:]
    else:
        return False
    return any(_tlsa_digest(c, record.selector, record.mtype) == record.data for c in candidates)


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


# -- TLSRPT, SPF, DMARC, DKIM ---------------------------------------------------------------------


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
class MailRoute:
    deliverable: bool
    targets: tuple[str, ...]  # the hosts mail is handed to: MX hosts, or the domain itself
    message: str


def judge_mail_route(
    domain: str, exchanges: Sequence[str], null_mx: bool, addresses: Mapping[str, Sequence[str]]
) -> MailRoute:
    """Whether mail for `domain` has somewhere to go (RFC 5321 §5.1, RFC 7505).

    `exchanges` are the MX hosts (empty: no MX records), `addresses` the A/AAAA addresses of
    each host looked at (for an implicit MX: of the domain itself).
    """
    if null_mx:
        return MailRoute(False, (), "null MX `0 .` (RFC 7505): the domain accepts no mail")
    if exchanges:
        targets = tuple(h for h in exchanges if addresses.get(h))
        dead = [h for h in exchanges if not addresses.get(h)]
        if not targets:
            return MailRoute(False, (), f"MX {', '.join(dead)} without A/AAAA")
        listing = ", ".join(f"{h} ({addresses[h][0]})" for h in targets)
        unreachable = f"; without address: {', '.join(dead)}" if dead else ""
        return MailRoute(True, targets, f"MX {listing}{unreachable}")
    if addresses.get(domain):
        return MailRoute(
            True,
            (domain,),
            f"no MX, implicit MX (RFC 5321 §5.1) to {domain} ({addresses[domain][0]})",
        )
    return MailRoute(False, (), "no MX and no A/AAAA (RFC 5321 §5.1)")


def judge_spf(records: list[str]) -> tuple[bool, str]:
    spf = [r for r in records if r.lower().startswith("v=spf1") and r[6:7] in ("", " ")]
    if not spf:
        return False, "no v=spf1 record"
    if len(spf) > 1:
        return False, f"{len(spf)} v=spf1 records (RFC 7208 §3.2 permits one)"
    terms = spf[0].split()[1:]
    lookups = [
        t
        for t in terms
        if re.match(r"[+~?-]?(include:|a\b|a:|a/|mx\b|mx:|mx/|ptr|exists:|redirect=)", t)
    ]
    if len(lookups) > 10:
        return False, f"{len(lookups)} DNS-querying terms (limit 10): {spf[0]}"
    all_terms = [t for t in terms if re.fullmatch(r"[+~?-]?all", t)]
    if not all_terms:
        if any(t.startswith("redirect=") for t in terms):
            return True, f"ends in redirect: {spf[0]}"
        return False, f"no terminating all: {spf[0]}"
    qualifier = all_terms[-1][0] if all_terms[-1][0] in "+~?-" else "+"
    if qualifier not in "~-":
        return False, f"ends in {all_terms[-1]} (TR-03182 requires ~all or -all): {spf[0]}"
    return True, spf[0]


def judge_dmarc(records: list[str]) -> tuple[bool, str]:
    dmarc = [r for r in records if r.startswith("v=DMARC1")]
    if not dmarc:
        return False, "no v=DMARC1 record"
    if len(dmarc) > 1:
        return False, f"{len(dmarc)} v=DMARC1 records"
    tags = [p.strip() for p in dmarc[0].split(";") if p.strip()]
    values: dict[str, str] = {}
    for tag in tags:
        key, _, val = tag.partition("=")
        values.setdefault(key.strip(), val.strip())
    if len(tags) < 2 or not tags[1].startswith("p="):
        return False, f"p= must follow v=DMARC1 directly: {dmarc[0]}"
    if values.get("p") not in ("quarantine", "reject"):
        return False, f"p={values.get('p')} (TR-03182 requires quarantine or reject): {dmarc[0]}"
    if "rua" not in values:
        return False, f"no rua= (TR-03182 requires aggregate reports): {dmarc[0]}"
    return True, dmarc[0]


def dkim_key_kind(value: str) -> str | None:
    """'rsa' or 'ed25519' for a usable DKIM key record, None otherwise."""
    tags = {}
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        if sep:
            tags[key.strip()] = val.strip().replace(" ", "")
    if tags.get("v", "DKIM1") != "DKIM1" or not tags.get("p"):
        return None
    return tags.get("k", "rsa")


def now_utc() -> datetime:
    return datetime.now(UTC)
