"""settings: one schema, environment over TOML file over defaults, secrets never in the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from postroom.errors import ConfigError
from postroom.settings import Settings, TlsMode, load_settings, masked_dump


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No POSTROOM_* variables and no ./postroom.toml leak in from the developer's shell."""
    for name in list(os.environ):
        if name.upper().startswith("POSTROOM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_no_config_file_gives_defaults() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.smtp.port == 25
    assert settings.smtp.tls is TlsMode.NONE
    assert settings.defaults.retry_period_minutes == 60
    assert settings.defaults.max_retries == 5
    assert settings.defaults.validity_days == 5.0
    assert settings.archive.enabled is False
    assert settings.archive.address is None
    assert settings.archive_relay == settings.smtp


def test_toml_file_is_read(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", """
database_url = "sqlite:///file.db"
[smtp]
host = "mail.example.com"
port = 2525
tls = "starttls"
[defaults]
from_address = "news@example.com"
[archive]
enabled = true
bcc_address = "vault@archive.example"
[archive.relay]
host = "archive.example"
""")
    settings = load_settings(config)
    assert settings.database_url == "sqlite:///file.db"
    assert (settings.smtp.host, settings.smtp.port) == ("mail.example.com", 2525)
    assert settings.smtp.tls is TlsMode.STARTTLS
    assert settings.defaults.from_address == "news@example.com"
    assert settings.archive.address == "vault@archive.example"
    assert settings.archive_relay.host == "archive.example"


def test_settings_from_a_file_pickle_as_they_are(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A send hands its settings to its child processes by pickle (app/children.py)."""
    monkeypatch.setenv("POSTROOM_SMTP__PASSWORD", "s3cret")
    config = write(tmp_path / "c.toml", """
[smtp]
host = "mail.example.com"
username = "postroom"
[sending]
processes = 2
""")
    settings = load_settings(config)
    again = pickle.loads(pickle.dumps(settings))
    assert type(again) is Settings and again == settings
    assert (again.smtp.host, again.sending.processes) == ("mail.example.com", 2)
    assert again.smtp.password.get_secret_value() == "s3cret"
    assert again.model_fields_set == settings.model_fields_set == {"smtp", "sending"}


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "c.toml", '[smtp]\nhost = "file.example"\nport = 2525\n')
    monkeypatch.setenv("POSTROOM_SMTP__PORT", "587")
    monkeypatch.setenv("POSTROOM_DATABASE_URL", "sqlite:///env.db")
    settings = load_settings(config)
    assert settings.smtp.port == 587
    assert settings.smtp.host == "file.example"  # not overridden: the file's value stays
    assert settings.database_url == "sqlite:///env.db"


def test_default_file_in_working_directory(isolated: Path) -> None:
    write(isolated / "postroom.toml", '[sending]\nhelo_name = "cwd.example"\n')
    assert load_settings().sending.helo_name == "cwd.example"


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "elsewhere.toml", '[sending]\nhelo_name = "env-file.example"\n')
    monkeypatch.setenv("POSTROOM_CONFIG", str(config))
    assert load_settings().sending.helo_name == "env-file.example"


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "absent.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path / "c.toml", "[smtp\n"))


# --- Email BCC: exactly one address ----------------------------------------------------------


@pytest.mark.parametrize(
    ("bcc_line", "count"),
    [
        ("", 0),
        ('bcc_address = []', 0),
        ('bcc_address = ["a@archive.example", "b@archive.example"]', 2),
        ('bcc_address = "a@archive.example, b@archive.example"', 2),
        ('bcc_address = "a@archive.example; b@archive.example"', 2),
    ],
)
def test_archive_enabled_needs_exactly_one_address(tmp_path: Path, bcc_line: str,
                                                   count: int) -> None:
    config = write(tmp_path / "c.toml", f"[archive]\nenabled = true\n{bcc_line}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert "archive.bcc_address" in str(info.value)
    assert f"got {count}" in str(info.value)


def test_archive_two_addresses_from_environment_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_ARCHIVE__ENABLED", "true")
    monkeypatch.setenv("POSTROOM_ARCHIVE__BCC_ADDRESS", '["a@x.example", "b@x.example"]')
    with pytest.raises(ConfigError, match=r"archive\.bcc_address.*got 2"):
        load_settings()


def test_archive_address_as_plain_string_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTROOM_ARCHIVE__ENABLED", "true")
    monkeypatch.setenv("POSTROOM_ARCHIVE__BCC_ADDRESS", "vault@x.example")
    assert load_settings().archive.address == "vault@x.example"


def test_archive_two_addresses_as_comma_string_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTROOM_ARCHIVE__ENABLED", "true")
    monkeypatch.setenv("POSTROOM_ARCHIVE__BCC_ADDRESS", "a@x.example,b@x.example")
    with pytest.raises(ConfigError, match=r"archive\.bcc_address.*got 2"):
        load_settings()


def test_archive_disabled_allows_no_address() -> None:
    assert load_settings().archive.address is None


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key", "env"),
    [
        ('[smtp]\npassword = "hunter2"\n', "smtp.password", "POSTROOM_SMTP__PASSWORD"),
        ('[archive.relay]\npassword = "hunter2"\n', "archive.relay.password",
         "POSTROOM_ARCHIVE__RELAY__PASSWORD"),
    ],
)
def test_password_in_file_is_refused(tmp_path: Path, toml: str, key: str, env: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "c.toml", toml))
    message = str(info.value)
    assert key in message and env in message
    assert "hunter2" not in message


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_SMTP__PASSWORD", "hunter2")
    settings = load_settings()
    assert settings.smtp.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)


