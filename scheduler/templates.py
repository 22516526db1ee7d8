"""Message templates: Jinja2 in a sandbox, compiled once per campaign load, rendered per send.

A step has an optional ``subject`` (one line of Jinja) and a body, either a ``template`` file
relative to the campaign's folder or an inline ``text``. The body format follows the file
name: ``*.html.j2``/``*.html`` is HTML (autoescaped), ``*.md.j2``/``*.md`` is Markdown
(rendered to HTML after Jinja), anything else and inline text is plain text. Every rendered
message has a plain-text part; HTML bodies also get it through ``html_to_text``.

Undefined variables are errors (``StrictUndefined``): ``{{ recipient.first_name }}`` fails
when the field is missing, ``{{ recipient.first_name | default("there") }}`` does not.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, nodes
from jinja2.exceptions import TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markdown_it import MarkdownIt

from scheduler.errors import TactError

if TYPE_CHECKING:
    from scheduler.campaign import Step

BodyFormat = Literal["text", "html", "markdown"]
TemplateField = Literal["subject", "template", "text"]

SAMPLE_UNSUBSCRIBE_URL = "https://tact.example.com/u/sample"
SAMPLE_RECIPIENT: Mapping[str, Any] = {
    "id": "sample-recipient",
    "email": "ada@example.com",
    "phone": "+15555550123",
    "timezone": "America/New_York",
    "locale": "en-US",
    "value": 1.0,
    "first_name": "Ada",
    "last_name": "Lovelace",
    "company": "Analytical Engines Ltd",
    "plan": "trial",
    "country": "US",
}

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
_UNDEFINED_NAME = re.compile(r"(?:has no (?:attribute|element) |^)'([^']+)'(?: is undefined)?$")


@dataclass(frozen=True)
class RenderedMessage:
    """One rendered touch: subject (email only), plain text always, HTML when the body is."""

    subject: str | None
    text: str
    html: str | None


class TemplateRenderError(TactError):
    """Rendering failed; ``variable`` names the undefined variable when that was the cause."""

    def __init__(
        self,
        part: Literal["subject", "body"],
        detail: str,
        *,
        variable: str | None = None,
        line: int | None = None,
    ) -> None:
        self.part = part
        self.detail = detail
        self.variable = variable
        self.line = line
        super().__init__(f"{part}: {detail}")


@dataclass(frozen=True)
class TemplateProblem:
    """A template that cannot be compiled; ``path``/``line`` locate it in a template file."""

    field: TemplateField
    message: str
    path: Path | None = None
    line: int | None = None


class TemplateSourceError(TactError):
    """A step's templates cannot be compiled; ``problems`` lists every one."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


def body_format(template_name: str | None) -> BodyFormat:
    """The body format implied by a template file name (``None`` for inline text)."""
    name = (template_name or "").lower().removesuffix(".j2")
    if name.endswith((".html", ".htm")):
        return "html"
    if name.endswith((".md", ".markdown")):
        return "markdown"
    return "text"


def render_context(
    recipient: Mapping[str, Any],
    *,
    campaign_id: str,
    campaign_name: str,
    step_id: str,
    unsubscribe_url: str,
) -> dict[str, Any]:
    """The variables a template sees: ``recipient``, ``campaign``, ``step``, ``unsubscribe_url``."""
    return {
        "recipient": recipient,
        "campaign": {"id": campaign_id, "name": campaign_name},
        "step": {"id": step_id},
        "unsubscribe_url": unsubscribe_url,
    }


_JINJA_MARKUP = re.compile(r"\{[{%#]")


@dataclass(frozen=True)
class _Part:
    template: Template
    source: str
    filename: str


class CompiledStep:
    """A step's subject and body, compiled once and rendered for every send."""

    def __init__(self, subject: _Part | None, body: _Part, fmt: BodyFormat) -> None:
        self._subject = subject
        self._body = body
        self.body_format: BodyFormat = fmt

    def _sources(self) -> tuple[str | None, str, str, BodyFormat]:
        subject = self._subject.source if self._subject else None
        return subject, self._body.source, self._body.filename, self.body_format

    def __eq__(self, other: object) -> bool:
        """Steps compiled from the same sources are equal (so are campaigns loaded twice)."""
        return isinstance(other, CompiledStep) and self._sources() == other._sources()

    def __hash__(self) -> int:
        return hash(self._sources())

    def render(self, context: Mapping[str, Any]) -> RenderedMessage:
        """Render the message; raise ``TemplateRenderError`` on an undefined variable."""
        subject = None
        if self._subject is not None:
            subject = " ".join(_render_part(self._subject, "subject", context).split())
        body = _render_part(self._body, "body", context)
        if self.body_format == "html":
            return RenderedMessage(subject, html_to_text(body), body)
        if self.body_format == "markdown":
            return RenderedMessage(subject, body, _MARKDOWN.render(body))
        return RenderedMessage(subject, body, None)

    def check(self, context: Mapping[str, Any]) -> list[TemplateRenderError]:
        """Render subject and body separately against ``context``; return what failed."""
        failures: list[TemplateRenderError] = []
        parts: list[tuple[Literal["subject", "body"], _Part | None]] = [
            ("subject", self._subject),
            ("body", self._body),
        ]
        for name, part in parts:
            if part is None:
                continue
            try:
                _render_part(part, name, context)
            except TemplateRenderError as error:
                failures.append(error)
        return failures


