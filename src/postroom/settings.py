"""The instance configuration: one typed schema, read environment → TOML file → defaults.

Only the administrator edits it. Secrets (SMTP passwords) come from the environment
(`POSTROOM_SMTP__PASSWORD`, ...) and never from the TOML file; they are `SecretStr` so they are
masked wherever the settings are printed. Components receive their own part of the settings
(`SmtpRelay`, `ArchiveSettings`, ...), never the whole object and never `os.environ`.
"""

from __future__ import annotations

import json
import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from postroom.compose.template_limits import TemplateLimits
from postroom.delivery.shaping import ShapingSettings
from postroom.domain.states import InDoubtPolicy
from postroom.errors import ConfigError
from postroom.transport.routing import RoutingSettings

__all__ = [
    "ArchiveSettings",
    "DefaultsSettings",
    "DkimKey",
    "QuarantineSettings",
    "SendingSettings",
    "Settings",
    "SmtpRelay",
    "TlsMode",
    "WebSettings",
    "config_sources",
    "load_settings",
    "masked_dump",
    "sqlite_file",
]

CONFIG_ENV = "POSTROOM_CONFIG"
DEFAULT_CONFIG_FILE = "postroom.toml"
SECRET_KEYS = (("smtp", "password"), ("archive", "relay", "password"), ("web", "secret_key"),
               ("archive", "ledger_key"), ("archive", "imap_password"), ("web", "health_token"))


