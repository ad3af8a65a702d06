"""What the chart renders, scenario by scenario: least-privilege RBAC, restricted pods, no
default password or token, one operator, PDBs only where they can be honoured, exact network
flows, and the gateway: hardened, bound to Orders only, in its tenants' namespaces only."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from vyapaar_stack import chart

Render = Callable[..., list[dict[str, Any]]]
Helm = Callable[..., subprocess.CompletedProcess[str]]

CI = chart.CHART / "ci"
RELEASE, NAMESPACE = "vn", "vyapaar"
FULLNAME = "vn-vyapaar-nexus"
OPERATOR_SA = f"{FULLNAME}-operator"
GATEWAY = f"{FULLNAME}-gateway"
SERVICES = ("inventory", "payment", "shipping", "notification", "analytics")
ANALYTICS = f"{FULLNAME}-analytics"
#: the two tenants of ci/full-values.yaml, and the plain token of the second
TENANT_NAMESPACES = ("vyapaar-ci-orders-a", "vyapaar-ci-orders-b")
PLAIN_TOKEN = "ci-only-token-not-a-secret-0123456789"

ORDER_RULES = {
    ("vyapaar.dev", "orders", "get"), ("vyapaar.dev", "orders", "list"),
    ("vyapaar.dev", "orders", "watch"), ("vyapaar.dev", "orders", "patch"),
    ("vyapaar.dev", "orders/status", "update"),
    ("", "events", "create"),
}
CRD_RULES = {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
             ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}
NAMESPACE_RULES = {("", "namespaces", "list"), ("", "namespaces", "watch")}
#: the gateway: Orders only, and only these verbs (no update, delete or orders/status)
GATEWAY_RULES = {("vyapaar.dev", "orders", verb)
                 for verb in ("create", "get", "list", "watch", "patch")}
POD_KINDS = {"Deployment", "StatefulSet", "Pod"}


def of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def deployment(objects: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    return [d for d in of(objects, "Deployment") if d["metadata"]["name"].endswith(component)]


def grants(objects: list[dict[str, Any]]) -> dict[str, dict[str, set[tuple[str, str, str]]]]:
    """ServiceAccount -> scope ('cluster' or a namespace) -> {(apiGroup, resource, verb)}."""
    roles: dict[tuple[str, str | None, str], dict[str, Any]] = {}
    for role in of(objects, "ClusterRole") + of(objects, "Role"):
        roles[(role["kind"], role["metadata"].get("namespace"), role["metadata"]["name"])] = role
    found: dict[str, dict[str, set[tuple[str, str, str]]]] = {}
    for binding in of(objects, "ClusterRoleBinding") + of(objects, "RoleBinding"):
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        scope = namespace or "cluster"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            rules = found.setdefault(subject["name"], {}).setdefault(scope, set())
            for rule in role["rules"]:
                assert "resourceNames" not in rule and "nonResourceURLs" not in rule
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            assert "*" not in (group, resource, verb), rule
                            rules.add((group, resource, verb))
    return found


def render_ci(render: Render, name: str, *extra: str) -> list[dict[str, Any]]:
    return render(CI / name, release=RELEASE, namespace=NAMESPACE, set_values=extra)


def test_cluster_wide_the_operator_gets_one_cluster_role_and_services_nothing(
        render: Render) -> None:
    objects = render_ci(render, "byo-values.yaml")
    # a gateway without tenants needs, and gets, no access either
    assert grants(objects) == {OPERATOR_SA: {"cluster": ORDER_RULES | CRD_RULES}}
    assert {o["metadata"]["name"] for o in of(objects, "ServiceAccount")} == {
        OPERATOR_SA, GATEWAY, *(f"{FULLNAME}-{s}" for s in SERVICES)}


def test_namespaced_the_order_rules_exist_only_in_the_watched_namespaces(
        render: Render) -> None:
    objects = render_ci(render, "namespaced-values.yaml")
    assert grants(objects) == {
        OPERATOR_SA: {
            "cluster": CRD_RULES | NAMESPACE_RULES,
            "vyapaar-ci-orders-a": ORDER_RULES,
            "vyapaar-ci-orders-b": ORDER_RULES,
        },
        GATEWAY: {"vyapaar-ci-orders-a": GATEWAY_RULES, "vyapaar-ci-orders-b": GATEWAY_RULES},
    }
    (operator,) = deployment(objects, "operator")
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VYAPAAR_NAMESPACES"] == "vyapaar-ci-orders-a,vyapaar-ci-orders-b"


MUTATING_POLICY_API = "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy"


def test_the_finalizer_policy_comes_where_the_cluster_serves_it_and_all_orders_are_ours(
    render: Render,
) -> None:
    def policies(name: str, *extra: str, api: tuple[str, ...] = (MUTATING_POLICY_API,)
                 ) -> dict[str, list[dict[str, Any]]]:
        objects = render(CI / name, release=RELEASE, namespace=NAMESPACE, set_values=extra,
                         api_versions=api)
        return {kind: of(objects, kind) for kind in
                ("MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding")}

    found = policies("byo-values.yaml")
    [policy], [binding] = found["MutatingAdmissionPolicy"], found["MutatingAdmissionPolicyBinding"]
    # Named per release (cluster-scoped: two releases must not collide), bound to each other.
    assert policy["metadata"]["name"].startswith(f"{FULLNAME}-")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy["spec"]["failurePolicy"] == "Ignore"  # the operator adds it otherwise
    assert "vyapaar.dev/saga" in policy["spec"]["mutations"][0]["applyConfiguration"][
        "expression"]
    # Not where the API is missing, not when disabled, not for an operator of a few
    # namespaces (a finalizer no operator removes would hold other namespaces' deletions).
    for absent in (policies("byo-values.yaml", api=()),
                   policies("byo-values.yaml", "admissionPolicy.enabled=false"),
                   policies("namespaced-values.yaml")):
        assert absent == {"MutatingAdmissionPolicy": [], "MutatingAdmissionPolicyBinding": []}


def test_rbac_and_service_accounts_can_be_left_to_the_platform_team(render: Render) -> None:
    objects = render_ci(render, "full-values.yaml", "rbac.create=false",
                        "operator.serviceAccount.create=false",
                        "operator.serviceAccount.name=platform-operator",
                        "services.serviceAccount.create=false",
                        "gateway.serviceAccount.create=false",
                        "gateway.serviceAccount.name=platform-gateway")
    assert not [o for o in objects if o["kind"] in
                {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}]
    (operator,) = deployment(objects, "operator")
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"
    (gateway,) = deployment(objects, "gateway")
    assert gateway["spec"]["template"]["spec"]["serviceAccountName"] == "platform-gateway"


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
            specs.append((f"{obj['kind']}/{obj['metadata']['name']}", spec))
    return specs


def assert_restricted(where: str, spec: dict[str, Any]) -> None:
    """Pod Security Standards 'restricted', plus a read-only root filesystem."""
    pod = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), f"{where}: {key}"
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= {"emptyDir", "secret", "configMap", "projected"}, f"{where}: {volume}"
    for container in spec["containers"] + spec.get("initContainers", []):
        ctx = container.get("securityContext", {})
        name = f"{where}/{container['name']}"
        assert ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, name
        assert ctx.get("runAsUser", pod.get("runAsUser", 1)) != 0, name
        seccomp = ctx.get("seccompProfile", pod.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", name
        assert ctx.get("allowPrivilegeEscalation") is False, name
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not ctx.get("capabilities", {}).get("add"), name
        assert ctx.get("readOnlyRootFilesystem") is True, name
        assert not ctx.get("privileged"), name
        assert all("hostPort" not in p for p in container.get("ports", [])), name
        assert {"name": "tmp", "mountPath": "/tmp"} in container.get("volumeMounts", []), name


def test_every_container_of_every_scenario_is_restricted(render: Render, scenario: Path
                                                         ) -> None:
    specs = pod_specs(render(scenario))
    assert specs
    for where, spec in specs:
        assert_restricted(where, spec)


def test_only_the_operator_and_the_gateway_mount_a_service_account_token(
        render: Render, scenario: Path) -> None:
    for where, spec in pod_specs(render(scenario)):
        expected = where.startswith("Deployment/") and where.endswith(("-operator", "-gateway"))
        assert spec.get("automountServiceAccountToken") is expected, where


def test_no_rendering_carries_a_fixed_password(render: Render, scenario: Path) -> None:
    values = yaml.safe_load(scenario.read_text()) or {}
    first, second = render(scenario), render(scenario)
    for a, b in zip(of(first, "Secret"), of(second, "Secret"), strict=True):
        component = a["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "gateway":  # tokens, not a password: see the gateway specs below
            assert a == b
            continue
        given = values.get(component, {}).get("bundled", {}).get("password")
        if given:
            assert a["stringData"]["password"] == given
        else:
            assert a["stringData"]["password"] != b["stringData"]["password"], component
            assert len(a["stringData"]["password"]) >= 32
    for where, spec in pod_specs(first):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("PASS", "URL")):
                    assert "valueFrom" in env, f"{where}: {env['name']} is a literal"


def test_the_chart_defaults_hold_no_password() -> None:
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    for component in ("rabbitmq", "postgresql", "redis"):
        assert values[component]["bundled"]["password"] == ""
        assert values[component]["existingSecret"] == ""


def test_one_operator_replaced_not_rolled(render: Render) -> None:
    objects = render_ci(render, "full-values.yaml")
    (operator,) = deployment(objects, "operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}


def test_a_pdb_exists_only_where_more_than_one_replica_runs(render: Render) -> None:
    assert not of(render_ci(render, "byo-values.yaml"), "PodDisruptionBudget")
    objects = render_ci(render, "full-values.yaml")
    pdbs = {p["metadata"]["name"] for p in of(objects, "PodDisruptionBudget")}
    assert pdbs == {f"{FULLNAME}-inventory", f"{FULLNAME}-payment", f"{FULLNAME}-shipping",
                    GATEWAY}
    hpas = {h["metadata"]["name"]: h["spec"] for h in of(objects, "HorizontalPodAutoscaler")}
    assert {n: h["scaleTargetRef"]["name"] for n, h in hpas.items()} == {
        f"{FULLNAME}-payment": f"{FULLNAME}-payment", GATEWAY: GATEWAY}
    for name in ("payment", "gateway"):
        (scaled,) = deployment(objects, name)
        assert "replicas" not in scaled["spec"]  # the HPA owns it


def test_services_are_wired_to_their_infrastructure_and_listen_in_the_pod(
        render: Render) -> None:
    objects = render_ci(render, "byo-values.yaml")
    for deployment in of(objects, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        if deployment["metadata"]["name"].endswith("-gateway"):
            continue  # see test_the_gateway_is_wired_to_redis_and_its_tokens_only
        if deployment["metadata"]["name"].endswith("-operator"):
            assert env["VYAPAAR_HOST"]["value"] == "0.0.0.0"
            assert env["VYAPAAR_AMQP_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": "vyapaar-infrastructure", "key": "amqp-url"}
            continue
        service = container["args"][0]
        assert env["VYAPAAR_HTTP_HOST"]["value"] == "0.0.0.0"
        assert env["VYAPAAR_DB_SCHEMA"]["value"] == service
        assert env["VYAPAAR_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
        assert ("VYAPAAR_REDIS_URL" in env) == (service == "inventory")
        probes = (container["readinessProbe"]["httpGet"]["path"],
                  container["livenessProbe"]["httpGet"]["path"])
        assert probes == ("/readyz", "/healthz")


def _peers(rule: dict[str, Any]) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = rule.get("to", rule.get("from", []))
    return peers


def test_network_policies_deny_by_default_and_allow_exactly_the_flows(render: Render) -> None:
    objects = render_ci(render, "full-values.yaml")
    policies = {p["metadata"]["name"].removeprefix(f"{FULLNAME}-"): p["spec"]
                for p in of(objects, "NetworkPolicy")}
    assert set(policies) == {"default-deny", "operator", *SERVICES, "gateway", "rabbitmq",
                             "redis", "test"}
    assert "ingress" not in policies["default-deny"] and "egress" not in policies["default-deny"]

    def egress_ports(name: str) -> list[set[Any]]:
        return [{p["port"] for p in rule.get("ports", [])} for rule in policies[name]["egress"]]

    dns = {53}
    assert egress_ports("operator") == [{443, 6443}, {5672}, dns]
    assert _peers(policies["operator"]["egress"][0]) == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert egress_ports("inventory") == [{5432}, {5672}, {6379}, dns]
    for name in ("payment", "shipping", "notification", "analytics"):
        assert egress_ports(name) == [{5432}, {5672}, dns]
    # bring-your-own PostgreSQL: only at the configured address; bundled RabbitMQ: only its pod
    assert _peers(policies["payment"]["egress"][0]) == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert _peers(policies["payment"]["egress"][1])[0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "rabbitmq"
    clients = policies["rabbitmq"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][1]
    assert set(clients["values"]) == {"operator", *SERVICES}
    redis_clients = policies["redis"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][1]
    assert redis_clients["values"] == ["inventory", "gateway"]
    assert policies["operator"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    # the gateway: API server (same peers as the operator), the bundled Redis, DNS; reached on
    # its HTTP port by networkPolicy.gatewayFrom, Prometheus and the test pod
    gateway = policies["gateway"]
    assert egress_ports("gateway") == [{443, 6443}, {6379}, dns]
    assert _peers(gateway["egress"][0]) == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert _peers(gateway["egress"][1])[0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "redis"
    (ingress,) = gateway["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "http"}]
    ingress_controller = {"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert ingress["from"][0] == ingress_controller
    assert ingress["from"][-1]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "test"
    test_to = policies["test"]["egress"][0]["to"][0]["podSelector"]["matchExpressions"][1]
    assert "gateway" in test_to["values"]


def test_analytics_reaches_only_its_database_and_the_broker_and_only_scrapers_reach_it(
        render: Render) -> None:
    """A read model: it talks to nothing but its database and the broker (and DNS); no
    component of the release calls it (the gateway does not), only Prometheus, the chart's
    test pod and networkPolicy.servicesHttpFrom reach its HTTP port."""
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "reports"}}}
    objects = render_ci(render, "full-values.yaml",
                        "networkPolicy.servicesHttpFrom[0].namespaceSelector.matchLabels"
                        ".kubernetes\\.io/metadata\\.name=reports")
    policies = {p["metadata"]["name"]: p["spec"] for p in of(objects, "NetworkPolicy")}
    policy = policies[ANALYTICS]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "analytics"
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    postgresql, rabbitmq, dns = policy["egress"]
    assert postgresql == {"ports": [{"protocol": "TCP", "port": 5432}],
                          "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}  # bring-your-own
    assert rabbitmq["ports"] == [{"protocol": "TCP", "port": 5672}]  # the bundled pod
    assert _peers(rabbitmq)[0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "rabbitmq"
    assert {p["port"] for p in dns["ports"]} == {53}
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "http"}]
    prometheus = {"namespaceSelector": {}, "podSelector": {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    test_pod = {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "vyapaar-nexus", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "test"}}}
    assert ingress["from"] == [prometheus, peer, test_pod]
    # the bundled RabbitMQ lets it in; the bundled Redis does not, and the gateway may not
    # call it (its egress goes to the API server, Redis and DNS only)
    clients = policies[f"{FULLNAME}-rabbitmq"]["ingress"][0]["from"][0]["podSelector"][
        "matchExpressions"][1]["values"]
    assert "analytics" in clients
    redis = policies[f"{FULLNAME}-redis"]["ingress"][0]["from"][0]["podSelector"][
        "matchExpressions"][1]["values"]
    assert "analytics" not in redis
    gateway_ports = {p["port"] for rule in policies[GATEWAY]["egress"]
                     for p in rule.get("ports", [])}
    assert not gateway_ports & {8085, "http"}
    test_to = policies[f"{FULLNAME}-test"]["egress"][0]["to"][0]["podSelector"][
        "matchExpressions"][1]
    assert "analytics" in test_to["values"]


def test_the_analytics_pod_is_hardened_probed_and_wired_like_the_services(
        render: Render, scenario: Path) -> None:
    objects = render(scenario, release=RELEASE, namespace=NAMESPACE)
    (analytics,) = deployment(objects, "-analytics")
    assert analytics["metadata"]["name"] == ANALYTICS
    spec = analytics["spec"]["template"]["spec"]
    assert_restricted("analytics", spec)
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["serviceAccountName"] == ANALYTICS
    (container,) = spec["containers"]
    assert container["name"] == "analytics" and container["args"] == ["analytics"]
    assert container["image"].split(":")[0].endswith("/services")
    assert container["ports"] == [{"name": "http", "containerPort": 8085, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert "VYAPAAR_REDIS_URL" not in env  # PostgreSQL and RabbitMQ only
    assert "secretKeyRef" in env["VYAPAAR_DATABASE_URL"]["valueFrom"]
    assert "secretKeyRef" in env["VYAPAAR_AMQP_URL"]["valueFrom"]
    assert env["VYAPAAR_DB_SCHEMA"]["value"] == "analytics"
    assert env["VYAPAAR_HTTP_HOST"]["value"] == "0.0.0.0"
    assert env["VYAPAAR_HTTP_PORT"]["value"] == "8085"
    (service,) = [s for s in of(objects, "Service") if s["metadata"]["name"] == ANALYTICS]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8085, "targetPort": "http",
                                         "protocol": "TCP"}]
    (account,) = [a for a in of(objects, "ServiceAccount")
                  if a["metadata"]["name"] == ANALYTICS]
    assert account["automountServiceAccountToken"] is False
    assert ANALYTICS not in grants(objects)  # no Kubernetes API access at all


def test_analytics_can_be_turned_off_and_then_nothing_names_it(render: Render) -> None:
    objects = render_ci(render, "full-values.yaml", "services.analytics.enabled=false")
    named = [f"{o['kind']}/{o['metadata']['name']}" for o in objects
             if o["metadata"]["name"] == ANALYTICS]
    assert not named
    (test_pod,) = [o for o in objects if chart.is_hook(o)]
    assert not [u for u in test_pod["spec"]["containers"][0]["args"] if "analytics" in u]
    policies = {p["metadata"]["name"]: p["spec"] for p in of(objects, "NetworkPolicy")}
    clients = policies[f"{FULLNAME}-rabbitmq"]["ingress"][0]["from"][0]["podSelector"][
        "matchExpressions"][1]["values"]
    assert "analytics" not in clients
    # its schema's name may differ from the service's
    schema = render_ci(render, "byo-values.yaml", "services.analytics.dbSchema=analytics_eu")
    (analytics,) = deployment(schema, "-analytics")
    env = {e["name"]: e.get("value")
           for e in analytics["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VYAPAAR_DB_SCHEMA"] == "analytics_eu"


def test_the_gateway_is_open_to_anyone_unless_told_otherwise(render: Render) -> None:
    """It is the public entry point: without networkPolicy.gatewayFrom, no `from` at all."""
    objects = render_ci(render, "full-values.yaml", "networkPolicy.gatewayFrom=null")
    (policy,) = [p for p in of(objects, "NetworkPolicy") if p["metadata"]["name"] == GATEWAY]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}]}]
    assert not [p for p in of(render_ci(render, "full-values.yaml", "gateway.enabled=false"),
                              "NetworkPolicy") if p["metadata"]["name"] == GATEWAY]


def test_the_helm_test_pod_checks_every_service_the_gateway_and_the_operator(
        render: Render) -> None:
    def urls(*extra: str) -> list[str]:
        objects = render_ci(render, "byo-values.yaml", *extra)
        (pod,) = [o for o in objects if chart.is_hook(o)]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        return list(pod["spec"]["containers"][0]["args"][1:])

    services = [f"http://{FULLNAME}-operator-metrics:9100/metrics",
                *(f"http://{FULLNAME}-{s}:{8081 + i}/readyz" for i, s in enumerate(SERVICES))]
    assert urls() == [*services, f"http://{GATEWAY}:8080/readyz"]
    # a gateway with no pods (or none at all) is not asked
    assert urls("gateway.replicas=0") == urls("gateway.enabled=false") == services


def test_images_default_to_the_app_version_and_can_be_local(render: Render) -> None:
    app_version = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for _, s in pod_specs(render_ci(render, "byo-values.yaml"))
              for c in s["containers"]}
    assert images == {f"ghcr.io/vyapaar-nexus/operator:{app_version}",
                      f"ghcr.io/vyapaar-nexus/services:{app_version}"}
    local = pod_specs(render_ci(render, "local-stack-values.yaml"))
    assert {(c["image"].split(":")[0], c["imagePullPolicy"]) for _, s in local
            for c in s["containers"]} == {("localhost/vyapaar/operator", "Never"),
                                           ("localhost/vyapaar/services", "Never")}


# -- the gateway --------------------------------------------------------------------------


def gateway_objects(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, namespace or '') -> object, for every object of component `gateway`."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/component") == "gateway":
            key = (obj["kind"], obj["metadata"].get("namespace", ""))
            assert key not in found, key
            found[key] = obj
    return found


def test_the_gateway_renders_its_account_secret_service_and_deployment(render: Render) -> None:
    objects = gateway_objects(render_ci(render, "byo-values.yaml"))
    assert set(objects) == {(kind, NAMESPACE) for kind in
                            ("ServiceAccount", "Secret", "Service", "Deployment")}
    names = {kind: obj["metadata"]["name"] for (kind, _), obj in objects.items()}
    assert names == {"ServiceAccount": GATEWAY, "Secret": f"{GATEWAY}-tokens",
                     "Service": GATEWAY, "Deployment": GATEWAY}
    assert objects[("ServiceAccount", NAMESPACE)]["automountServiceAccountToken"] is True
    service = objects[("Service", NAMESPACE)]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                 "protocol": "TCP"}]
    selector = {"app.kubernetes.io/name": "vyapaar-nexus", "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": "gateway"}
    assert service["selector"] == selector
    spec = objects[("Deployment", NAMESPACE)]["spec"]
    assert spec["selector"]["matchLabels"] == selector
    assert spec["replicas"] == 1
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    # no tenant by default: the Secret holds an empty list, never a token of the chart's
    secret = objects[("Secret", NAMESPACE)]
    assert yaml.safe_load(secret["stringData"]["tokens.yaml"]) == {"tenants": []}
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())["gateway"]
    assert values["tenants"] == [] and values["existingSecret"] == ""
    # no gateway at all when disabled (and then no Redis is needed)
    without = render_ci(render, "namespaced-values.yaml", "gateway.enabled=false",
                        "redis.existingSecret=")
    assert not gateway_objects(without)


def test_the_gateway_pod_is_hardened(render: Render, scenario: Path) -> None:
    (spec,) = [s for where, s in pod_specs(render(scenario)) if where.endswith("-gateway")]
    assert_restricted("gateway", spec)
    pod = spec["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["runAsNonRoot"]) == (65532, 65532, True)
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is True
    assert spec["enableServiceLinks"] is False
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["tokens"] == {"name": "tokens", "mountPath": "/etc/vyapaar/gateway",
                                "readOnly": True}
    (tokens,) = [v for v in spec["volumes"] if v["name"] == "tokens"]
    assert tokens["secret"]["defaultMode"] == 0o440
    assert [i["path"] for i in tokens["secret"]["items"]] == ["tokens.yaml"]


def test_the_gateway_is_wired_to_redis_and_its_tokens_only(render: Render) -> None:
    objects = render_ci(render, "namespaced-values.yaml")
    (gateway,) = deployment(objects, "gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("ghcr.io/vyapaar-nexus/services:")
    assert container["args"] == ["gateway"]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) == {
        "VYAPAAR_REDIS_URL", "VYAPAAR_HTTP_HOST", "VYAPAAR_HTTP_PORT",
        "VYAPAAR_GATEWAY_TOKENS_FILE", "VYAPAAR_GATEWAY_RATE_LIMIT",
        "VYAPAAR_GATEWAY_IDEMPOTENCY_TTL_SECONDS", "VYAPAAR_GATEWAY_MAX_BODY_BYTES",
        "VYAPAAR_LOG_LEVEL"}  # no database, no RabbitMQ
    assert env["VYAPAAR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "vyapaar-infrastructure", "key": "redis-url"}  # the services' Redis
    values = {name: e.get("value") for name, e in env.items()}
    assert values["VYAPAAR_HTTP_HOST"] == "0.0.0.0"
    assert values["VYAPAAR_HTTP_PORT"] == "8080"
    assert values["VYAPAAR_GATEWAY_TOKENS_FILE"] == "/etc/vyapaar/gateway/tokens.yaml"
    assert values["VYAPAAR_GATEWAY_RATE_LIMIT"] == "20/second"
    assert values["VYAPAAR_GATEWAY_IDEMPOTENCY_TTL_SECONDS"] == "86400"
    assert values["VYAPAAR_GATEWAY_MAX_BODY_BYTES"] == "65536"
    assert values["VYAPAAR_LOG_LEVEL"] == "INFO"
    # the tokens file comes from the user's Secret: the chart renders none
    (tokens,) = [v for v in gateway["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "tokens"]
    assert tokens["secret"]["secretName"] == "vyapaar-gateway-tokens"
    assert tokens["secret"]["items"] == [{"key": "tokens.yaml", "path": "tokens.yaml"}]
    assert not of(objects, "Secret")
    # bundled Redis: its own Secret's URL
    (bundled,) = deployment(render_ci(render, "full-values.yaml"), "gateway")
    env = {e["name"]: e for e in bundled["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VYAPAAR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-redis", "key": "url"}


def test_the_tenants_are_written_to_the_secret_and_nowhere_else(render: Render) -> None:
    objects = render_ci(render, "full-values.yaml")
    values = yaml.safe_load((CI / "full-values.yaml").read_text())["gateway"]["tenants"]
    (secret,) = [o for o in of(objects, "Secret")
                 if o["metadata"]["name"] == f"{GATEWAY}-tokens"]
    assert yaml.safe_load(secret["stringData"]["tokens.yaml"]) == {"tenants": values}
    digest = values[0]["tokenSha256"]
    elsewhere = json.dumps([o for o in objects if o is not secret])
    assert PLAIN_TOKEN not in elsewhere and digest not in elsewhere
    assert PLAIN_TOKEN in json.dumps(secret)


def test_the_notes_show_how_to_reach_the_gateway_but_never_a_token(
        helm: Helm, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    """NOTES.txt, rendered by a server dry-run install (`helm template` renders no notes)."""
    digest = "0" * 64
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"gateway": {"tenants": [
        {"name": "storefront-a", "namespace": namespace, "tokenSha256": digest},
        {"name": "storefront-b", "namespace": namespace, "token": PLAIN_TOKEN}]}}))

    def notes(*values: str) -> str:
        result = helm("install", "vn", str(chart.CHART), "-n", namespace, "--dry-run=server",
                      "--kubeconfig", str(kubeconfig), "-f", str(CI / "byo-values.yaml"),
                      "--set", "crds.enabled=false", *values)
        return result.stdout[result.stdout.index("NOTES:"):]

    text = notes("-f", str(tenants))
    assert f"port-forward svc/{GATEWAY} 8080:8080" in text
    assert f"storefront-a: Orders in namespace {namespace}\n" in text
    assert "storefront-b: Orders in namespace" in text
    assert text.count("WARNING: a plain token in the values") == 1  # storefront-b's only
    assert PLAIN_TOKEN not in text and digest not in text
    empty = notes()
    assert "No tenant yet: the gateway accepts no token" in empty
    assert "sha256sum" in empty


def gateway_bindings(objects: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(kind, namespace, roleRef kind) of every binding of the gateway's ServiceAccount."""
    found = []
    for binding in of(objects, "ClusterRoleBinding") + of(objects, "RoleBinding"):
        if any(s["name"] == GATEWAY for s in binding["subjects"]):
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": GATEWAY, "namespace": NAMESPACE}]
            assert binding["roleRef"]["name"] == GATEWAY
            found.append((binding["kind"], binding["metadata"].get("namespace", ""),
                          binding["roleRef"]["kind"]))
    return sorted(found)


