"""The demo's MTA: the local stand-in for the kubelet that the local control plane lacks.

`start_demo_mta` reads what the operator wrote to the API server for a MailDomain (the
StatefulSet, its ConfigMap, the TLS Secret and the accounts Secret), starts a real Postfix on
loopback from exactly those configuration files (only the paths and the listening address are
moved, by `apply_layout`), waits until it answers on port 25, and then writes the StatefulSet's
status from that process's real state, as a kubelet and the StatefulSet controller would:
one ready replica when Postfix answers with the configuration the pod template names.

Everything it starts has a pid file under `state_dir`, so `mailward stack down` stops it.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from mailward.localstack._process import ManagedProcess, StackError, stop_all
from mailward.localstack.postfix import LocalPostfix, local_layout
from mailward.render.mta_objects import ACCOUNTS_DIR, CONFIG_HASH_ANNOTATION, Owner, mta_name
from mailward.render.postfix import SMTP_PORT, apply_layout

TLS_POLICY_PORT = 8461


def start_demo_mta(
    state_dir: Path,
    kubeconfig: Path,
    *,
    namespace: str = "default",
    maildomain: str = "example",
    address: str = "127.77.0.25",
    resolver: str = "127.77.0.54",
    timeout: float = 120.0,
) -> str:
    """Run the MailDomain's MTA on `address`; returns a line for the demo's output."""
    state_dir = state_dir.resolve()
    stop_all(state_dir)  # an earlier run's Postfix and sidecar
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        return _start(api, state_dir, namespace, maildomain, address, resolver, timeout)
    finally:
        api.close()


def _start(
    api: client.ApiClient,
    state_dir: Path,
    namespace: str,
    maildomain: str,
    address: str,
    resolver: str,
    timeout: float,
) -> str:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    name = mta_name(Owner(maildomain, namespace, ""))
    statefulset = _wait_for(
        lambda: _read(apps.read_namespaced_stateful_set, name, namespace),
        f"StatefulSet {namespace}/{name} (written by the operator)",
        timeout,
    )
    pod = statefulset.spec.template
    volumes = {v.name: v for v in pod.spec.volumes}
    configmap = _wait_for(
        lambda: _read(
            core.read_namespaced_config_map, volumes["config"].config_map.name, namespace
        ),
        "the MTA's ConfigMap",
        timeout,
    )
    # The volume's items put each ConfigMap key back at its path, exactly as in the pod.
    files = {item.path: configmap.data[item.key] for item in volumes["config"].config_map.items}
    tls = core.read_namespaced_secret(volumes["tls"].secret.secret_name, namespace)
    accounts: dict[str, dict[str, str]] = {}
    postfix_container = next(c for c in pod.spec.containers if c.name == "postfix")
    for mount in postfix_container.volume_mounts or []:
        if mount.name == "accounts":
            secret = core.read_namespaced_secret(volumes["accounts"].secret.secret_name, namespace)
            domain = mount.mount_path.removeprefix(f"{ACCOUNTS_DIR}/")
            accounts[domain] = {
                key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()
            }

    mta_dir = state_dir / "postfix"
    layout = local_layout(mta_dir, address, policy_socketmap=f"inet:{address}:{TLS_POLICY_PORT}")
    postfix = LocalPostfix(mta_dir, layout, resolver=resolver)
    tls_data = tls.data or {}
    postfix.install_files(
        apply_layout(files, layout),
        tls_chain_pem=base64.b64decode(tls_data["tls.crt"]),
        tls_key_pem=base64.b64decode(tls_data["tls.key"]),
        accounts=accounts,
    )
    if any(c.name == "tls-policy" for c in pod.spec.containers):
        sidecar = ManagedProcess(
            "tls-policy",
            [
                sys.executable,
                "-m",
                "mailward.sidecars.tlspolicy",
                "--listen",
                f"{address}:{TLS_POLICY_PORT}",
                "--nameserver",
                resolver,
            ],
            state_dir / "sidecars",
        )
        sidecar.start()
    postfix.start()
    banner = _wait_for(lambda: _banner(address), f"Postfix answering on {address}:25", 30)

    # The kubelet's and the StatefulSet controller's part: report what really runs.
    running_hash = _digest(files)
    template_hash = (pod.metadata.annotations or {}).get(CONFIG_HASH_ANNOTATION, "")
    up_to_date = running_hash == template_hash
    revision = f"{name}-{template_hash[:10]}"
    status: dict[str, Any] = {
        "observedGeneration": statefulset.metadata.generation,
        "replicas": 1,
        "readyReplicas": 1 if postfix.is_running() else 0,
        "availableReplicas": 1 if postfix.is_running() else 0,
        "currentReplicas": 1,
        "updatedReplicas": 1 if up_to_date else 0,
        "currentRevision": revision if up_to_date else f"{name}-{running_hash[:10]}",
        "updateRevision": revision,
    }
    apps.patch_namespaced_stateful_set_status(name, namespace, {"status": status})
    return (
        f"MTA {namespace}/{name}: Postfix pid {postfix.master_pid()} on {address} "
        f"(25/465/587) from ConfigMap {configmap.metadata.name}, banner {banner!r}, "
        f"log {layout.maillog_file}"
    )


def _digest(files: dict[str, str]) -> str:
    # The same digest as PostfixConfig.digest(), computed over the files actually started.
    h = hashlib.sha256()
    for file_name, text in sorted(files.items()):
        h.update(file_name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def _read(reader: Any, name: str, namespace: str) -> Any:
    try:
        return reader(name, namespace)
    except client.exceptions.ApiException as error:
        if error.status == 404:
            return None
        raise


def _banner(address: str) -> str | None:
    try:
        with socket.create_connection((address, SMTP_PORT), timeout=2) as sock:
            return sock.recv(512).decode(errors="replace").strip()
    except OSError:
        return None


def _wait_for(probe: Any, what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    """`python -m mailward.localstack.demo_mta`, run by scripts/demo.sh after the example."""
    import argparse
    import os

    parser = argparse.ArgumentParser(description=start_demo_mta.__doc__)
    parser.add_argument("--state-dir", type=Path, default=Path(".local/stack/mta"))
    parser.add_argument("--kubeconfig", type=Path, default=Path(os.environ.get("KUBECONFIG", "")))
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--maildomain", default="example")
    parser.add_argument("--address", default="127.77.0.25")
    parser.add_argument("--resolver", default="127.77.0.54")
    args = parser.parse_args(argv)
    try:
        line = start_demo_mta(
            args.state_dir,
            args.kubeconfig,
            namespace=args.namespace,
            maildomain=args.maildomain,
            address=args.address,
            resolver=args.resolver,
        )
    except StackError as error:
        print(f"demo MTA: {error}", file=sys.stderr)
        return 2
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
