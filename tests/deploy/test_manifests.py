"""deploy/kubernetes: both variants render with a real kustomize, every object validates against
the Kubernetes JSON schemas (bundled with kubernetes-validate: offline), and the invariants the
deployment rests on hold (DESIGN §8, docs/deploy.md)."""

from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path
from unittest import mock

import kubernetes_validate
import pytest

from tests.deploy.rendering import (
    BASE,
    COMPONENT,
    VAR_REFERENCE,
    VARIANTS,
    Obj,
    component_workload,
    containers,
    env_entries,
    env_entry,
    flag_value,
    named,
    of_kind,
    only_container,
    pod_labels,
    pod_spec,
    port_of,
    render,
    selects,
    workloads,
)
from voicewire.flags import SECRETS_ENV, ConfigError, routing_keys

# The oldest Kubernetes the manifests promise to work on, and the newest schemas bundled.
SCHEMA_VERSIONS = ("1.29", kubernetes_validate.latest_version())
IMAGE = "registry.example.com/voicewire:0.1.0"  # what overlays/example sets
HOSTNETWORK = "example-hostnetwork"


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def objects(variant: str) -> list[Obj]:
    return render(VARIANTS[variant])


def voicewire_containers(objects: list[Obj]) -> list[tuple[Obj, Obj]]:
    """(workload, container) for every container running the voicewire image."""
    return [
        (w, c)
        for w in workloads(objects)
        for c in containers(w)
        if c["image"].split("/")[-1].split(":")[0] == "voicewire"
    ]


# --- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*sorted(VARIANTS), "base"])
def test_every_rendered_object_validates_against_the_kubernetes_schemas(name: str) -> None:
    objects = render(VARIANTS.get(name, BASE))
    assert len(objects) > 10
    errors = []
    for obj in objects:
        for version in SCHEMA_VERSIONS:
            where = f"{obj['kind']}/{obj['metadata']['name']} against Kubernetes {version}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{where}: {exc.message} at {list(exc.absolute_path)}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_validator_is_not_vacuous() -> None:
    """A misspelt field and a wrong type are caught (strict mode), so a pass above means
    something."""
    deployment = named(render(VARIANTS["example"]), "Deployment", "voicewire-gateway")
    assert deployment is not None
    kubernetes_validate.validate(deployment, SCHEMA_VERSIONS[0], strict=True)
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, SCHEMA_VERSIONS[0], strict=True)
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, SCHEMA_VERSIONS[0], strict=True)


# --- the relay ---------------------------------------------------------------------------------


