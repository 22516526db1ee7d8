"""Message templates: formats, escaping, the plain-text part and undefined variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.campaign import Step
from scheduler.templates import (
    CompiledStep,
    TemplateRenderError,
    TemplateSourceError,
    body_format,
    compile_step,
    html_to_text,
    render_context,
)

CONTEXT = render_context(
    {"first_name": "Ada", "plan": "pro"},
    campaign_id="trial",
    campaign_name="Trial",
    step_id="welcome",
    unsubscribe_url="https://tact.example.com/u/abc",
)


def compiled(
    tmp_path: Path,
    *,
    template: str | None = None,
    body: str = "",
    text: str | None = None,
    subject: str | None = None,
) -> CompiledStep:
    """Compile a step; a named template file is written with ``body`` first."""
    if template is not None:
        (tmp_path / template).write_text(body, encoding="utf-8")
    step = Step(id="welcome", channel="email", template=template, text=text, subject=subject)
    return compile_step(step, tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("welcome.html.j2", "html"),
        ("welcome.HTML", "html"),
        ("tips.md.j2", "markdown"),
        ("tips.md", "markdown"),
        ("plain.txt.j2", "text"),
        ("plain.j2", "text"),
        (None, "text"),
    ],
)
def test_body_format_follows_the_file_name(name: str | None, expected: str) -> None:
    """HTML and Markdown are recognised by extension; everything else is plain text."""
    assert body_format(name) == expected


def test_html_template_is_autoescaped_and_gets_a_text_part(tmp_path: Path) -> None:
    """Variables in HTML bodies are escaped; the text part is readable text."""
    step = compiled(tmp_path, template="w.html.j2", body="<p>Hi {{ recipient.first_name }}</p>")
    message = step.render({**CONTEXT, "recipient": {"first_name": "<b>Ada</b>"}})
    assert message.html == "<p>Hi &lt;b&gt;Ada&lt;/b&gt;</p>"
    assert message.text == "Hi <b>Ada</b>"


def test_plain_text_is_not_escaped(tmp_path: Path) -> None:
    """Inline text bodies and subjects keep characters as they are."""
    step = compiled(tmp_path, text="Tom & {{ recipient.first_name }}", subject="A & B")
    message = step.render({**CONTEXT, "recipient": {"first_name": "<Ada>"}})
    assert (message.subject, message.text, message.html) == ("A & B", "Tom & <Ada>", None)


def test_markdown_renders_to_html_and_keeps_its_source_as_text(tmp_path: Path) -> None:
    """A Markdown body becomes HTML; the text part is the rendered Markdown source."""
    body = "Hi **{{ recipient.first_name }}**\n\n[Unsubscribe]({{ unsubscribe_url }})"
    message = compiled(tmp_path, template="tip.md.j2", body=body).render(CONTEXT)
    assert message.text == "Hi **Ada**\n\n[Unsubscribe](https://tact.example.com/u/abc)"
    assert message.html == (
        '<p>Hi <strong>Ada</strong></p>\n<p><a href="https://tact.example.com/u/abc">Unsubscribe</a></p>\n'
    )


def test_markdown_escapes_raw_html(tmp_path: Path) -> None:
    """Raw HTML in Markdown (for instance from a recipient field) is shown, not run."""
    message = compiled(tmp_path, template="tip.md", body="{{ recipient.first_name }}").render(
        {**CONTEXT, "recipient": {"first_name": "<script>x</script>"}}
    )
    assert "<script>" not in (message.html or "")


def test_subject_is_one_line(tmp_path: Path) -> None:
    """Line breaks in a rendered subject collapse to single spaces."""
    step = compiled(tmp_path, text="x", subject="Hello\n  {{ recipient.first_name }} ")
    assert step.render(CONTEXT).subject == "Hello Ada"


def test_context_gives_campaign_step_and_unsubscribe_url(tmp_path: Path) -> None:
    """Templates see the campaign, the step and the unsubscribe URL."""
    step = compiled(tmp_path, text="{{ campaign.name }}/{{ step.id }}/{{ unsubscribe_url }}")
    assert step.render(CONTEXT).text == "Trial/welcome/https://tact.example.com/u/abc"


def test_undefined_variable_raises_with_its_dotted_name(tmp_path: Path) -> None:
    """A missing recipient field raises TemplateRenderError naming `recipient.<field>`."""
    step = compiled(tmp_path, text="Hi\n{{ recipient.company }}")
    with pytest.raises(TemplateRenderError) as raised:
        step.render(CONTEXT)
    assert (raised.value.part, raised.value.variable, raised.value.line) == (
        "body",
        "recipient.company",
        2,
    )


def test_default_filter_covers_missing_fields(tmp_path: Path) -> None:
    """`default` supplies a value for a missing field under StrictUndefined."""
    step = compiled(tmp_path, text="Hi {{ recipient.nickname | default('there') }}")
    assert step.render(CONTEXT).text == "Hi there"


def test_check_reports_subject_and_body_separately(tmp_path: Path) -> None:
    """`check` renders each part and returns every failure."""
    step = compiled(tmp_path, text="{{ coupon }}", subject="{{ recipient.nick }}")
    failures = step.check(CONTEXT)
    assert [(f.part, f.variable) for f in failures] == [
        ("subject", "recipient.nick"),
        ("body", "coupon"),
    ]
    assert compiled(tmp_path, text="ok").check(CONTEXT) == []


def test_sandbox_blocks_internal_attributes(tmp_path: Path) -> None:
    """The sandbox refuses Python internals such as `__class__`."""
    step = compiled(tmp_path, text="{{ recipient.__class__.__mro__ }}")
    with pytest.raises(TemplateRenderError):
        step.render(CONTEXT)


def test_missing_template_file_is_a_source_error(tmp_path: Path) -> None:
    """Compiling a step whose template file does not exist lists the problem."""
    step = Step(id="s", channel="email", template="nope.html.j2")
    with pytest.raises(TemplateSourceError) as raised:
        compile_step(step, tmp_path)
    (problem,) = raised.value.problems
    assert (problem.field, problem.path) == ("template", None)
    assert "'nope.html.j2' not found" in problem.message


def test_syntax_errors_in_subject_and_file_are_both_listed(tmp_path: Path) -> None:
    """Every syntax error of a step is reported, with the template file and line."""
    (tmp_path / "b.txt").write_text("ok\n{% for %}\n", encoding="utf-8")
    step = Step(id="s", channel="email", subject="{{ }", template="b.txt")
    with pytest.raises(TemplateSourceError) as raised:
        compile_step(step, tmp_path)
    found = [(p.field, p.path, p.line) for p in raised.value.problems]
    assert found == [("subject", None, 1), ("template", tmp_path / "b.txt", 2)]


def test_templates_can_include_files_from_the_campaign_folder(tmp_path: Path) -> None:
    """A template may include another file relative to the campaign's folder."""
    (tmp_path / "footer.html").write_text('<a href="{{ unsubscribe_url }}">Stop</a>')
    step = compiled(tmp_path, template="w.html", body='<p>Hi</p>{% include "footer.html" %}')
    assert step.render(CONTEXT).text == "Hi\n\nStop (https://tact.example.com/u/abc)"


