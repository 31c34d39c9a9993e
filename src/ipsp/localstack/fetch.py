"""Fetch and build the stack's servers: only what is missing, reusing caches.

Jars come from Maven Central through the tiny poms in ``1_infrastructure/local``
(``dependency:copy-dependencies``, cached in ``~/.m2``); FerretDB is built from its
Go module (cached in the Go module and build caches). Each result carries a
marker naming what it was built from, so a later run skips it, and a changed
pom or version rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ipsp.errors import UserError
from ipsp.localstack.layout import StackLayout, infra_dir

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
MIN_JAVA = 17
MIN_GO = (1, 24)  # FerretDB v1.24.2's go.mod directive
#: One-line source fixes applied before FerretDB is built: (file, text, replacement).
#: FerretDB's SQLite backend creates its unique ``_id`` index on ``_ferretdb_sjson->"_id"`` but
#: filters, updates and deletes by ``_ferretdb_sjson->'$._id'``; SQLite only uses an expression
#: index for the same expression, so every ``_id`` lookup scanned the whole table (3.4 s for one
#: frame among 1,000,000; 0.1 ms with the index). ``->'_id'`` is the same path, spelled as the index.
FERRETDB_FIXES: tuple[tuple[str, str, str], ...] = (
    (
        "internal/backends/sqlite/metadata/metadata.go",
        "IDColumn = DefaultColumn + \"->'$._id'\"",
        "IDColumn = DefaultColumn + \"->'_id'\"",
    ),
)
MARKER = ".ipsp-complete"

Say = Callable[[str], None]

_INSTALL_HINTS = {
    "java": "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jdk-headless)",
    "mvn": "install Maven (Debian: apt-get install maven)",
    # FerretDB v1.24's go.mod needs Go 1.24; Debian bookworm's golang package is 1.19
    "go": "install Go 1.24+ (the go.dev release tarball; Debian bookworm's golang package is too old)",
}

# artifact name, then a version that starts with digits-dot-digits (1.2, 2.0.0-M2, 4.1.112.Final...)
_JAR_RE = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d+\.\d+[^/]*)\.jar$")


@dataclass(frozen=True)
class JarBundle:
    """A set of jars resolved from one pom into one folder."""

    name: str
    pom: Path
    dest: Path
    drop_shipped_by_pyspark: bool = False


def require_tool(name: str) -> str:
    """Path of executable ``name``, or a one-line UserError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise UserError(f"`{name}` not found on PATH: {_INSTALL_HINTS.get(name, 'install it')}")
    return path


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output ("17.0.15" -> 17, "1.8.0_392" -> 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def require_java() -> str:
    """Path of a Java 17+ ``java``, or a one-line UserError."""
    java = require_tool("java")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise UserError(
            f"Java {MIN_JAVA}+ is required (found {major or 'an unknown version'} at {java}): " + _INSTALL_HINTS["java"]
        )
    return java


def parse_go_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from ``go env GOVERSION`` / ``go version`` output ("go1.26.8" -> (1, 26))."""
    match = re.search(r"go(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def require_go() -> str:
    """Path of a ``go`` new enough to build FerretDB, or a one-line UserError."""
    go = require_tool("go")
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False)
    found = parse_go_version(out.stdout)
    if found is None or found < MIN_GO:
        shown = f"{found[0]}.{found[1]}" if found else "an unknown version"
        raise UserError(f"Go {MIN_GO[0]}.{MIN_GO[1]}+ is required (found {shown} at {go}): " + _INSTALL_HINTS["go"])
    return go


def artifact_name(jar_filename: str) -> str:
    """Artifact id of a copied jar (``kafka-clients-3.9.2.jar`` -> ``kafka-clients``)."""
    match = _JAR_RE.match(jar_filename)
    return match.group("artifact") if match else jar_filename.removesuffix(".jar")


def pyspark_jar_names() -> set[str]:
    """Artifact ids of the jars the installed pyspark already ships."""
    import pyspark  # heavy-ish; only needed while fetching

    jars = Path(pyspark.__file__).parent / "jars"
    return {artifact_name(p.name) for p in jars.glob("*.jar")}


def drop_jars(folder: Path, names: Iterable[str]) -> list[str]:
    """Delete jars in ``folder`` whose artifact id is in ``names``; returns what was removed."""
    unwanted = set(names)
    removed = []
    for jar in sorted(folder.glob("*.jar")):
        if artifact_name(jar.name) in unwanted:
            jar.unlink()
            removed.append(jar.name)
    return removed


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _marker_ok(folder: Path, digest: str) -> bool:
    try:
        return (folder / MARKER).read_text().strip() == digest
    except OSError:
        return False


def _run_logged(cmd: list[str], log_file: Path, what: str, hint: str, **kwargs: object) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise UserError(f"{what} failed (exit {result.returncode}, log: {log_file}): {hint}")


def bundles(layout: StackLayout) -> list[JarBundle]:
    """The jar folders the stack needs."""
    infra = infra_dir()
    return [
        JarBundle("kafka", infra / "kafka" / "pom.xml", layout.kafka_lib),
        JarBundle("s3proxy", infra / "s3proxy" / "pom.xml", layout.s3proxy_lib),
        JarBundle("spark-kafka", infra / "spark-kafka" / "pom.xml", layout.spark_jars, True),
    ]


def bundle_digest(bundle: JarBundle) -> str:
    """What a bundle's marker must say: the pom's content (and pyspark's jars when filtered)."""
    parts = [bundle.pom.read_text()]
    if bundle.drop_shipped_by_pyspark:
        parts += sorted(pyspark_jar_names())
    return _digest(*parts)


def bundle_ready(bundle: JarBundle) -> bool:
    """True when the bundle's folder holds a complete copy for the current pom."""
    return _marker_ok(bundle.dest, bundle_digest(bundle))


def fetch_bundle(bundle: JarBundle, layout: StackLayout) -> None:
    """Resolve a pom's runtime jars with Maven into the bundle folder (atomically)."""
    mvn = require_tool("mvn")
    tmp = bundle.dest.with_name(bundle.dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-B",
        "-f",
        str(bundle.pom),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    _run_logged(
        cmd,
        layout.log_file(f"fetch-{bundle.name}"),
        f"fetching the {bundle.name} jars from Maven Central",
        "check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml), then rerun",
    )
    if bundle.drop_shipped_by_pyspark:
        drop_jars(tmp, pyspark_jar_names())
    (tmp / MARKER).write_text(bundle_digest(bundle) + "\n")
    shutil.rmtree(bundle.dest, ignore_errors=True)
    tmp.rename(bundle.dest)


def ferretdb_ready(layout: StackLayout) -> bool:
    """True when the FerretDB binary for the pinned version is built."""
    return layout.ferretdb_bin.is_file() and _marker_ok(layout.bin_dir, ferretdb_digest())


def ferretdb_digest() -> str:
    """What the FerretDB binary is built from: the pinned version and the source fixes."""
    return _digest(FERRETDB_VERSION, *(part for fix in FERRETDB_FIXES for part in fix))


def apply_fixes(src: Path, fixes: Iterable[tuple[str, str, str]]) -> None:
    """Apply each one-line fix to the source tree; a fix whose text is not there once is an error."""
    for relative, old, new in fixes:
        path = src / relative
        text = path.read_text()
        if text.count(old) != 1:
            raise UserError(f"cannot apply the FerretDB fix to {relative}: expected text not found once")
        path.write_text(text.replace(old, new))


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"  # never download another Go toolchain
    env.pop("GOFLAGS", None)
    return env


def build_ferretdb(layout: StackLayout) -> None:
    """Build FerretDB from its Go module into ``<stack>/bin/ferretdb``.

    ``go install module@version`` builds a binary that panics at start: the
    module zip lacks ``build/version/version.txt`` (written by FerretDB's own
    release tooling). So the module source is copied to a writable folder, the
    file written with the pinned version, :data:`FERRETDB_FIXES` applied, and the
    command built there.
    """
    go = require_go()
    log_file = layout.log_file("fetch-ferretdb")
    env = _go_env()
    hint = "check that the Go module proxy is reachable, then rerun"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        log_file.write_text(result.stdout + result.stderr)
        raise UserError(f"downloading FerretDB {FERRETDB_VERSION} failed (log: {log_file}): {hint}")
    module_dir = Path(json.loads(result.stdout)["Dir"])
    src = layout.src_dir / f"ferretdb-{FERRETDB_VERSION}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(module_dir, src)
    for path in [src, *src.rglob("*")]:  # the module cache is read-only
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
    apply_fixes(src, FERRETDB_FIXES)
    layout.bin_dir.mkdir(parents=True, exist_ok=True)
    tmp_bin = layout.bin_dir / "ferretdb.partial"
    _run_logged(
        [go, "build", "-buildvcs=false", "-o", str(tmp_bin), "./cmd/ferretdb"],
        log_file,
        f"building FerretDB {FERRETDB_VERSION}",
        hint,
        cwd=src,
        env=env,
    )
    tmp_bin.replace(layout.ferretdb_bin)
    (layout.bin_dir / MARKER).write_text(ferretdb_digest() + "\n")
    shutil.rmtree(src, ignore_errors=True)


def missing(layout: StackLayout) -> list[str]:
    """Names of the parts not fetched or built yet."""
    names = [b.name for b in bundles(layout) if not bundle_ready(b)]
    if not ferretdb_ready(layout):
        names.append("ferretdb")
    return names


def fetch_all(layout: StackLayout, say: Say = lambda _msg: None) -> list[str]:
    """Fetch or build every missing part; returns the names of what was done.

    FerretDB's Go build (minutes when cold) runs in a thread while Maven works.
    """
    todo_bundles = [b for b in bundles(layout) if not bundle_ready(b)]
    todo_ferret = not ferretdb_ready(layout)
    if not todo_bundles and not todo_ferret:
        return []
    # check every tool first, so a missing one is reported before minutes of work
    require_java()
    if todo_bundles:
        require_tool("mvn")
    if todo_ferret:
        require_go()

    errors: list[BaseException] = []

    def ferret_job() -> None:
        try:
            build_ferretdb(layout)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = None
    if todo_ferret:
        say(f"building FerretDB {FERRETDB_VERSION} (Go, a few minutes the first time)")
        thread = threading.Thread(target=ferret_job, name="ferretdb-build", daemon=True)
        thread.start()
    for bundle in todo_bundles:
        say(f"fetching {bundle.name} jars (Maven Central)")
        fetch_bundle(bundle, layout)
    if thread is not None:
        thread.join()
    if errors:
        raise errors[0]
    return [b.name for b in todo_bundles] + (["ferretdb"] if todo_ferret else [])
