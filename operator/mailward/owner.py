"""The object that owns what mailward creates: a MailDomain or a MailServer.

One identity for every use: the DNS registry records name it (plan/records.py), rendered
objects carry it as an owner reference (the garbage collector deletes them with it), and the
watches of those objects name it back when someone deletes or edits one (adapters/observed.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailward.api.v1alpha1 import API_GROUP, API_VERSION, KIND


@dataclass(frozen=True)
class Owner:
    namespace: str
    name: str
    uid: str
    kind: str = KIND

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def reference(self, *, controller: bool = True) -> dict[str, object]:
        """The owner reference. Objects shared by several owners (a namespace's collector)
        name each of them, none as their controller."""
        reference: dict[str, object] = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
        }
        if controller:
            reference.update(controller=True, blockOwnerDeletion=True)
        return reference
