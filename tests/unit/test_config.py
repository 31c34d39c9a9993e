"""Settings: explicit > env > stack env file > default; unknown keys rejected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from ipsp.config import Settings, env_var_names, load_settings

DOC = Path(__file__).resolve().parents[2] / "CONTRACTS.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in env_var_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IPSP_HOME", str(tmp_path))


def test_defaults_point_at_loopback(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap.startswith("127.0.0.1:")
    assert "127.0.0.1" in settings.mongo_uri.get_secret_value()
    assert settings.s3_endpoint.startswith("http://127.0.0.1:")
    assert settings.storage_uri == (tmp_path / "store").as_uri()
    assert settings.model_registry_uri == settings.storage_uri + "/models"


def test_env_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPSP_KAFKA_TOPIC", "from-env")
    assert load_settings().kafka_topic == "from-env"


def test_argument_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPSP_KAFKA_TOPIC", "from-env")
    assert load_settings(kafka_topic="from-arg").kafka_topic == "from-arg"
    assert load_settings(kafka_topic=None).kafka_topic == "from-env"


def test_stack_env_file_below_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "stack.env").write_text("IPSP_S3_ACCESS_KEY=from-file\nIPSP_KAFKA_TOPIC=file-topic\n")
    assert load_settings().s3_access_key == "from-file"
    monkeypatch.setenv("IPSP_KAFKA_TOPIC", "from-env")
    assert load_settings().kafka_topic == "from-env"


def test_secrets_are_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPSP_S3_SECRET_KEY", "hunter2hunter2")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert settings.s3_secret_key.get_secret_value() == "hunter2hunter2"


def test_unknown_env_key_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPSP_KAFKA_TOPICC", "typo")
    with pytest.raises(ValidationError, match="IPSP_KAFKA_TOPICC"):
        load_settings()


def test_unknown_argument_rejected() -> None:
    with pytest.raises(ValidationError, match="no_such_setting"):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPSP_BATCH_SIZE", "zero")
    with pytest.raises(ValidationError, match="batch_size"):
        load_settings()


def test_contracts_doc_lists_exactly_the_settings() -> None:
    documented = set(re.findall(r"^\| `(IPSP_[A-Z0-9_]+)` \|", DOC.read_text(), re.MULTILINE))
    assert documented == set(env_var_names())


def test_home_is_the_checkouts_from_every_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ipsp.config import default_home

    monkeypatch.delenv("IPSP_HOME", raising=False)
    checkout = Path(__file__).resolve().parents[2]
    homes = set()
    for folder in (checkout, checkout / "3_spark_processor", tmp_path):
        monkeypatch.chdir(folder)
        homes.add(default_home())
    assert homes == {checkout / ".local"}


def test_home_outside_a_checkout_is_a_per_user_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ipsp.config import find_checkout, user_data_dir

    installed = tmp_path / "site-packages" / "ipsp" / "config.py"
    installed.parent.mkdir(parents=True)
    assert find_checkout(installed) is None
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_data_dir() == tmp_path / "data"
    # a venv inside a checkout still finds the checkout
    checkout = Path(__file__).resolve().parents[2]
    assert find_checkout(checkout / ".venv" / "lib" / "site-packages" / "ipsp" / "config.py") == checkout
