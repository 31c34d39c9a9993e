"""A Kubernetes control plane on loopback for the manifest tests: etcd and kube-apiserver.

``ipsp stack k8s up`` builds (once, cached like FerretDB) kube-apiserver, kubectl and etcd
from the Go module proxy using the wrapper module in ``1_infrastructure/local/k8s``,
generates a private CA, TLS and client certificates and a service-account signing key with
``openssl``, and starts etcd and kube-apiserver on 127.0.0.1. ``ipsp stack k8s env`` prints
the ``KUBECONFIG=...`` (and ``PATH``) lines for a shell.

There is no kubelet, scheduler or controller manager: objects are authenticated, authorised
(RBAC), admitted (Pod Security, ValidatingAdmissionPolicy, ...), validated and stored, but
never run. A Deployment gets no pods, a deleted namespace stays ``Terminating`` and no
ServiceAccount is created for a new namespace. That is exactly what ``kubectl apply`` needs
checked; running the workloads is a real cluster's job (0_pipelines/deploy.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ipsp.config import Settings, load_settings
from ipsp.errors import UserError
from ipsp.localstack import procs
from ipsp.localstack.fetch import require_go
from ipsp.localstack.layout import StackLayout, infra_dir
from ipsp.localstack.ports import require_free

Say = Callable[[str], None]

K8S_VERSION = "v1.37.2"  # of k8s.io/kubernetes in 1_infrastructure/local/k8s/go.mod
COMMANDS = ("kube-apiserver", "kubectl", "etcd")
BUILD_PACKAGES = ("k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl", "./etcd")
WRAPPER_FILES = ("go.mod", "go.sum", "tools.go", "etcd/main.go")
MARKER = ".built"
# stored addresses only: with no kube-proxy nothing ever routes them
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "ipsp-admin"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class K8sPaths:
    """Where the control plane keeps its binaries, keys and data (under ``<home>/stack``)."""

    stack: StackLayout

    @property
    def bin_dir(self) -> Path:
        """kube-apiserver, kubectl and etcd."""
        return self.stack.bin_dir / "k8s"

    def binary(self, name: str) -> Path:
        """Path of one built command."""
        return self.bin_dir / name

    @property
    def root(self) -> Path:
        """Keys, kubeconfig and etcd data."""
        return self.stack.root / "k8s"

    @property
    def pki(self) -> Path:
        """CA, server and client certificates, service-account key (mode 0600 keys)."""
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        """etcd's data folder."""
        return self.root / "etcd-data"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig ``env`` points at."""
        return self.root / "kubeconfig"


def paths_for(settings: Settings) -> K8sPaths:
    """The control plane's paths for ``settings.home``."""
    return K8sPaths(StackLayout.from_settings(settings))


def wrapper_dir() -> Path:
    """The repository's Go wrapper module (``1_infrastructure/local/k8s``)."""
    return infra_dir() / "k8s"


# ---------------------------------------------------------------- build


