"""Configuration: one TOML file, overridable by `MELDBOT_<SECTION>__<KEY>` environment variables.

Validated at start-up; errors name the section and key that is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///meldbot.db"


def http_url(value: str) -> str:
    """An http(s) URL without a trailing slash, or ValueError."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def host_port(value: str) -> str:
    """A listen address `host:port` (IPv6 as `[::1]:8080`), or ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, for example 127.0.0.1:8080")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrganisationSettings(_Section):
    """`[organisation]`: who runs this Meldbot and the texts it shows."""

    name: str = Field("de organisatie", min_length=1, max_length=120)
    language: Literal["nl", "en"] = "nl"
    timezone: str = "Europe/Amsterdam"
    #: Markdown file replacing the shipped house rules. `{language}` in the path is replaced by nl/en.
    house_rules: Path | None = None
    #: Markdown file replacing the shipped norm card, same rules as `house_rules`.
    norm_card: Path | None = None
    #: Where aftercare is available, shown after a report (replaces the generic text).
    aftercare: str | None = Field(None, max_length=1000)
    #: What happens next, shown after a report when contact was wanted.
    contact_promise: str | None = Field(None, max_length=1000)
    #: A TOML file with the organisation's own words for reading stories (department names, local
    #: words such as "Wmo-loket"), added to the built-in vocabulary; see README "Story understanding".
    vocabulary: Path | None = None
    #: The organisation's departments (codes, e.g. `burgerzaken`): the dialogue asks reporters for
    #: theirs once, and the statistics count per department. Empty: not asked.
    departments: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]] = Field(
        default_factory=list, max_length=100)
    #: Display names of the departments (code -> name); a code without one is shown as it is.
    department_names: dict[str, Annotated[str, Field(min_length=1, max_length=80)]] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Amsterdam)") from None
        return value

    @model_validator(mode="after")
    def _named_departments(self) -> "OrganisationSettings":
        unknown = sorted(set(self.department_names) - set(self.departments))
        if unknown:
            raise ValueError(f"department_names names departments not in departments: {', '.join(unknown)}")
        if len(set(self.departments)) != len(self.departments):
            raise ValueError("departments lists a department twice")
        return self


class DatabaseSettings(_Section):
    """`[database]`: SQLite (embedded default) or PostgreSQL (production)."""

    url: str = DEFAULT_DATABASE_URL
    #: Apply pending migrations when `meldbot run` or `meldbot chat` starts.
    auto_migrate: bool = True

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value


class WebSettings(_Section):
    """`[web]`: the HTTP server (Teams endpoint, case pages, health check)."""

    listen: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    #: Coordinator sessions on the case pages end after this much inactivity, and in any case after
    #: `session_hours`; a login link from the chat is valid for `login_link_minutes` and works once.
    session_idle_minutes: int = Field(30, ge=1, le=24 * 60)
    session_hours: int = Field(12, ge=1, le=72)
    login_link_minutes: int = Field(10, ge=1, le=60)

    _host_port = field_validator("listen")(lambda cls, value: host_port(value))

    _public_url = field_validator("public_url")(lambda cls, value: http_url(value))

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class OutboxSettings(_Section):
    """`[outbox]`: delivering notifications and answers that must arrive."""

    #: Seconds a worker holds a message it is sending: if its instance dies meanwhile, another worker
    #: sends it once this has passed (keep it above the slowest send; Teams and Matrix answer in seconds).
    lease_seconds: float = Field(default=120.0, ge=1.0, le=3600.0)


class FollowupSettings(_Section):
    """`[followup]`: who coordinates, and the deadlines that keep a case from falling through the cracks."""

    #: Extra coordinators (`platform:user id`, e.g. `matrix:@anna:gemeente.nl`) besides the members of
    #: the coordinator room (Matrix) or of the coordinator channel (Teams; guests only when listed here).
    coordinators: list[str] = Field(default_factory=list)
    #: Who hears when nobody takes a case in time: a room/channel (`matrix:!room:server`, `teams:19:...`)
    #: or a person who has talked to the bot before (`matrix:@user:server`, `teams:<user id>`).
    backup: str | None = None
    #: An urgent case (physical violence, threats) untaken this long gets a reminder, then escalation.
    urgent_claim_minutes: int = Field(30, ge=1, le=24 * 60)
    #: Any other case: working hours until the reminder (and again until escalation).
    claim_working_hours: float = Field(4, gt=0, le=80)
    working_hours: str = Field("09:00-17:00", pattern=r"^\d\d:\d\d-\d\d:\d\d$")
    #: ISO weekdays that are working days (1 = Monday).
    working_days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    #: The country whose public holidays are not working days (ISO code; "" for none).
    holidays: str = "NL"
    #: Aftercare check-in after this many hours (guidance: within 72 hours) ...
    aftercare_checkin_hours: int = Field(72, ge=1)
    #: ... and, when aftercare was declined, offered again after this many days.
    aftercare_reoffer_days: int = Field(14, ge=1)
    #: An unfinished report: one reminder after this many minutes; the draft is discarded after `draft_days`.
    draft_reminder_minutes: int = Field(60, ge=1)
    draft_days: int = Field(7, ge=1)

    @field_validator("working_days")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= day <= 7 for day in value):
            raise ValueError("list ISO weekdays 1 (Monday) to 7 (Sunday), at least one")
        return sorted(set(value))

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        start, end = value.split("-")
        if not ("00:00" <= start < end <= "24:00") or int(start[3:]) > 59 or int(end[3:]) > 59:
            raise ValueError("must be HH:MM-HH:MM with the start before the end, e.g. 09:00-17:00")
        return value

    @field_validator("holidays")
    @classmethod
    def _country(cls, value: str) -> str:
        import holidays as holiday_calendars

        if value and value.upper() not in holiday_calendars.list_supported_countries():
            raise ValueError(f"{value!r} is not a country code the holidays package knows (e.g. NL, BE), "
                             "or \"\" for none")
        return value.upper()

    @field_validator("coordinators")
    @classmethod
    def _identities(cls, value: list[str]) -> list[str]:
        for item in value:
            if ":" not in item:
                raise ValueError(f"{item!r}: write platform:user id, e.g. matrix:@anna:gemeente.nl")
        return value

    @field_validator("backup")
    @classmethod
    def _backup(cls, value: str | None) -> str | None:
        if value is None:
            return None
        platform, _, target = value.partition(":")
        if not target or (platform == "matrix" and not target.startswith(("!", "@"))):
            raise ValueError("write platform:room or platform:user, e.g. matrix:!abc:gemeente.nl (a room ID, "
                             "not an alias) or matrix:@piet:gemeente.nl")
        return value


class LimitsSettings(_Section):
    """`[limits]`: what one person may send, so that nobody can exhaust the bot (or its disk)."""

    #: Files (photos, documents) one report may hold.
    files_per_report: int = Field(20, ge=1, le=1000)
    #: Files one person may send per day (their organisation's day), and their total size in MB.
    files_per_day: int = Field(50, ge=1, le=10_000)
    megabytes_per_day: int = Field(200, ge=1, le=100_000)
    #: Files taken from one message; more are refused by name.
    files_per_message: int = Field(10, ge=1, le=100)
    #: Messages per minute from one person; beyond it one "slow down" answer, then silence.
    messages_per_minute: int = Field(20, ge=1, le=1000)
    #: Reports one person may send per day; beyond it the report is kept, not sent.
    reports_per_day: int = Field(10, ge=1, le=1000)


class PrivacySettings(_Section):
    """`[privacy]`: the master key that encrypts what is stored, and how long it is kept."""

    #: The master key file (created on the first start with the embedded SQLite default when no key
    #: is configured: beside the database, `<database>.key`). Back it up apart from the database.
    key_file: Path | None = None
    #: The master key itself, for container secrets (`MELDBOT_PRIVACY__KEY`); wins over `key_file`.
    key: SecretStr | None = None
    #: A closed case is purged this many years after closing (personnel-file practice: 5).
    closed_years: int = Field(5, ge=1, le=30)
    #: A withdrawn report's personal data goes after this many days.
    withdrawn_days: int = Field(7, ge=1, le=365)
    #: A conversation no case points to goes after this many days without a message (its language
    #: and dialogue state; unfinished drafts go after `withdrawn_days`).
    idle_conversation_days: int = Field(365, ge=30, le=3650)
    #: The case thread hears this many days before a case is purged.
    purge_notice_days: int = Field(14, ge=1, le=90)
    #: When the daily purge runs (organisation's time zone).
    purge_time: str = Field("03:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class StatsSettings(_Section):
    """`[stats]`: what the organisation learns from its reports (statistics, signals)."""

    #: Counts below this are shown as "<N" in every breakdown, so that nobody can be recognised.
    min_count: int = Field(5, ge=1, le=100)
    #: A signal goes to the coordinators when a kind, kind of place or department has at least this
    #: many times its usual monthly count (the average of the three months before) ...
    signal_factor: float = Field(2.0, ge=1.1, le=20)
    #: ... and at least this many reports in the month.
    signal_min_reports: int = Field(5, ge=2, le=1000)
    #: The monthly signal: day of the month and time (organisation's time zone).
    monthly_day: int = Field(1, ge=1, le=28)
    monthly_time: str = Field("09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class MatrixSettings(_Section):
    """`[matrix]`: the bot's account on a Matrix homeserver."""

    homeserver: str
    user_id: str = Field(pattern=r"^@[^:\s]+:\S+$")
    #: An access token with its device ID, or a password for a first login that stores the token.
    access_token: str | None = None
    password: str | None = None
    device_id: str | None = None
    #: Holds the encryption keys, the login and the sync token: keep it, back it up, never share it.
    store_dir: Path = Path("matrix-store")
    #: Room ID or alias of the coordinators' room; the bot joins it at start.
    coordinator_room: str | None = None
    #: Servers whose users may talk to the bot; empty: only the bot's own server.
    allowed_servers: list[str] = Field(default_factory=list)
    display_name: str = "Meldbot"

    _homeserver = field_validator("homeserver")(lambda cls, value: http_url(value))

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]

    @property
    def servers(self) -> set[str]:
        return set(self.allowed_servers) or {self.server_name}


