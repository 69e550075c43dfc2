"""A BIND secondary for the local stack, whose zone transfers can be held back.

DANE key rollovers (issue #14) must wait until *every* authoritative server of a zone serves the
new TLSA RRset. To test that, some zones (`ZoneSpec(..., secondary=True)`) get a second server:
`SecondaryDNS` runs BIND with `type secondary` zones on a loopback address of its own, named
`ns2.<zone>` in the zone's NS RRset and in the parent's delegation (with glue), next to the
primary's `ns1.<zone>`. It transfers the zones from the primary with the stack's TSIG key (AXFR,
then IXFR) and serves them as transferred: the primary signs with dnssec-policy, so the data
carries its RRSIGs, NSEC records and DNSKEYs, and the secondary signs nothing itself. The primary
NOTIFYs it of every change, so it normally serves a new serial about a second after an UPDATE.

`hold(zone)` makes the secondary stop following the primary for that zone: it keeps serving the
serial it has while the primary moves on, as a secondary that lost contact with its primary (or
whose transfers fail) would. `release(zone)` lets it catch up at once.

How a zone is held: BIND's control channel (rndc, on the secondary's own address and
`control_port`, with a key of its own) and a `primaries` list that points at the secondary
*itself* while the zone is held. `hold` rewrites named.conf that way and runs `rndc reconfig`
(which re-applies zone options without reloading zone data); `release` restores the real primary
and runs `rndc reconfig` and `rndc refresh <zone>`. Why not the obvious alternatives:

- `allow-notify { none; }` does not stop anything: a BIND secondary always accepts NOTIFY from
  the addresses in the zone's `primaries` (`allow-notify` only adds senders; see
  dns_zone_notifyreceive, confirmed on bind-users 2022-11). With the primary list pointing at
  itself, the real primary is a non-primary, and its NOTIFYs are refused ("refused notify from
  non-primary" in the log).
- A long refresh interval alone leaves NOTIFY working, and a very long one could still expire
  while a slow test runs. Refreshing from itself, the zone finds no newer serial, transfers
  nothing, logs no errors and never expires (each refresh resets the expire timer).
- Changing the primary (refusing the transfer, no NOTIFY) would need a reconfiguration of the
  server the operator writes to, and the secondary would retry and log failures meanwhile.
- Stopping the process (SIGSTOP) would stop it answering queries at all: that is a dead
  server, not a lagging one.
- A firewall rule would touch the whole machine's packet filter, which other sessions share.

A transfer that is already running when `hold` is called still completes: hold before the
UPDATE that the secondary must miss (the tests check that the serial stays put).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.zone

from mailward_localstack._process import ManagedProcess, StackError, wait_until, write_private
from mailward_localstack.dns_common import (
    NAMED_LOGGING,
    TsigKey,
    _abs,
    _find_program,
    _is_ipv6,
    _program,
    axfr,
    check_config,
    check_port_free,
    ensure_loopback_address,
    named_common_options,
    query,
    remove_loopback_address,
    serial_reached,
    soa_serial,
    zone_signature_problems,
)

__all__ = ["DEFAULT_CONTROL_PORT", "SecondaryDNS"]

DEFAULT_CONTROL_PORT = 953
"""rndc's usual port, on the secondary's own loopback address (so stacks do not collide)."""

RNDC_KEY_NAME = "mailward-rndc"


def _zone_text(zone: str | dns.name.Name) -> str:
    return _abs(zone).to_text(omit_final_dot=True).lower()


class SecondaryDNS:
    """BIND serving copies of some of the primary's zones, each of which can be held back."""

    STATE_FILE = "secondary.json"

    def __init__(
        self,
        state_dir: Path,
        address: str,
        primary: tuple[str, int],
        zones: Sequence[str],
        port: int = 53,
        *,
        tsig: TsigKey,
        control_port: int = DEFAULT_CONTROL_PORT,
        rndc_key: TsigKey | None = None,
        held: Sequence[str] = (),
    ) -> None:
        """`primary` is the primary's (address, port); `tsig` the key it allows transfers with
        (the stack's TSIG key); `zones` the zones to transfer, each of which the primary must
        serve with `ZoneSpec.secondary` (so that it NOTIFYs this server)."""
        self.state_dir = Path(state_dir)
        self._address = address
        self._port = port
        self.primary_address, self.primary_port = primary
        self.zones: tuple[str, ...] = tuple(_zone_text(z) for z in zones)
        if not self.zones:
            raise ValueError("a secondary needs at least one zone")
        if len(set(self.zones)) != len(self.zones):
            raise ValueError(f"duplicate zone names in {self.zones}")
        self.tsig = tsig
        self.control_port = control_port
        self.rndc_key = rndc_key or TsigKey.generate(RNDC_KEY_NAME)
        self._held: set[str] = {self._known(z) for z in held}
        self._added_address = False
        self.process = ManagedProcess(
            "named-secondary",
            [_program("named"), "-f", "-c", str(self.conf_file)],
            self.state_dir,
        )

    # -- accessors ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self._address

    @property
    def port(self) -> int:
        return self._port

    @property
    def conf_file(self) -> Path:
        return self.state_dir / "named.conf"

    @property
    def keys_file(self) -> Path:
        """The transfer key and the control channel's key, as BIND `key` statements (0600)."""
        return self.state_dir / "keys.conf"

    @property
    def rndc_conf_file(self) -> Path:
        return self.state_dir / "rndc.conf"

    @property
    def work_dir(self) -> Path:
        """BIND's `directory`: the transferred zones (text files) and their journals."""
        return self.state_dir / "named"

    @property
    def held_zones(self) -> frozenset[str]:
        """The zones held now (by this object or by another attached to the same state)."""
        self._load_held()
        return frozenset(self._held)

    def is_held(self, zone: str | dns.name.Name) -> bool:
        return self._known(zone) in self.held_zones

    def _load_held(self) -> None:
        """Which zones are held is part of the state file, so that every process attached to
        the secondary agrees (the fixture's clean-up, a demo command)."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads((self.state_dir / self.STATE_FILE).read_text())
            self._held = {z for z in state["held"] if z in self.zones}

    def is_running(self) -> bool:
        return self.process.is_running()

    def _known(self, zone: str | dns.name.Name) -> str:
        name = _zone_text(zone)
        if name not in self.zones:
            raise KeyError(f"{name} is not a zone of this secondary ({', '.join(self.zones)})")
        return name

    # -- configuration ----------------------------------------------------------------------

    def _zone_stanza(self, zone: str) -> str:
        source = "transfer-source-v6" if _is_ipv6(self.address) else "transfer-source"
        if zone in self._held:
            # Held: its only primary is itself (see the module docstring).
            primaries = f"{self.address} port {self.port};"
            comment = "    # held: follows itself, so NOTIFYs from the primary are refused\n"
        else:
            primaries = f'{self.primary_address} port {self.primary_port} key "{self.tsig.name}";'
            comment = ""
        return (
            f'zone "{zone}" {{\n'
            "    type secondary;\n"
            f"{comment}"
            f"    primaries {{ {primaries} }};\n"
            f'    file "{self.work_dir / "zones" / (zone + ".db")}";\n'
            "    masterfile-format text;\n"
            f"    {source} {self.address};\n"
            f'    allow-transfer {{ key "{self.tsig.name}"; }};\n'
            "};\n"
        )

    def _named_conf(self) -> str:
        work = self.work_dir
        return (
            "# Written by mailward_localstack.dns_secondary.SecondaryDNS; rewritten on start,\n"
            "# hold and release.\n"
            f'include "{self.keys_file}";\n'
            "options {\n"
            f"{named_common_options(work, self.address, self.port)}"
            "    notify no;\n"
            "    allow-transfer { none; };\n"
            "    allow-update { none; };\n"
            "};\n"
            "controls {\n"
            f"    inet {self.address} port {self.control_port}\n"
            f'        allow {{ {self.address}; }} keys {{ "{self.rndc_key.name}"; }};\n'
            "};\n"
            f"{NAMED_LOGGING}" + "".join(self._zone_stanza(z) for z in self.zones)
        )

    def _rndc_conf(self) -> str:
        return (
            self.rndc_key.bind_statement() + "options {\n"
            f'    default-key "{self.rndc_key.name}";\n'
            f"    default-server {self.address};\n"
            f"    default-port {self.control_port};\n"
            "};\n"
        )

    def _write_config(self, *, fresh: bool) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            # Zones transferred by an earlier run may be newer than the primary's new ones.
            shutil.rmtree(self.work_dir, ignore_errors=True)
            (self.work_dir / "zones").mkdir(parents=True)
            write_private(
                self.keys_file, self.tsig.bind_statement() + self.rndc_key.bind_statement()
            )
            write_private(self.rndc_conf_file, self._rndc_conf())
        conf = self._named_conf()
        tmp = self.conf_file.with_name(f".{self.conf_file.name}.new")
        tmp.write_text(conf)
        check_config("named-checkconf", tmp)
        tmp.replace(self.conf_file)
        self._save_state()

    def _save_state(self) -> None:
        state = {
            "address": self.address,
            "port": self.port,
            "primary": [self.primary_address, self.primary_port],
            "zones": list(self.zones),
            "tsig": self.tsig.to_dict(),
            "rndc_key": self.rndc_key.to_dict(),
            "control_port": self.control_port,
            "held": sorted(self._held),
            "added_loopback_address": self._added_address,
        }
        write_private(self.state_dir / self.STATE_FILE, json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, state_dir: Path) -> SecondaryDNS:
        """The secondary described in `state_dir` (started by another process, or stopped)."""
        state: dict[str, Any] = json.loads((Path(state_dir) / cls.STATE_FILE).read_text())
        primary_address, primary_port = state["primary"]
        obj = cls(
            state_dir,
            state["address"],
            (primary_address, int(primary_port)),
            state["zones"],
            state["port"],
            tsig=TsigKey.from_dict(state["tsig"]),
            control_port=int(state["control_port"]),
            rndc_key=TsigKey.from_dict(state["rndc_key"]),
            held=state.get("held", ()),
        )
        obj._added_address = bool(state.get("added_loopback_address"))
        return obj

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start BIND; return once its control channel answers and every zone serves the
        primary's current serial. Zones recorded as held (`attach` of a stopped secondary) are
        transferred first and held again after: a held zone has no primary to load it from."""
        deadline = time.monotonic() + timeout
        if self.process.is_running():
            raise StackError(f"the secondary is already running (pid file {self.process.pid_file})")
        held, self._held = self._held, set()
        self._added_address = ensure_loopback_address(self.address)
        try:
            check_port_free(self.address, self.port, "the BIND secondary")
            check_port_free(self.address, self.control_port, "the BIND secondary's rndc channel")
            self._write_config(fresh=True)
            self.process.start()
            wait_until(
                lambda: bool(self.rndc("status", timeout=1.0)),
                timeout=max(0.1, deadline - time.monotonic()),
                what="the BIND secondary's control channel (rndc status)",
                interval=0.1,
                process=self.process,
            )
            for zone in self.zones:
                self.wait_synced(zone, timeout=max(0.1, deadline - time.monotonic()))
            for zone in sorted(held):
                self.hold(zone)
        except BaseException:
            self.stop()
            raise
        self._save_state()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop BIND and remove the loopback alias if `start` added it."""
        self.process.stop(timeout)
        if self._added_address:
            remove_loopback_address(self.address)
            self._added_address = False
            if (self.state_dir / self.STATE_FILE).exists():
                self._save_state()

    # -- control channel ----------------------------------------------------------------------

    def rndc(self, *args: str, timeout: float = 10.0) -> str:
        """Run one rndc command against this server; its output, StackError if it fails."""
        result = subprocess.run(
            [
                _find_program("rndc"),
                "-c",
                str(self.rndc_conf_file),
                "-b",
                self.address,
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise StackError(
                f"rndc {' '.join(args)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def _reconfigure(self) -> None:
        self._write_config(fresh=False)
        self.rndc("reconfig")

    def hold(self, zone: str | dns.name.Name) -> int:
        """Stop following the primary for `zone`; returns the serial the secondary keeps serving.

        From now on NOTIFYs from the primary are refused and refreshes find nothing newer, until
        `release`. Holding a held zone changes nothing.
        """
        name = self._known(zone)
        self._load_held()
        if name not in self._held:
            self._held.add(name)
            try:
                self._reconfigure()
            except BaseException:
                self._held.discard(name)
                raise
        serial = self.serial(name)
        if serial is None:
            raise StackError(f"the secondary does not serve {name}")
        return serial

    def release(self, zone: str | dns.name.Name) -> None:
        """Follow the primary for `zone` again, and refresh it now (`rndc refresh`): the
        secondary asks the primary's SOA and transfers what changed (IXFR) at once. Use
        `wait_synced` (or `wait_serial`) to wait for it. Releasing a zone that is not held
        refreshes it."""
        name = self._known(zone)
        self._load_held()
        if name in self._held:
            self._held.discard(name)
            try:
                self._reconfigure()
            except BaseException:
                self._held.add(name)
                raise
        self.rndc("refresh", name)

    @contextlib.contextmanager
    def held(self, zone: str | dns.name.Name) -> Iterator[int]:
        """`hold(zone)` for the `with` block (yields the held serial), `release(zone)` after."""
        serial = self.hold(zone)
        try:
            yield serial
        finally:
            self.release(zone)

    # -- queries --------------------------------------------------------------------------------

    def serial(self, zone: str | dns.name.Name) -> int | None:
        """The SOA serial the secondary serves for `zone` now (None if it serves none)."""
        return soa_serial(self.address, self.port, zone)

    def primary_serial(self, zone: str | dns.name.Name) -> int | None:
        """The SOA serial the primary serves for `zone` now."""
        return soa_serial(self.primary_address, self.primary_port, zone)

    def wait_serial(self, zone: str | dns.name.Name, serial: int, timeout: float = 10.0) -> float:
        """Wait until the secondary serves `serial` or a newer one (RFC 1982) for `zone`;
        returns the seconds it took, raises StackError after `timeout`."""
        name = self._known(zone)
        start = time.monotonic()
        seen: list[int | None] = [None]

        def reached() -> bool:
            seen[0] = self.serial(name)
            return seen[0] is not None and serial_reached(seen[0], serial)

        try:
            wait_until(
                reached,
                timeout=timeout,
                what=f"the secondary to serve serial {serial} of {name}",
                interval=0.05,
                process=self.process,
            )
        except StackError as e:
            raise StackError(f"{e}\n(the last serial it served: {seen[0]})") from None
        return time.monotonic() - start

    def wait_synced(self, zone: str | dns.name.Name, timeout: float = 10.0) -> float:
        """Wait until the secondary serves the serial the primary serves now; the seconds it
        took."""
        name = self._known(zone)
        start = time.monotonic()

        def synced() -> bool:
            primary = self.primary_serial(name)
            return primary is not None and self.serial(name) == primary

        wait_until(
            synced,
            timeout=timeout,
            what=f"the secondary to serve the primary's serial of {name}",
            interval=0.05,
            process=self.process,
        )
        return time.monotonic() - start

    def query(self, name: str | dns.name.Name, rdtype: str, **kwargs: Any) -> dns.message.Message:
        """A query to the secondary, without recursion unless asked for."""
        kwargs.setdefault("recursion_desired", False)
        return query(self.address, self.port, name, rdtype, **kwargs)

    def axfr(self, zone: str | dns.name.Name, *, timeout: float = 5.0) -> dns.zone.Zone:
        """The zone as the secondary serves it, transferred with the stack's TSIG key."""
        return axfr(self.address, self.port, self._known(zone), tsig=self.tsig, timeout=timeout)

    def signature_problems(self, zone: str | dns.name.Name) -> list[str]:
        """`zone_signature_problems` of the zone as the secondary serves it."""
        return zone_signature_problems(self.axfr(zone))