def test_relay_is_one_udp_port_on_a_local_traffic_loadbalancer() -> None:
    objects = render(VARIANTS["example"])
    relay = component_workload(objects, "relay")
    assert relay["kind"] == "Deployment"
    relay_services = [
        s
        for s in of_kind(objects, "Service")
        if selects({"matchLabels": s["spec"]["selector"]}, pod_labels(relay))
    ]
    assert len(relay_services) == 1
    spec = relay_services[0]["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["externalTrafficPolicy"] == "Local"
    (port,) = spec["ports"]
    assert (port["protocol"], port["port"]) == ("UDP", 3478)
    # The port the Service sends to is the relay's --listen port, over UDP.
    container = only_container(relay)
    target = [
        p for p in container["ports"] if port["targetPort"] in (p["name"], p["containerPort"])
    ]
    assert len(target) == 1 and target[0]["protocol"] == "UDP"
    assert target[0]["containerPort"] == port_of(flag_value(container, "--listen"))


def test_relay_flags(objects: list[Obj]) -> None:
    relay = component_workload(objects, "relay")
    container = only_container(relay)
    assert flag_value(container, "--listen") == "0.0.0.0:3478"
    assert flag_value(container, "--internal") == "0.0.0.0:3479"
    workers = int(flag_value(container, "--workers"))
    assert workers >= 1
    # Worker i binds internal port 3479+i: each is declared, and the NetworkPolicy covers them.
    udp_ports = {p["containerPort"] for p in container["ports"] if p["protocol"] == "UDP"}
    assert {3479 + i for i in range(workers)} <= udp_ports
    # The ops HTTP server (--metrics) is what the probes and Prometheus ask.
    ops = port_of(flag_value(container, "--metrics"))
    assert port_number(container, container["livenessProbe"]["httpGet"]["port"]) == ops
    assert port_number(container, container["readinessProbe"]["httpGet"]["port"]) == ops
    annotations = relay["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ops)
    # The transceiver networks come from the shared ConfigMap.
    assert env_entry(container, "VOICEWIRE_ALLOW_TRANSCEIVERS")["valueFrom"]["configMapKeyRef"]
    assert_secrets_file_is_mounted(relay, container, flag_value(container, "--secrets-file"))


def test_hostnetwork_variant_runs_the_same_relay_on_every_node() -> None:
    objects = render(VARIANTS[HOSTNETWORK])
    relay = component_workload(objects, "relay")
    assert relay["kind"] == "DaemonSet"
    assert pod_spec(relay)["hostNetwork"] is True
    assert pod_spec(relay)["dnsPolicy"] == "ClusterFirstWithHostNet"
    # No LoadBalancer and no relay objects left over from the Deployment variant.
    assert not [s for s in of_kind(objects, "Service") if s["spec"].get("type") == "LoadBalancer"]
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        assert named(objects, kind, "voicewire-relay") is None, kind
    # The DaemonSet's relay is the Deployment's relay, kept in step by hand.
    deployment = component_workload(render(VARIANTS["example"]), "relay")
    same = ("image", "args", "env", "ports", "livenessProbe", "readinessProbe", "resources")
    for key in (*same, "securityContext", "volumeMounts"):
        assert only_container(relay)[key] == only_container(deployment)[key], key
    assert pod_spec(relay)["volumes"] == pod_spec(deployment)["volumes"]


# --- the transceiver ---------------------------------------------------------------------------


def test_transceiver_advertises_its_pod_ip(objects: list[Obj]) -> None:
    transceiver = component_workload(objects, "transceiver")
    container = only_container(transceiver)
    pod_ip = field_ref_variable(container, "status.podIP")
    udp = port_of(flag_value(container, "--udp"))
    http = port_of(flag_value(container, "--http"))
    assert env_entry(container, "VOICEWIRE_ADVERTISE")["value"] == f"$({pod_ip}):{udp}"
    assert env_entry(container, "VOICEWIRE_ADVERTISE_HTTP")["value"] == f"http://$({pod_ip}):{http}"
    assert_secrets_file_is_mounted(
        transceiver, container, env_entry(container, "VOICEWIRE_ROUTING_SECRETS_FILE")["value"]
    )
    for name in ("VOICEWIRE_CLUSTER_ID", "VOICEWIRE_REDIS_URL", "VOICEWIRE_AGENT"):
        assert env_entry(container, name)["valueFrom"]["configMapKeyRef"], name
    assert int(env_entry(container, "VOICEWIRE_MAX_SESSIONS")["value"]) >= 1


def test_transceiver_answers_name_the_relays_public_port(objects: list[Obj], variant: str) -> None:
    container = only_container(component_workload(objects, "transceiver"))
    relay_public = env_entry(container, "VOICEWIRE_RELAY_PUBLIC")
    relay = only_container(component_workload(objects, "relay"))
    listen = port_of(flag_value(relay, "--listen"))
    if variant == HOSTNETWORK:
        host_ip = field_ref_variable(container, "status.hostIP")
        assert relay_public == {"name": "VOICEWIRE_RELAY_PUBLIC", "value": f"$({host_ip}):{listen}"}
    else:
        ref = relay_public["valueFrom"]["configMapKeyRef"]
        value = config_value(objects, ref["name"], ref["key"])
        assert port_of(value) == listen


def test_termination_grace_outlasts_the_transceiver_drain(objects: list[Obj]) -> None:
    transceiver = component_workload(objects, "transceiver")
    container = only_container(transceiver)
    drain = float(env_entry(container, "VOICEWIRE_DRAIN_GRACE")["value"])
    grace = pod_spec(transceiver)["terminationGracePeriodSeconds"]
    assert grace > drain + prestop_seconds(container)
    # A rollout starts the replacement before the old pod drains.
    rolling = transceiver["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1


# --- NetworkPolicies ---------------------------------------------------------------------------


def test_only_relays_and_gateways_reach_transceivers(objects: list[Obj], variant: str) -> None:
    labels = component_labels(objects)
    rules = ingress_rules_for(objects, labels["transceiver"])
    assert rules, "no NetworkPolicy isolates the transceivers"
    allowed = set()
    for policy, rule in rules:
        peers = rule.get("from")
        assert peers, f"{policy}: an ingress rule without 'from' lets everyone in"
        ports = {(p["protocol"], p["port"]) for p in rule.get("ports", [])}
        assert ports, f"{policy}: an ingress rule without 'ports' opens every port"
        for peer in peers:
            if "ipBlock" in peer:
                # Only the hostNetwork relays, which no podSelector can match, come by address.
                assert variant == HOSTNETWORK and ports == {("UDP", 7000)}, (policy, peer)
                allowed.add(("relay", "UDP", 7000))
            elif "namespaceSelector" in peer:
                assert policy == "voicewire-allow-prometheus", (policy, peer)
                assert "podSelector" not in peer or peer["podSelector"] is not None
                assert ports <= {("TCP", 9478), ("TCP", 8081), ("TCP", 8090)}
            else:
                who = [c for c in labels if selects(peer["podSelector"], labels[c])]
                assert who and set(who) <= {"relay", "gateway"}, (policy, peer, who)
                expected = {"relay": {("UDP", 7000)}, "gateway": {("TCP", 8081)}}
                for component in who:
                    assert ports <= expected[component], (policy, component, ports)
                    allowed |= {(component, proto, port) for proto, port in ports}
    assert allowed == {("relay", "UDP", 7000), ("gateway", "TCP", 8081)}


def test_only_gateways_transceivers_and_relays_reach_redis(
    objects: list[Obj], variant: str
) -> None:
    labels = component_labels(objects)
    redis = pod_labels(redis_workload(objects))
    rules = ingress_rules_for(objects, redis)
    assert rules, "no NetworkPolicy isolates Redis"
    reach = set()
    for policy, rule in rules:
        assert rule.get("from"), policy
        ports = {(p["protocol"], p["port"]) for p in rule.get("ports", [])}
        assert ports == {("TCP", 6379)}, policy
        for peer in rule["from"]:
            if "ipBlock" in peer:  # hostNetwork relays come from the node network
                assert variant == HOSTNETWORK, (policy, peer)
                reach.add("relay")
                continue
            assert set(peer) == {"podSelector"}, (policy, peer)
            who = {c for c in labels if selects(peer["podSelector"], labels[c])}
            assert who and who <= {"gateway", "transceiver", "relay"}, (policy, who)
            reach |= who
    assert reach == {"gateway", "transceiver", "relay"}  # relays: flow recovery


def test_prometheus_namespace_is_one_configurable_selector(objects: list[Obj]) -> None:
    policy = named(objects, "NetworkPolicy", "voicewire-allow-prometheus")
    assert policy is not None
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    # It must not isolate the gateway, whose only other visitor is the Ingress controller.
    gateway = pod_labels(component_workload(objects, "gateway"))
    assert not selects(policy["spec"]["podSelector"], gateway)


# --- every pod ---------------------------------------------------------------------------------


def test_every_container_has_probes_and_resources(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container, where
            assert "readinessProbe" in container, where
            requests = container.get("resources", {}).get("requests", {})
            limits = container.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(requests), where
            assert "memory" in limits, where
    for workload, container in voicewire_containers(objects):
        where = workload["metadata"]["name"]
        liveness = container["livenessProbe"]["httpGet"]
        readiness = container["readinessProbe"]["httpGet"]
        assert (liveness["path"], readiness["path"]) == ("/healthz", "/readyz"), where
        port_number(container, liveness["port"])
        port_number(container, readiness["port"])


def test_pods_are_locked_down(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        spec = pod_spec(workload)
        where = workload["metadata"]["name"]
        # Service links would put VOICEWIRE_<SERVICE>_PORT=… into the VOICEWIRE_* namespace.
        assert spec["enableServiceLinks"] is False, where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
    for workload, container in voicewire_containers(objects):
        assert container["image"] == IMAGE, workload["metadata"]["name"]
        assert pod_spec(workload)["securityContext"]["runAsUser"] == 10001  # the Dockerfile's


def test_disruption_budgets(objects: list[Obj], variant: str) -> None:
    budgets = of_kind(objects, "PodDisruptionBudget")
    covered = {
        c
        for c, labels in component_labels(objects).items()
        for b in budgets
        if selects(b["spec"]["selector"], labels)
    }
    # A DaemonSet is not scaled through the eviction API: its relay needs no budget.
    expected = {"transceiver", "gateway"} | ({"relay"} if variant != HOSTNETWORK else set())
    assert expected <= covered


def test_labels_and_selectors_agree(objects: list[Obj]) -> None:
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "voicewire", obj["metadata"]["name"]
    templates = [pod_labels(w) for w in workloads(objects)]
    for workload in workloads(objects):
        assert selects(workload["spec"]["selector"], pod_labels(workload))
        assert {"app.kubernetes.io/name", COMPONENT} <= set(pod_labels(workload))
    for service in of_kind(objects, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        assert any(selects(selector, t) for t in templates), service["metadata"]["name"]
    for budget in of_kind(objects, "PodDisruptionBudget"):
        assert any(selects(budget["spec"]["selector"], t) for t in templates)
    for policy in of_kind(objects, "NetworkPolicy"):
        assert any(selects(policy["spec"]["podSelector"], t) for t in templates)
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if set(peer) == {"podSelector"}:
                    assert any(selects(peer["podSelector"], t) for t in templates), peer


def test_env_references_resolve(objects: list[Obj], variant: str) -> None:
    """$(VAR) expands only from variables defined earlier in env (args: from any of them);
    every ConfigMap, Secret and key that a pod names is rendered alongside it."""
    for workload in workloads(objects):
        spec = pod_spec(workload)
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            defined: list[str] = []
            for entry in env_entries(container):
                for name in VAR_REFERENCE.findall(entry.get("value", "")):
                    assert name in defined, f"{where}: {entry['name']} uses $({name}) before it"
                defined.append(entry["name"])
                source = entry.get("valueFrom", {})
                for kind, ref in (
                    ("ConfigMap", source.get("configMapKeyRef")),
                    ("Secret", source.get("secretKeyRef")),
                ):
                    if ref is not None:
                        assert ref["key"] in data_keys(objects, kind, ref["name"]), (where, ref)
            for arg in (*container.get("command", []), *container.get("args", [])):
                for name in VAR_REFERENCE.findall(arg):
                    assert name in defined, f"{where}: argument {arg!r} uses undefined $({name})"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                keys = data_keys(objects, "Secret", volume["secret"]["secretName"])
                for item in volume["secret"].get("items", []):
                    assert item["key"] in keys, (workload["metadata"]["name"], item)


def test_placeholder_secrets_are_obvious(tmp_path: Path) -> None:
    """The example's Secrets are placeholders, and relays and transceivers refuse to start with
    the routing one (docs/deploy.md says how to make real ones)."""
    objects = render(VARIANTS["example"])
    for secret in of_kind(objects, "Secret"):
        for key, value in secret.get("data", {}).items():
            assert "REPLACE_ME" in decode(value), (secret["metadata"]["name"], key)
    (secret,) = [s for s in of_kind(objects, "Secret") if "routing-secrets" in s.get("data", {})]
    placeholder = tmp_path / "routing-secrets"
    placeholder.write_text(decode(secret["data"]["routing-secrets"]))
    with mock.patch.dict(os.environ):
        os.environ.pop(SECRETS_ENV, None)
        with pytest.raises(ConfigError, match="secret hex digits"):
            routing_keys(str(placeholder))


# --- the flags against the real command line ---------------------------------------------------


def test_voicewire_containers_use_real_flags_and_variables(objects: list[Obj]) -> None:
    """Each container's arguments parse with ``voicewire``'s own parser, and so do the values of
    the variables it sets (as the flags they stand for: types and choices are checked); every
    VOICEWIRE_* variable it sets is one its service reads, or one its arguments expand."""
    from voicewire.cli import build_parser

    services = subcommands(build_parser())
    wanted = {c["args"][0] for _, c in voicewire_containers(objects)}
    assert wanted <= set(services), f"not voicewire services: {sorted(wanted - set(services))}"
    for workload, container in voicewire_containers(objects):
        service = container["args"][0]
        parser = services[service]
        env = env_entries(container)
        values = env_values(objects, env)
        flags = environment_variables(parser)
        args = expand(container["args"], values)
        from_env = [
            item for name, flag in flags.items() if name in values for item in (flag, values[name])
        ]
        try:
            parser.parse_args([*from_env, *args[1:]])
        except SystemExit:
            command = " ".join([*args[:1], *from_env, *args[1:]])
            pytest.fail(f"{workload['metadata']['name']}: `voicewire {command}` is refused")
        read = set(flags) | {"VOICEWIRE_API_KEYS", "VOICEWIRE_ROUTING_SECRETS"}
        expanded = {n for a in container["args"] for n in VAR_REFERENCE.findall(a)}
        for entry in env:
            name = entry["name"]
            if name.startswith("VOICEWIRE_"):
                assert name in read or name in expanded, f"voicewire {service} ignores {name}"


# --- helpers -----------------------------------------------------------------------------------


def component_labels(objects: list[Obj]) -> dict[str, dict[str, str]]:
    """The pod labels of each voicewire component rendered, by component."""
    labels = {}
    for workload in workloads(objects):
        template = pod_labels(workload)
        if template["app.kubernetes.io/name"] == "voicewire":
            labels[template[COMPONENT]] = template
    return labels


def redis_workload(objects: list[Obj]) -> Obj:
    (redis,) = [w for w in workloads(objects) if pod_labels(w)["app.kubernetes.io/name"] == "redis"]
    return redis


def ingress_rules_for(objects: list[Obj], labels: dict[str, str]) -> list[tuple[str, Obj]]:
    """(policy name, rule) for every ingress rule of every NetworkPolicy selecting these pods."""
    rules = []
    for policy in of_kind(objects, "NetworkPolicy"):
        if selects(policy["spec"]["podSelector"], labels):
            assert "Ingress" in policy["spec"]["policyTypes"]
            rules += [(policy["metadata"]["name"], r) for r in policy["spec"].get("ingress", [])]
    return rules


def field_ref_variable(container: Obj, field_path: str) -> str:
    for entry in env_entries(container):
        ref = entry.get("valueFrom", {}).get("fieldRef")
        if ref and ref["fieldPath"] == field_path:
            return entry["name"]
    raise AssertionError(f"{container['name']}: no variable from the downward API's {field_path}")


def port_number(container: Obj, port: int | str) -> int:
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return declared["containerPort"]
    raise AssertionError(f"{container['name']}: probe port {port} is not declared")


def prestop_seconds(container: Obj) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not command:
        return 0.0
    assert command[0] == "sleep", command
    return float(command[1])


def assert_secrets_file_is_mounted(workload: Obj, container: Obj, path: str) -> None:
    directory, _, filename = path.rpartition("/")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
    assert [i["path"] for i in volume["secret"]["items"]] == [filename]


def data_keys(objects: list[Obj], kind: str, name: str) -> set[str]:
    obj = named(objects, kind, name)
    assert obj is not None, f"{kind} {name} is not rendered"
    return set(obj.get("data", {})) | set(obj.get("stringData", {}))


def config_value(objects: list[Obj], name: str, key: str) -> str:
    obj = named(objects, "ConfigMap", name)
    assert obj is not None
    return obj["data"][key]


def decode(value: str) -> str:
    return base64.b64decode(value).decode()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def environment_variables(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The VOICEWIRE_* variables a service's flags read, and the flag each stands for: a flag's
    help ends ``[env NAME…]``."""
    flags = {}
    for action in parser._actions:
        _, found, rest = (action.help or "").rpartition("[env ")
        if found and action.option_strings:
            flags[rest.split(";")[0].rstrip("]").strip()] = action.option_strings[0]
    return flags


def expand(args: list[str], values: dict[str, str]) -> list[str]:
    return [VAR_REFERENCE.sub(lambda m: values[m.group(1)], a) for a in args]


def env_values(objects: list[Obj], env: list[Obj]) -> dict[str, str]:
    """What each variable holds in a running pod, as far as the rendered objects tell: the
    downward API's addresses are stand-ins."""
    values: dict[str, str] = {}
    for entry in env:
        source = entry.get("valueFrom", {})
        if "value" in entry:
            value = VAR_REFERENCE.sub(lambda m: values[m.group(1)], entry["value"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = config_value(objects, ref["name"], ref["key"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            obj = named(objects, "Secret", ref["name"])
            assert obj is not None
            value = decode(obj["data"][ref["key"]])
        else:
            value = "10.1.2.3"
        values[entry["name"]] = value
    return values