class TeamsSettings(_Section):
    """`[teams]`: the bot's Azure Bot registration (single tenant) and its coordinator channel."""

    app_id: str = ""
    app_password: str = ""
    tenant_id: str = ""
    #: Channel ID (19:...@thread.tacv2) for case posts; or claim a channel in chat with a code from
    #: `meldbot teams claim-code` (`@Meldbot coordinatiekanaal <code>`).
    coordinator_channel: str | None = None
    #: Where the adapter keeps the coordinator channel and the Teams service URL it learned.
    store_dir: Path = Path("teams-store")
    #: Only for local experiments: with an empty app_id the bot refuses to start unless this is true.
    allow_unauthenticated: bool = False
    #: Sovereign clouds (and tests): where the channel's signing keys and token issuer are.
    openid_metadata_url: str | None = None
    token_issuer: str | None = None
    #: App package: shown in the Teams store listing of your tenant.
    app_name: str = "Meldbot"
    developer_name: str = "Meldbot"
    website_url: str = "https://meldbot.example.nl"
    privacy_url: str = "https://meldbot.example.nl/privacy"
    terms_url: str = "https://meldbot.example.nl/voorwaarden"
    #: The version of the app package (bump it for every upload to Teams).
    package_version: str = "1.0.0"

    @field_validator("openid_metadata_url")
    @classmethod
    def _metadata_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value


