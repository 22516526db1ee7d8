"""Configuration: a TOML file plus ``TACT_`` environment variables (``__`` nests).

Precedence, highest first: keyword overrides (Python API), environment variables, the TOML
file, the defaults below. Every key is documented in ``config.example.toml``.
"""

from __future__ import annotations

import tomllib
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from scheduler.durations import parse_duration
from scheduler.errors import ConfigError
from scheduler.tomlpos import SourceMap


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
ConsentStatus = Literal["opted_in", "opted_out", "unknown"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    """Where state lives. SQLite for one node, PostgreSQL for replicas."""

    url: str = "sqlite:///tact.db"
    migrate: Literal["auto", "check"] | None = None
    pool_size: int = Field(5, ge=1)
    busy_timeout: Duration = timedelta(seconds=30)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def migrate_mode(self) -> Literal["auto", "check"]:
        if self.migrate is not None:
            return self.migrate
        return "auto" if self.is_sqlite else "check"


class EngineSettings(_Section):
    """The tick loop."""

    tick_interval: Duration = timedelta(seconds=1)
    batch_size: int = Field(500, ge=1, le=10_000)
    max_batches_per_tick: int = Field(20, ge=1)
    lease: Duration = timedelta(minutes=5)
    concurrency: int = Field(50, ge=1)
    default_max_defer: Duration = timedelta(days=7)
    cron_misfire_grace: Duration = timedelta(hours=1)
    resolve_interval: Duration = timedelta(minutes=5)
    retry_base: Duration = timedelta(seconds=30)
    retry_max: Duration = timedelta(hours=1)
    worker_id: str | None = None
    shutdown_grace: Duration = timedelta(seconds=30)


class ConsentSettings(_Section):
    """Consent assumed when a recipient record says nothing for a channel."""

    email_default: ConsentStatus = "opted_in"
    sms_default: ConsentStatus = "unknown"
    other_default: ConsentStatus = "unknown"

    def default_for(self, channel: str) -> str:
        if channel == "email":
            return self.email_default
        if channel == "sms":
            return self.sms_default
        return self.other_default


class QuietHoursSettings(_Section):
    """Local hours when marketing never goes out, whatever a campaign's window says."""

    enabled: bool = True
    start: time = time(21, 0)
    end: time = time(8, 0)
    applies_to: Literal["marketing", "all"] = "marketing"


class CapsSettings(_Section):
    """Safety caps across all campaigns, for marketing touches."""

    enabled: bool = True
    window: Duration = timedelta(days=7)
    min_gap: Duration = timedelta(hours=20)
    per_channel: dict[str, int] = Field(default_factory=lambda: {"email": 3, "sms": 2})


_UNSUBSCRIBE_BASE = {"email": 0.001, "sms": 0.0025}  # p_u base rates per channel, before learning


class AttentionSettings(_Section):
    """Constants of the attention asset model (docs/attention-model.md)."""

    enabled: bool = True
    theta: float = 0.0
    holdout: float = Field(0.05, ge=0, le=1)
    explore: float = Field(0.0, ge=0, le=1)
    asset_start: float = Field(0.5, ge=0, le=1)
    expectation_start: float = Field(0.1, ge=-2, le=1)
    interest_start: float = Field(0.3, ge=0, le=1)
    engagement_prior: tuple[float, float] = (1.0, 19.0)
    fatigue_half_life: Duration = timedelta(hours=72)
    asset_half_life: Duration = timedelta(days=60)
    engagement_half_life: Duration = timedelta(days=90)
    fatigue_weight: dict[str, NonNegativeFloat] = Field(default_factory=lambda: {"email": 1.0, "sms": 2.5})
    outcome_window: dict[str, Duration] = Field(
        default_factory=lambda: {"email": timedelta(hours=72), "sms": timedelta(hours=24)}
    )
    inbound_cooldown: Duration = timedelta(hours=48)
    eta_up: float = Field(0.15, ge=0, le=1)
    eta_down: float = Field(0.30, ge=0, le=1)
    beta: float = Field(0.2, ge=0, le=1)
    outcome_value: dict[str, float] = Field(
        default_factory=lambda: {
            "replied": 1.0,
            "converted": 1.0,
            "clicked": 0.6,
            "opened": 0.1,
            "ignored": 0.0,
            "unsubscribed": -1.0,
            "complained": -2.0,
        }
    )
    open_credit: float = Field(0.3, ge=0, le=1)
    interest_rate: float = Field(0.2, ge=0, le=1)
    kappa: float = Field(0.5, ge=0)
    channel_kappa: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    kappa_learning: Literal["off", "measure", "apply"] = "apply"
    kappa_bounds: tuple[NonNegativeFloat, NonNegativeFloat] = (0.1, 1.5)
    kappa_reference: float = Field(1.2, gt=0)
    kappa_prior_sd: float = Field(0.25, ge=0)
    learn_window: Duration = timedelta(days=42)
    learn_interval: Duration = timedelta(days=1)
    learn_min_touches: int = Field(1000, ge=1)
    learn_min_answered: float = Field(100.0, gt=0)
    learn_max_touches: int = Field(200_000, ge=1)
    novelty_drop: float = Field(0.5, ge=0, le=1)
    novelty_half_life: Duration = timedelta(days=7)
    unsubscribe_base: dict[str, NonNegativeFloat] = Field(default_factory=lambda: dict(_UNSUBSCRIBE_BASE))
    unsubscribe_learning: Literal["off", "measure", "apply"] = "apply"
    unsubscribe_prior_count: float = Field(20.0, ge=0)
    unsubscribe_ratio_bounds: tuple[NonNegativeFloat, NonNegativeFloat] = (0.1, 10.0)
    kappa_u: float = Field(0.3, ge=0)
    unsubscribe_max: float = Field(0.1, ge=0, le=1)
    positive_outcome: float = Field(0.6, ge=0, le=1)
    lambda_asset: float = Field(0.25, ge=0)
    unsubscribe_loss: float = Field(1.5, ge=0)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> AttentionSettings:
        for name in ("kappa_bounds", "unsubscribe_ratio_bounds"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"attention.{name} must be [low, high] with low <= high")
        return self

    def kappa_for(self, channel: str) -> float:
        """κ of a channel: its own (set or learned), else ``kappa``."""
        return self.channel_kappa.get(channel, self.kappa)

    def unsubscribe_base_for(self, channel: str) -> float:
        """The unsubscribe base rate of a channel (set or learned), else email's."""
        return self.unsubscribe_base.get(channel, self.unsubscribe_base.get("email", _UNSUBSCRIBE_BASE["email"]))


class AnalyticsSettings(_Section):
    """How the analysts' views and ``tact report`` group recipients (docs/send-log.md)."""

    top_tier: float = Field(0.2, gt=0, le=1)
    middle_tier: float = Field(0.3, ge=0, le=1)

    @model_validator(mode="after")
    def _shares_fit(self) -> AnalyticsSettings:
        if self.top_tier + self.middle_tier > 1:
            raise ValueError("analytics.top_tier + analytics.middle_tier must not exceed 1")
        return self


class ApiSettings(_Section):
    """The HTTP API served by ``tact run``."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = "http://localhost:8080"
    tokens: dict[str, SecretStr] = Field(default_factory=dict)
    max_batch: int = Field(1000, ge=1)
    unsubscribe_secret: SecretStr | None = None
    unsubscribe_secret_file: Path | None = None


class LoggingSettings(_Section):
    """Structured logs: JSON in production, readable in a terminal."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def _default_channels() -> dict[str, dict[str, Any]]:
    return {"email": {"adapter": "console"}, "sms": {"adapter": "console"}}


class Settings(BaseSettings):
    """Every setting of Tact; see ``config.example.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="TACT_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    timezone: str = "UTC"
    campaigns_dir: Path = Path("campaigns")
    sample_recipient: dict[str, Any] = Field(default_factory=dict)
    database: DatabaseSettings = DatabaseSettings()
    engine: EngineSettings = EngineSettings()
    consent: ConsentSettings = ConsentSettings()
    quiet_hours: QuietHoursSettings = QuietHoursSettings()
    caps: CapsSettings = CapsSettings()
    attention: AttentionSettings = AttentionSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    channels: dict[str, dict[str, Any]] = Field(default_factory=_default_channels)
    api: ApiSettings = ApiSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from ``path`` (optional), the environment and keyword overrides.

    Sections given as overrides merge into the file's (``attention={"theta": 0.05}`` changes
    one constant). Relative ``campaigns_dir`` in a file is resolved against the file's directory.
    """
    toml_path = Path(path) if path is not None else None
    if toml_path is not None:
        if not toml_path.is_file():
            raise ConfigError(f"{toml_path}: configuration file not found")
        try:
            with toml_path.open("rb") as handle:
                raw = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: {exc}") from exc
    else:
        raw = {}
    bound: type[Settings] = type(
        "FileSettings",
        (Settings,),
        {"model_config": {**Settings.model_config, "toml_file": toml_path}},
    )
    try:
        settings = bound(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, toml_path, raw)) from exc
    if (
        toml_path is not None
        and "campaigns_dir" in raw
        and not settings.campaigns_dir.is_absolute()
        and "campaigns_dir" not in overrides
    ):
        settings = settings.model_copy(update={"campaigns_dir": toml_path.parent / settings.campaigns_dir})
    return settings


def _describe(exc: ValidationError, path: Path | None, raw: dict[str, Any]) -> str:
    """One ``file:line:col: key: message`` line per problem (position only for keys in the file)."""
    source = SourceMap(path.read_text()) if path is not None else None
    lines = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "settings")
        location = ".".join(str(part) for part in loc)
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        where = ""
        if source is not None and path is not None and _in_file(raw, loc):
            position = source.key(loc) if error["type"] == "extra_forbidden" else source.value(loc)
            where = f"{path}:{position.line}:{position.column}: "
        elif path is not None:
            where = f"{path}: "
        lines.append(f"{where}{location}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)


def _in_file(raw: Any, loc: tuple[Any, ...]) -> bool:
    """Whether the file itself holds the first key of ``loc`` (else it came from the environment)."""
    return bool(loc) and isinstance(raw, dict) and loc[0] in raw
