"""Campaign files: the model, its JSON Schema, and the loader with ``file:line:col`` errors.

A campaign is one TOML file (see ``docs/campaigns.md``). ``load_campaign`` parses it, checks
everything a marketer can get wrong (unknown keys, bad values, durations, time zones, cron
schedules, duplicate step ids, channels, templates and their variables) and raises
``CampaignError`` with every problem found, each at its line and column. The loaded campaign
keeps its steps' compiled templates, so rendering at send time is cheap.
"""

from __future__ import annotations

import difflib
import operator
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from scheduler.durations import format_duration, parse_duration
from scheduler.errors import CampaignError, Diagnostic
from scheduler.templates import (
    SAMPLE_RECIPIENT,
    SAMPLE_UNSUBSCRIBE_URL,
    CompiledStep,
    TemplateSourceError,
    compile_step,
    render_context,
)
from scheduler.tomlpos import KeyPath, SourceMap

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DURATION_PATTERN = r"^\s*([0-9]+[wdhmsWDHMS])+\s*$"
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_ID_PATTERN = r"^[A-Za-z0-9_-]+$"


# -- value types ----------------------------------------------------------------------------


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


def _clock(value: object, *, allow_midnight_end: bool = False) -> object:
    if not isinstance(value, str):
        return value
    found = _CLOCK.match(value.strip())
    hour, minute = (int(found.group(1)), int(found.group(2))) if found else (99, 99)
    if allow_midnight_end and (hour, minute) == (24, 0):
        return None
    if hour > 23 or minute > 59:
        raise ValueError(f'invalid time {value!r}: use 24-hour "HH:MM", e.g. "09:00"')
    return time(hour, minute)


def _scalar(value: object) -> str | int | float | bool:
    if not isinstance(value, str | int | float | bool):
        raise ValueError("must be text, a number or true/false")
    return value


