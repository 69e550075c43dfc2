"""What the mailward.io models share: name and address types, validators, the model base.

Every rule exists twice on purpose (see v1alpha1.py): once in the generated CRD, once as pydantic
validation. The types here carry both.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# RFC 1035 §2.3.1 host names in A-label form (IDNs as xn--), lower case so that two spellings of
# one name cannot both be listed; the last label starts with a letter, so an IPv4 literal is not
# mistaken for a host name. Length limits: 63 per label here, 253 in total by maxLength.
HOSTNAME_PATTERN = r"^(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$"
HOSTNAME_MAX_LENGTH = 253
# A Kubernetes object name (DNS-1123 subdomain), for references to Secrets and providers.
OBJECT_NAME_PATTERN = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"
# RFC 8460 §3: commas and exclamation marks separate URIs and must be percent-encoded inside one.
REPORT_URI_PATTERN = r"^(?:mailto:[^\s,!;@]+@[^\s,!;@]+|https://[^\s,!;]+)$"
DURATION_PATTERN = r"^(?:[0-9]+(?:ms|s|m|h))+$"
COMPLIANCE_INTERVAL_MIN_SECONDS = 60
COMPLIANCE_INTERVAL_MAX_SECONDS = 7 * 24 * 3600

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as `1h30m` (the form CEL's `duration()` reads)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m or 1h30m")
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def _check_ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
    return value


def _check_report_uri(value: str) -> str:
    """The full RFC 8460 §3 `rua` grammar that the CRD pattern only approximates."""
    parts = urlsplit(value)
    if parts.scheme == "mailto":
        address = unquote(parts.path)
        local, _, domain = address.rpartition("@")
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a mailto: report URI takes no query or fragment")
        if not local or not re.fullmatch(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+", local):
            raise ValueError(f"{value!r}: the local part of the mailbox is not valid")
        if local.startswith(".") or local.endswith(".") or ".." in local:
            raise ValueError(f"{value!r}: the local part of the mailbox has misplaced dots")
        if not re.fullmatch(HOSTNAME_PATTERN, domain):
            raise ValueError(f"{value!r}: {domain!r} is not a lower-case host name")
        return value
    if parts.scheme == "https":
        host = parts.hostname or ""
        if not re.fullmatch(HOSTNAME_PATTERN, host):
            raise ValueError(f"{value!r}: {host!r} is not a lower-case host name")
        if parts.username or parts.password:
            raise ValueError(f"{value!r}: credentials in a report URI would be published in DNS")
        return value
    raise ValueError(f"{value!r}: only mailto: and https: report URIs exist (RFC 8460 §3)")


def _check_interval(value: str) -> str:
    seconds = parse_duration(value)
    if not COMPLIANCE_INTERVAL_MIN_SECONDS <= seconds <= COMPLIANCE_INTERVAL_MAX_SECONDS:
        raise ValueError(f"{value!r} must lie between 1m and 168h")
    return value


Hostname = Annotated[
    str,
    Field(min_length=1, max_length=HOSTNAME_MAX_LENGTH, pattern=HOSTNAME_PATTERN),
]
ObjectName = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN),
]
IPAddress = Annotated[
    str,
    Field(
        min_length=2,
        max_length=45,
        description="An IPv4 or IPv6 address.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "isIP(self)", "message": "must be an IPv4 or IPv6 address"}
            ]
        },
    ),
    AfterValidator(_check_ip_address),
]
ReportURI = Annotated[
    str,
    Field(
        min_length=8,
        max_length=512,
        pattern=REPORT_URI_PATTERN,
        description="A report URI: `mailto:` with one mailbox, or `https:`.",
    ),
    AfterValidator(_check_report_uri),
]
Duration = Annotated[
    str,
    Field(
        min_length=2,
        max_length=32,
        pattern=DURATION_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "duration(self) >= duration('1m') && duration(self) <= duration('168h')"
                    ),
                    "message": "must lie between 1m and 168h",
                }
            ]
        },
    ),
    AfterValidator(_check_interval),
]


def bounded_duration(low: str, high: str) -> Any:
    """A duration type between `low` and `high` (Go-style, e.g. `90s`, `720h`), checked by CEL
    in the CRD and by pydantic in the operator."""
    low_s, high_s = parse_duration(low), parse_duration(high)
    message = f"must lie between {low} and {high}"

    def check(value: str) -> str:
        if not low_s <= parse_duration(value) <= high_s:
            raise ValueError(f"{value!r} {message}")
        return value

    rule = f"duration(self) >= duration('{low}') && duration(self) <= duration('{high}')"
    return Annotated[
        str,
        Field(
            min_length=2,
            max_length=32,
            pattern=DURATION_PATTERN,
            json_schema_extra={"x-kubernetes-validations": [{"rule": rule, "message": message}]},
        ),
        AfterValidator(check),
    ]


_EMPTY_DEFAULT: dict[str, Any] = {"default": {}}


def section(model: type[BaseModel]) -> Any:
    """A nested section with every field defaulted: `default: {}` in the CRD lets the API
    server fill the nested defaults when it is omitted, so `kubectl get -o yaml` shows the
    values the operator acts on; its description is the model's docstring."""
    return Field(default_factory=model, description=model.__doc__, json_schema_extra=_EMPTY_DEFAULT)


_LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


class _Model(BaseModel):
    """Common configuration: camelCase on the wire, unknown fields refused, and no coercion
    (`"yes"` is not a boolean), as the API server's schema validation would not coerce either."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


class ProviderReference(_Model):
    """A reference to the DNS provider configuration that publishes the records."""

    kind: Literal["DNSProvider", "ClusterDNSProvider"] = Field(
        default="DNSProvider",
        description=(
            "`DNSProvider` (in the referring object's namespace) or `ClusterDNSProvider` "
            "(cluster-scoped). Default `DNSProvider`."
        ),
    )
    name: ObjectName = Field(description="Name of the provider object.")
