"""The local control plane is a real Kubernetes API: CRDs, status, concurrency, watches, RBAC."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "test.vyapaar.dev", "v1", "widgets"
MERGE_PATCH = "application/merge-patch+json"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
async def widget_crd(k8s_api: client.ApiClient) -> str:
    ext = client.ApiextensionsV1Api(k8s_api)
    try:
        await ext.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise
    for _ in range(100):
        crd = await ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            return crd.metadata.name
        await asyncio.sleep(0.1)
    raise AssertionError("CRD never became Established")


async def create_widget(
    objs: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
                            "metadata": {"name": name}}
    if spec is not None:
        body["spec"] = spec
    created: dict[str, Any] = await objs.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body)
    return created


async def test_a_crd_is_installed_and_its_resources_are_served(
    widget_crd: str, k8s_api: client.ApiClient, namespace: str
) -> None:
    objs = client.CustomObjectsApi(k8s_api)
    created = await create_widget(objs, namespace, "w1", {"size": 3})
    assert created["metadata"]["uid"]
    fetched = await objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    assert fetched["spec"] == {"size": 3}


async def test_status_patch_with_stale_resource_version_is_refused_with_409(
    widget_crd: str, k8s_api: client.ApiClient, namespace: str
) -> None:
    objs = client.CustomObjectsApi(k8s_api)
    created = await create_widget(objs, namespace, "w2", {"size": 1})
    stale_rv = created["metadata"]["resourceVersion"]

    patched = await objs.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "w2",
        {"metadata": {"resourceVersion": stale_rv}, "status": {"phase": "First"}},
        _content_type=MERGE_PATCH,
    )
    assert patched["status"] == {"phase": "First"}
    assert patched["metadata"]["resourceVersion"] != stale_rv

    with pytest.raises(ApiException) as refused:
        await objs.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "w2",
            {"metadata": {"resourceVersion": stale_rv}, "status": {"phase": "LostUpdate"}},
            _content_type=MERGE_PATCH,
        )
    assert refused.value.status == 409
    current = await objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w2")
    assert current["status"] == {"phase": "First"}


async def test_a_watch_receives_the_status_change(
    widget_crd: str, k8s_api: client.ApiClient, namespace: str
) -> None:
    objs = client.CustomObjectsApi(k8s_api)
    created = await create_widget(objs, namespace, "w3")
    seen: list[str | None] = []

    async def follow() -> None:
        w = watch.Watch()
        async with w.stream(
            objs.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            resource_version=created["metadata"]["resourceVersion"],
            timeout_seconds=20,
        ) as stream:
            async for event in stream:
                seen.append((event["object"].get("status") or {}).get("phase"))
                if seen[-1] == "Watched":
                    return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    await objs.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "w3",
        {"status": {"phase": "Watched"}},
        _content_type=MERGE_PATCH,
    )
    await asyncio.wait_for(follower, timeout=20)
    assert seen[-1] == "Watched"


async def test_a_service_account_without_rights_is_refused_with_403(
    k8s_api: client.ApiClient, namespace: str, kubectl: Any
) -> None:
    core = client.CoreV1Api(k8s_api)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()

    configuration = client.Configuration()
    configuration.host = k8s_api.configuration.host
    configuration.verify_ssl = k8s_api.configuration.verify_ssl
    configuration.ssl_ca_cert = k8s_api.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    async with client.ApiClient(configuration) as as_nobody:
        with pytest.raises(ApiException) as refused:
            await client.CoreV1Api(as_nobody).list_namespaced_secret(namespace)
    assert refused.value.status == 403
    assert "forbidden" in refused.value.body.lower()


async def test_pod_security_admission_refuses_a_privileged_pod(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(k8s_api)
    await core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="c",
                    image="busybox",
                    security_context=client.V1SecurityContext(privileged=True),
                )
            ]
        ),
    )
    with pytest.raises(ApiException) as refused:
        await core.create_namespaced_pod(namespace, pod)
    assert refused.value.status == 403
    assert "violates PodSecurity" in refused.value.body


async def test_a_deployment_becomes_available_on_kwok_fake_nodes(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(k8s_api)
    labels = {"app": "hello"}
    await apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="hello"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="c", image="hello")],
                        # kwok's fake nodes only: with the real node up they carry this taint.
                        node_selector={"type": "kwok"},
                        tolerations=[client.V1Toleration(
                            key="kwok.x-k8s.io/node", operator="Exists", effect="NoSchedule")],
                    ),
                ),
            ),
        ),
    )
    # The scheduler's and kwok's watches may still be in client-go's relist backoff (up to
    # 30 s a round) when an earlier spec restarted the apiserver: allow for two rounds.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        dep = await apps.read_namespaced_deployment("hello", namespace)
        conditions = {c.type: c.status for c in (dep.status.conditions or [])}
        if conditions.get("Available") == "True" and dep.status.ready_replicas == 2:
            break
        if loop.time() > deadline:
            pods = await client.CoreV1Api(k8s_api).list_namespaced_pod(namespace)
            where = [(p.metadata.name, p.spec.node_name, p.status.phase) for p in pods.items]
            raise AssertionError(f"Deployment never became Available: {dep.status}; "
                                 f"pods (name, node, phase): {where}")
        await asyncio.sleep(0.25)
    pods = await client.CoreV1Api(k8s_api).list_namespaced_pod(namespace)
    assert {p.spec.node_name for p in pods.items} <= {
        n.metadata.name for n in (await client.CoreV1Api(k8s_api).list_node()).items
    }


def test_the_apiserver_reports_the_pinned_version(kubectl: Any) -> None:
    from vyapaar_stack.config import read_versions

    version = kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{read_versions()["KUBERNETES_VERSION"]}"' in version


def test_helm_runs(stack_config: Any) -> None:
    from vyapaar_stack.config import read_versions

    helm = Path(stack_config.cache_dir) / "bin" / "helm"
    out = subprocess.run(
        [str(helm), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith(read_versions()["HELM_VERSION"])
