"""Plan.render and Plan.render_proof, byte for byte, against golden messages (issue 6).

The golden files in tests/unit/golden/ were written by this module from the code as it was
*before* rendering was made fast, so every speed-up must reproduce them exactly: the same
Message-ID, Date, boundary, header folding and encoded words, transfer encodings, DKIM
signature, envelope and mirror page, and the same error for a recipient that cannot be rendered.

The cases vary what rendering depends on: message formats (incl. per-recipient), charsets
(UTF-8, ISO-8859-1, Windows-1252, ISO-2022-JP, Shift_JIS, US-ASCII), non-ASCII subjects and
display names, IDN and SMTPUTF8 addresses, List-Unsubscribe on and off, extra headers, every
mirror mode, long and odd lines, HTML-only and text-only content, DKIM, proofs, errors, and a
seeded set of random names and field values.

    python -m tests.unit.test_render_golden --write   # rewrite the golden files

Only rewrite them for an intended change of output, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from postroom.compose.charsets import charset_for, first_unrepresentable
from postroom.compose.dkim import DkimSigner
from postroom.compose.mime import make_message_id
from postroom.delivery.plan import Links, Plan, make_plan
from postroom.domain.models import Audience, Delivery, EmailFormat, Recipient, Target
from postroom.domain.properties import Properties
from postroom.domain.states import DeliveryState
from tests.unit.plan_settings import DEFAULTS, LINKS, SENDING

GOLDEN = Path(__file__).resolve().parent / "golden"
INDEX = GOLDEN / "index.json"
BENCH = Path(__file__).resolve().parents[2] / "bench"

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1, minutes=2, seconds=3)
NOW_CEST = datetime(2024, 7, 14, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=2)))

# Static text each charset can represent (the content must pass analysis).
PHRASES = {
    "utf-8": "Grüße aus Zürich 🎉 こんにちは — «news»",
    "iso-8859-1": "Grüße aus Zürich «news» Ça va",
    "windows-1252": "Grüße \u2013 “quoted” €5 aus Zürich",
    "iso-2022-jp": "こんにちは、世界。日本語のニュース",
    "shift_jis": "日本語ニュース ｶﾀｶﾅ もあります",
    "us-ascii": "Hello from Zurich",
}

RICH_SUBJECT = "{{ recipient.first_name }}, {phrase} - {{ recipient.city }}"
RICH_HTML = """<!DOCTYPE html>
<html><head><style>p {{ color: #333; }} .big {{ font-size: 20px }}</style></head>
<body>
<p class="big">Hello {{{{ recipient.first_name }}}} {{{{ recipient.last_name }}}},</p>
<p>{phrase}</p>
{{% if recipient.city %}}<p>News for <b>{{{{ recipient.city }}}}</b>.</p>{{% endif %}}
<ul>{{% for item in ["one", "two & three", "<four>"] %}}<li>{{{{ item }}}}</li>{{% endfor %}}</ul>
<p>{{{{ recipient.note }}}}</p>
<p>#{{{{ delivery.id }}}} {{{{ delivery.name }}}} | {{{{ recipient.email }}}}
({{{{ recipient.email_format }}}})</p>
<p><a href="{{{{ mirror_url }}}}">Read online</a> |
<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a></p>
</body></html>
"""
RICH_TEXT = """Hello {{{{ recipient.first_name }}}} {{{{ recipient.last_name }}}},

{phrase}
{{% if recipient.city %}}News for {{{{ recipient.city | upper }}}}.{{% endif %}}
{{{{ recipient.note }}}}
Points: {{{{ recipient.points + 1 }}}}   (trailing spaces){trailing}
.a line that starts with a dot
From the start of a line
Equals = signs and =?encoded?= look-alikes
Online: {{{{ mirror_url }}}}
Unsubscribe: {{{{ unsubscribe_url }}}}
"""

LONG_ASCII = " ".join(f"word{n}" for n in range(260))  # ~2,000 characters, one line
LONG_WORD = "x" * 1200


@dataclass(frozen=True)
class PlanSpec:
    props: dict[str, Any]
    links: Links = LINKS
    sign: bool = False
    delivery_id: int = 3
    salt: str = "s4lt"
    name: str = "Golden news"


def _r(email: str, first: str = "", last: str = "", fmt: EmailFormat = EmailFormat.UNKNOWN,
       **fields: Any) -> Recipient:
    values = {"city": "Porto", "note": "", "points": 41, **fields}
    return Recipient(id=7, email=email, first_name=first, last_name=last, email_format=fmt,
                     fields=values)


RECIPIENTS: dict[str, Recipient] = {
    "ascii": _r("ann@example.org", "Ann", "Lee"),
    "latin1": _r("zoe@example.org", "Zoë", "Müller", city="Zürich", note="Crème brûlée"),
    "cp1252": _r("eve@example.org", "Ève", "O\u2019Neil", note="“quoted” \u2013 €"),
    "japanese": _r("taro@example.jp", "太郎", "山田", city="大阪", note="日本語のテキスト"),
    "japanese_long": _r("jp@example.jp", "山田太郎" * 12, "さま", city="東京都千代田区",
                        note="日本語のテキスト" * 30),
    "emoji": _r("party@example.org", "Party 🎉", "Fan", note="🎉🎊 ok"),
    "idn": _r("ann@bücher.example", "Ann", "Bücher"),
    "smtputf8": _r("jörg@bücher.example", "Jörg", "Ölberg"),
    "quoted_local": _r('"john doe"@example.org', "John", "Doe"),
    "plus_dots": _r("first.last+tag@sub.example.co.uk", "First", "Last"),
    "upper_domain": _r("Mixed.Case@Example.ORG", "Mixed", "Case"),
    "no_name": _r("anon@example.org"),
    "quotes": _r("q@example.org", 'The "Boss"', "O'Hara\\Esq", note="<script>x</script>"),
    "control": _r("c@example.org", "Evil\r\nBcc: x@evil.example", "Name\u2028Two\x00"),
    "encoded_lookalike": _r("e@example.org", "=?utf-8?q?not?=", "Word"),
    "long_name": _r("long@example.org", "Bartholomew " * 12, "Featherstonehaugh " * 8),
    "long_word_name": _r("lw@example.org", "N" * 950, "Short"),
    "long_nonascii_name": _r("ln@example.org", "Ölberg-Überschall " * 10, "Ä"),
    "text_pref": _r("t@example.org", "Tex", "T", EmailFormat.TEXT),
    "html_pref": _r("h@example.org", "Hal", "H", EmailFormat.HTML),
    "long_note": _r("n@example.org", "Nora", "N", note=LONG_ASCII),
    "crlf_note": _r("cr@example.org", "Cr", "Lf", note="one\r\ntwo\rthree\n\nfour"),
    "nul_note": _r("nul@example.org", "Nu", "L", note="a\x00b\x07c\x7fd\tend"),
    "invalid": _r("not an address", "In", "Valid"),
    "missing_field": Recipient(id=7, email="m@example.org", first_name="Mi", fields={}),
}


def _rich(charset: str, **props: Any) -> PlanSpec:
    phrase = PHRASES[charset]
    return PlanSpec({
        "subject": RICH_SUBJECT.replace("{phrase}", phrase),
        "html": RICH_HTML.format(phrase=phrase),
        "text": RICH_TEXT.format(phrase=phrase, trailing="   "),
        "charset": charset,
        **props,
    })


def _bench_spec() -> PlanSpec:
    sys.path.insert(0, str(BENCH))
    try:
        from throughput_data import ERRORS_TO, FROM_ADDRESS, FROM_NAME, HTML, SUBJECT, TEXT, jinja
    finally:
        sys.path.remove(str(BENCH))
    return PlanSpec({"subject": jinja(SUBJECT), "html": jinja(HTML), "text": jinja(TEXT),
                     "format": "multipart", "from_name": FROM_NAME,
                     "from_address": FROM_ADDRESS, "errors_to": ERRORS_TO})


def _bench_recipients() -> list[Recipient]:
    sys.path.insert(0, str(BENCH))
    try:
        from throughput_data import recipients
    finally:
        sys.path.remove(str(BENCH))
    rows = list(recipients(8))
    return [Recipient(id=n + 1, email=row["email"], first_name=row["first_name"],
                      last_name=row["last_name"],
                      fields={"city": row["city"], "member_id": row["member_id"]})
            for n, row in enumerate(rows)]


SIMPLE_HTML = "<p>Hi {{ recipient.first_name }}</p>\n<p>{{ recipient.note }}</p>\n"
SIMPLE_TEXT = "Hi {{ recipient.first_name }}\n{{ recipient.note }}\n"


def _plans() -> dict[str, PlanSpec]:
    plans: dict[str, PlanSpec] = {"bench": _bench_spec()}
    for charset in PHRASES:
        plans[f"rich-{charset}"] = _rich(charset)
    plans.update({
        "rich-utf-8-html": _rich("utf-8", format="html"),
        "rich-utf-8-text": _rich("utf-8", format="text"),
        "rich-utf-8-recipient": _rich("utf-8", format="recipient"),
        "rich-iso-2022-jp-recipient": _rich("iso-2022-jp", format="recipient"),
        "rich-no-inline-css": _rich("utf-8", inline_css=False),
        "rich-signed": PlanSpec(_rich("utf-8").props, sign=True),
        "rich-signed-latin1": PlanSpec(_rich("iso-8859-1").props, sign=True),
        "rich-everything": _rich(
            "utf-8", from_name="Café «Zürich» News", from_address="news@bücher.example",
            reply_to="help@bücher.example", errors_to="bounce@bücher.example",
            extra_headers=("X-Campaign: spring-2024\nX-Note: Grüße aus Zürich\n"
                           f"X-Long: {LONG_ASCII[:400]}\nX-Lookalike: =?utf-8?q?x?=\n"
                           "Precedence: bulk"),
            mirror_mode="force"),
        "rich-no-list-unsubscribe": _rich("utf-8", list_unsubscribe=False),
        "mirror-auto-unused": PlanSpec({"subject": "No mirror link", "html": SIMPLE_HTML,
                                        "text": SIMPLE_TEXT}),
        "mirror-force": PlanSpec({"subject": "Forced", "html": SIMPLE_HTML,
                                  "text": SIMPLE_TEXT, "mirror_mode": "force"}),
        "mirror-never": _rich("utf-8", mirror_mode="never"),
        "mirror-id-only": PlanSpec({"subject": "Id only", "html": SIMPLE_HTML,
                                    "text": SIMPLE_TEXT, "mirror_mode": "id_only"}),
        "mirror-force-text-format": PlanSpec({"subject": "Text", "html": SIMPLE_HTML,
                                              "text": SIMPLE_TEXT, "mirror_mode": "force",
                                              "format": "text"}),
        "html-only-multipart": PlanSpec({
            "subject": "Generated text",
            "html": ("<h1>Title {{ recipient.first_name }}</h1><p>Para with "
                     '<a href="{{ unsubscribe_url }}">a link</a></p><ul><li>one</li>'
                     "<li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>\n")}),
        "html-only-text-format": PlanSpec({
            "subject": "Generated text only", "format": "text",
            "html": "<p>Only HTML for {{ recipient.first_name }}</p>\n"}),
        "text-only": PlanSpec({"subject": "Text only {{ recipient.first_name }}",
                               "text": SIMPLE_TEXT, "mirror_mode": "force"}),
        "text-only-html-format": PlanSpec({"subject": "Text only", "text": SIMPLE_TEXT,
                                           "format": "html", "charset": "iso-8859-1"}),
        "long-lines": PlanSpec({
            "subject": LONG_ASCII[:300],
            "html": f"<p>{LONG_ASCII}</p>\n<p>{{{{ recipient.note }}}}</p>\n",
            "text": f"{LONG_WORD}\n{LONG_ASCII}\nend {{{{ recipient.first_name }}}}"}),
        "long-lines-latin1": PlanSpec({
            "subject": "Überlange Zeilen " * 10, "charset": "iso-8859-1",
            "html": f"<p>{'Grüße ' * 300}</p>\n",
            "text": f"{'ß' * 1100}\n{{{{ recipient.note }}}}\n"}),
        "japanese-heavy": PlanSpec({
            "subject": PHRASES["iso-2022-jp"] * 4, "charset": "iso-2022-jp",
            "html": f"<p>{PHRASES['iso-2022-jp'] * 60}</p>\n",
            "text": f"{PHRASES['iso-2022-jp'] * 60}\n"}),
        "japanese-heavy-utf8": PlanSpec({
            "subject": PHRASES["iso-2022-jp"] * 4,
            "html": f"<p>{PHRASES['iso-2022-jp'] * 60}</p>\n",
            "text": f"{PHRASES['iso-2022-jp'] * 60}\n"}),
        "subjects-odd": PlanSpec({
            "subject": "  spaced   out  =?not-encoded?= {{ recipient.first_name }} " + LONG_WORD,
            "html": SIMPLE_HTML, "text": SIMPLE_TEXT}),
        "subject-empty": PlanSpec({"subject": "", "html": SIMPLE_HTML, "text": SIMPLE_TEXT}),
        "subject-mostly-ascii": PlanSpec({
            "subject": "Weekly digest for {{ recipient.first_name }}: ünïcödé sprinkled in "
                       "a long ASCII subject that needs more than one encoded word to fit",
            "html": SIMPLE_HTML, "text": SIMPLE_TEXT, "charset": "iso-8859-1"}),
        "no-trailing-newline": PlanSpec({
            "subject": "x", "html": "<p>{{ recipient.first_name }}</p>",
            "text": "line one\r\nline two\rline three"}),
        "custom-mailto": PlanSpec(_rich("utf-8").props, links=Links(
            "https://m.example.net/base", b"another secret", "leave+list@lists.example")),
        "other-delivery": PlanSpec(_rich("utf-8").props, delivery_id=987654321,
                                   salt="Zq9_x-7", name="Golden «news» <&>"),
        "undefined-variable": PlanSpec({"subject": "Hi {{ recipient.nickname }}",
                                        "html": SIMPLE_HTML}),
        "sandbox-violation": PlanSpec({"subject": "x",
                                       "html": "{{ recipient.__class__.__mro__ }}"}),
        "runtime-error": PlanSpec({"subject": "x", "html": "{{ 1 // 0 }}"}),
        "invalid-errors-to": _rich("utf-8", errors_to="not-an-address"),
        "invalid-from": _rich("utf-8", from_address="broken address"),
        "reply-to-with-name": _rich("utf-8", reply_to="Help Desk <help@bücher.example>"),
        "from-name-unencodable": PlanSpec({"subject": "Hi {{ recipient.first_name }}",
                                           "html": SIMPLE_HTML, "charset": "iso-8859-1",
                                           "from_name": "日本ニュース"}),
        "extra-unencodable": PlanSpec({"subject": "Hi {{ recipient.first_name }}",
                                       "html": SIMPLE_HTML, "charset": "iso-8859-1",
                                       "extra_headers": "X-Fine: ok\nX-Note: 日本"}),
        "extras-and-list-unsubscribe": PlanSpec({
            "subject": "Extras", "html": SIMPLE_HTML, "text": SIMPLE_TEXT,
            "extra_headers": "X-One: 1\nX-Two: Grüße", "reply_to": "help@bücher.example"}),
        "extras-no-list-unsubscribe": PlanSpec({
            "subject": "Extras", "html": SIMPLE_HTML, "text": SIMPLE_TEXT,
            "list_unsubscribe": False, "extra_headers": "X-One: 1\nX-Two: Grüße"}),
    })
    return plans


def _alphabet() -> str:
    return ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            "      .,;:!?'\"\\()<>[]@=_-+*/#&%$~^`|{}"
            "éüßÅøÇñ«»¡¿àÿ" "日本語こんにちはカタカナ漢字" "ｶﾀｶﾅ" "€“”\u2013…" "🎉👍🏽"
            "\u0301\u00a0\t\r\n\x00\x7f\u2028\u0085")


def _random_recipients(charset: str, count: int) -> list[tuple[str, Recipient]]:
    """Random names and fields the charset can represent; every sixth has one that it cannot."""
    rng = random.Random(charset)
    fits = charset_for(charset)
    alphabet = [c for c in _alphabet() if first_unrepresentable(c, fits) is None]
    foreign = [c for c in _alphabet() if c not in alphabet] or ["?"]

    def text(low: int, high: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))

    people = []
    for n in range(count):
        city = text(0, 25) + (rng.choice(foreign) if n % 6 == 5 else "")
        recipient = _r(f"r{n}@example.org", text(0, 30), text(0, 90 if n % 7 == 0 else 20),
                       city=city, note=text(0, 400))
        people.append((f"random{n:02d}", recipient))
    return people


@dataclass(frozen=True)
class Case:
    name: str
    plan: str
    recipient: Recipient
    log_id: int = 42
    now: datetime = NOW
    proof_to: str | None = None  # a proof to this address instead of a message
    sign: bool = True


def _cases() -> Iterator[Case]:
    for n, recipient in enumerate(_bench_recipients()):
        yield Case(f"bench-{n}", "bench", recipient, log_id=1000 + n)
    rich_people = ["ascii", "latin1", "cp1252", "japanese", "japanese_long", "emoji", "idn",
                   "smtputf8", "no_name", "quotes", "control", "encoded_lookalike",
                   "long_name", "long_nonascii_name"]
    for charset in PHRASES:
        for who in rich_people:
            yield Case(f"rich-{charset}--{who}", f"rich-{charset}", RECIPIENTS[who])
    everyone = [name for name in RECIPIENTS if name not in rich_people]  # quoted_local too
    for who in everyone:
        yield Case(f"rich-utf-8--{who}", "rich-utf-8", RECIPIENTS[who])
    for plan in ("rich-utf-8-recipient", "rich-iso-2022-jp-recipient"):
        for who in ("ascii", "text_pref", "html_pref", "japanese"):
            yield Case(f"{plan}--{who}", plan, RECIPIENTS[who])
    for plan in ("rich-utf-8-html", "rich-utf-8-text", "rich-no-inline-css", "rich-signed",
                 "rich-signed-latin1", "rich-everything", "rich-no-list-unsubscribe",
                 "mirror-never", "custom-mailto", "other-delivery"):
        for who in ("ascii", "latin1", "smtputf8"):
            yield Case(f"{plan}--{who}", plan, RECIPIENTS[who])
    yield Case("rich-signed--unsigned", "rich-signed", RECIPIENTS["ascii"], sign=False)
    yield Case("rich-utf-8--analysis", "rich-utf-8", RECIPIENTS["latin1"], log_id=0,
               sign=False)
    yield Case("rich-utf-8--big-log-id", "rich-utf-8", RECIPIENTS["ascii"],
               log_id=2**62 + 12345)
    yield Case("rich-utf-8--cest", "rich-utf-8", RECIPIENTS["ascii"], now=NOW_CEST)
    for plan in ("mirror-auto-unused", "mirror-force", "mirror-id-only",
                 "mirror-force-text-format", "html-only-multipart", "html-only-text-format",
                 "text-only", "text-only-html-format", "long-lines", "long-lines-latin1",
                 "japanese-heavy", "japanese-heavy-utf8", "subjects-odd", "subject-empty",
                 "subject-mostly-ascii", "no-trailing-newline", "undefined-variable",
                 "sandbox-violation", "runtime-error", "invalid-errors-to", "invalid-from",
                 "reply-to-with-name", "from-name-unencodable", "extra-unencodable",
                 "extras-and-list-unsubscribe", "extras-no-list-unsubscribe"):
        for who in ("ascii", "latin1", "japanese", "invalid"):
            yield Case(f"{plan}--{who}", plan, RECIPIENTS[who])
    for plan in ("rich-utf-8", "rich-iso-8859-1", "rich-signed", "rich-iso-2022-jp",
                 "rich-everything", "extra-unencodable", "extras-and-list-unsubscribe"):
        for to in ("proof@example.org", "prüfer@bücher.example"):
            yield Case(f"proof-{plan}--{to.partition('@')[0]}", plan, RECIPIENTS["latin1"],
                       proof_to=to)
    yield Case("proof-rich-utf-8--invalid", "rich-utf-8", RECIPIENTS["ascii"],
               proof_to="no address")
    for charset in ("utf-8", "iso-8859-1", "iso-2022-jp", "shift_jis"):
        for name, recipient in _random_recipients(charset, 12):
            yield Case(f"random-{charset}--{name}", f"rich-{charset}", recipient,
                       log_id=random.Random(name).randint(1, 10**9))


CASES = list(_cases())
PLANS = _plans()


def _signers(spec: PlanSpec) -> dict[str, DkimSigner] | None:
    if not spec.sign:
        return None
    domain = (spec.props.get("from_address") or DEFAULTS.from_address).rpartition("@")[2]
    pem = (GOLDEN / "dkim-test-key.pem").read_bytes()
    return {domain.lower(): DkimSigner(domain, "golden", pem)}


def _make(spec: PlanSpec) -> Plan:
    delivery = Delivery(
        id=spec.delivery_id, name=spec.name, template_name="default",
        state=DeliveryState.SENDING, properties=Properties(**spec.props), audience=Audience(),
        salt=spec.salt, last_error="", created_at=T0 - timedelta(days=1),
        analyzed_at=T0, started_at=T0)
    return make_plan(delivery, defaults=DEFAULTS, sending=SENDING, archive_available=False,
                     links=spec.links, signers=_signers(spec))


def run(case: Case, plans: Callable[[str], Plan]) -> tuple[bytes | None, dict[str, Any]]:
    """(message bytes or None, what else the render returned or the error it raised)."""
    plan = plans(case.plan)
    try:
        # No clock but `case.now`: it is also the DKIM signature's t=.
        if case.proof_to is not None:
            data, wire = plan.render_proof(case.recipient, case.proof_to, 3, case.now)
            return data, {"recipient": wire.address, "smtputf8": wire.smtputf8}
        message = plan.render(Target(case.log_id, 0, case.recipient), case.now, sign=case.sign)
    except Exception as exc:
        return None, {"error": f"{type(exc).__name__}: {exc}"}
    mirror = message.mirror_html
    return message.data, {
        "message_id": message.message_id, "recipient": message.recipient,
        "sender": message.sender, "smtputf8": message.smtputf8,
        "mirror_sha256": hashlib.sha256(mirror).hexdigest() if mirror is not None else None,
    }


def _plan_cache() -> Callable[[str], Plan]:
    built: dict[str, Plan] = {}

    def get(name: str) -> Plan:
        if name not in built:
            built[name] = _make(PLANS[name])
        return built[name]

    return get


_SHARED = _plan_cache()  # one plan serves many recipients, as in a real send


def _index() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(INDEX.read_text(encoding="utf-8"))
    return loaded


def test_the_golden_set_is_complete_and_varied() -> None:
    index = _index()
    assert sorted(index) == sorted(case.name for case in CASES)
    errors = [name for name, meta in index.items() if "error" in meta]
    kinds = {meta["error"].partition(":")[0] for meta in index.values() if "error" in meta}
    # No UnicodeEncodeError any more: an IDN From or Reply-To domain goes out as its A-label
    # (Message-ID, List-Unsubscribe mailto, Reply-To with a display name).
    assert kinds == {"EncodingError", "InputError", "TemplateError"}
    assert len(errors) < len(index) / 3
    messages = b"".join((GOLDEN / f"{name}.eml").read_bytes()
                        for name in index if name not in errors)
    for needle in (b"quoted-printable", b"base64", b"7bit", b"=?iso-2022-jp?B?",
                   b"=?iso-8859-1?Q?", b"=?utf-8?B?", b"DKIM-Signature:", b"List-Unsubscribe",
                   b"X-Note:", b"text/plain", b"text/html", b"multipart/alternative",
                   b"+0200", b"xn--bcher-kva.example", "jörg".encode(),
                   b"\r\nReply-To: Help Desk <help@xn--bcher-kva.example>\r\n",
                   b"\r\nMessage-ID: %s\r\n" % make_message_id(
                       log_id=42, delivery_id=3, secret=LINKS.secret,
                       domain="xn--bcher-kva.example").encode(),
                   f"t={int(NOW.timestamp())};".encode()):  # DKIM signs at the render time
        assert needle in messages, needle


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_render_matches_golden(case: Case) -> None:
    data, meta = run(case, _SHARED)
    assert meta == _index()[case.name]
    path = GOLDEN / f"{case.name}.eml"
    if data is None:
        assert not path.exists()
    else:
        assert data == path.read_bytes()


def test_a_fresh_plan_renders_the_same_as_a_used_one() -> None:
    """Per-plan caches must not make the first message of a plan differ from later ones."""
    for case in CASES[::9]:
        data, meta = run(case, _plan_cache())
        assert meta == _index()[case.name]
        if data is not None:
            assert data == (GOLDEN / f"{case.name}.eml").read_bytes()


def write() -> None:
    """Rewrite the golden files from the current code (see the module docstring)."""
    GOLDEN.mkdir(exist_ok=True)
    key = GOLDEN / "dkim-test-key.pem"
    if not key.exists():  # a key for tests only; kept so that signatures are reproducible
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key.write_bytes(private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    for old in GOLDEN.glob("*.eml"):
        old.unlink()
    index: dict[str, Any] = {}
    plans = _plan_cache()
    for case in CASES:
        data, meta = run(case, plans)
        index[case.name] = meta
        if data is not None:
            (GOLDEN / f"{case.name}.eml").write_bytes(data)
    INDEX.write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(index)} cases, {sum('error' in m for m in index.values())} errors")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
