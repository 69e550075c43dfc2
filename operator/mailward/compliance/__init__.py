"""Compliance checking of a mail domain from outside (BSI TR-03108 v2.0, TR-03116-4, RFCs).

`check_domain()` probes one domain and returns a `Report`; `mailward check` prints it and the
operator's compliance part writes it onto the MailDomain. See `catalog.py` for the checks,
`gather.py` for what is probed, `checks/` for how it is judged, `record.py` (not imported
here: it needs pydantic) for observations as JSON.
"""

from mailward.compliance.catalog import CATALOG, DEFAULT_PROFILE, PROFILES
from mailward.compliance.checks import judge
from mailward.compliance.engine import Engine, check_domain
from mailward.compliance.model import CheckResult, Level, Report, Result
from mailward.compliance.observations import DomainObservations

__all__ = [
    "CATALOG",
    "DEFAULT_PROFILE",
    "PROFILES",
    "CheckResult",
    "DomainObservations",
    "Engine",
    "Level",
    "Report",
    "Result",
    "check_domain",
    "judge",
]
