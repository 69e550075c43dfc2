"""The mailward API: pydantic models of the custom resources, and the CRDs generated from them.

The models are the single source of the schema. `crds/` is generated from them (`make crds`), and
the operator validates every object with the same models again, so the admission-time schema and
the operator can never disagree silently.
"""

from mailward.api.v1alpha1 import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    Condition,
    MailDomainSpec,
    MailDomainStatus,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "PLURAL",
    "Condition",
    "MailDomainSpec",
    "MailDomainStatus",
]
