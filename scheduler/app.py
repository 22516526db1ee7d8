"""The composition root: the one place that builds the store, the campaigns and the adapters
from settings and hands them to the engine."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters import Adapter, AdapterSettingsError, UnknownAdapter, build_adapter
from scheduler.catalog import CampaignCatalog
from scheduler.config import Settings, load_settings
from scheduler.engine import Engine
from scheduler.errors import AdapterConfigError, ConfigError
from scheduler.store import Store
from scheduler.tokens import TokenSigner

# Keys of a channel table that the engine reads; the adapter never sees them. The webhook
# secrets are read by the API (``*_file`` forms arrive here already read, without the suffix).
ENGINE_CHANNEL_KEYS = (
    "address",
    "unsubscribe_mailto",
    "webhook_public_key",
    "webhook_signing_key",
    "webhook_username",
    "webhook_password",
    "help_text",
    "stop_text",
    "start_text",
)


def resolve_settings(
    path: str | Path | None = None,
    *,
    database_url: str | None = None,
    channels: Mapping[str, str | Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from a file, the environment and keyword overrides (see ``Engine.from_config``)."""
    if database_url is not None:
        overrides["database"] = {**overrides.get("database", {}), "url": database_url}
    settings = load_settings(path, **overrides)
    if channels:
        tables = dict(settings.channels)
        for name, spec in channels.items():
            tables[name] = {"adapter": spec} if isinstance(spec, str) else dict(spec)
        settings = settings.model_copy(update={"channels": tables})
    return settings


def channel_table(name: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """A channel's table with ``*_file`` secrets read from their files."""
    resolved: dict[str, Any] = {}
    for key, value in table.items():
        if key.endswith("_file") and isinstance(value, str | Path):
            try:
                resolved[key[: -len("_file")]] = Path(value).read_text().strip()
            except OSError as exc:
                raise AdapterConfigError(name, f"cannot read {key} {value}: {exc.strerror}") from exc
        else:
            resolved[key] = value
    return resolved


def build_adapters(
    settings: Settings,
) -> tuple[dict[str, Adapter], dict[str, str], dict[str, dict[str, Any]]]:
    """One adapter per channel; also each channel's adapter name and resolved table."""
    adapters: dict[str, Adapter] = {}
    names: dict[str, str] = {}
    tables: dict[str, dict[str, Any]] = {}
    for channel, raw in settings.channels.items():
        table = channel_table(channel, raw)
        tables[channel] = table
        adapter_table = {k: v for k, v in table.items() if k not in ENGINE_CHANNEL_KEYS}
        try:
            adapters[channel] = build_adapter(adapter_table)
        except (AdapterSettingsError, UnknownAdapter) as exc:
            raise AdapterConfigError(channel, str(exc)) from exc
        names[channel] = str(table["adapter"])
    return adapters, names, tables


def build_signer(settings: Settings, store: Store) -> TokenSigner:
    """The unsubscribe token signer: the configured secret, else one generated and kept in the
    database so every replica and restart agrees."""
    api = settings.api
    if api.unsubscribe_secret is not None:
        secret = api.unsubscribe_secret.get_secret_value()
    elif api.unsubscribe_secret_file is not None:
        try:
            secret = api.unsubscribe_secret_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"api.unsubscribe_secret_file: {exc.strerror}") from exc
    else:
        secret = store.get_or_set_meta("unsubscribe_secret", lambda: secrets.token_urlsafe(32))
    return TokenSigner({"k1": secret.encode()}, "k1")


def build_engine(
    path: str | Path | None = None,
    *,
    database_url: str | None = None,
    channels: Mapping[str, str | Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> Engine:
    """Build a ready engine: settings, migrated store, loaded campaigns, adapters."""
    settings = resolve_settings(path, database_url=database_url, channels=channels, **overrides)
    return build_engine_from_settings(settings)


def build_engine_from_settings(settings: Settings) -> Engine:
    """Build a ready engine from settings already loaded."""
    adapters, names, tables = build_adapters(settings)
    store = Store(settings.database)
    try:
        store.prepare()
        # The analysts' views read the value tiers' shares from the meta table.
        tiers = settings.analytics
        store.set_meta({"tier_top_share": repr(tiers.top_tier), "tier_middle_share": repr(tiers.middle_tier)})
        signer = build_signer(settings, store)
    except Exception:
        store.close()
        raise
    catalog = CampaignCatalog(
        settings.campaigns_dir,
        channels=settings.channels.keys(),
        sample_recipient=settings.sample_recipient or None,
    )
    engine = Engine(
        settings, store, catalog, adapters,
        adapter_names=names, channel_settings=tables, signer=signer,
    )  # fmt: skip
    engine.reload_campaigns()
    return engine
