"""What the chart renders, scenario by scenario: least-privilege RBAC, restricted pods, no
default password, one operator, PDBs only where they can be honoured, exact network flows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from vyapaar_stack import chart

CI = chart.CHART / "ci"
RELEASE, NAMESPACE = "vn", "vyapaar"
FULLNAME = "vn-vyapaar-nexus"
OPERATOR_SA = f"{FULLNAME}-operator"
SERVICES = ("inventory", "payment", "shipping", "notification")

ORDER_RULES = {
    ("vyapaar.dev", "orders", "get"), ("vyapaar.dev", "orders", "list"),
    ("vyapaar.dev", "orders", "watch"), ("vyapaar.dev", "orders", "patch"),
    ("vyapaar.dev", "orders/status", "update"),
    ("", "events", "create"),
}
CRD_RULES = {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
             ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}
NAMESPACE_RULES = {("", "namespaces", "list"), ("", "namespaces", "watch")}
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


def render_ci(render, name: str, *extra: str) -> list[dict[str, Any]]:
    return render(CI / name, release=RELEASE, namespace=NAMESPACE, set_values=extra)


def test_cluster_wide_the_operator_gets_one_cluster_role_and_services_nothing(render) -> None:
    objects = render_ci(render, "byo-values.yaml")
    assert grants(objects) == {OPERATOR_SA: {"cluster": ORDER_RULES | CRD_RULES}}
    assert {o["metadata"]["name"] for o in of(objects, "ServiceAccount")} == {
        OPERATOR_SA, *(f"{FULLNAME}-{s}" for s in SERVICES)}


def test_namespaced_the_order_rules_exist_only_in_the_watched_namespaces(render) -> None:
    objects = render_ci(render, "namespaced-values.yaml")
    assert grants(objects) == {OPERATOR_SA: {
        "cluster": CRD_RULES | NAMESPACE_RULES,
        "vyapaar-ci-orders-a": ORDER_RULES,
        "vyapaar-ci-orders-b": ORDER_RULES,
    }}
    (operator,) = deployment(objects, "operator")
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VYAPAAR_NAMESPACES"] == "vyapaar-ci-orders-a,vyapaar-ci-orders-b"


MUTATING_POLICY_API = "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy"


def test_the_finalizer_policy_comes_where_the_cluster_serves_it_and_all_orders_are_ours(
    render,
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


def test_rbac_and_service_accounts_can_be_left_to_the_platform_team(render) -> None:
    objects = render_ci(render, "byo-values.yaml", "rbac.create=false",
                        "operator.serviceAccount.create=false",
                        "operator.serviceAccount.name=platform-operator",
                        "services.serviceAccount.create=false")
    assert not [o for o in objects if o["kind"] in
                {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}]
    (operator,) = deployment(objects, "operator")
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"


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


def test_every_container_of_every_scenario_is_restricted(render, scenario: Path) -> None:
    specs = pod_specs(render(scenario))
    assert specs
    for where, spec in specs:
        assert_restricted(where, spec)


def test_only_the_operator_mounts_a_service_account_token(render, scenario: Path) -> None:
    for where, spec in pod_specs(render(scenario)):
        expected = where.endswith("-operator") and where.startswith("Deployment/")
        assert spec.get("automountServiceAccountToken") is expected, where


def test_no_rendering_carries_a_fixed_password(render, scenario: Path) -> None:
    values = yaml.safe_load(scenario.read_text()) or {}
    first, second = render(scenario), render(scenario)
    for a, b in zip(of(first, "Secret"), of(second, "Secret"), strict=True):
        component = a["metadata"]["labels"]["app.kubernetes.io/component"]
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


def test_one_operator_replaced_not_rolled(render) -> None:
    objects = render_ci(render, "full-values.yaml")
    (operator,) = deployment(objects, "operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}


def test_a_pdb_exists_only_where_more_than_one_replica_runs(render) -> None:
    assert not of(render_ci(render, "byo-values.yaml"), "PodDisruptionBudget")
    objects = render_ci(render, "full-values.yaml")
    pdbs = {p["metadata"]["name"] for p in of(objects, "PodDisruptionBudget")}
    assert pdbs == {f"{FULLNAME}-inventory", f"{FULLNAME}-payment", f"{FULLNAME}-shipping"}
    (hpa,) = of(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-payment"
    (payment,) = deployment(objects, "payment")
    assert "replicas" not in payment["spec"]  # the HPA owns it


def test_services_are_wired_to_their_infrastructure_and_listen_in_the_pod(render) -> None:
    objects = render_ci(render, "byo-values.yaml")
    for deployment in of(objects, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
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
    return rule.get("to", rule.get("from", []))


def test_network_policies_deny_by_default_and_allow_exactly_the_flows(render) -> None:
    objects = render_ci(render, "full-values.yaml")
    policies = {p["metadata"]["name"].removeprefix(f"{FULLNAME}-"): p["spec"]
                for p in of(objects, "NetworkPolicy")}
    assert set(policies) == {"default-deny", "operator", *SERVICES, "rabbitmq", "redis", "test"}
    assert "ingress" not in policies["default-deny"] and "egress" not in policies["default-deny"]

    def egress_ports(name: str) -> list[set[Any]]:
        return [{p["port"] for p in rule.get("ports", [])} for rule in policies[name]["egress"]]

    dns = {53}
    assert egress_ports("operator") == [{443, 6443}, {5672}, dns]
    assert _peers(policies["operator"]["egress"][0]) == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert egress_ports("inventory") == [{5432}, {5672}, {6379}, dns]
    for name in ("payment", "shipping", "notification"):
        assert egress_ports(name) == [{5432}, {5672}, dns]
    # bring-your-own PostgreSQL: only at the configured address; bundled RabbitMQ: only its pod
    assert _peers(policies["payment"]["egress"][0]) == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert _peers(policies["payment"]["egress"][1])[0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "rabbitmq"
    clients = policies["rabbitmq"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][1]
    assert set(clients["values"]) == {"operator", *SERVICES}
    redis_clients = policies["redis"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][1]
    assert redis_clients["values"] == ["inventory"]
    assert policies["operator"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": "metrics"}]


def test_the_helm_test_pod_checks_every_service_and_the_operator(render) -> None:
    objects = render_ci(render, "byo-values.yaml")
    (pod,) = [o for o in objects if chart.is_hook(o)]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = pod["spec"]["containers"][0]["args"][1:]
    assert urls == [f"http://{FULLNAME}-operator-metrics:9100/metrics",
                    *(f"http://{FULLNAME}-{s}:{8081 + i}/readyz" for i, s in enumerate(SERVICES))]


def test_images_default_to_the_app_version_and_can_be_local(render) -> None:
    app_version = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for _, s in pod_specs(render_ci(render, "byo-values.yaml"))
              for c in s["containers"]}
    assert images == {f"ghcr.io/vyapaar-nexus/operator:{app_version}",
                      f"ghcr.io/vyapaar-nexus/services:{app_version}"}
    local = pod_specs(render_ci(render, "local-stack-values.yaml"))
    assert {(c["image"].split(":")[0], c["imagePullPolicy"]) for _, s in local
            for c in s["containers"]} == {("localhost/vyapaar/operator", "Never"),
                                           ("localhost/vyapaar/services", "Never")}
