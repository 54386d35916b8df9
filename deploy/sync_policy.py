#!/usr/bin/env python3
"""Copies the default policy into the deployment files that embed it.

  deploy/istio/wasmplugin.yaml   spec.pluginConfig, as YAML (the last key of
                                 the file), with the Istio names of the
                                 counter service in `global` and
                                 `trusted_hops` 1 (behind the ingress gateway)
  deploy/compose/envoy.yaml      the Wasm filter's configuration, as JSON
                                 between the `# policy: begin` and
                                 `# policy: end` lines, with one instance

Run it after editing policies/mcp-gateway.json; `--check` only reports
whether the files are current (exit 1 when not). tests/deploy.rs checks the
result: each embedded policy must equal the default one except for the
fields set below.

Usage: sync_policy.py [--check] [--policy policies/mcp-gateway.json]
"""

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WASMPLUGIN = REPO / "deploy" / "istio" / "wasmplugin.yaml"
COMPOSE_ENVOY = REPO / "deploy" / "compose" / "envoy.yaml"

# Under Istio the counter service's Envoy cluster is named after its
# Kubernetes Service (deploy/k8s/counter.yaml): outbound|port||fqdn.
ISTIO_GLOBAL = {
    "cluster": "outbound|8790||sluice-counter.mcp.svc.cluster.local",
    "authority": "sluice-counter.mcp.svc.cluster.local",
    "secret_env": "SLUICE_COUNTER_SECRET",
}
# Behind the Istio ingress gateway, which appends the address it saw to
# X-Forwarded-For: the gateway's sidecar trusts that one hop. (Where Envoy
# itself is the edge, as in compose and `make run`, the default 0 stands.)
ISTIO_TOP = {"trusted_hops": 1}
# docker-compose runs one Envoy. Both deployments hand the counter
# service's secret to the filter through Envoy's environment
# (vm_config.environment_variables / WasmPlugin vmConfig.env).
COMPOSE_GLOBAL = {"expected_instances": 1, "secret_env": "SLUICE_COUNTER_SECRET"}

PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*|[0-9]+(ms|s|m|h|d)")
# Plain scalars that YAML 1.1 (Kubernetes' parser) reads as something else.
YAML11_SPECIAL = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if PLAIN.fullmatch(v) and v.lower() not in YAML11_SPECIAL:
        return v
    return json.dumps(v)


def flow(v):
    """One line of YAML flow style."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{scalar(k)}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return scalar(v)


def block(obj, indent, top=True):
    """A mapping in block style. At the top, mappings and lists of mappings
    are blocks; below, every value is one line of flow style, so each rule
    field is one line."""
    pad = " " * indent
    lines = []
    for key, v in obj.items():
        if top and isinstance(v, dict) and v:
            lines.append(f"{pad}{scalar(key)}:")
            lines.extend(block(v, indent + 2, False))
        elif top and isinstance(v, list) and v and all(isinstance(x, dict) and x for x in v):
            lines.append(f"{pad}{scalar(key)}:")
            for item in v:
                inner = block(item, indent + 2, False)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
        else:
            lines.append(f"{pad}{scalar(key)}: {flow(v)}")
    return lines


def with_global(policy, overrides):
    """The policy with `overrides` set in `global`; a new field goes right
    after the one before it in `overrides` (or first)."""
    out = json.loads(json.dumps(policy))
    glob = out.setdefault("global", {})
    for key, value in overrides.items():
        items = [(k, v) for k, v in glob.items() if k != key]
        keys = [k for k, _ in items]
        at = 0 if key not in glob else list(glob).index(key)
        prev = list(overrides)[: list(overrides).index(key)]
        if key not in glob and prev and prev[-1] in keys:
            at = keys.index(prev[-1]) + 1
        items.insert(at, (key, value))
        glob.clear()
        glob.update(items)
    return out


def with_top(policy, overrides):
    """The policy with top-level fields of `overrides` replaced in place."""
    out = dict(policy)
    for key, value in overrides.items():
        if key not in out:
            raise SystemExit(f"the default policy has no {key!r} to override")
        out[key] = value
    return out


def compact_json(policy):
    """JSON with one top-level field, and one rule, per line."""
    lines = []
    for key, value in policy.items():
        if key == "rules" and isinstance(value, list):
            rules = ",\n".join("    " + json.dumps(r) for r in value)
            lines.append(f'  "rules": [\n{rules}\n  ]')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}"


def wasmplugin_text(current, policy):
    head, sep, _ = current.partition("\n  pluginConfig:\n")
    if not sep:
        raise SystemExit(f"{WASMPLUGIN}: no '  pluginConfig:' line")
    body = block(with_top(with_global(policy, ISTIO_GLOBAL), ISTIO_TOP), 4)
    return head + sep + "\n".join(body) + "\n"


def compose_text(current, policy):
    m = re.search(r"^( *)# policy: begin[^\n]*\n(.*?)^\1# policy: end", current, re.M | re.S)
    if not m:
        raise SystemExit(f"{COMPOSE_ENVOY}: no '# policy: begin' ... '# policy: end' lines")
    pad = m.group(1)
    doc = compact_json(with_global(policy, COMPOSE_GLOBAL))
    body = f"{pad}value: |\n" + "".join(f"{pad}  {line}\n" for line in doc.splitlines())
    return current[: m.start(2)] + body + current[m.end(2) :]


def main(argv):
    parser = argparse.ArgumentParser(description="Copy the default policy into deploy/.")
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "mcp-gateway.json")
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    policy = json.loads(args.policy.read_text())
    stale = []
    for path, render in ((WASMPLUGIN, wasmplugin_text), (COMPOSE_ENVOY, compose_text)):
        current = path.read_text()
        new = render(current, policy)
        if new != current:
            stale.append(path.relative_to(REPO))
            if not args.check:
                path.write_text(new)
    for path in stale:
        print(f"{'stale' if args.check else 'updated'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
