"""Pure parts of the local stack: rendering, ids, credentials, env files, ports, jars, pid files."""

from __future__ import annotations

import base64
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.errors import UserError
from ipsp.localstack import procs, render
from ipsp.localstack.fetch import (
    FERRETDB_FIXES,
    apply_fixes,
    artifact_name,
    drop_jars,
    parse_go_version,
    parse_java_major,
    require_tool,
)
from ipsp.localstack.layout import StackLayout, infra_dir
from ipsp.localstack.ports import port_in_use, require_free
from ipsp.localstack.stack import StackStatus


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        stack_kafka_port=19092,
        stack_kafka_controller_port=19093,
        stack_mongo_port=27018,
        stack_s3_port=19000,
    )


# ---------------------------------------------------------------- rendering


def test_kafka_properties_use_the_configured_ports_and_data_dir(settings: Settings, tmp_path: Path) -> None:
    text = render.kafka_properties(infra_dir() / "kafka" / "server.properties.in", settings, tmp_path / "d")
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))

    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "d")
    assert props["offsets.topic.replication.factor"] == "1"


def test_s3proxy_properties_check_signatures_and_keep_data_on_disk(settings: Settings, tmp_path: Path) -> None:
    template = infra_dir() / "s3proxy" / "s3proxy.conf.in"
    text = render.s3proxy_properties(template, settings, tmp_path / "s3", "AKEY", "SECRET")
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))

    assert props["s3proxy.endpoint"] == "http://127.0.0.1:19000"
    assert props["s3proxy.authorization"] == "aws-v2-or-v4"
    assert (props["s3proxy.identity"], props["s3proxy.credential"]) == ("AKEY", "SECRET")
    assert props["jclouds.provider"] == "filesystem-nio2"
    assert props["jclouds.filesystem.basedir"] == str(tmp_path / "s3")


def test_a_template_placeholder_without_value_is_a_user_error(tmp_path: Path) -> None:
    template = tmp_path / "t.in"
    template.write_text("port=${port}\nhost=${host}\n")

    assert render.render_template(template, port=1, host="h") == "port=1\nhost=h\n"
    with pytest.raises(UserError, match="host"):
        render.render_template(template, port=1)


def test_cluster_id_is_16_random_bytes_in_url_safe_base64() -> None:
    ids = {render.new_cluster_id() for _ in range(50)}

    assert len(ids) == 50
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_credentials_are_random_and_shell_safe() -> None:
    (a1, s1), (a2, s2) = render.new_credentials(), render.new_credentials()

    assert a1 != a2 and s1 != s2
    assert len(a1) == 20 and len(s1) == 40
    assert a1.isalnum() and s1.isalnum()


def test_client_env_points_at_loopback_ports(settings: Settings) -> None:
    env = render.client_env(settings, "AK", "SK")

    assert env == {
        "IPSP_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
        "IPSP_MONGO_URI": "mongodb://127.0.0.1:27018/",
        "IPSP_S3_ENDPOINT": "http://127.0.0.1:19000",
        "IPSP_S3_ACCESS_KEY": "AK",
        "IPSP_S3_SECRET_KEY": "SK",
    }


def test_env_file_round_trips_and_is_readable_by_settings(settings: Settings, tmp_path: Path) -> None:
    values = render.client_env(settings, "AK", "SK")
    env_file = tmp_path / "stack.env"
    env_file.write_text(render.format_env_file(values))

    assert render.parse_env_file(env_file.read_text()) == values
    loaded = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert loaded.kafka_bootstrap == "127.0.0.1:19092"
    assert loaded.s3_secret_key.get_secret_value() == "SK"


def test_export_lines_quote_values_for_eval() -> None:
    text = render.export_lines({"IPSP_A": "plain", "IPSP_B": "it's $HOME; rm -rf /"})

    lines = text.splitlines()
    assert lines[0] == "export IPSP_A=plain"
    assert shlex.split(lines[1]) == ["export", "IPSP_B=it's $HOME; rm -rf /"]
    out = subprocess.run(["bash", "-c", text + '\nprintf %s "$IPSP_B"'], capture_output=True, text=True)
    assert out.stdout == "it's $HOME; rm -rf /"


def test_shell_env_adds_the_s3_storage_root() -> None:
    assert render.shell_env({"IPSP_X": "1"}) == {"IPSP_X": "1", "IPSP_STORAGE_URI": "s3://ipsp"}


def test_status_object_has_the_agreed_shape() -> None:
    status = StackStatus("127.0.0.1:9092", True, "mongodb://127.0.0.1:27017/", False, "http://h:1", "a", "s", True)

    assert status.as_dict() == {
        "kafka": {"bootstrap": "127.0.0.1:9092", "up": True},
        "mongodb": {"uri": "mongodb://127.0.0.1:27017/", "up": False},
        "s3": {"endpoint": "http://h:1", "access_key": "a", "secret_key": "s", "up": True},
        "spark": {"master": "", "ui": "", "workers": 0, "up": False},
    }
    assert not status.all_up


