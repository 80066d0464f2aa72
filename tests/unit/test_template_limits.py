"""Templates are bounded (issue 12, finding 3; ADR 0020): compiling folds no constant, and
each recipient's rendering has CPU, output-size and memory bounds that fail that recipient
with a clear reason."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from postroom.compose.personalize import (
    RenderedContent,
    TemplateLimits,
    compile_content,
    recipient_context,
)
from postroom.domain.models import Recipient
from postroom.errors import TemplateError, TemplateLimitError

ANN = Recipient(id=1, email="ann@example.com", first_name="Ann",
                fields={"tier": "gold", "big": "x" * 2_000})
SMALL = TemplateLimits(max_source_chars=10_000, max_output_chars=100_000,
                       render_cpu_seconds=0.3)


def render(text: str, limits: TemplateLimits = SMALL,
           recipient: Recipient = ANN) -> RenderedContent:
    content = compile_content(subject="s", html="", text=text, limits=limits)
    context = recipient_context(recipient, delivery_id=7, delivery_name="news")
    return content.render(context, who=recipient.email)


def test_compiling_folds_no_constant() -> None:
    """`{{ 'a' * 10**8 }}` was computed when compiled (10**9 took 4 GB and 15-30 s)."""
    tracemalloc.start()
    try:
        compile_content(subject="s", html="", text="{{ 'a' * 10**8 }}{{ 'b'|center(10**8) }}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


@pytest.mark.parametrize("source", [
    "{{ 'a' * 10**9 }}",
    "{{ ('a',) * 10**9 }}",
    "{{ 'b'|center(10**9) }}",
    "{{ 'b'.center(10**9) }}",
    "{{ 'b'.encode().rjust(10**9) }}",
    "{{ '%0999999999d'|format(1) }}",
    "{{ '%*d' % (10**9, 1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:>{}}'.format(1, 10**9) }}",
    "{{ recipient.big|replace('', recipient.big) }}",
    "{{ recipient.big.replace('x', recipient.big) }}",
    "{{ recipient.big|indent(10**5, true) }}",
    "{{ recipient.big.join([recipient.big] * 100) }}",
    "{{ ([recipient.big] * 100)|join(recipient.big) }}",
    "{{ 9 ** (9 ** 9) }}",
    "{{ recipient.big.translate({120: recipient.big}) }}",
    "{{ [1]|slice(10**8) }}",
    "{{ [1]|batch(10**8, 0) }}",
    "{{ lipsum(n=10**4, max=10**4) }}",
    "{% set ns = namespace(n=10**1000) %}{% for i in range(40) %}"
    "{% set ns.n = ns.n * ns.n %}{% endfor %}",
    "{% set ns = namespace(s=recipient.big) %}{% for i in range(40) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(s=recipient.big) %}{% for i in range(40) %}"
    "{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}",
])
def test_what_would_be_too_big_is_refused_before_it_is_built(source: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TemplateLimitError) as refused:
            render(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * SMALL.max_output_chars
    assert "templates." in str(refused.value) or "bits" in str(refused.value)
    assert str(refused.value).endswith("for ann@example.com")


@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% for i in range(100000) %}{% for c in recipient.big %}{% endfor %}{% endfor %}",
])
def test_rendering_stops_at_its_cpu_budget(source: str) -> None:
    """Nested loops hung analysis (killed at 60 s)."""
    limits = TemplateLimits(max_output_chars=10**8, render_cpu_seconds=0.3)
    started = time.thread_time()
    with pytest.raises(TemplateLimitError, match="render_cpu_seconds") as refused:
        render(source, limits)
    assert time.thread_time() - started < limits.render_cpu_seconds + 1
    assert str(refused.value).startswith("text: rendering took more than 0.3 s of CPU")


def test_the_output_is_bounded() -> None:
    with pytest.raises(TemplateLimitError, match="the output would be 10"):
        render("{% for i in range(100) %}{{ recipient.big }}{% endfor %}",
               TemplateLimits(max_output_chars=100_000, render_cpu_seconds=5))
    assert len(render("{% for i in range(40) %}{{ recipient.big }}{% endfor %}").text) == 80_000


def test_the_source_is_bounded() -> None:
    with pytest.raises(TemplateLimitError, match="max_source_chars"):
        compile_content(subject="s", html="x" * 10_001, text="", limits=SMALL)


@pytest.mark.parametrize("source", ["{{ " + "(" * 5_000 + "1" + ")" * 5_000 + " }}",
                                    "{{ " + "9" * 5_000 + " }}"])
def test_sources_python_cannot_parse_are_template_errors(source: str) -> None:
    with pytest.raises(TemplateError, match="text: "):
        compile_content(subject="s", html="", text=source,
                        limits=TemplateLimits(max_source_chars=20_000))


def test_the_number_of_template_tokens_is_bounded() -> None:
    """2,000,000 characters of tags took 86 s and ~800 MB to compile; the lexer is stopped at
    the limit instead."""
    limits = TemplateLimits(max_template_tokens=1_000)
    source = "{{ recipient.first_name }}" * 2_000
    with pytest.raises(TemplateLimitError, match=r"html: .*more than 1,000 tokens.*"
                       r"templates.max_template_tokens"):
        compile_content(subject="s", html=source, text="", limits=limits)
    compile_content(subject="s", html=source[:26 * 150], text="", limits=limits)


def test_big_numbers_as_values_are_not_sizes() -> None:
    assert render("{{ '%d'|format(12345678901) }} {{ recipient.nothing|default(20261204) }}"
                  " {{ '{:,}'.format(12345678901) }} {{ 12345678901|filesizeformat }}"
                  " {{ 'abc'|truncate(10**9) }}").text == \
        "12345678901 20261204 12,345,678,901 12.3 GB abc"


def test_ordinary_templates_are_unchanged() -> None:
    source = ("{{ recipient.first_name|upper }} {{ '%05d'|format(42) }} {{ '{:>6}'.format(7) }}"
              " {{ 3 * 4 }} {{ 2 ** 10 }} {{ 'ab' * 2 }} {{ [1, 2]|join(',') }}"
              " {{ 'a-b'.replace('-', '+') }} {{ [1, 2, 3]|sum }}"
              " {% for x in recipient.tier %}{{ loop.index }}{{ x }}{% endfor %}")
    assert render(source).text == "ANN 00042      7 12 1024 abab 1,2 a+b 6 1g2o3l4d"
