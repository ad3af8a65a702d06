"""Certificates and kubeconfigs for the node's components, signed by kwokctl's cluster CA.

The CA kwokctl generated for the control plane (`<cluster>/pki/ca.{crt,key}`) is the
one kube-apiserver trusts for client certificates, so a certificate with
CN=system:node:<name>, O=system:nodes is what the Node authorizer and NodeRestriction
admission expect from a kubelet, and CN=system:kube-proxy is what the default
`system:node-proxier` binding names. openssl does the signing: no bootstrap tokens or
CSR approval loop to run for a single local node.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..cluster import pki_dir
from ..config import StackConfig
from ..processes import StackError
from .host import run
from .layout import NodeLayout, write_if_changed

#: CoreDNS's identity; its read-only RBAC comes with the kube-dns objects (dns.py).
COREDNS_USER = "system:vyapaar:coredns"


def _ca(config: StackConfig) -> tuple[Path, Path]:
    ca_crt, ca_key = pki_dir(config) / "ca.crt", pki_dir(config) / "ca.key"
    if not ca_key.exists():
        raise StackError(f"the cluster CA is missing ({ca_key}): is the control plane up?")
    return ca_crt, ca_key


def issue(config: StackConfig, dest: Path, name: str, subject: str, *,
          ips: list[str] | None = None) -> tuple[Path, Path]:
    """A key and a certificate signed by the cluster CA: a client certificate, or with `ips`
    a serving one. Reissued when the CA changed (a recreated cluster)."""
    ca_crt, ca_key = _ca(config)
    dest.mkdir(parents=True, exist_ok=True)
    crt, key, csr = dest / f"{name}.crt", dest / f"{name}.key", dest / f"{name}.csr"
    if crt.exists() and run("openssl", "verify", "-CAfile", str(ca_crt), str(crt),
                            check=False).returncode == 0:
        return crt, key
    usage = "serverAuth" if ips else "clientAuth"
    extensions = dest / f"{name}.ext"
    lines = ["keyUsage=critical,digitalSignature,keyEncipherment",
             f"extendedKeyUsage={usage}", "basicConstraints=critical,CA:FALSE"]
    if ips:
        lines.append("subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips))
    extensions.write_text("\n".join(lines) + "\n")
    run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
        "-subj", subject, "-out", str(csr))
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-CAserial", str(dest / "ca.srl"), "-days", "365",
        "-extfile", str(extensions), "-out", str(crt))
    key.chmod(0o600)
    csr.unlink()
    extensions.unlink()
    return crt, key


def kubeconfig(config: StackConfig, layout: NodeLayout, who: str, subject: str) -> Path:
    """A kubeconfig for `who` with a client certificate for `subject`, talking to
    kube-apiserver on loopback."""
    crt, key = issue(config, layout.pki, who, subject)
    ca_crt, _ = _ca(config)
    path = layout.kubeconfig(who)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": f"https://127.0.0.1:{config.ports.apiserver}",
            "certificate-authority": str(ca_crt)}}],
        "users": [{"name": who, "user": {"client-certificate": str(crt),
                                          "client-key": str(key)}}],
        "contexts": [{"name": who, "context": {"cluster": "local", "user": who}}],
        "current-context": who,
    }
    write_if_changed(path, json.dumps(doc, indent=2))
    path.chmod(0o600)
    return path


def node_kubeconfigs(config: StackConfig, layout: NodeLayout) -> dict[str, Path]:
    name = config.node.node_name
    return {
        "kubelet": kubeconfig(config, layout, "kubelet",
                              f"/O=system:nodes/CN=system:node:{name}"),
        "kube-proxy": kubeconfig(config, layout, "kube-proxy", "/CN=system:kube-proxy"),
        "coredns": kubeconfig(config, layout, "coredns", f"/CN={COREDNS_USER}"),
    }


def kubelet_serving_cert(config: StackConfig, layout: NodeLayout) -> tuple[Path, Path]:
    """kube-apiserver checks it (--kubelet-certificate-authority) for logs, exec, port-forward."""
    return issue(config, layout.pki, "kubelet-serving",
                 f"/O=system:nodes/CN=system:node:{config.node.node_name}",
                 ips=[config.node_ip])