def version_ldflags(version: str = K8S_VERSION) -> str:
    """Linker flags that stamp the release into the binaries (``kubectl version``, /version)."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def build_digest(source: Path) -> str:
    """Digest of the wrapper module and the link flags: a change means rebuild."""
    digest = hashlib.sha256(version_ldflags().encode())
    for name in WRAPPER_FILES:
        digest.update(name.encode() + b"\0" + (source / name).read_bytes())
    return digest.hexdigest()[:16]


def built(paths: K8sPaths, source: Path) -> bool:
    """True when every command is built from the current wrapper module."""
    marker = paths.bin_dir / MARKER
    if not all(paths.binary(name).is_file() for name in COMMANDS) or not marker.is_file():
        return False
    return marker.read_text().strip() == build_digest(source)


def go_build_cmd(go: str, out_dir: Path) -> list[str]:
    """The one ``go build`` of all three commands (shared packages compile once)."""
    return [go, "build", "-buildvcs=false", "-ldflags", version_ldflags(), "-o", f"{out_dir}/"]


def build(paths: K8sPaths, say: Say = lambda _msg: None) -> bool:
    """Build the commands where missing or stale; returns True when it built.

    Go's module and build caches are reused, so a rebuild after wiping the stack
    folder takes seconds; a cold build takes minutes (measured in the README).
    """
    source = wrapper_dir()
    if built(paths, source):
        return False
    go = require_go()
    say(f"building kube-apiserver, kubectl and etcd {K8S_VERSION} (Go; minutes the first time)")
    log_file = paths.stack.log_file("fetch-k8s")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    partial = paths.bin_dir.with_name("k8s.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    env = dict(os.environ, GOTOOLCHAIN="local")  # never download another Go toolchain
    env.pop("GOFLAGS", None)
    with log_file.open("w") as log:
        result = subprocess.run(
            [*go_build_cmd(go, partial), *BUILD_PACKAGES],
            cwd=source,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise UserError(
            f"building the Kubernetes control plane failed (log: {log_file}): "
            "check that the Go module proxy is reachable, then rerun"
        )
    (partial / MARKER).write_text(build_digest(source) + "\n")
    shutil.rmtree(paths.bin_dir, ignore_errors=True)
    partial.rename(paths.bin_dir)
    return True


# ---------------------------------------------------------------- keys and kubeconfig

_OPENSSL_CONFIG = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n"


def _openssl(args: list[str], cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise UserError("openssl not found: install it (apt-get install openssl) to create the test certificates")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def cert_args(name: str, subject: str, extensions: list[str]) -> list[str]:
    """``openssl req`` arguments for a P-256 key and a certificate signed by the local CA."""
    args = ["req", "-config", "openssl.cnf", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    args += ["-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3650", "-subj", subject]
    if name != "ca":
        args += ["-CA", "ca.crt", "-CAkey", "ca.key"]
    for extension in extensions:
        args += ["-addext", extension]
    return args


def ensure_pki(paths: K8sPaths) -> None:
    """Create the CA, the server and admin certificates and the service-account key once."""
    pki = paths.pki
    if (pki / "sa.pub").is_file():
        return
    shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True, mode=0o700)
    (pki / "openssl.cnf").write_text(_OPENSSL_CONFIG)
    old_umask = os.umask(0o077)  # keys are written 0600
    try:
        _openssl(
            cert_args("ca", "/CN=ipsp-test-ca", ["basicConstraints=critical,CA:TRUE", "keyUsage=keyCertSign"]), pki
        )
        leaf = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
        san = "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc"
        _openssl(cert_args("server", "/CN=kube-apiserver", [*leaf, "extendedKeyUsage=serverAuth", san]), pki)
        admin_subject = f"/O=system:masters/CN={ADMIN_USER}"
        _openssl(cert_args("admin", admin_subject, [*leaf, "extendedKeyUsage=clientAuth"]), pki)
        _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key"], pki)
        _openssl(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub.partial"], pki)
    finally:
        os.umask(old_umask)
    (pki / "sa.pub.partial").rename(pki / "sa.pub")  # last: its presence means complete


def server_url(settings: Settings) -> str:
    """The API server's address."""
    return f"https://127.0.0.1:{settings.stack_k8s_port}"


def kubeconfig_text(server: str, pki: Path) -> str:
    """An admin kubeconfig (client certificate in ``system:masters``) for ``server``."""
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: ipsp-test\n  cluster:\n    server: {server}\n"
        f"    certificate-authority: {pki / 'ca.crt'}\n"
        f"users:\n- name: {ADMIN_USER}\n  user:\n"
        f"    client-certificate: {pki / 'admin.crt'}\n    client-key: {pki / 'admin.key'}\n"
        f"contexts:\n- name: ipsp-test\n  context:\n    cluster: ipsp-test\n    user: {ADMIN_USER}\n"
        "current-context: ipsp-test\n"
    )


# ---------------------------------------------------------------- commands


def etcd_peer_port(settings: Settings) -> int:
    """etcd's peer port: the client port plus one (a single member never uses it)."""
    return settings.stack_etcd_port + 1


