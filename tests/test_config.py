"""Settings from flags and TAPEVAULT_* variables, failing loudly with the setting's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapevault.config import Settings
from tapevault.errors import ConfigError


def test_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    """With only a data directory, the database and audio live under it."""
    s = Settings.load({"data_dir": str(tmp_path)}, env={})
    assert s.database_url == f"sqlite:///{tmp_path / 'tapevault.db'}"
    assert s.storage_url == (tmp_path / "audio").as_uri()
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.is_sqlite


def test_flags_beat_environment(tmp_path: Path) -> None:
    """A flag overrides its TAPEVAULT_* variable, which overrides the default."""
    env = {"TAPEVAULT_DATA_DIR": str(tmp_path / "env"), "TAPEVAULT_PORT": "9000"}
    s = Settings.load({"data_dir": str(tmp_path / "flag")}, env=env)
    assert s.data_dir == tmp_path / "flag"
    assert s.port == 9000
    assert s.public_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("name", "value", "setting"),
    [
        ("port", "0", "TAPEVAULT_PORT"),
        ("port", "http", "TAPEVAULT_PORT"),
        ("public_url", "ftp://x", "TAPEVAULT_PUBLIC_URL"),
        ("public_url", "https://x/?a=1", "TAPEVAULT_PUBLIC_URL"),
        ("database_url", "mysql://x", "TAPEVAULT_DATABASE_URL"),
        ("database_url", "sqlite://relative.db", "TAPEVAULT_DATABASE_URL"),
        ("max_upload_bytes", "lots", "TAPEVAULT_MAX_UPLOAD_BYTES"),
        ("storage_url", "ftp://bucket/audio", "TAPEVAULT_STORAGE_URL"),
        ("storage_url", "s3:///no-bucket", "TAPEVAULT_STORAGE_URL"),
        ("storage_url", "az://container/../other", "TAPEVAULT_STORAGE_URL"),
        ("storage_url", "file://relative/audio", "TAPEVAULT_STORAGE_URL"),
        ("storage_endpoint", "minio:9000", "TAPEVAULT_STORAGE_ENDPOINT"),
    ],
)
def test_invalid_settings_name_the_setting(
    tmp_path: Path, name: str, value: str, setting: str
) -> None:
    """Every invalid value fails at load with a message naming the variable."""
    with pytest.raises(ConfigError) as info:
        Settings.load({"data_dir": str(tmp_path), name: value}, env={})
    assert info.value.setting == setting
    assert setting in str(info.value)


@pytest.mark.parametrize(
    "url", ["s3://bucket", "s3://bucket/tenant/audio", "gs://bucket/audio", "az://container/a"]
)
def test_object_store_urls_and_an_endpoint_are_accepted(tmp_path: Path, url: str) -> None:
    """Object stores are named by URL; the endpoint override travels to child processes."""
    s = Settings.load(
        {"data_dir": str(tmp_path), "storage_url": url},
        env={"TAPEVAULT_STORAGE_ENDPOINT": "http://127.0.0.1:9000/"},
    )
    assert s.storage_url == url and s.storage_endpoint == "http://127.0.0.1:9000"
    assert s.environment()["TAPEVAULT_STORAGE_ENDPOINT"] == "http://127.0.0.1:9000"


def test_sizes_and_origins(tmp_path: Path) -> None:
    """Sizes take binary units; CORS origins are a comma-separated list."""
    s = Settings.load(
        {
            "data_dir": str(tmp_path),
            "max_upload_bytes": "512M",
            "cors_origins": "https://a, https://b",
        },
        env={},
    )
    assert s.max_upload_bytes == 512 * 1024**2
    assert s.cors_origins == ("https://a", "https://b")


def test_password_is_masked_in_repr(tmp_path: Path) -> None:
    """A database password never appears in the settings' repr."""
    s = Settings.load(
        {"data_dir": str(tmp_path), "database_url": "postgresql://u:hunter2@db/x"}, env={}
    )
    assert "hunter2" not in repr(s)
    assert "***" in repr(s)


def test_environment_round_trips(tmp_path: Path) -> None:
    """Settings passed on to child processes as variables load back equal."""
    settings = Settings.load(
        {
            "data_dir": str(tmp_path),
            "processes": "2",
            "audit": "off",
            "playback_idle": "5s",
            "audit_durable": "media",
            "cors_origins": "https://a.example,https://b.example",
        },
        env={},
    )
    assert Settings.load(env=settings.environment()) == settings


def test_connection_limits_and_trusted_proxies(tmp_path: Path) -> None:
    """Header size, read timeouts and trusted proxies load, normalise and round-trip; the
    defaults trust no proxy at all."""
    default = Settings.load({"data_dir": str(tmp_path)}, env={})
    assert default.trusted_proxies == ()
    assert (default.max_header_bytes, default.header_timeout_seconds) == (64 * 1024, 30)
    assert (default.body_timeout_seconds, default.keepalive_timeout_seconds) == (60, 5)
    env = {
        "TAPEVAULT_DATA_DIR": str(tmp_path),
        "TAPEVAULT_MAX_HEADER_BYTES": "16KiB",
        "TAPEVAULT_HEADER_TIMEOUT": "10s",
        "TAPEVAULT_BODY_TIMEOUT": "2m",
        "TAPEVAULT_KEEPALIVE_TIMEOUT": "15",
        "TAPEVAULT_TRUSTED_PROXIES": " 10.0.0.7, 192.168.0.0/16 ,::1 ",
    }
    s = Settings.load(env=env)
    assert s.max_header_bytes == 16 * 1024
    assert (s.header_timeout_seconds, s.body_timeout_seconds) == (10, 120)
    assert s.keepalive_timeout_seconds == 15
    assert s.trusted_proxies == ("10.0.0.7/32", "192.168.0.0/16", "::1/128")
    assert Settings.load(env=s.environment()) == s


@pytest.mark.parametrize("value", ["localhost", "10.0.0.300", "10.0.0.0/33", "*"])
def test_a_trusted_proxy_must_be_an_address_or_network(tmp_path: Path, value: str) -> None:
    """Anything but IPs and CIDRs (a name, a wildcard) fails at start-up naming the setting."""
    with pytest.raises(ConfigError, match="TAPEVAULT_TRUSTED_PROXIES"):
        Settings.load({"data_dir": str(tmp_path)}, env={"TAPEVAULT_TRUSTED_PROXIES": value})