class MetricsSettings(_Section):
    """`[metrics]`: Prometheus. Without `listen` the web server answers /metrics to clients on this
    machine only; with it, /metrics is served on that address instead (and not on the web server)."""

    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return None if value is None else host_port(value)

    @property
    def host(self) -> str:
        assert self.listen is not None
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        assert self.listen is not None
        return int(self.listen.rpartition(":")[2])


class LoggingSettings(_Section):
    """`[logging]`: how `meldbot run` writes its log (to stderr)."""

    #: `text`: one readable line per record; `json`: one JSON object per line (for log collectors).
    format: Literal["text", "json"] = "text"


class ConsoleSettings(_Section):
    """`[console]`: the terminal platform used by `meldbot chat`."""

    user: str = "medewerker"


class Settings(BaseSettings):
    """All of Meldbot's configuration."""

    model_config = SettingsConfigDict(env_prefix="MELDBOT_", env_nested_delimiter="__", extra="forbid")

    organisation: OrganisationSettings = OrganisationSettings()
    database: DatabaseSettings = DatabaseSettings()
    web: WebSettings = WebSettings()
    followup: FollowupSettings = FollowupSettings()
    outbox: OutboxSettings = OutboxSettings()
    limits: LimitsSettings = LimitsSettings()
    privacy: PrivacySettings = PrivacySettings()
    stats: StatsSettings = StatsSettings()
    console: ConsoleSettings = ConsoleSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    matrix: MatrixSettings | None = None
    teams: TeamsSettings | None = None

    #: The directory relative file paths in the config are resolved against.
    config_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @model_validator(mode="after")
    def _metrics_apart(self) -> "Settings":
        if self.metrics.listen is not None and self.metrics.listen == self.web.listen:
            raise ValueError("[metrics] listen: must differ from [web] listen (leave it out to serve /metrics "
                             "on the web server, to clients on this machine only)")
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def resolve(self, path: Path, language: str) -> Path:
        """A configured text path for `language`, relative to the config file."""
        path = Path(str(path).replace("{language}", language))
        return path if path.is_absolute() else self.config_dir / path


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the keys."""


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"Invalid configuration ({source}):"]
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        if len(loc) >= 2:
            where = f"[{loc[0]}] {'.'.join(loc[1:])}"
        elif loc:
            where = f"[{loc[0]}]" if item["type"] != "extra_forbidden" else f"unknown section or key '{loc[0]}'"
        else:
            where = "(top level)"
        message = item["msg"]
        if not loc and item["type"] == "value_error":
            # A check across sections: its message names the keys itself.
            lines.append(f"  {message.removeprefix('Value error, ')}")
            continue
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see deploy/meldbot.example.toml)"
        env_name = "MELDBOT_" + "__".join(part.upper() for part in loc)
        lines.append(f"  {where}: {message} (environment variable {env_name})")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the TOML file (if given) and the environment; raise ConfigError naming bad keys."""
    if path is None:
        try:
            return Settings()
        except ValidationError as error:
            raise ConfigError(_describe(error, "environment")) from None
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Configuration file not found: {file}")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=file)

    try:
        return FileSettings(config_dir=file.resolve().parent)
    except ValidationError as error:
        raise ConfigError(_describe(error, str(file))) from None
    except ValueError as error:  # malformed TOML
        raise ConfigError(f"Invalid configuration ({file}): {error}") from None
