"""Generate CustomResourceDefinitions from the pydantic models.

A CRD needs a *structural* OpenAPI v3 schema: no `$ref`, no `anyOf` carrying types, no
`additionalProperties: false`, a `type` on every node. pydantic's JSON Schema is close, so this
module rewrites it node by node instead of keeping a second, hand-written schema that could drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mailward.api import v1alpha1
from mailward.api.chart_values import values_schema_text

JSONSchema = dict[str, Any]

# Keys that JSON Schema allows but a structural CRD schema refuses or does not need.
_DROPPED_KEYS = {"title", "additionalProperties", "$defs", "examples"}


def structural_schema(model: type[BaseModel], *, defaults: bool = True) -> JSONSchema:
    """The model's JSON Schema (by alias, validation mode) rewritten into structural form.

    Without `defaults`, no `default` is emitted: the status is written by the operator alone,
    and server-side defaults there would only make the stored status differ from the written one.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, JSONSchema] = raw.get("$defs", {})
    schema = _rewrite(raw, definitions)
    return schema if defaults else _without_defaults(schema)


def _without_defaults(node: JSONSchema) -> JSONSchema:
    out = {k: v for k, v in node.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {n: _without_defaults(s) for n, s in out["properties"].items()}
    if "items" in out:
        out["items"] = _without_defaults(out["items"])
    return out


def _rewrite(node: JSONSchema, definitions: dict[str, JSONSchema]) -> JSONSchema:
    node = dict(node)
    if "$ref" in node:
        # pydantic puts a field's description and default next to the reference; they describe
        # the field and win over the referenced model's own docstring.
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
        return _rewrite(node, definitions)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {len(branches)} types structurally")
        del node["anyOf"]
        node = {**_rewrite(branches[0], definitions), **node}
        if node.get("default", ...) is None:
            del node["default"]
    out: JSONSchema = {}
    for key, value in node.items():
        if key == "additionalProperties" and isinstance(value, dict):
            # A map (`dict[str, X]`): its values' schema; `false` (extra="forbid") is dropped,
            # a structural schema prunes unknown fields by itself.
            out[key] = _rewrite(value, definitions)
            continue
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _rewrite(sub, definitions) for name, sub in value.items()}
        elif key == "items":
            out[key] = _rewrite(value, definitions)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "const" in out:
        out["enum"] = [out.pop("const")]
        out.setdefault("type", "string")
    if "properties" in out:
        out["type"] = "object"
    return out


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: tuple[str, ...] = (),
    cluster: bool = False,
    description: str,
    spec_model: type[BaseModel],
    status_model: type[BaseModel] | None = None,
    columns: list[dict[str, Any]],
) -> JSONSchema:
    """One mailward.io CRD, version v1alpha1, its schema generated from the models."""
    names: JSONSchema = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": singular,
    }
    if short_names:
        names["shortNames"] = list(short_names)
    names["categories"] = ["mailward"]
    properties: JSONSchema = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": structural_schema(spec_model),
    }
    version: JSONSchema = {"name": v1alpha1.API_VERSION, "served": True, "storage": True}
    if status_model is not None:
        properties["status"] = structural_schema(status_model, defaults=False)
        # The one default of a status: a resource the operator has not written yet reads as
        # generation 0 observed, which kstatus (Flux, kubectl) calls InProgress. Without it
        # a new resource, status-less until the first pass, reads as Current.
        properties["status"]["default"] = {"observedGeneration": 0}
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = columns
    version["schema"] = {
        "openAPIV3Schema": {
            "type": "object",
            "description": description,
            "required": ["spec"],
            "properties": properties,
        }
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{v1alpha1.API_GROUP}"},
        "spec": {
            "group": v1alpha1.API_GROUP,
            "scope": "Cluster" if cluster else "Namespaced",
            "names": names,
            "versions": [version],
        },
    }


def maildomain_crd() -> JSONSchema:
    return _crd(
        kind=v1alpha1.KIND,
        plural=v1alpha1.PLURAL,
        singular=v1alpha1.SINGULAR,
        short_names=v1alpha1.SHORT_NAMES,
        description=(
            "A mail domain that mailward makes secure by standard (BSI TR-03108): MTA, DNS "
            "records, MTA-STS policy, TLS reporting and continuous compliance checking."
        ),
        spec_model=v1alpha1.MailDomainSpec,
        status_model=v1alpha1.MailDomainStatus,
        columns=v1alpha1.MailDomainResource.printer_columns,
    )


