"""The pure parts of ``ipsp stack k8s``: wrapper module, commands, kubeconfig, digests."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from ipsp.config import Settings
from ipsp.localstack import k8s
from ipsp.localstack.layout import StackLayout

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "1_infrastructure" / "local" / "k8s"


def settings(tmp_path: Path) -> Settings:
    """Settings with the control plane's ports set."""
    return Settings(home=tmp_path, stack_k8s_port=16443, stack_etcd_port=12379)


def test_wrapper_pins_every_staging_module_to_the_release() -> None:
    """k8s.io/kubernetes at K8S_VERSION; each k8s.io/* replaced by v0.<minor>.<patch>."""
    text = (WRAPPER / "go.mod").read_text()
    assert re.search(rf"^\s+k8s\.io/kubernetes {re.escape(k8s.K8S_VERSION)}$", text, re.M)
    staging = "v0." + k8s.K8S_VERSION.split(".", 1)[1]
    replaces = re.findall(r"^\s+(k8s\.io/\S+) => (k8s\.io/\S+) (\S+)$", text, re.M)
    assert len(replaces) >= 25, "the staging modules of k8s.io/kubernetes must all be replaced"
    for module, target, version in replaces:
        assert module == target and version == staging, (module, target, version)
    assert "toolchain" not in text, "a toolchain line would make go download another Go"


def test_build_digest_follows_the_wrapper_files(tmp_path: Path) -> None:
    """A changed go.sum (or any wrapper file) means a rebuild; an unchanged one does not."""
    copy = tmp_path / "k8s"
    shutil.copytree(WRAPPER, copy)
    first = k8s.build_digest(copy)
    assert k8s.build_digest(copy) == first
    (copy / "go.sum").write_text((copy / "go.sum").read_text() + "\n")
    assert k8s.build_digest(copy) != first


def test_built_needs_every_binary_and_a_matching_marker(tmp_path: Path) -> None:
    """``built`` is false until all three commands and the current marker exist."""
    paths = k8s.K8sPaths(StackLayout(tmp_path))
    assert not k8s.built(paths, WRAPPER)
    paths.bin_dir.mkdir(parents=True)
    for name in k8s.COMMANDS:
        paths.binary(name).write_text("")
    (paths.bin_dir / k8s.MARKER).write_text("stale\n")
    assert not k8s.built(paths, WRAPPER)
    (paths.bin_dir / k8s.MARKER).write_text(k8s.build_digest(WRAPPER) + "\n")
    assert k8s.built(paths, WRAPPER)


def test_version_is_stamped_into_both_version_packages() -> None:
    """kubectl (client-go) and the server (component-base) report the release."""
    flags = k8s.version_ldflags("v1.37.2")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.37.2" in flags
        assert f"-X {package}.gitMinor=37" in flags


def test_servers_listen_on_loopback_only(tmp_path: Path) -> None:
    """Every address in the etcd and kube-apiserver command lines is 127.0.0.1."""
    s = settings(tmp_path)
    paths = k8s.paths_for(s)
    etcd = " ".join(k8s.etcd_cmd(paths, s))
    api = " ".join(k8s.apiserver_cmd(paths, s))
    assert "127.0.0.1:12379" in etcd and "127.0.0.1:12380" in etcd
    assert "--bind-address=127.0.0.1" in api and "--secure-port=16443" in api
    assert "--etcd-servers=http://127.0.0.1:12379" in api
    addresses = re.findall(r"(?:https?://)?(\d+\.\d+\.\d+\.\d+):\d+", etcd + " " + api)
    assert addresses and set(addresses) == {"127.0.0.1"}
    assert "--authorization-mode=RBAC" in api and "--anonymous-auth=false" in api


def test_kubeconfig_points_at_the_server_with_the_admin_certificate(tmp_path: Path) -> None:
    """A kubeconfig kubectl can read: server URL, CA and client certificate paths."""
    pki = tmp_path / "pki"
    config = yaml.safe_load(k8s.kubeconfig_text("https://127.0.0.1:16443", pki))
    assert config["current-context"] == "ipsp-test"
    assert config["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:16443",
        "certificate-authority": str(pki / "ca.crt"),
    }
    user = config["users"][0]["user"]
    assert user == {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")}


def test_certificates_are_signed_by_the_local_ca(tmp_path: Path) -> None:
    """Leaf certificates are issued by the CA (-CA); the CA signs itself."""
    ca = k8s.cert_args("ca", "/CN=ca", ["basicConstraints=critical,CA:TRUE"])
    assert "-CA" not in ca and ca[ca.index("-keyout") + 1] == "ca.key"
    leaf = k8s.cert_args("admin", "/O=system:masters/CN=x", ["extendedKeyUsage=clientAuth"])
    assert leaf[leaf.index("-CA") + 1] == "ca.crt" and leaf[leaf.index("-CAkey") + 1] == "ca.key"
    assert leaf[leaf.index("-addext") + 1] == "extendedKeyUsage=clientAuth"


def test_env_lines_export_kubeconfig_and_the_matching_kubectl(tmp_path: Path) -> None:
    """``ipsp stack k8s env`` prints KUBECONFIG=... and puts the built kubectl first."""
    s = settings(tmp_path)
    lines = k8s.env_lines(s).splitlines()
    paths = k8s.paths_for(s)
    assert f"export KUBECONFIG={paths.kubeconfig}" in lines
    assert f"export PATH={paths.bin_dir}:$PATH" in lines