def test_masked_dump_masks_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_SMTP__PASSWORD", "hunter2")
    monkeypatch.setenv("POSTROOM_ARCHIVE__RELAY__HOST", "archive.example")
    monkeypatch.setenv("POSTROOM_ARCHIVE__RELAY__PASSWORD", "s3cr3t-archive")
    dump = masked_dump(load_settings())
    assert dump["smtp"]["password"] == "********"
    assert dump["archive"]["relay"]["password"] == "********"
    assert dump["archive"]["relay"]["host"] == "archive.example"
    assert dump["smtp"]["tls"] == "none"
    assert "hunter2" not in repr(dump) and "s3cr3t-archive" not in repr(dump)


def test_masked_dump_of_empty_secret_is_empty() -> None:
    dump = masked_dump(load_settings())
    assert dump["smtp"]["password"] == ""
    assert dump["archive"]["relay"] is None


def test_masked_dump_hides_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_DATABASE_URL", "postgresql+psycopg://pr:pgS3cret@db/postroom")
    dump = masked_dump(load_settings())
    assert "pgS3cret" not in repr(dump)
    assert dump["database_url"].startswith("postgresql+psycopg://pr:")
    assert dump["database_url"].endswith("@db/postroom")


# --- validation messages name the key --------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('colour = "blue"\n', "colour"),
        ('[smtp]\nhots = "mail.example.com"\n', "smtp.hots"),
        ('[archive]\nbcc = "a@x.example"\n', "archive.bcc"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"(?m)^  {key}: Extra inputs are not permitted"):
        load_settings(write(tmp_path / "c.toml", toml))


def test_unknown_key_in_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_SMTP__HOTS", "x")
    with pytest.raises(ConfigError, match=r"smtp\.hots"):
        load_settings()


@pytest.mark.parametrize("port", ["0", "70000", '"twenty-five"'])
def test_bad_port_is_named(tmp_path: Path, port: str) -> None:
    with pytest.raises(ConfigError, match=r"smtp\.port") as info:
        load_settings(write(tmp_path / "c.toml", f"[smtp]\nport = {port}\n"))
    assert str(tmp_path / "c.toml") in str(info.value)


def test_bad_port_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_SMTP__PORT", "abc")
    with pytest.raises(ConfigError, match=r"environment and defaults[\s\S]*smtp\.port"):
        load_settings()


def test_bad_tls_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"smtp\.tls"):
        load_settings(write(tmp_path / "c.toml", '[smtp]\ntls = "ssl"\n'))


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.smtp.port = 26  # type: ignore[misc]


def test_database_password_in_the_file_is_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("POSTROOM_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "p.toml"
    config.write_text('database_url = "postgresql+psycopg://app:hunter2@db/postroom"\n',
                      encoding="utf-8")
    with pytest.raises(ConfigError, match="POSTROOM_DATABASE_URL") as info:
        load_settings(config)
    assert "hunter2" not in str(info.value)


def test_archive_addresses_must_be_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("POSTROOM_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "p.toml"
    config.write_text('[archive]\nenabled = true\nbcc_address = "not an address"\n',
                      encoding="utf-8")
    with pytest.raises(ConfigError, match=r"archive\.bcc_address"):
        load_settings(config)


def test_unsubscribe_mailto_with_an_idn_domain_goes_out_as_its_a_label() -> None:
    from postroom.settings import WebSettings

    assert WebSettings(unsubscribe_mailto="leave@Bücher.example").unsubscribe_mailto == (
        "leave@xn--bcher-kva.example")
    assert WebSettings(unsubscribe_mailto="leave+list@lists.example").unsubscribe_mailto == (
        "leave+list@lists.example")  # ASCII: as given


@pytest.mark.parametrize(("value", "reason"), [
    ("jörg@bücher.example", "must be ASCII"),
    ("jörg@lists.example", "must be ASCII"),
    ("leave@bücher", "not a valid address"),
])
def test_unsubscribe_mailto_that_cannot_be_ascii_is_refused(tmp_path: Path, value: str,
                                                            reason: str) -> None:
    config = write(tmp_path / "p.toml", f'[web]\nunsubscribe_mailto = "{value}"\n')
    with pytest.raises(ConfigError, match=rf"web\.unsubscribe_mailto: .*{reason}"):
        load_settings(config)


def test_short_web_secret_key_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: a link-signing key shorter than 32 bytes was accepted."""
    monkeypatch.setenv("POSTROOM_WEB__SECRET_KEY", "s" * 31)
    with pytest.raises(ConfigError, match=r"web.secret_key.*31 bytes long.*at least 32") as bad:
        load_settings()
    assert "s" * 31 not in str(bad.value)  # a secret is never printed
    monkeypatch.setenv("POSTROOM_WEB__SECRET_KEY", "s" * 32)
    assert load_settings().web.secret_key.get_secret_value() == "s" * 32
    monkeypatch.setenv("POSTROOM_WEB__SECRET_KEY", "")
    assert load_settings().web.secret_key.get_secret_value() == ""  # generated and stored