def mailserver_crd() -> JSONSchema:
    from mailward.api import mailserver

    return _crd(
        kind=mailserver.MAILSERVER_KIND,
        plural=mailserver.MAILSERVER_PLURAL,
        singular=mailserver.MAILSERVER_SINGULAR,
        short_names=mailserver.MAILSERVER_SHORT_NAMES,
        description=(
            "An MTA fleet (Postfix pods behind a few MX names) that serves every MailDomain "
            "attached to it and allowed by it."
        ),
        spec_model=mailserver.MailServerSpec,
        status_model=mailserver.MailServerStatus,
        columns=mailserver.MailServerResource.printer_columns,
    )


def dns_provider_crd(*, cluster: bool) -> JSONSchema:
    """DNSProvider (namespaced) or ClusterDNSProvider, like cert-manager's issuers."""
    from mailward.api import dnsprovider

    if cluster:
        kind = dnsprovider.CLUSTER_DNS_PROVIDER_KIND
        plural = dnsprovider.CLUSTER_DNS_PROVIDER_PLURAL
        spec_model: type[BaseModel] = dnsprovider.ClusterDNSProviderSpec
    else:
        kind, plural = dnsprovider.DNS_PROVIDER_KIND, dnsprovider.DNS_PROVIDER_PLURAL
        spec_model = dnsprovider.DNSProviderSpec
    return _crd(
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        cluster=cluster,
        description=(spec_model.__doc__ or "").strip(),
        spec_model=spec_model,
        status_model=dnsprovider.ProviderStatus,
        columns=dnsprovider.ProviderResource.printer_columns,
    )


def render_crds() -> dict[str, str]:
    """File name → YAML text of every CRD mailward defines."""
    header = "# Generated from operator/mailward/api by `make crds`; do not edit.\n"
    crds = {f"{v1alpha1.API_GROUP}_{v1alpha1.PLURAL}.yaml": maildomain_crd()}
    crds[f"{v1alpha1.API_GROUP}_mailservers.yaml"] = mailserver_crd()
    for cluster in (False, True):
        crd = dns_provider_crd(cluster=cluster)
        crds[f"{v1alpha1.API_GROUP}_{crd['spec']['names']['plural']}.yaml"] = crd
    return {
        name: header + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
        for name, crd in crds.items()
    }


# The chart installs the CRDs as templates (Helm never upgrades a chart's crds/ directory), so
# an upgrade of the release upgrades them; `crds.keep` makes `helm uninstall` leave them.
_CHART_CRD_METADATA = """  labels:
    {{- include "mailward.labels" . | nindent 4 }}
  {{- if .Values.crds.keep }}
  annotations:
    helm.sh/resource-policy: keep
  {{- end }}
"""


def render_chart_files() -> dict[str, str]:
    """Path in the chart → text: the CRDs as templates, and values.schema.json."""
    files = {}
    for name, text in render_crds().items():
        if "{{" in text:
            raise ValueError(f"{name}: a description holds '{{{{', which helm would expand")
        header, _, body = text.partition("\n")
        name_line = next(line for line in body.splitlines() if line.startswith("  name: "))
        body = body.replace(f"{name_line}\n", f"{name_line}\n{_CHART_CRD_METADATA}", 1)
        files[f"templates/crds/{name}"] = (
            f"{header}\n{{{{- if .Values.crds.install }}}}\n{body}{{{{- end }}}}\n"
        )
    files["values.schema.json"] = values_schema_text()
    return files


def _generated(chart: bool) -> dict[str, str]:
    return render_chart_files() if chart else render_crds()


def write_crds(directory: Path, *, chart: bool = False) -> list[Path]:
    """Write the CRDs into `directory` (crds/), or with `chart` the chart's generated files."""
    written = []
    for name, text in _generated(chart).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_crds(directory: Path, *, chart: bool = False) -> list[str]:
    """Names of generated files in `directory` that differ from what the models generate."""
    stale = []
    for name, text in _generated(chart).items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            stale.append(name)
    return stale