class TlsMode(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"  # required: a server without STARTTLS is refused
    IMPLICIT = "implicit"
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when the server offers it, else cleartext


class _Section(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


def _address(value: str) -> str:
    from postroom.domain.addresses import normalize_address
    from postroom.errors import InputError

    try:
        return normalize_address(value)
    except InputError as exc:
        raise ValueError(f"{value!r} is not a valid address: {exc}") from None


class SmtpRelay(_Section):
    """An SMTP relay Postroom hands messages to."""

    host: str = Field("127.0.0.1", description="Relay host name or address.")
    port: int = Field(25, ge=1, le=65535, description="Relay TCP port.")
    tls: TlsMode = Field(TlsMode.NONE, description="none, starttls (required), implicit "
                         "(SMTPS) or opportunistic (STARTTLS when offered).")
    verify_tls: bool = Field(True, description="Verify the relay's TLS certificate.")
    ca_file: Path | None = Field(None, description="CA bundle to verify the relay with.")
    username: str = Field("", description="AUTH user name; empty means no AUTH.")
    password: SecretStr = Field(SecretStr(""), description="AUTH password (environment only).")
    timeout_seconds: float = Field(30.0, gt=0, description="Timeout of each SMTP command.")


class SendingSettings(_Section):
    """How the sending engine uses the relay."""

    helo_name: str = Field("localhost", description="Name announced in EHLO/HELO.")
    connections: int = Field(4, ge=1, le=256, description="SMTP connections opened at once.")
    messages_per_connection: int = Field(
        1000, ge=1, description="Messages sent over one connection before it is renewed."
    )
    batch_size: int = Field(200, ge=1, le=10_000, description="Logs claimed per database round.")
    lease_seconds: float = Field(
        60.0, ge=1, description="How long a claimed batch is ours without a heartbeat; "
        "a dead worker's batch is taken over after it (heartbeats renew it every quarter)."
    )
    in_doubt: InDoubtPolicy = Field(
        InDoubtPolicy.RESEND, description="Messages that may have reached the relay "
        "unrecorded (a worker died, a connection dropped awaiting the reply to DATA): resend "
        "them (at-least-once) or set them aside for an operator (at-most-once)."
    )
    pause_after_transport_failures: int = Field(
        50, ge=0, description="Pause the delivery after this many transport failures in a row "
        "(no reply at all: connect, TLS, timeout, dropped); 0 never pauses."
    )
    processes: int = Field(
        1, ge=1, le=16, description="Processes that send one delivery in `postroom send`: "
        "above 1, helper processes share its claims, each with its own `connections` (more "
        "CPU cores; ADR 0031). Workers ignore it: run several workers instead."
    )
    worker_poll_seconds: float = Field(
        1.0, gt=0, description="How often an idle `postroom worker` looks for work."
    )
    quick_retries: int = Field(
        2, ge=0, description="Temporary failures retried after quick_retry_seconds in the same run."
    )
    quick_retry_seconds: float = Field(5.0, ge=0, description="Delay of the quick retries.")
    wait_for_retries_seconds: float = Field(
        30.0, ge=0, description="A run waits for retries due within this many seconds."
    )
    record_delay_seconds: float = Field(
        0.05, ge=0, le=1.0, description="Longest a relay's answer waits to be committed with "
        "others (0: each pipelined group is recorded as soon as its replies arrive, a commit "
        "each: half the throughput on PostgreSQL). Bounds how long an accepted message stays "
        "unrecorded, whatever the other connections do."
    )
    database_wait_seconds: float = Field(
        300.0, ge=0, description="How long a sender (worker, send, archive flush) retries the "
        "database through an outage or restart, and a worker waits for it at start, before "
        "it exits non-zero."
    )


class DefaultsSettings(_Section):
    """Platform defaults for deliveries (operators may override From, Reply-To, errors-to)."""

    from_name: str = Field("Postroom", description="Default From display name.")
    from_address: str = Field("postroom@example.com", description="Default From address.")
    reply_to: str = Field("", description="Default Reply-To address; empty means none.")
    errors_to: str = Field("bounces@example.com", description="Default envelope sender.")
    retry_period_minutes: int = Field(60, ge=1, description="Period between retries.")
    max_retries: int = Field(5, ge=0, description="Retries after a temporary failure.")
    validity_days: float = Field(5.0, gt=0, description="How long a delivery keeps trying.")


class ArchiveSettings(_Section):
    """Email BCC: the compliance copy of every sent message (administrator only)."""

    enabled: bool = Field(False, description="Capability switch for Email BCC.")
    bcc_address: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="The one archive address (exactly one when enabled)."
    )
    envelope_sender: str = Field(
        "archive-bounces@example.com",
        description="Envelope sender of archive copies, apart from recipients' errors-to.",
    )
    relay: SmtpRelay | None = Field(None, description="Archive relay; default: the sending relay.")
    connections: int = Field(4, ge=1, le=64, description="Connections to the archive relay.")
    drain_seconds: float = Field(
        30.0, ge=0, description="How long a send run waits for pending copies at its end."
    )
    max_backoff_seconds: float = Field(60.0, gt=0, description="Longest wait between attempts.")
    own_process: bool = Field(
        False, description="`postroom send` archives the copies from a second process (a "
        "second CPU core) while it sends (ADR 0030); workers always archive in their own "
        "loop, and several workers use several cores.")
    max_pending_age_minutes: float = Field(
        15.0, gt=0, description="`health` reports a problem when the oldest pending archive "
        "copy is older than this (the archive relay has not taken copies for that long).")
    sink: Literal["smtp", "directory", "imap"] = Field(
        "smtp", description="Where copies go: the archive relay (smtp), one .eml file per copy "
        "(directory), or an IMAP folder (imap)."
    )
    directory: Path | None = Field(
        None, description="Root of the directory sink: YYYY/MM/DD/<delivery>-<log>.eml."
    )
    imap_url: str | None = Field(
        None, description="The IMAP sink's folder: imaps://user@host/folder (password: "
        "archive.imap_password)."
    )
    format: Literal["copy", "journal"] = Field(
        "copy", description="copy: the exact bytes sent; journal: a journal report holding "
        "them as message/rfc822 (the ledger hashes the original in both)."
    )
    ledger: bool = Field(True, description="Enter every archived copy in the hash ledger.")
    ledger_key: SecretStr = Field(
        SecretStr(""),
        description="Ed25519 private key signing ledger checkpoints (environment only): 64 hex "
        "digits or PEM; empty: no checkpoints.",
    )
    checkpoint_every: int = Field(1000, ge=1, description="Entries between signed checkpoints.")
    imap_password: SecretStr = Field(
        SecretStr(""),
        description="Password of the IMAP account `archive verify --imap` reads (environment "
        "only).",
    )
    checkpoint_minutes: float = Field(
        60.0, gt=0, description="Longest time between signed checkpoints while copies arrive."
    )

    @field_validator("bcc_address", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("not a valid JSON list of addresses") from None
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        return value

    @field_validator("bcc_address")
    @classmethod
    def _valid_addresses(cls, value: list[str]) -> list[str]:
        return [_address(a) for a in value]

    @field_validator("envelope_sender")
    @classmethod
    def _valid_sender(cls, value: str) -> str:
        return _address(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> ArchiveSettings:
        if self.enabled and len(self.bcc_address) != 1:
            raise ValueError(
                f"Email BCC is enabled, so archive.bcc_address needs exactly one address, "
                f"got {len(self.bcc_address)}"
            )
        return self

    @model_validator(mode="after")
    def _sink_target(self) -> ArchiveSettings:
        if self.sink == "directory" and self.directory is None:
            raise ValueError("archive.sink is 'directory', so archive.directory is needed")
        if self.sink == "imap":
            if not self.imap_url:
                raise ValueError("archive.sink is 'imap', so archive.imap_url is needed "
                                 "(imaps://user@host/folder)")
            if not self.imap_url.startswith(("imap://", "imaps://")) or "@" not in self.imap_url:
                raise ValueError("archive.imap_url: expected imaps://user@host/folder")
        return self

    @property
    def address(self) -> str | None:
        """The archive address when the capability is on, else None."""
        return self.bcc_address[0] if self.enabled else None


class WebSettings(_Section):
    """Postroom's web server: mirror pages, one-click unsubscribe and the REST API."""

    base_url: str = Field(
        "http://127.0.0.1:8025", description="Public base URL of links in messages."
    )
    host: str = Field("127.0.0.1", description="Address `postroom serve` listens on.")
    port: int = Field(8025, ge=1, le=65535, description="Port `postroom serve` listens on.")
    secret_key: SecretStr = Field(
        SecretStr(""),
        description="Signs mirror and unsubscribe links (environment only); at least 32 "
        "bytes; empty: a random secret generated once and kept in the database.",
    )
    health_token: SecretStr = Field(
        SecretStr(""), description="Bearer token that shows `/health`'s details (problems, "
        "counts) to a monitor (environment only); without it `/health` says only ok or not.")
    unsubscribe_mailto: str = Field(
        "", description="Address of mailto unsubscribes; empty: unsubscribe@<From domain>. "
        "An international domain goes out as its A-label; the local part must be ASCII."
    )
    resource_validity_days: float = Field(30.0, gt=0, description="Mirror pages' lifetime.")
    api_max_json_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576,
        description="Largest JSON request body the REST API reads (bytes); past it, 413.")
    api_max_upload_bytes: int = Field(
        50 * 1_048_576, ge=1024, le=4 * 1024 * 1_048_576,
        description="Largest upload (a recipients CSV, multipart) the REST API reads (bytes); "
        "past it, 413.")

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        length = len(value.get_secret_value().encode())
        if 0 < length < 32:
            raise ValueError(f"is {length} bytes long; it must have at least 32 (for example "
                             "`python -c 'import secrets; print(secrets.token_hex(32))'`), or "
                             "be empty for a generated one")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("unsubscribe_mailto")
    @classmethod
    def _mailto(cls, value: str) -> str:
        """The address as the List-Unsubscribe header carries it, which must be ASCII.

        An ASCII value is kept as given (not validated, ADR 0007). Otherwise the address must
        validate: an international domain becomes its A-label, and a non-ASCII local part is
        refused, since only mail sent with SMTPUTF8 could reach it (RFC 6068 would percent-encode
        it, but the senders of unsubscribe mail cannot be relied on to support that).
        """
        if value.isascii():
            return value
        from postroom.domain.addresses import wire_address
        from postroom.errors import InputError

        try:
            wire = wire_address(value)
        except InputError as exc:
            raise ValueError(f"{value!r} is not a valid address: {exc}") from None
        if wire.smtputf8:
            local = wire.address.rpartition("@")[0]
            raise ValueError(
                f"{value!r}: the part before the @-sign ({local!r}) must be ASCII, because "
                "List-Unsubscribe is an ASCII header and unsubscribe mail to a non-ASCII "
                "mailbox needs SMTPUTF8; use an ASCII mailbox (the domain may be "
                "international, it goes out as its A-label)")
        return wire.address


class QuarantineSettings(_Section):
    """The address quarantine numbers (DESIGN.md §5, §8)."""

    threshold: int = Field(5, ge=1, description="Significant soft errors that quarantine.")
    error_spacing_hours: float = Field(24.0, gt=0, description="Soft errors closer than this "
                                       "count once.")
    counter_reset_days: float = Field(10.0, gt=0, description="Days without error that reset "
                                      "the counter.")
    mailbox_full_release_days: float = Field(30.0, gt=0, description="Days after which a "
                                             "mailbox-full quarantine is released.")
    attribution_window_days: float = Field(7.0, gt=0, description="Days after sending during "
                                           "which a bounce is applied to its log and address; "
                                           "later ones are kept, not applied.")


class DkimKey(_Section):
    """A DKIM signing key for one sending domain."""

    domain: str = Field(..., description="The From domain this key signs for (an "
                        "international domain is kept as its A-label, as d= needs).")
    selector: str = Field(..., description="DNS selector (selector._domainkey.domain).")
    private_key_file: Path = Field(..., description="PEM private key (keep it readable only "
                                   "by Postroom).")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        from postroom.domain.addresses import wire_address
        from postroom.errors import InputError

        try:  # the domain checked and turned to A-labels as the From address's would be
            wire = wire_address(f"postmaster@{value.strip()}")
        except InputError as exc:
            raise ValueError(f"{value!r} is not a valid domain: {exc}") from None
        return wire.address.rpartition("@")[2].lower()


class Settings(BaseSettings):
    """Everything the administrator configures."""

    model_config = SettingsConfigDict(
        env_prefix="POSTROOM_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    allow_test_domains: bool = Field(
        False, description="Accept addresses in the special-use domain .test (RFC 6761), for "
        "test environments; the other special-use domains stay refused.")
    database_url: str = Field("sqlite:///postroom.db", description="SQLAlchemy database URL.")
    smtp: SmtpRelay = Field(default_factory=SmtpRelay, description="The sending relay.")
    sending: SendingSettings = Field(default_factory=SendingSettings)
    defaults: DefaultsSettings = Field(default_factory=DefaultsSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    quarantine: QuarantineSettings = Field(default_factory=QuarantineSettings)
    routing: RoutingSettings = Field(
        default_factory=RoutingSettings, description="Through the relay, or to each domain's "
        "MX hosts; static routes (domain → host:port) override both.")
    shaping: ShapingSettings = Field(
        default_factory=ShapingSettings, description="Per-domain connections, messages per "
        "connection and per hour, and the automatic slowdown on temporary failures.")
    dkim: list[DkimKey] = Field(default_factory=list, description="Signing keys by domain.")
    templates: TemplateLimits = Field(
        default_factory=TemplateLimits, description="Bounds on compiling and rendering "
        "templates: source and output size, CPU time per recipient.")

    @model_validator(mode="before")
    @classmethod
    def _test_domains_first(cls, data: Any) -> Any:
        """The addresses of the other sections are checked with allow_test_domains known."""
        from postroom.domain.addresses import allow_test_domains

        value = data.get("allow_test_domains", False) if isinstance(data, dict) else False
        try:
            allow_test_domains(TypeAdapter(bool).validate_python(value))
        except ValidationError:
            allow_test_domains(False)  # the field's own check reports the value
        return data

    @property
    def archive_relay(self) -> SmtpRelay:
        return self.archive.relay or self.smtp

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def _config_path(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _environment() -> dict[str, str]:
    """POSTROOM_* variables, upper-cased, but for the one naming the file."""
    prefix = Settings.model_config.get("env_prefix", "").upper()
    return {key.upper(): value for key, value in os.environ.items()
            if key.upper().startswith(prefix) and key.upper() != CONFIG_ENV}


def _env_names(loc: tuple[str | int, ...]) -> list[str]:
    """The variables that may have set the key at `loc`, most specific first."""
    names: list[str] = []
    for depth in range(len(loc), 0, -1):
        parts = [str(p).upper() for p in loc[:depth] if not isinstance(p, int)]
        if parts:
            names.append("POSTROOM_" + "__".join(parts))
    return list(dict.fromkeys(names))


def config_sources(path: Path | None = None) -> tuple[Path | None, list[str], list[str]]:
    """Where the settings come from: the TOML file (None: no file, defaults and environment
    only), the POSTROOM_* variables that set settings, and those that set none (ignored)."""
    config_file = _config_path(path)
    used: list[str] = []
    ignored: list[str] = []
    for name in sorted(_environment()):
        top = name.removeprefix("POSTROOM_").split("__")[0].lower()
        (used if top in Settings.model_fields else ignored).append(name)
    return config_file, used, ignored


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (None for another store or an in-memory one)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    url = data.get("database_url")
    if isinstance(url, str) and "://" in url:
        try:
            has_password = bool(make_url(url).password)
        except ArgumentError:
            has_password = False
        if has_password:
            raise ConfigError(f"{path}: database_url holds a password, a secret that may not "
                              "be written in the file; set POSTROOM_DATABASE_URL instead")
    for keys in SECRET_KEYS:
        node: Any = data
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node not in (None, ""):
            dotted = ".".join(keys)
            env = "POSTROOM_" + "__".join(k.upper() for k in keys)
            raise ConfigError(
                f"{path}: {dotted} is a secret and may not be written in the file; "
                f"set it in the environment as {env}"
            )


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per wrong key. A key set by an environment variable (they win over the file)
    names the variable, so that the file is not blamed for it."""
    environment = _environment()
    lines: list[str] = []
    from_env = False
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(part) for part in loc) or "(top level)"
        names = [n for n in _env_names(loc) if n in environment]
        if not names and len(loc) <= 1:  # a check of a whole section: any of its variables
            section = _env_names(loc)[0] + "__" if loc else "POSTROOM_"
            names = sorted(n for n in environment if n.startswith(section))
        origin = ""
        if names:
            from_env = True
            origin = (f" (from ${names[0]})" if len(loc) > 1 else
                      " (from $" + ", $".join(names) + f" with {source})")
        lines.append(f"  {key}: {error['msg']}{origin}")
    where = f"{source} and environment" if from_env and source != "environment and defaults" \
        else source
    return "\n".join([f"invalid configuration ({where}):", *lines])


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings: environment over the TOML file over defaults.

    `path` is the TOML file; without it, $POSTROOM_CONFIG, then ./postroom.toml if present.
    Raises ConfigError naming each wrong key.
    """
    config_file = _config_path(path)
    if config_file is not None:
        _check_file(config_file)
    schema: type[Settings] = Settings
    if config_file is not None:
        # A subclass that reads this file: no global state, nothing else changes.
        schema = type("Settings", (Settings,), {
            "model_config": SettingsConfigDict(**{**Settings.model_config,
                                                  "toml_file": config_file}),
            "__module__": __name__,
        })
    try:
        loaded = schema(**overrides)
    except ValidationError as exc:
        source = str(config_file.resolve()) if config_file else "environment and defaults"
        raise ConfigError(format_validation_error(exc, source)) from None
    except SettingsError as exc:  # an environment value that could not be parsed at all
        raise ConfigError(f"invalid configuration in the environment: {exc}") from None
    if schema is Settings:
        return loaded
    # Handed on as a plain `Settings`: the subclass lives only in this call, and pickle (which
    # passes the settings to a send's child processes, app/children.py) cannot name it.
    return Settings.model_construct(_fields_set=loaded.model_fields_set,
                                    **{name: getattr(loaded, name) for name in
                                       Settings.model_fields})


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret masked."""

    def mask(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "********" if value.get_secret_value() else ""
        if isinstance(value, BaseModel):
            return {name: mask(getattr(value, name)) for name in type(value).model_fields}
        if isinstance(value, list):
            return [mask(item) for item in value]
        if isinstance(value, StrEnum):
            return value.value
        return value

    result: dict[str, Any] = mask(settings)
    result["database_url"] = mask_url(settings.database_url)
    return result


def mask_url(url: str) -> str:
    """A database URL fit to print: its password replaced by asterisks."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL hidden)"
