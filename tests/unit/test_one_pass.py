"""Two passes over one MailDomain never overlap (the resync timer and a change handler)."""

from __future__ import annotations

import asyncio

from mailward.domains import OnePassAtATime


def test_passes_over_one_object_run_one_after_the_other_and_leave_nothing_behind() -> None:
    passes = OnePassAtATime()
    log: list[str] = []

    async def one(uid: str, label: str) -> None:
        async with passes.of(uid):
            log.append(f"{label} in")
            await asyncio.sleep(0.01)
            log.append(f"{label} out")

    async def main() -> None:
        await asyncio.gather(one("a", "first"), one("a", "second"), one("b", "other"))

    asyncio.run(main())
    assert log.index("first out") < log.index("second in")
    assert log.index("other in") < log.index("first out"), "other objects are not held up"
    assert passes._locks == {}
    assert passes._users == {}
