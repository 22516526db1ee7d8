"""Pluggable channels: the Adapter protocol, its message and result types, the registry,
and the built-in development adapters (``console``, ``file``, ``memory``, ``null``).

This package never imports ``scheduler``. The contract test helpers live in
:mod:`adapters.contract`, which needs pytest and is imported only by tests.
"""

from __future__ import annotations

from adapters.base import (
    Adapter,
    AdapterError,
    AdapterSettings,
    AdapterSettingsError,
    ConfigurableAdapter,
    Message,
    SendResult,
    SendStatus,
    validate_settings,
)
from adapters.console import ConsoleAdapter, ConsoleSettings
from adapters.file import FileAdapter, FileSettings
from adapters.memory import MemoryAdapter, MemorySettings
from adapters.null import NullAdapter, NullSettings
from adapters.registry import ADAPTERS, UnknownAdapter, adapter_class, build_adapter, register

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterError",
    "AdapterSettings",
    "AdapterSettingsError",
    "ConfigurableAdapter",
    "ConsoleAdapter",
    "ConsoleSettings",
    "FileAdapter",
    "FileSettings",
    "MemoryAdapter",
    "MemorySettings",
    "Message",
    "NullAdapter",
    "NullSettings",
    "SendResult",
    "SendStatus",
    "UnknownAdapter",
    "adapter_class",
    "build_adapter",
    "register",
    "validate_settings",
]
