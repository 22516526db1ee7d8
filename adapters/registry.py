"""Adapter names as configuration spells them, mapped to the classes that implement them.

The registry is a plain dict: the development adapters are listed here, and third-party ones
add themselves with :func:`register`. The delivery adapters (SMTP and the HTTP providers) are
imported on first use, so a daemon on console adapters never loads their client libraries.
The composition root calls :func:`build_adapter` once per channel table; nothing else
builds concrete adapters.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

from adapters.base import AdapterSettingsError, ConfigurableAdapter
from adapters.console import ConsoleAdapter
from adapters.file import FileAdapter
from adapters.memory import MemoryAdapter
from adapters.null import NullAdapter

__all__ = [
    "ADAPTERS",
    "DELIVERY_ADAPTERS",
    "UnknownAdapter",
    "adapter_class",
    "build_adapter",
    "known_names",
    "register",
]

ADAPTERS: dict[str, type[ConfigurableAdapter]] = {
    "console": ConsoleAdapter,
    "file": FileAdapter,
    "memory": MemoryAdapter,
    "null": NullAdapter,
}

DELIVERY_ADAPTERS: dict[str, str] = {
    "smtp": "adapters.smtp:SmtpAdapter",
    "sendgrid": "adapters.sendgrid:SendgridAdapter",
    "postmark": "adapters.postmark:PostmarkAdapter",
    "mailgun": "adapters.mailgun:MailgunAdapter",
    "twilio": "adapters.twilio:TwilioAdapter",
    "webhook": "adapters.webhook:WebhookAdapter",
}
"""Built-in adapters loaded on first use: name → ``module:class``."""

AdapterClassT = TypeVar("AdapterClassT", bound=type[ConfigurableAdapter])


class UnknownAdapter(KeyError):
    """No adapter is registered under ``name``; ``known`` lists the names that are."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown adapter {self.name!r}; known adapters: {', '.join(self.known)}"


def adapter_class(name: str) -> type[ConfigurableAdapter]:
    """The class registered under ``name``; raises :class:`UnknownAdapter` if there is none."""
    if name not in ADAPTERS and name in DELIVERY_ADAPTERS:
        module_name, class_name = DELIVERY_ADAPTERS[name].split(":")
        ADAPTERS[name] = getattr(importlib.import_module(module_name), class_name)
    try:
        return ADAPTERS[name]
    except KeyError:
        raise UnknownAdapter(name, known_names()) from None


def known_names() -> list[str]:
    """Every adapter name configuration may use, sorted."""
    return sorted(ADAPTERS.keys() | DELIVERY_ADAPTERS.keys())


def build_adapter(table: Mapping[str, Any]) -> ConfigurableAdapter:
    """Build the adapter a channel table names in its ``adapter`` key, from that table.

    Raises :class:`UnknownAdapter` for a name nobody registered and
    :class:`~adapters.base.AdapterSettingsError` when the table does not validate.
    """
    name = table.get("adapter")
    if not isinstance(name, str):
        problem = "missing required key 'adapter'" if name is None else f"adapter: {name!r}"
        raise AdapterSettingsError("", [f"{problem}; name one of: {', '.join(known_names())}"])
    return adapter_class(name).from_settings(table)


def register(cls: AdapterClassT, *, replace: bool = False) -> AdapterClassT:
    """Add an adapter class under its ``name``; usable as a class decorator.

    Registering a different class under a taken name raises ``ValueError`` unless
    ``replace`` is true; registering the same class again does nothing.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a non-empty class attribute 'name'")
    missing = [
        attribute for attribute in ("from_settings", "send", "aclose") if not callable(getattr(cls, attribute, None))
    ]
    if missing:
        raise TypeError(f"{cls.__qualname__} lacks {', '.join(missing)}")
    existing = ADAPTERS.get(name)
    if existing is not None and existing is not cls and not replace:
        raise ValueError(f"adapter name {name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    ADAPTERS[name] = cls
    return cls
