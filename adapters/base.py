"""What every adapter shares: the message it sends, the result it returns, its settings.

An adapter turns one :class:`Message` into one :class:`SendResult`. It either returns a
result or raises; the engine maps an exception to a result with
:meth:`SendResult.from_exception` (an :class:`AdapterError` keeps its ``retryable`` flag,
any other exception counts as retryable with its text as the detail).

Exceptions defined here (``adapters`` does not import ``scheduler``, so they do not derive
from ``TactError``; the composition root turns a settings error into ``AdapterConfigError``):

    ValueError
     └── AdapterSettingsError   a channel's table does not validate against the adapter's settings
    Exception
     └── AdapterError           a send failed; ``retryable`` says whether to try again
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "Adapter",
    "AdapterError",
    "AdapterSettings",
    "AdapterSettingsError",
    "ConfigurableAdapter",
    "Message",
    "SendResult",
    "SendStatus",
    "validate_settings",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One touchpoint rendered for one recipient, ready to hand to a channel."""

    touchpoint_id: str
    idempotency_key: str
    """Stable per enrollment and step; adapters that support idempotency pass it on."""
    channel: str
    to: str
    """An email address or an E.164 phone number."""
    recipient_id: str
    campaign_id: str
    step_id: str
    kind: str
    """``"marketing"`` or ``"transactional"``."""
    subject: str | None
    text: str
    """The plain-text body, always present."""
    html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers for channels that carry them, e.g. ``List-Unsubscribe``."""
    attempt: int = 1
    metadata: Mapping[str, str] = field(default_factory=dict)


class SendStatus(StrEnum):
    """What became of a send."""

    SENT = "sent"
    """The provider accepted the message."""
    RETRYABLE = "retryable"
    """A temporary failure: the engine tries again later, up to ``max_attempts``."""
    REJECTED = "rejected"
    """A permanent failure: the engine records the touchpoint as failed."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one send, with the provider's id or the reason it failed."""

    status: SendStatus
    provider_message_id: str | None = None
    detail: str | None = None
    retry_after: float | None = None
    """Seconds to wait before the next attempt, when the provider said so."""
    address_invalid: bool = False
    """A rejection that condemns the address itself (a hard bounce): the engine suppresses it."""

    def __post_init__(self) -> None:
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must not be negative, got {self.retry_after}")

    @classmethod
    def sent(cls, provider_message_id: str | None = None, detail: str | None = None) -> Self:
        """The provider accepted the message."""
        return cls(SendStatus.SENT, provider_message_id=provider_message_id, detail=detail)

    @classmethod
    def retryable(cls, detail: str, retry_after: float | None = None) -> Self:
        """A temporary failure; ``retry_after`` is the provider's requested delay in seconds."""
        return cls(SendStatus.RETRYABLE, detail=detail, retry_after=retry_after)

    @classmethod
    def rejected(cls, detail: str, *, address_invalid: bool = False) -> Self:
        """A permanent failure: sending the same message again will not help.

        ``address_invalid`` says the address itself is bad (unknown mailbox, invalid
        number), so nothing more should be sent to it.
        """
        return cls(SendStatus.REJECTED, detail=detail, address_invalid=address_invalid)

    @classmethod
    def from_exception(cls, error: BaseException) -> Self:
        """The result the engine records when ``send`` raised ``error`` instead of returning."""
        if isinstance(error, AdapterError):
            if error.retryable:
                return cls.retryable(error.detail, retry_after=error.retry_after)
            return cls.rejected(error.detail, address_invalid=error.address_invalid)
        return cls.retryable(f"{type(error).__name__}: {error}")


class AdapterError(Exception):
    """A send failed; raise it from ``send`` when that reads better than returning a result."""

    def __init__(
        self, detail: str, *, retryable: bool, retry_after: float | None = None, address_invalid: bool = False
    ) -> None:
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after
        self.address_invalid = address_invalid
        super().__init__(detail)


class AdapterSettingsError(ValueError):
    """A channel's settings table is invalid; ``problems`` lists each problem.

    ``adapter`` is the adapter's name, or ``""`` when the table does not name one.
    """

    def __init__(self, adapter: str, problems: list[str]) -> None:
        self.adapter = adapter
        self.problems = problems
        prefix = f"adapter {adapter!r}: " if adapter else ""
        super().__init__(prefix + "; ".join(problems))


class AdapterSettings(BaseModel):
    """Keys every adapter accepts in its channel table. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    adapter: str
    """The registry name of the adapter."""
    rate_limit: float | None = Field(default=None, gt=0)
    """Messages per second; ``None`` means no limit."""
    concurrency: int = Field(default=10, ge=1)
    """Sends in flight at once on this channel."""
    max_attempts: int = Field(default=5, ge=1)
    """Attempts before a retryable failure becomes ``failed``."""
    from_: str | None = Field(default=None, alias="from")
    """Sender: ``"Acme <hello@example.com>"`` for email, a number or sender id for SMS."""


@runtime_checkable
class Adapter(Protocol):
    """A channel: sends one message at a time, may hold connections until closed."""

    name: ClassVar[str]

    async def send(self, message: Message) -> SendResult:
        """Deliver ``message`` and say what happened; may raise instead (see module docs)."""
        ...

    async def aclose(self) -> None:
        """Release connections and files; calling it twice is harmless."""
        ...


class ConfigurableAdapter(Adapter, Protocol):
    """An adapter the registry can build from a channel's settings table."""

    @property
    def settings(self) -> AdapterSettings:
        """The validated settings, including the common keys the engine reads."""
        ...

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Validate ``table`` (raising :class:`AdapterSettingsError`) and build the adapter."""
        ...


SettingsT = TypeVar("SettingsT", bound=AdapterSettings)


def validate_settings(model: type[SettingsT], table: Mapping[str, Any], *, adapter: str) -> SettingsT:
    """Validate a channel table against ``model``; ``adapter`` may be left out of the table.

    Raises :class:`AdapterSettingsError` naming every problem, with a suggestion for
    misspelt keys.
    """
    values = dict(table)
    named = values.setdefault("adapter", adapter)
    if named != adapter:
        raise AdapterSettingsError(adapter, [f"table names adapter {named!r}, expected {adapter!r}"])
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise AdapterSettingsError(adapter, _describe(error, model)) from None


def _describe(error: ValidationError, model: type[AdapterSettings]) -> list[str]:
    known = sorted(info.alias or field_name for field_name, info in model.model_fields.items())
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problem = f"unknown key {key!r}"
            close = difflib.get_close_matches(key, known, n=1)
            if close:
                problem += f" (did you mean {close[0]!r}?)"
            problems.append(problem + f"; known keys: {', '.join(known)}")
        elif item["type"] == "missing":
            problems.append(f"missing required key {key!r}")
        else:
            problems.append(f"{key}: {item['msg']}")
    return problems
