"""The operator with one part broken on purpose, for the containment test.

    python -m tests.faulty_operator PART run ...

The part's `reconcile` raises before doing anything; everything else is the real operator
(`mailward.cli.main`). Test code only: nothing in the product package knows about it.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from mailward.cli import main
from mailward.parts import PartResult, ReconcileContext
from mailward.parts.certificate import CertificatePart
from mailward.parts.dns import DNSPart
from mailward.parts.mta import MTAPart
from mailward.parts.mtasts import MTASTSPart
from mailward.parts.tlsrpt import TLSRptPart

PARTS = {part.name: part for part in (CertificatePart, MTAPart, MTASTSPart, TLSRptPart, DNSPart)}


class InjectedFailure(RuntimeError):
    pass


async def _broken(self: object, ctx: ReconcileContext) -> PartResult:
    raise InjectedFailure(f"injected by the test for {ctx.namespace}/{ctx.name}")


def run(argv: list[str]) -> NoReturn:
    name, *rest = argv
    PARTS[name].reconcile = _broken  # type: ignore[assignment,method-assign]
    sys.exit(main(rest))


if __name__ == "__main__":
    run(sys.argv[1:])