def compile_step(step: Step, base_dir: Path) -> CompiledStep:
    """Compile a step's templates; raise ``TemplateSourceError`` listing every problem."""
    environment = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(base_dir.resolve()),
        undefined=StrictUndefined,
        autoescape=lambda name: body_format(name) == "html",
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    problems: list[TemplateProblem] = []
    subject = None
    if step.subject is not None:
        subject = _compile_inline(environment, step.subject, "subject", problems)
    body = None
    if step.template is not None:
        body = _compile_file(environment, base_dir, step.template, problems)
    elif step.text is not None:
        body = _compile_inline(environment, step.text, "text", problems)
    else:
        problems.append(TemplateProblem("text", "the step needs a `template` or a `text`"))
    if problems or body is None:
        raise TemplateSourceError(problems)
    return CompiledStep(subject, body, body_format(step.template))


def _compile_inline(
    environment: ImmutableSandboxedEnvironment,
    source: str,
    field: TemplateField,
    problems: list[TemplateProblem],
) -> _Part | None:
    try:
        return _Part(environment.from_string(source), source, "<template>")
    except TemplateSyntaxError as error:
        problems.append(TemplateProblem(field, _syntax_message(error), line=error.lineno))
        return None


def _compile_file(
    environment: ImmutableSandboxedEnvironment,
    base_dir: Path,
    name: str,
    problems: list[TemplateProblem],
) -> _Part | None:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or "\\" in name:
        problems.append(
            TemplateProblem(
                "template",
                f"template path {name!r} must be relative to the campaign's folder and stay inside it",
            )
        )
        return None
    path = base_dir / relative
    if not path.is_file():
        problems.append(TemplateProblem("template", f"template file {name!r} not found ({path})"))
        return None
    try:
        template = environment.get_template(relative.as_posix())
        source = path.read_text(encoding="utf-8")
    except TemplateSyntaxError as error:
        problems.append(TemplateProblem("template", _syntax_message(error), path=path, line=error.lineno))
        return None
    except (UnicodeDecodeError, OSError, TemplateError) as error:
        problems.append(TemplateProblem("template", f"cannot read template {name!r}: {error}"))
        return None
    return _Part(template, source, template.filename or str(path))


def _syntax_message(error: TemplateSyntaxError) -> str:
    return f"template syntax error: {error.message}"


def _render_part(part: _Part, name: Literal["subject", "body"], context: Mapping[str, Any]) -> str:
    if not _JINJA_MARKUP.search(part.source):
        return part.source  # plain text renders to itself; skip the template machinery
    try:
        return part.template.render(context)
    except UndefinedError as error:
        variable = _undefined_variable(str(error), part)
        raise TemplateRenderError(
            name,
            f"undefined variable '{variable}'",
            variable=variable,
            line=_template_line(error, part.filename),
        ) from error
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as error:
        raise TemplateRenderError(name, f"cannot render: {error}", line=_template_line(error, part.filename)) from error


def _undefined_variable(message: str, part: _Part) -> str:
    """Name the missing variable, dotted from its root where the template shows it."""
    found = _UNDEFINED_NAME.search(message)
    if found is None:
        return message
    name = found.group(1)
    tree = part.template.environment.parse(part.source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if _last_segment(node) == name:
            dotted = _dotted(node)
            if dotted is not None:
                return dotted
    return name


def _last_segment(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return str(node.arg.value)
    return None


def _dotted(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return str(node.name)
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        parent = _dotted(node.node)
        segment = _last_segment(node)
        if parent is not None and segment is not None:
            return f"{parent}.{segment}"
    return None


def _template_line(error: BaseException, filename: str) -> int | None:
    """The template line Jinja reports in the rewritten traceback, if any."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    return frames[-1].lineno if frames else None


# -- HTML to plain text -------------------------------------------------------------------

_DROPPED_TAGS = frozenset({"script", "style", "head", "title", "template"})
# fmt: off
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "div", "dl", "dt", "dd", "footer", "form",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
    "section", "table", "ul",
})
# fmt: on
_BLANK_RUNS = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body: paragraphs kept, links as ``text (url)``."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.chunks).split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._dropped_depth = 0
        self._preformatted_depth = 0
        self._open_links: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._dropped_depth = 0  # a <head> without its end tag ends here
        if tag in _DROPPED_TAGS:
            self._dropped_depth += 1
            return
        if self._dropped_depth:
            return
        attributes = dict(attrs)
        if tag in ("br", "tr"):
            self.chunks.append("\n")
        elif tag in _BLOCK_TAGS:
            self.chunks.append("\n\n" if tag != "li" else "\n- ")
        elif tag in ("td", "th"):
            self.chunks.append(" ")
        elif tag == "img" and attributes.get("alt"):
            self.chunks.append(attributes["alt"] or "")
        if tag == "pre":
            self._preformatted_depth += 1
        if tag == "a":
            self._open_links.append((attributes.get("href") or "", len(self.chunks)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_TAGS:
            self._dropped_depth = max(0, self._dropped_depth - 1)
            return
        if self._dropped_depth:
            return
        if tag == "a" and self._open_links:
            href, start = self._open_links.pop()
            label = "".join(self.chunks[start:]).strip()
            if href and not href.startswith("#") and href not in (label, f"mailto:{label}"):
                self.chunks.append(f" ({href})" if label else href)
        elif tag == "pre":
            self._preformatted_depth = max(0, self._preformatted_depth - 1)
        if tag in _BLOCK_TAGS and tag != "li":
            self.chunks.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._dropped_depth:
            return
        self.chunks.append(data if self._preformatted_depth else re.sub(r"\s+", " ", data))