def test_layout_keeps_everything_under_home_stack(settings: Settings, tmp_path: Path) -> None:
    layout = StackLayout.from_settings(settings)

    assert layout.root == tmp_path.resolve() / "stack"
    assert layout.env_file == layout.root / "stack.env"
    assert layout.pid_file("kafka") == layout.root / "run" / "kafka.pid"
    layout.ensure_dirs()
    assert layout.kafka_data.is_dir() and layout.log_dir.is_dir() and layout.s3_data.is_dir()


# ---------------------------------------------------------------- ports


def test_port_in_use_detects_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(port)
        with pytest.raises(UserError, match=rf"port {port} needed by Kafka .* IPSP_STACK_KAFKA_PORT=<port>"):
            require_free(port, "Kafka", "IPSP_STACK_KAFKA_PORT")
    assert not port_in_use(port)
    require_free(port, "Kafka", "IPSP_STACK_KAFKA_PORT")


# ---------------------------------------------------------------- tools and jars


def test_missing_tool_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(UserError, match=r"`java` not found on PATH: install a Java 17\+"):
        require_tool("java")
    with pytest.raises(UserError, match=r"`go` not found"):
        require_tool("go")


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("nonsense", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


@pytest.mark.parametrize(
    ("output", "version"),
    [("go version go1.26.8 linux/amd64", (1, 26)), ("go1.19.8", (1, 19)), ("devel", None)],
)
def test_parse_go_version(output: str, version: tuple[int, int] | None) -> None:
    assert parse_go_version(output) == version


@pytest.mark.parametrize(
    ("jar", "artifact"),
    [
        ("kafka-clients-3.9.2.jar", "kafka-clients"),
        ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "spark-sql-kafka-0-10_2.13"),
        ("scala-parallel-collections_2.13-1.2.0.jar", "scala-parallel-collections_2.13"),
        ("zstd-jni-1.5.7-7.jar", "zstd-jni"),
        ("netty-codec-4.1.112.Final.jar", "netty-codec"),
        ("commons-fileupload2-core-2.0.0-M2.jar", "commons-fileupload2-core"),
        ("jsr305-3.0.0.jar", "jsr305"),
    ],
)
def test_artifact_name(jar: str, artifact: str) -> None:
    assert artifact_name(jar) == artifact


def test_drop_jars_removes_what_pyspark_already_ships(tmp_path: Path) -> None:
    for name in ["kafka-clients-3.9.2.jar", "lz4-java-1.10.1.jar", "spark-tags_2.13-4.2.0.jar"]:
        (tmp_path / name).write_bytes(b"")

    removed = drop_jars(tmp_path, {"lz4-java", "spark-tags_2.13", "unrelated"})

    assert removed == ["lz4-java-1.10.1.jar", "spark-tags_2.13-4.2.0.jar"]
    assert [p.name for p in tmp_path.iterdir()] == ["kafka-clients-3.9.2.jar"]


# ---------------------------------------------------------------- pid files


def test_start_and_stop_a_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "sleeper.pid"
    record = procs.start([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log", pid_file)

    assert procs.running(pid_file) == record
    assert procs.stop(pid_file, timeout=10) == record
    assert procs.running(pid_file) is None and not pid_file.exists()
    assert "starting:" in (tmp_path / "s.log").read_text()


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = procs.start_ticks(bystander.pid)
        assert ticks is not None
        pid_file = tmp_path / "stale.pid"
        # a pid file from an earlier run whose pid now belongs to someone else
        pid_file.write_text(procs.PidRecord(bystander.pid, ticks - 1, ["java"]).to_json())

        assert procs.running(pid_file) is None
        assert procs.stop(pid_file) is None
        assert bystander.poll() is None  # still alive
        assert not pid_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_garbled_pid_file_counts_as_not_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text("12 not json")

    assert procs.read_pid_file(pid_file) is None
    assert procs.stop(pid_file) is None


def test_a_source_fix_replaces_its_line_once(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.go").write_text('const X = "old"\nconst Y = 1\n')

    apply_fixes(tmp_path, [("pkg/a.go", 'X = "old"', 'X = "new"')])

    assert (tmp_path / "pkg" / "a.go").read_text() == 'const X = "new"\nconst Y = 1\n'


def test_a_source_fix_whose_text_is_gone_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "a.go").write_text('const X = "other"\n')

    with pytest.raises(UserError, match=r"a\.go"):
        apply_fixes(tmp_path, [("a.go", 'X = "old"', 'X = "new"')])


def test_the_ferretdb_fix_spells_the_id_path_as_its_index_does() -> None:
    (relative, old, new), *_ = FERRETDB_FIXES
    assert relative.endswith("sqlite/metadata/metadata.go")
    assert "'$._id'" in old and "'_id'" in new
