"""`spec.mta` of a MailDomain: the Postfix MTA that mailward runs for the domain."""

from __future__ import annotations

from pydantic import Field

from mailward.api.base import ObjectName, _Model, section
from mailward.api.tlsrpt_sending import TLSReportSending

# Kubernetes resource quantities (a subset: plain numbers, milli, binary and decimal suffixes).
QUANTITY_PATTERN = r"^[0-9]+(?:\.[0-9]+)?(?:m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
STORAGE_PATTERN = r"^[0-9]+(?:Mi|Gi|Ti)$"
# An OCI image reference: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_PATTERN = (
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
DEFAULT_MTA_IMAGE = "mailward/mta:0.1.0"


class MTAResources(_Model):
    """CPU and memory of each MTA pod (requests; memory is also the limit)."""

    cpu: str = Field(
        default="100m",
        max_length=16,
        pattern=QUANTITY_PATTERN,
        description="CPU request, a Kubernetes quantity such as `100m` or `1`. Default `100m`.",
    )
    memory: str = Field(
        default="256Mi",
        max_length=16,
        pattern=QUANTITY_PATTERN,
        description="Memory request and limit, e.g. `256Mi`. Default `256Mi`.",
    )


class MTAStorage(_Model):
    """The PersistentVolume of each MTA pod: its mail queue and mailboxes survive restarts."""

    size: str = Field(
        default="1Gi",
        max_length=16,
        pattern=STORAGE_PATTERN,
        description="Size of the queue volume, e.g. `1Gi` (Mi, Gi or Ti). Default `1Gi`.",
    )
    storage_class_name: ObjectName | None = Field(
        default=None, description="StorageClass of the volume; the cluster default when unset."
    )


class MTASpec(_Model):
    """The Postfix MTA that mailward runs for the domain (a StatefulSet)."""

    enabled: bool = Field(
        default=True,
        description="Run an MTA for the domain. Disable when the MX hosts are run elsewhere.",
    )
    replicas: int = Field(
        default=1, ge=1, le=10, description="Number of MTA pods, 1 to 10. Default 1."
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description=(
            "The MTA image, built from `images/mta/` (Debian's Postfix, Unbound and the "
            "DANE-first TLS policy sidecar). Unset: the operator's own (the chart's `mta.image`, "
            f"by default `{DEFAULT_MTA_IMAGE}`), so that upgrading the operator upgrades the MTAs."
        ),
    )
    resources: MTAResources = section(MTAResources)
    storage: MTAStorage = section(MTAStorage)
    accounts_secret_name: ObjectName | None = Field(
        default=None,
        description=(
            "A Secret in the MailDomain's namespace with one key per account: the key is the "
            "local part (`alice` for alice@<domain>), the value its password. Each account may "
            "submit mail on 465/587 as itself and has a mailbox. Without it only postmaster@ "
            "and abuse@ exist and nobody can submit."
        ),
    )
    message_size_limit: int = Field(
        default=25 * 1024 * 1024,
        ge=1024 * 1024,
        le=200 * 1024 * 1024,
        description="Largest message accepted, in bytes: 1 MiB to 200 MiB. Default 25 MiB.",
    )
    hide_submission_client: bool = Field(
        default=True,
        description=(
            "Drop the submitting client's address and reverse name from the Received header "
            "of submitted mail (RFC 5321 §7.6). Default true."
        ),
    )
    mta_sts_fallback: bool = Field(
        default=True,
        description=(
            "Authenticate outbound TLS by MTA-STS (RFC 8461) for destinations that have no "
            "DNSSEC-signed TLSA records; DANE always wins where it exists. Default true."
        ),
    )
    tls_reports: TLSReportSending = section(TLSReportSending)
    host_network: bool = Field(
        default=False,
        description=(
            "Run the MTA pods on the node's network (`hostNetwork: true`), as bare-metal mail "
            "servers do to see each client's own address (RFC 5321 §7.9) without a load "
            "balancer. Postfix then binds exactly the addresses in `spec.mx[].addresses` (at "
            "least one is required), which must be configured on the node; the pod's own "
            "listeners (validating resolver on 53, TLS policy socketmap, MTA-STS resolver) bind "
            "the first of them, and no two MTA pods of the domain share a node. Kubernetes "
            "NetworkPolicies do not apply to such pods: protect the ports with the host's "
            "firewall. Default false."
        ),
    )


# Postfix on the host network binds exactly the MX addresses: with none it would bind nothing.
HOST_NETWORK_NEEDS_ADDRESSES = (
    "spec.mta.hostNetwork requires at least one address in spec.mx[].addresses"
)