def _bound(value: object) -> float | str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and _as_instant(value) is not None:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ValueError('must be a number or an ISO date/time such as "2026-01-31"')


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["2d", "1d12h"]}),
]
ClockTime = Annotated[
    time,
    BeforeValidator(_clock),
    PlainSerializer(lambda value: value.strftime("%H:%M"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"}),
]
EndTime = Annotated[
    time | None,
    BeforeValidator(lambda value: _clock(value, allow_midnight_end=True)),
    PlainSerializer(lambda value: value.strftime("%H:%M") if value else "24:00"),
    WithJsonSchema({"type": "string", "pattern": r"^(([01]?[0-9]|2[0-3]):[0-5][0-9]|24:00)$"}),
]
Scalar = Annotated[
    str | int | float | bool,
    PlainValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]
Bound = Annotated[
    float | str,
    PlainValidator(_bound),
    WithJsonSchema({"type": ["number", "string"], "description": "a number or an ISO date"}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


# -- conditions -----------------------------------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


class Condition(_Model):
    """A test on one recipient field: a bare value means equality, else one operator."""

    in_: list[Scalar] | None = Field(None, alias="in", description="the field is one of these")
    not_in: list[Scalar] | None = Field(None, description="the field is none of these")
    eq: Scalar | None = Field(None, description="the field equals this")
    ne: Scalar | None = Field(None, description="the field differs from this, or is missing")
    gt: Bound | None = Field(None, description="greater than (number or ISO date)")
    gte: Bound | None = Field(None, description="greater than or equal")
    lt: Bound | None = Field(None, description="less than (number or ISO date)")
    lte: Bound | None = Field(None, description="less than or equal")
    exists: bool | None = Field(None, description="the field is present (true) or absent")

    @model_validator(mode="before")
    @classmethod
    def _bare_value_means_equality(cls, value: Any) -> Any:
        return {"eq": value} if isinstance(value, str | int | float | bool) else value

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        if len(self.model_fields_set) != 1:
            raise ValueError("use exactly one operator: in, not_in, eq, ne, gt, gte, lt, lte or exists")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        table = handler(schema)
        table.update(minProperties=1, maxProperties=1)
        return {"anyOf": [{"type": ["string", "number", "boolean"]}, table]}

    def operator(self) -> tuple[str, Any]:
        """The operator name (as written in TOML) and its operand."""
        (name,) = self.model_fields_set
        return ("in" if name == "in_" else name), getattr(self, name)

    def holds(self, actual: Any) -> bool:
        """Whether a field value (``None`` when missing) satisfies this condition."""
        name, expected = self.operator()
        if name == "exists":
            return (actual is not None) is bool(expected)
        if actual is None:
            return name in ("ne", "not_in")
        if name in ("eq", "ne"):
            return _equal(actual, expected) == (name == "eq")
        if name in ("in", "not_in"):
            return any(_equal(actual, item) for item in expected) == (name == "in")
        if isinstance(expected, str):
            actual, expected = _as_instant(actual), _as_instant(expected)
        else:
            actual = _as_number(actual)
        return actual is not None and expected is not None and _COMPARE[name](actual, expected)


def matches(conditions: Mapping[str, Condition], fields: Mapping[str, Any]) -> bool:
    """Whether recipient ``fields`` satisfy every condition (an empty mapping matches all)."""
    return all(condition.holds(fields.get(name)) for name, condition in conditions.items())


def _equal(actual: Any, expected: str | int | float | bool) -> bool:
    if isinstance(expected, bool):
        if isinstance(actual, str):
            return actual.strip().lower() == str(expected).lower()
        return actual is expected
    if isinstance(expected, int | float):
        return _as_number(actual) == expected
    if isinstance(actual, int | float) and not isinstance(actual, bool):
        return str(actual) == expected
    return bool(actual == expected)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _as_instant(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


# -- cron and time zones --------------------------------------------------------------------

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # standard cron numbering


def cron_trigger(expr: str, timezone: str) -> CronTrigger:
    """An APScheduler trigger for a 5-field cron expression with standard day-of-week numbers.

    APScheduler counts weekdays from Monday=0; cron counts from Sunday=0 (7 is Sunday too), so
    the day-of-week field is rewritten as day names first. Raises ``ValueError``.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid schedule {expr!r}: a cron expression has 5 fields "
            f'(minute hour day month weekday), e.g. "0 9 * * MON"'
        )
    try:
        fields[4] = _weekday_names(fields[4])
        return CronTrigger.from_crontab(" ".join(fields), timezone=timezone)
    except (ValueError, LookupError) as error:
        raise ValueError(f"invalid schedule {expr!r}: {error}") from error


def _weekday_names(field: str) -> str:
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        span, _, step_text = item.partition("/")
        if step_text and not step_text.isdigit():
            raise ValueError(f"the day-of-week step in {item!r} must be a number")
        step = int(step_text or "1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = _weekday_number(low), _weekday_number(high)
            last = 7 if last == 0 and first > 0 else last
        else:
            first = _weekday_number(span)
            last = 6 if step_text else first
        if first > last or step < 1:
            raise ValueError(f"the day-of-week range {item!r} is empty or runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_CRON_DAYS[day] for day in sorted(days, key=lambda day: (day - 1) % 7))


def _weekday_number(token: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token)
    if token in _CRON_DAYS:
        return _CRON_DAYS.index(token)
    raise ValueError(f"day of week {token!r} must be 0-7 (0 and 7 are Sunday) or mon..sun")


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ValueError, LookupError, OSError):
        close = difflib.get_close_matches(name, available_timezones(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ", e.g. 'Europe/Paris'"
        raise ValueError(f"unknown time zone {name!r}: use an IANA name{hint}") from None
    return name


# -- the model ------------------------------------------------------------------------------


class SendWindow(_Model):
    """When touches may go out, in the recipient's local time."""

    timezone: str | None = Field(
        None, description="IANA time zone used when the recipient has none, e.g. America/New_York"
    )
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1, description="days allowed")
    start: ClockTime = Field(time(0, 0), description='opening time, "HH:MM" (24-hour)')
    end: EndTime = Field(None, description='closing time, "HH:MM"; default end of day ("24:00")')

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)

    @field_validator("days", mode="before")
    @classmethod
    def _lowercase_days(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [day.lower() if isinstance(day, str) else day for day in value]
        return value

    @model_validator(mode="after")
    def _end_after_start(self) -> SendWindow:
        if self.end is not None and self.end <= self.start:
            raise ValueError("send_window: `end` must be later than `start` on the same day")
        return self

    def weekday_numbers(self) -> frozenset[int]:
        """The allowed days as numbers, Monday=0 (``datetime.weekday()``)."""
        return frozenset(WEEKDAYS.index(day) for day in self.days)


class Trigger(_Model):
    """What enrolls a recipient: an event, or a segment checked on a cron schedule."""

    event: str | None = Field(None, min_length=1, description="enroll when this event arrives")
    segment: dict[str, Condition] | None = Field(
        None, description="enroll everyone matching these conditions (needs `schedule`)"
    )
    schedule: str | None = Field(None, description='cron expression for checking the segment, e.g. "0 9 * * MON"')
    reenroll: bool = Field(False, description="enroll again after finishing the campaign")

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            cron_trigger(value, "UTC")
        return value

    @model_validator(mode="after")
    def _one_kind_of_trigger(self) -> Trigger:
        if self.event is not None and (self.segment is not None or self.schedule is not None):
            raise ValueError("trigger: use either `event`, or `segment` with `schedule`, not both")
        if self.event is None:
            if self.segment is None and self.schedule is None:
                raise ValueError("trigger: set `event`, or `segment` with `schedule`")
            if self.schedule is None:
                raise ValueError('trigger: a `segment` needs a `schedule`, e.g. "0 9 * * MON"')
            if self.segment is None:
                raise ValueError("trigger: a `schedule` needs a `segment` to enroll")
        return self


class Exit(_Model):
    """When a recipient leaves the campaign early, and what counts as its conversion."""

    on_events: list[str] = Field(default_factory=list, description="leave when one arrives")
    goal: str | None = Field(None, description="conversion event reported by analytics")


class Step(_Model):
    """One touch of the sequence."""

    id: str = Field(pattern=_ID_PATTERN, description="stable step id (letters, digits, - and _)")
    after: Duration = Field(timedelta(0), description="wait after enrollment (first step) or the previous step")
    channel: str = Field(min_length=1, description="channel name from the config: email, sms")
    subject: str | None = Field(None, description="email subject (Jinja template)")
    template: str | None = Field(None, description="body template file, relative to this campaign file's folder")
    text: str | None = Field(None, description="inline plain-text body (Jinja template)")
    value: float = Field(0.5, ge=0, le=1, description="what the touch is worth to the recipient")
    topics: list[str] = Field(default_factory=list, description="topics, for relevance")
    max_defer: Duration | None = Field(None, description="drop the touch if deferred longer")
    skip_if: list[str] = Field(
        default_factory=list, description="skip if one of these events happened since enrollment"
    )

    @model_validator(mode="after")
    def _one_body(self) -> Step:
        if (self.template is None) == (self.text is None):
            raise ValueError("a step needs exactly one of `template` (a file) or `text` (inline)")
        return self


class Campaign(_Model):
    """A drip campaign: who enters, when touches may go out, and the steps."""

    id: str = Field(pattern=_ID_PATTERN, description="stable id; defaults to the file name")
    name: str = Field(description="display name; defaults to the id")
    kind: Literal["marketing", "transactional"] = Field(
        "marketing", description="transactional touches need no marketing consent"
    )
    priority: int = Field(50, ge=0, le=100, description="higher wins when touches compete")
    policy: Literal["value", "always"] = Field(
        "value", description="value: send only touches worth it; always: gates only"
    )
    trigger: Trigger = Field(description="what enrolls a recipient")
    audience: dict[str, Condition] = Field(
        default_factory=dict, description="conditions on recipient fields; all must hold"
    )
    exit: Exit = Field(default_factory=Exit, description="when recipients leave early")
    send_window: SendWindow | None = Field(None, description="when touches may go out")
    steps: list[Step] = Field(min_length=1, description="the touches, in order")
    source: SkipJsonSchema[Path | None] = Field(None, exclude=True)
    _compiled: dict[str, CompiledStep] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_id(cls, value: Any) -> Any:
        if isinstance(value, dict) and "name" not in value and "id" in value:
            return {**value, "name": value["id"]}
        return value

    @field_validator("steps")
    @classmethod
    def _unique_step_ids(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.id in seen:
                raise PydanticCustomError("duplicate_step_id", "duplicate step id '{step_id}'", {"step_id": step.id})
            seen.add(step.id)
        return steps

    def step(self, step_id: str) -> Step | None:
        """The step with this id, if any."""
        index = self.step_index(step_id)
        return None if index is None else self.steps[index]

    def step_index(self, step_id: str) -> int | None:
        """The position of the step with this id, if any."""
        positions = self.__dict__.get("_positions")
        if positions is None:
            positions = {step.id: index for index, step in enumerate(self.steps)}
            object.__setattr__(self, "_positions", positions)  # cache on the frozen model
        return positions.get(step_id)

    def compiled(self, step_id: str) -> CompiledStep:
        """The step's compiled templates (compiled at load; on first use if built in code)."""
        compiled = self._compiled.get(step_id)
        if compiled is None:
            step = self.step(step_id)
            if step is None:
                raise KeyError(step_id)
            base_dir = self.source.parent if self.source else Path.cwd()
            compiled = self._compiled[step_id] = compile_step(step, base_dir)
        return compiled


# -- JSON Schema ----------------------------------------------------------------------------


class _TomlJsonSchema(GenerateJsonSchema):
    """TOML has no null: optional keys are simply omitted, and defaults read as written."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        result = super().default_schema(schema)
        if "default" in result and result["default"] is None:
            del result["default"]
        return result

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        if isinstance(dft, time):
            return dft.strftime("%H:%M")
        return super().encode_default(dft)


def campaign_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a campaign file, for editors."""
    schema = Campaign.model_json_schema(schema_generator=_TomlJsonSchema)
    schema["required"] = [key for key in schema["required"] if key not in ("id", "name")]
    schema["title"] = "Tact campaign"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# -- loading --------------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")
_NESTED: dict[type[BaseModel], dict[str, tuple[type[BaseModel], int]]] = {
    # field -> (model of its tables, path segments to skip: list index or dict key)
    Campaign: {
        "trigger": (Trigger, 0),
        "exit": (Exit, 0),
        "send_window": (SendWindow, 0),
        "steps": (Step, 1),
        "audience": (Condition, 1),
    },
    Trigger: {"segment": (Condition, 1)},
}
_MISSING_HINTS: dict[KeyPath, str] = {
    ("trigger",): "missing [trigger] table: enroll on an `event`, or a `segment` with a `schedule`",
    ("steps",): "missing [[steps]]: a campaign needs at least one step",
}
_TYPE_MESSAGES = {
    "string_type": "must be text in quotes",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "list_type": 'must be a list, e.g. ["a", "b"]',
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "time_delta_type": 'must be a duration in quotes, e.g. "2d" or "1d12h"',
    "time_type": 'must be a time in quotes, e.g. "09:00"',
    "string_pattern_mismatch": "may contain only letters, digits, '-' and '_'",
}


def load_campaign(
    path: Path,
    *,
    channels: Collection[str] | None = None,
    sample_recipient: Mapping[str, Any] | None = None,
) -> Campaign:
    """Load and fully check one campaign file; raise ``CampaignError`` listing every problem.

    ``channels``, when given, are the configured channel names a step may use; templates are
    rendered against ``sample_recipient`` (default ``SAMPLE_RECIPIENT``) to catch undefined
    variables.
    """
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as error:
        raise CampaignError([Diagnostic(path, 1, 1, f"cannot read campaign file: {error}")]) from None
    except tomllib.TOMLDecodeError as error:
        raise CampaignError([_syntax_diagnostic(path, text, str(error))]) from None
    source_map = SourceMap(text)
    diagnostics: list[Diagnostic] = []
    if "source" in data:
        diagnostics.append(_at(path, source_map.key(("source",)), "unknown key 'source'"))
        del data["source"]
    data.setdefault("id", path.stem)
    diagnostics += _duplicate_step_ids(path, data, source_map)
    campaign: Campaign | None = None
    try:
        campaign = Campaign.model_validate({**data, "source": path})
        steps = list(enumerate(campaign.steps))
    except ValidationError as error:
        diagnostics += _validation_diagnostics(path, error, data, source_map)
        steps = _individually_valid_steps(data)
    names = (campaign.id, campaign.name) if campaign else (str(data["id"]), str(data["id"]))
    compiled: dict[str, CompiledStep] = {}
    for index, step in steps:
        check = _StepCheck(path, source_map, index, step)
        check.channel(channels)
        compiled_step = check.templates(sample_recipient or SAMPLE_RECIPIENT, *names)
        if compiled_step is not None:
            compiled[step.id] = compiled_step
        diagnostics += check.diagnostics
    if diagnostics or campaign is None:
        unique = dict.fromkeys(diagnostics)
        order = sorted(unique, key=lambda d: (d.path != path, str(d.path), d.line, d.column))
        raise CampaignError(order)
    campaign._compiled.update(compiled)
    return campaign


def load_campaigns(
    directory: Path,
    *,
    channels: Collection[str] | None = None,
    sample_recipient: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Campaign], list[CampaignError]]:
    """Load every ``*.toml`` directly in ``directory``: the good campaigns and the errors."""
    if not directory.is_dir():
        message = "campaigns directory not found"
        return {}, [CampaignError([Diagnostic(directory, 1, 1, message)])]
    campaigns: dict[str, Campaign] = {}
    errors: list[CampaignError] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            campaign = load_campaign(path, channels=channels, sample_recipient=sample_recipient)
        except CampaignError as error:
            errors.append(error)
            continue
        earlier = campaigns.get(campaign.id)
        if earlier is not None:
            where = SourceMap(path.read_text(encoding="utf-8")).value(("id",))
            message = f"campaign id '{campaign.id}' is already used by {earlier.source}"
            errors.append(CampaignError([_at(path, where, message)]))
            continue
        campaigns[campaign.id] = campaign
    return campaigns, errors


def _at(path: Path, position: Any, message: str) -> Diagnostic:
    return Diagnostic(path, position.line, position.column, message)


def _syntax_diagnostic(path: Path, text: str, message: str) -> Diagnostic:
    found = _TOML_POSITION.search(message)
    if found:
        line, column = int(found.group(1)), int(found.group(2))
    else:
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    detail = _TOML_AT_END.sub("", _TOML_POSITION.sub("", message))
    return Diagnostic(path, line, column, f"TOML syntax error: {detail}")


def _where(path: KeyPath) -> str:
    """A key path as a marketer reads it: ``steps[2].channel`` (steps counted from 1)."""
    text = ""
    for segment in path:
        text += f"[{segment + 1}]" if isinstance(segment, int) else f".{segment}"
    return text.lstrip(".") or "the campaign"


def _present_prefix(loc: tuple[int | str, ...], data: Any) -> KeyPath:
    """The longest start of ``loc`` that names something actually in the file."""
    present: KeyPath = ()
    for segment in loc:
        if not isinstance(data, dict | list):
            break
        try:
            data = data[segment]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            break
        present += (segment,)
    return present


def _allowed_keys(container: KeyPath) -> list[str]:
    model: type[BaseModel] = Campaign
    segments = list(container)
    while segments:
        nested = _NESTED.get(model, {}).get(str(segments.pop(0)))
        if nested is None:
            return []
        model, skip = nested
        del segments[:skip]
    return [field.alias or name for name, field in model.model_fields.items() if name != "source"]


def _validation_diagnostics(
    path: Path, error: ValidationError, data: dict[str, Any], source_map: SourceMap
) -> list[Diagnostic]:
    # duplicate step ids are reported, with their position, by _duplicate_step_ids
    items = [e for e in error.errors(include_url=False) if e["type"] != "duplicate_step_id"]
    suggested: set[KeyPath] = set()  # a misspelled key also makes its right name "missing"
    diagnostics = []
    for item in sorted(items, key=lambda e: e["type"] != "extra_forbidden"):
        loc = tuple(item["loc"])
        present = _present_prefix(loc, data)
        if item["type"] == "extra_forbidden" and present == loc:
            key, container = str(loc[-1]), present[:-1]
            close = difflib.get_close_matches(key, _allowed_keys(container), n=1)
            message = f"unknown key '{key}'"
            message += f" in {_where(container)}" if container else ""
            if close:
                message += f" (did you mean '{close[0]}'?)"
                suggested.add((*container, close[0]))
            diagnostics.append(_at(path, source_map.key(loc), message))
        elif item["type"] == "missing" and present == loc[:-1]:
            if loc in suggested:
                continue
            message = _MISSING_HINTS.get(loc) or f"missing required key '{loc[-1]}'" + (
                f" in {_where(present)}" if present else ""
            )
            diagnostics.append(_at(path, source_map.table(present), message))
        else:
            message = f"{_where(present)}: {_friendly(item)}"
            diagnostics.append(_at(path, source_map.value(present), message))
    return diagnostics


def _friendly(item: Any) -> str:
    kind, message, context = item["type"], item["msg"], item.get("ctx") or {}
    if kind == "value_error":
        return str(message).removeprefix("Value error, ")
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind == "greater_than_equal":
        return f"must be at least {context['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {context['le']}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        close = difflib.get_close_matches(str(item.get("input")), choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"must be one of {', '.join(repr(c) for c in choices)}{hint}"
    return str(message).replace("Input should be", "must be")


def _duplicate_step_ids(path: Path, data: dict[str, Any], source_map: SourceMap) -> list[Diagnostic]:
    steps = data.get("steps")
    first_index: dict[str, int] = {}
    diagnostics = []
    for index, raw in enumerate(steps if isinstance(steps, list) else []):
        step_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(step_id, str):
            continue
        if step_id in first_index:
            where = source_map.value(("steps", index, "id"))
            message = (
                f"steps[{index + 1}].id: duplicate step id '{step_id}' "
                f"(already used by steps[{first_index[step_id] + 1}])"
            )
            diagnostics.append(_at(path, where, message))
        first_index.setdefault(step_id, index)
    return diagnostics


def _individually_valid_steps(data: dict[str, Any]) -> list[tuple[int, Step]]:
    """Steps that validate on their own, so their templates are checked despite other errors."""
    steps = data.get("steps")
    valid = []
    for index, raw in enumerate(steps if isinstance(steps, list) else []):
        try:
            valid.append((index, Step.model_validate(raw)))
        except ValidationError:
            continue
    return valid


class _StepCheck:
    """Checks one step against the configured channels and renders its templates."""

    def __init__(self, path: Path, source_map: SourceMap, index: int, step: Step) -> None:
        self.path, self.source_map, self.index, self.step = path, source_map, index, step
        self.diagnostics: list[Diagnostic] = []

    def _report(self, key: str, message: str, *, at_value: bool = False) -> None:
        loc = ("steps", self.index, key)
        position = self.source_map.value(loc) if at_value else self.source_map.key(loc)
        self.diagnostics.append(_at(self.path, position, f"{_where(loc)}: {message}"))

    def channel(self, channels: Collection[str] | None) -> None:
        """Report a channel that is not one of ``channels`` (when given)."""
        if channels is None or self.step.channel in channels:
            return
        known = sorted(channels)
        close = difflib.get_close_matches(self.step.channel, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        self._report(
            "channel",
            f"unknown channel '{self.step.channel}' (configured: {', '.join(known)}{hint})",
            at_value=True,
        )

    def templates(self, recipient: Mapping[str, Any], campaign_id: str, campaign_name: str) -> CompiledStep | None:
        """Compile the step and render it against ``recipient``; report what fails."""
        step = self.step
        try:
            compiled = compile_step(step, self.path.parent)
        except TemplateSourceError as error:
            for problem in error.problems:
                if problem.path is not None:
                    line = problem.line or 1
                    self.diagnostics.append(Diagnostic(problem.path, line, 1, problem.message))
                else:
                    suffix = f" (line {problem.line})" if problem.line and problem.line > 1 else ""
                    self._report(problem.field, problem.message + suffix, at_value=True)
            return None
        context = render_context(
            recipient,
            campaign_id=campaign_id,
            campaign_name=campaign_name,
            step_id=step.id,
            unsubscribe_url=SAMPLE_UNSUBSCRIBE_URL,
        )
        for failure in compiled.check(context):
            key = "subject" if failure.part == "subject" else ("template" if step.template else "text")
            message = failure.detail
            if key == "template":
                message += f" ({step.template}" + (f", line {failure.line})" if failure.line else ")")
            if failure.variable and failure.variable.startswith("recipient."):
                message += f"; the sample recipient has: {', '.join(sorted(recipient))}"
            self._report(key, message)
        return compiled