def test_the_gateway_may_do_exactly_five_things_to_orders_and_nothing_else(
        render: Render, scenario: Path) -> None:
    objects = render(scenario, release=RELEASE, namespace=NAMESPACE)
    for scope, rules in grants(objects).get(GATEWAY, {}).items():
        assert rules == GATEWAY_RULES, scope
    for role in of(objects, "ClusterRole") + of(objects, "Role"):
        if role["metadata"]["name"] == GATEWAY:
            assert role["kind"] == "ClusterRole"
            assert role["rules"] == [{"apiGroups": ["vyapaar.dev"], "resources": ["orders"],
                                      "verbs": ["create", "get", "list", "watch", "patch"]}]


def test_the_gateway_is_bound_in_each_tenant_namespace_and_nowhere_else(
        render: Render) -> None:
    bound_per_namespace = [("RoleBinding", ns, "ClusterRole") for ns in TENANT_NAMESPACES]
    # tenants' namespaces known from gateway.tenants
    assert gateway_bindings(render_ci(render, "full-values.yaml")) == bound_per_namespace
    # ... or listed beside an existing Secret
    assert gateway_bindings(render_ci(render, "namespaced-values.yaml")) == bound_per_namespace
    # both, a namespace given twice: one binding each
    assert gateway_bindings(render_ci(
        render, "full-values.yaml", "gateway.rbac.namespaces={vyapaar-ci-orders-b,shop-c}"
    )) == sorted([*bound_per_namespace, ("RoleBinding", "shop-c", "ClusterRole")])
    # no tenant: nothing to reach, no binding and no ClusterRole
    objects = render_ci(render, "byo-values.yaml")
    assert gateway_bindings(objects) == []
    assert not [r for r in of(objects, "ClusterRole") if r["metadata"]["name"] == GATEWAY]
    # scope cluster: one ClusterRoleBinding, no RoleBinding
    cluster = render_ci(render, "full-values.yaml", "gateway.rbac.scope=cluster")
    assert gateway_bindings(cluster) == [("ClusterRoleBinding", "", "ClusterRole")]
    assert grants(cluster)[GATEWAY] == {"cluster": GATEWAY_RULES}


