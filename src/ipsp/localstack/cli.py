"""``ipsp stack ...``: fetch, start, check and stop the single-machine stack."""

from __future__ import annotations

import json
import time

import typer

stack_app = typer.Typer(
    help="The single-machine stack of real services (Kafka, FerretDB, S3Proxy; a Spark cluster) on loopback.",
    no_args_is_help=True,
)


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[cyan]stack[/]: {message}")


def _print_table(settings_status: object, pids: dict[str, int | None]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ipsp.localstack.spark import master_pid
    from ipsp.localstack.stack import StackStatus

    assert isinstance(settings_status, StackStatus)
    table = Table("service", "address", "up", "pid")
    rows = [
        ("kafka", settings_status.kafka_bootstrap, settings_status.kafka_up, pids.get("kafka")),
        ("mongodb (FerretDB)", settings_status.mongo_uri, settings_status.mongo_up, pids.get("ferretdb")),
        ("s3 (S3Proxy)", settings_status.s3_endpoint, settings_status.s3_up, pids.get("s3proxy")),
        (
            "spark (standalone, optional)",
            f"{settings_status.spark_master} ({settings_status.spark_workers} worker(s))",
            settings_status.spark_up,
            master_pid(),
        ),
    ]
    for name, address, is_up, pid in rows:
        table.add_row(name, address, "[green]yes[/]" if is_up else "[red]no[/]", str(pid or "-"))
    Console().print(table)


@stack_app.command()
def fetch() -> None:
    """Fetch jars (Maven Central) and build FerretDB (Go) where missing; reuse the rest."""
    from ipsp.localstack.stack import fetch_missing

    started = time.monotonic()
    done = fetch_missing(say=_say)
    if done:
        _say(f"fetched {', '.join(done)} in {time.monotonic() - started:.0f} s")
    else:
        _say("everything already fetched")


@stack_app.command()
def up() -> None:
    """Start Kafka, FerretDB and S3Proxy (fetching what is missing); wait until each answers."""
    from ipsp.localstack import stack

    started = time.monotonic()
    result = stack.up(say=_say)
    _print_table(result, stack.pids())
    _say(f'up in {time.monotonic() - started:.1f} s; `eval "$(ipsp stack env)"` points a shell at it')


@stack_app.command()
def down() -> None:
    """Stop the services `up` and `spark up` started (and nothing else)."""
    from ipsp.localstack import stack

    stopped = stack.down(say=_say)
    _say("stopped " + ", ".join(stopped) if stopped else "nothing was running")


@stack_app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (addresses, keys, up)."),
) -> None:
    """Health-check each service and show its address."""
    from ipsp.localstack import stack

    result = stack.status()
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
    else:
        _print_table(result, stack.pids())


@stack_app.command()
def env() -> None:
    """Print `export IPSP_...` lines: `eval "$(ipsp stack env)"` points a shell at the stack."""
    from ipsp.localstack.stack import shell_exports

    typer.echo(shell_exports())


k8s_app = typer.Typer(
    help="A Kubernetes control plane on loopback (etcd + kube-apiserver, no kubelet) for the manifest tests.",
    no_args_is_help=True,
)
stack_app.add_typer(k8s_app, name="k8s")


@k8s_app.command("fetch")
def k8s_fetch() -> None:
    """Build kube-apiserver, kubectl and etcd from the Go module proxy where missing."""
    from ipsp.config import load_settings
    from ipsp.localstack import k8s

    started = time.monotonic()
    did = k8s.build(k8s.paths_for(load_settings()), say=_say)
    _say(f"built in {time.monotonic() - started:.0f} s" if did else "already built")


@k8s_app.command("up")
def k8s_up() -> None:
    """Start etcd and kube-apiserver (building them first when missing); wait until ready."""
    from ipsp.localstack import k8s

    started = time.monotonic()
    kubeconfig = k8s.up(say=_say)
    _say(f"ready in {time.monotonic() - started:.1f} s; kubeconfig {kubeconfig}")
    _say('`eval "$(ipsp stack k8s env)"` points kubectl at it (objects are stored, never run)')


@k8s_app.command("down")
def k8s_down() -> None:
    """Stop kube-apiserver and etcd (only what `up` started)."""
    from ipsp.localstack import k8s

    stopped = k8s.down(say=_say)
    _say("stopped " + ", ".join(stopped) if stopped else "nothing was running")


@k8s_app.command("env")
def k8s_env() -> None:
    """Print `export KUBECONFIG=...` and PATH lines: `eval "$(ipsp stack k8s env)"`."""
    from ipsp.errors import UserError
    from ipsp.localstack import k8s

    if not k8s.running():
        raise UserError("the control plane is not running: start it with `ipsp stack k8s up`")
    typer.echo(k8s.env_lines())


spark_app = typer.Typer(
    help="A Spark standalone cluster on loopback (master + workers from the venv's pyspark) for jobs past one process.",
    no_args_is_help=True,
)
stack_app.add_typer(spark_app, name="spark")


@spark_app.command("up")
def spark_up(
    workers: int = typer.Option(2, "--workers", "-w", min=1, max=16, help="Worker processes."),
    cores: int = typer.Option(1, "--cores", "-c", min=1, help="Cores each worker offers to executors."),
    memory: str = typer.Option("2g", "--memory", help="Memory each worker offers to executors (e.g. 2g, 512m)."),
) -> None:
    """Start a master and WORKERS workers (idempotent: a running cluster is reshaped to match, not doubled)."""
    from ipsp.localstack import spark

    started = time.monotonic()
    result = spark.up(spec=spark.ClusterSpec(workers=workers, cores=cores, memory=memory), say=_say)
    took = time.monotonic() - started
    _say(f"{result.workers} worker(s), {result.cores} core(s) up in {took:.1f} s; UI {result.ui_url}")
    _say(f"jobs run on it with IPSP_SPARK_MASTER={result.master_url}")


@spark_app.command("down")
def spark_down() -> None:
    """Stop the workers and the master (only what `spark up` started)."""
    from ipsp.localstack import spark

    stopped = spark.down(say=_say)
    _say("stopped " + ", ".join(stopped) if stopped else "nothing was running")
