"""Names of the Secrets mailward serves certificates from (pure)."""

from __future__ import annotations

import hashlib

_SUFFIX = "-mailward-tls"
_NAME_MAX = 253


def serving_secret_name(maildomain: str) -> str:
    """The `kubernetes.io/tls` Secret, in the MailDomain's namespace, that its MTA pods and its
    namespace's TLSRPT collector serve: mailward's own copy, changed only by the rollover."""
    name = f"{maildomain}{_SUFFIX}"
    if len(name) <= _NAME_MAX:
        return name
    digest = hashlib.sha256(maildomain.encode()).hexdigest()[:10]
    return f"{maildomain[: _NAME_MAX - len(_SUFFIX) - 11]}-{digest}{_SUFFIX}"