def test_the_kustomize_base_binds_the_gateway_cluster_wide_to_a_secret_of_the_users(
        render: Render) -> None:
    objects = render(chart.KUSTOMIZE_VALUES, release=chart.BASE_RELEASE,
                     namespace=chart.BASE_NAMESPACE)
    names = {(o["kind"], o["metadata"]["name"]) for o in gateway_objects(objects).values()}
    assert names == {(kind, "vyapaar-nexus-gateway") for kind in
                     ("ServiceAccount", "Service", "Deployment", "ClusterRole",
                      "ClusterRoleBinding")}
    (gateway,) = deployment(objects, "gateway")
    (tokens,) = [v for v in gateway["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "tokens"]
    assert tokens["secret"]["secretName"] == "vyapaar-gateway-tokens"


def test_the_gateway_is_scraped_like_the_services(render: Render) -> None:
    objects = render_ci(render, "full-values.yaml")
    (monitor,) = [m for m in of(objects, "ServiceMonitor")
                  if m["metadata"]["name"] == f"{FULLNAME}-services"]
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    assert expression["values"] == [*SERVICES, "gateway"]
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    (gateway,) = [s for s in of(objects, "Service") if s["metadata"]["name"] == GATEWAY]
    assert gateway["spec"]["ports"][0]["name"] == "http"


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_the_gateway_service_can_be_exposed_without_an_ingress(render: Render,
                                                                service_type: str) -> None:
    objects = render_ci(render, "byo-values.yaml", f"gateway.service.type={service_type}",
                        "gateway.service.nodePort=30080")
    (service,) = [s for s in of(objects, "Service") if s["metadata"]["name"] == GATEWAY]
    assert service["spec"]["type"] == service_type
    assert service["spec"]["ports"][0]["nodePort"] == 30080


def product_containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The operator's, every service's and the gateway's container, by Deployment name."""
    product = {"operator", *SERVICES, "gateway"}
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
            for d in of(objects, "Deployment")
            if d["metadata"]["name"].removeprefix(f"{FULLNAME}-") in product}


def test_tracing_is_off_by_default_and_not_even_configured(render: Render, scenario: Path
                                                            ) -> None:
    objects = render(scenario, release=RELEASE, namespace=NAMESPACE)
    for name, container in product_containers(objects).items():
        assert not {e["name"] for e in container["env"]} & {
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}, name


def test_with_an_endpoint_every_process_exports_its_spans_there_and_may_reach_it(
    render: Render,
) -> None:
    collector = [{"namespaceSelector": {"matchLabels": {"name": "observability"}}}]
    objects = render_ci(render, "full-values.yaml",
                        "tracing.otlpEndpoint=http://otel-collector.observability:4318",
                        "tracing.networkPolicy.to[0].namespaceSelector.matchLabels.name="
                        "observability")

    containers = product_containers(objects)
    assert len(containers) == 2 + len(SERVICES)
    for name, container in containers.items():
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
        assert env["OTEL_SERVICE_NAME"] == name.removeprefix(f"{FULLNAME}-")
    policies = {p["metadata"]["name"].removeprefix(f"{FULLNAME}-"): p["spec"]
                for p in of(objects, "NetworkPolicy")}
    for name in ("operator", *SERVICES, "gateway"):
        assert {"ports": [{"protocol": "TCP", "port": 4318}], "to": collector} in policies[
            name]["egress"], name
    for name in ("rabbitmq", "redis", "test"):
        assert all(4318 not in {p["port"] for p in rule.get("ports", [])}
                   for rule in policies[name]["egress"]), name
