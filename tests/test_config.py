from pathlib import Path

import pytest

from openmanager.config import Settings
from openmanager.core.errors import ConfigError


def test_defaults() -> None:
    s = Settings.load({}, env={})
    assert (s.host, s.port, s.servers, s.tick, s.simulator, s.local) == ("127.0.0.1", 8000, 20, 1.0, True, True)
    assert s.db_url.endswith("data/openmanager.db") and s.db_url.startswith("sqlite:///")


def test_precedence_toml_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "om.toml"
    cfg.write_text('port = 9000\nservers = 5\ntick = 0.5\nhost = "0.0.0.0"\nsimulator = false\n')
    s = Settings.load({}, env={}, config_file=cfg)
    assert (s.port, s.servers, s.tick, s.host, s.simulator) == (9000, 5, 0.5, "0.0.0.0", False)
    s = Settings.load({}, env={"OPENMANAGER_PORT": "9100", "OPENMANAGER_SIMULATOR": "yes"}, config_file=cfg)
    assert (s.port, s.simulator, s.servers) == (9100, True, 5)
    s = Settings.load({"port": 9200, "servers": None}, env={"OPENMANAGER_PORT": "9100"}, config_file=cfg)
    assert (s.port, s.servers) == (9200, 5)


def test_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid value 'lots' for servers"):
        Settings.load({}, env={"OPENMANAGER_SERVERS": "lots"})
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        Settings.load({}, env={}, config_file=bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load({}, env={}, config_file=tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="tick must be positive"):
        Settings.load({"tick": 0}, env={})
    with pytest.raises(ConfigError, match="unknown metric"):
        Settings.load({"thresholds": "heat=1:2"}, env={})


def test_threshold_overrides() -> None:
    policy = Settings.load({"thresholds": "cpu=50:60"}, env={}).status_policy()
    assert policy.thresholds["cpu"].warning == 50 and policy.thresholds["memory"].critical == 85


def test_configuration_doc_lists_every_setting() -> None:
    from dataclasses import fields

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for f in fields(Settings):
        assert f"`OPENMANAGER_{f.name.upper()}`" in doc, f.name
        assert f"--{f.name.replace('_', '-')}" in doc, f.name


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    s = Settings.load({"tls_cert": str(cert), "tls_key": str(key)}, env={})
    assert (s.tls_cert, s.tls_key) == (str(cert), str(key))
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        Settings.load({"tls_cert": str(cert)}, env={})
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        Settings.load({}, env={"OPENMANAGER_TLS_KEY": str(key)})
    with pytest.raises(ConfigError, match="tls_key: no such file"):
        Settings.load({"tls_cert": str(cert), "tls_key": str(tmp_path / "missing.pem")}, env={})


def test_otlp_token_rate_limits_are_checked() -> None:
    s = Settings.load({"otlp_token_requests_per_s": 0.5}, env={"OPENMANAGER_OTLP_TOKEN_ITEM_BURST": "7"})
    assert (s.otlp_token_requests_per_s, s.otlp_token_item_burst) == (0.5, 7)
    assert Settings.load({"otlp_token_items_per_s": 0}, env={}).otlp_token_items_per_s == 0  # no limit
    with pytest.raises(ConfigError, match="otlp_token_requests_per_s must be between 0"):
        Settings.load({"otlp_token_requests_per_s": -1}, env={})
    with pytest.raises(ConfigError, match="otlp_token_item_burst must be between 1 and"):
        Settings.load({"otlp_token_item_burst": 0}, env={})
    with pytest.raises(ConfigError, match="otlp_token_items_per_s"):
        Settings.load({}, env={"OPENMANAGER_OTLP_TOKEN_ITEMS_PER_S": "nan"})