def etcd_cmd(paths: K8sPaths, settings: Settings) -> list[str]:
    """One etcd member on loopback; no fsync: the data is a throwaway test cluster's."""
    client = f"http://127.0.0.1:{settings.stack_etcd_port}"
    peer = f"http://127.0.0.1:{etcd_peer_port(settings)}"
    return [
        str(paths.binary("etcd")),
        "--name=ipsp",
        f"--data-dir={paths.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=ipsp={peer}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_cmd(paths: K8sPaths, settings: Settings) -> list[str]:
    """kube-apiserver on 127.0.0.1 with client-certificate auth, RBAC and the default admission."""
    pki = paths.pki
    return [
        str(paths.binary("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{settings.stack_etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # the reconciler of the `kubernetes` Service's endpoints refuses a loopback address
        "--endpoint-reconciler-type=none",
        f"--secure-port={settings.stack_k8s_port}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'server.crt'}",
        f"--tls-private-key-file={pki / 'server.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-issuer={ISSUER}",
        f"--api-audiences={ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=RBAC",
        "--anonymous-auth=false",
        "--allow-privileged=false",
        "--profiling=false",
        "--v=1",
    ]


# ---------------------------------------------------------------- health


def etcd_healthy(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when etcd answers ``/health`` with ``true``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.stack_etcd_port}/health", timeout=timeout_s) as resp:
            return b'"true"' in resp.read()
    except (OSError, urllib.error.URLError):
        return False


def apiserver_ready(paths: K8sPaths, settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when kube-apiserver answers ``/readyz`` ok to the admin certificate."""
    if not (paths.pki / "admin.crt").is_file():
        return False
    context = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    context.load_cert_chain(str(paths.pki / "admin.crt"), str(paths.pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"{server_url(settings)}/readyz", timeout=timeout_s, context=context) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait(name: str, check: Callable[[], bool], paths: K8sPaths) -> None:
    pid_file, log_file = paths.stack.pid_file(name), paths.stack.log_file(name)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        if procs.running(pid_file) is None:
            raise UserError(f"{name} exited during start-up (log: {log_file})")
        if time.monotonic() > deadline:
            procs.stop(pid_file)
            raise UserError(f"{name} did not answer within {START_TIMEOUT_S:.0f} s and was stopped (log: {log_file})")
        time.sleep(0.5)


# ---------------------------------------------------------------- public API


def up(settings: Settings | None = None, say: Say = lambda _msg: None) -> Path:
    """Build if needed, start etcd and kube-apiserver if not running; returns the kubeconfig."""
    settings = settings or load_settings()
    paths = paths_for(settings)
    paths.stack.ensure_dirs()
    steps = [
        ("etcd", lambda: etcd_cmd(paths, settings), lambda: etcd_healthy(settings)),
        ("kube-apiserver", lambda: apiserver_cmd(paths, settings), lambda: apiserver_ready(paths, settings)),
    ]
    todo = [name for name, _cmd, _ok in steps if procs.running(paths.stack.pid_file(name)) is None]
    if "etcd" in todo:
        require_free(settings.stack_etcd_port, "etcd", "IPSP_STACK_ETCD_PORT")
        require_free(etcd_peer_port(settings), "etcd (peer)", "IPSP_STACK_ETCD_PORT")
    if "kube-apiserver" in todo:
        require_free(settings.stack_k8s_port, "kube-apiserver", "IPSP_STACK_K8S_PORT")
    build(paths, say)
    ensure_pki(paths)
    paths.etcd_data.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.kubeconfig.write_text(kubeconfig_text(server_url(settings), paths.pki))
    for name, cmd, healthy in steps:
        if name in todo:
            say(f"starting {name}")
            procs.start(cmd(), paths.stack.log_file(name), paths.stack.pid_file(name), cwd=paths.root)
        _wait(name, healthy, paths)
    return paths.kubeconfig


def down(settings: Settings | None = None, say: Say = lambda _msg: None) -> list[str]:
    """Stop kube-apiserver, then etcd (only the processes ``up`` started)."""
    paths = paths_for(settings or load_settings())
    stopped = []
    for name in ("kube-apiserver", "etcd"):
        if procs.stop(paths.stack.pid_file(name)) is not None:
            say(f"stopped {name}")
            stopped.append(name)
    return stopped


def running(settings: Settings | None = None) -> bool:
    """True when both processes run and the API server is ready."""
    settings = settings or load_settings()
    paths = paths_for(settings)
    alive = all(procs.running(paths.stack.pid_file(name)) for name in ("etcd", "kube-apiserver"))
    return alive and apiserver_ready(paths, settings)


def env_lines(settings: Settings | None = None) -> str:
    """``export`` lines that point a shell's kubectl at the control plane."""
    paths = paths_for(settings or load_settings())
    return f"export KUBECONFIG={paths.kubeconfig}\nexport PATH={paths.bin_dir}:$PATH"