# -- HTML to text ---------------------------------------------------------------------------


def test_html_to_text_keeps_paragraphs_line_breaks_and_links() -> None:
    """Paragraphs become blank-line separated, <br> a newline, links `text (url)`."""
    html = (
        "<html><head><title>T</title><style>p { color: red }</style></head><body>"
        "<h1>Welcome</h1><p>Line one<br>line   two</p>"
        '<p>Read <a href="https://x.example/doc">the guide</a> &amp; enjoy.</p>'
        '<p><a href="https://x.example">https://x.example</a></p>'
        "<script>alert(1)</script></body></html>"
    )
    assert html_to_text(html) == (
        "Welcome\n\nLine one\nline two\n\nRead the guide (https://x.example/doc) & enjoy.\n\nhttps://x.example"
    )


def test_html_to_text_lists_tables_and_images() -> None:
    """List items get dashes, table rows their own lines, images their alt text."""
    html = (
        "<ul><li>One</li><li>Two</li></ul>"
        "<table><tr><td>Pro</td><td>$8</td></tr><tr><td>Team</td><td>$14</td></tr></table>"
        '<img src="logo.png" alt="Lumen logo">'
    )
    assert html_to_text(html) == "- One\n- Two\n\nPro $8\nTeam $14\n\nLumen logo"


def test_html_to_text_preserves_preformatted_lines() -> None:
    """Line breaks inside <pre> survive."""
    assert html_to_text("<pre>a\nb</pre>") == "a\nb"
