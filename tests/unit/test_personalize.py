"""compose.personalize: strict, sandboxed, escaping Jinja2 personalization."""

from __future__ import annotations

import pytest

from postroom.compose.personalize import (
    RenderedContent,
    compile_content,
    recipient_context,
)
from postroom.domain.models import EmailFormat, Recipient
from postroom.errors import TemplateError

ANN = Recipient(
    id=1,
    email="ann@example.com",
    first_name="Ann",
    last_name="Lee",
    email_format=EmailFormat.HTML,
    fields={"tier": "gold", "points": 42},
)


def render(*, subject: str = "s", html: str = "", text: str = "",
           recipient: Recipient = ANN) -> RenderedContent:
    content = compile_content(subject=subject, html=html, text=text)
    context = recipient_context(recipient, delivery_id=7, delivery_name="Spring news")
    return content.render(context, who=recipient.email)


def render_field(field: str, source: str) -> RenderedContent:
    """Render `source` as one field (subject, html or text), the others minimal."""
    sources = {"subject": "s", "html": "", "text": "", field: source}
    return render(subject=sources["subject"], html=sources["html"], text=sources["text"])


# --- variables -------------------------------------------------------------------------------


def test_recipient_and_delivery_variables() -> None:
    out = render(
        subject="Hi {{ recipient.first_name }} {{ recipient.last_name }}",
        text="{{ recipient.email }} {{ recipient.email_format }} #{{ delivery.id }}",
    )
    assert out == RenderedContent(
        subject="Hi Ann Lee", html="", text="ann@example.com html #7"
    )


def test_custom_fields_are_attributes_of_recipient() -> None:
    out = render(text="{{ recipient.tier }}/{{ recipient.points + 1 }}")
    assert out.text == "gold/43"


def test_empty_html_and_text_are_not_rendered() -> None:
    content = compile_content(subject="s", html="  ", text="")
    assert (content.has_html, content.has_text) == (False, False)
    assert render(html=" ", text="").html == ""


def test_delivery_name() -> None:
    assert render(text="{{ delivery.name }}").text == "Spring news"


def test_custom_field_called_name() -> None:
    zed = Recipient(id=2, email="zed@example.com", fields={"name": "Zed"})
    assert render(text="{{ recipient.name }}", recipient=zed).text == "Zed"


@pytest.mark.parametrize("field", ["items", "values", "keys", "get"])
def test_custom_field_named_like_a_dict_method(field: str) -> None:
    zed = Recipient(id=2, email="zed@example.com", fields={field: "3"})
    assert render(text=f"{{{{ recipient.{field} }}}}", recipient=zed).text == "3"


# --- strict undefined ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["subject", "html", "text"])
def test_undefined_custom_field_names_variable_field_and_who(field: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_field(field, "Hello {{ recipient.loyalty }}")
    assert info.value.field == field
    assert info.value.variable == "recipient.loyalty"
    assert str(info.value) == (
        f"{field}: undefined variable 'recipient.loyalty' for ann@example.com"
    )


def test_undefined_bare_name() -> None:
    with pytest.raises(TemplateError) as info:
        render(subject="{{ nope }}")
    assert (info.value.field, info.value.variable) == ("subject", "nope")
    assert "'nope'" in str(info.value) and "ann@example.com" in str(info.value)


def test_undefined_attribute_of_undefined_names_the_first_missing() -> None:
    with pytest.raises(TemplateError) as info:
        render(text="{{ recipient.loyalty.level }}")
    assert info.value.variable == "recipient.loyalty"


def test_undefined_in_a_condition_also_fails() -> None:
    with pytest.raises(TemplateError, match=r"recipient\.vip"):
        render(text="{% if recipient.vip %}yes{% endif %}")


def test_runtime_error_names_field_and_who() -> None:
    with pytest.raises(TemplateError, match=r"^text: ZeroDivisionError: .* for ann@example.com$"):
        render(text="{{ 1 / 0 }}")


# --- syntax errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "source", "line"),
    [
        ("subject", "Hi {{ recipient.first_name", 1),
        ("html", "<p>\n<b>\n{% if %}\n", 3),
        ("text", "one\ntwo\n{% for x in y %}", 3),
    ],
)
def test_syntax_error_names_field_and_line(field: str, source: str, line: int) -> None:
    sources = {"subject": "s", "html": "", "text": "", field: source}
    with pytest.raises(TemplateError) as info:
        compile_content(subject=sources["subject"], html=sources["html"],
                        text=sources["text"])
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}, line {line}: ")


# --- escaping --------------------------------------------------------------------------------


def test_html_is_escaped_subject_and_text_are_not() -> None:
    evil = Recipient(id=3, email="eve@example.com", first_name='<b>"Eve" & Co</b>')
    out = render(
        subject="{{ recipient.first_name }}",
        html="<p>{{ recipient.first_name }}</p>",
        text="{{ recipient.first_name }}",
        recipient=evil,
    )
    assert out.subject == '<b>"Eve" & Co</b>'
    assert out.text == '<b>"Eve" & Co</b>'
    assert out.html == "<p>&lt;b&gt;&#34;Eve&#34; &amp; Co&lt;/b&gt;</p>"


def test_trailing_newline_is_kept() -> None:
    assert render(text="Hello\n").text == "Hello\n"


# --- sandbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ recipient.__class__ }}",
        "{{ recipient.__init__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ recipient._values }}",
        "{{ [].append(1) }}",
    ],
)
@pytest.mark.parametrize("field", ["subject", "html", "text"])
def test_sandbox_refuses_unsafe_access(field: str, source: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_field(field, source)
    assert info.value.field == field
    assert "unsafe" in str(info.value)


@pytest.mark.parametrize("source", ["{{ recipient.update(email='x') }}",
                                    "{{ recipient.__setitem__('email', 'x') }}"])
def test_sandbox_does_not_mutate_the_context(source: str) -> None:
    content = compile_content(subject="s", html="", text=source)
    context = recipient_context(ANN, delivery_id=7, delivery_name="n")
    with pytest.raises(TemplateError):
        content.render(context)
    assert context["recipient"]["email"] == "ann@example.com"


@pytest.mark.parametrize(
    "payload",
    ["{{ 7*7 }}", "{% for x in range(3) %}{{ x }}{% endfor %}", "{{ recipient.__class__ }}"],
)
def test_template_syntax_in_data_is_inert(payload: str) -> None:
    mallory = Recipient(id=4, email="m@example.com", first_name=payload, fields={"note": payload})
    out = render(
        subject="{{ recipient.first_name }}",
        html="{{ recipient.note }}",
        text="{{ recipient.note }}",
        recipient=mallory,
    )
    assert out.subject == payload
    assert out.text == payload
    assert "49" not in out.html and "012" not in out.html
    assert out.html == payload.replace("'", "&#39;").replace('"', "&#34;")
