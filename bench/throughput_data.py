"""The audience and the content of bench/throughput.py, shared by the naive baseline and Postroom.

Pure and deterministic: the same seed gives the same recipients, so every measurement of one
run sends the same people the same ~5 KB multipart/alternative newsletter. The content is
written once with `{field}` placeholders; Postroom gets it as Jinja (`{{ recipient.field }}`),
the naive baseline fills it in with `str.format`.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ARCHIVE_ADDRESS",
    "ERRORS_TO",
    "FIELDS",
    "FROM_ADDRESS",
    "FROM_NAME",
    "HTML",
    "SUBJECT",
    "TEXT",
    "AudienceFile",
    "jinja",
    "recipients",
    "write_audience",
]

FROM_NAME = "Postroom Bench"
FROM_ADDRESS = "news@bench.example.com"
ERRORS_TO = "bounces@bench.example.com"
ARCHIVE_ADDRESS = "archive@archive.example.com"
# The five personalized fields; the subject uses two of them.
FIELDS = ("first_name", "last_name", "city", "member_id", "email")

_FIRST = ["Ada", "Björn", "Chloé", "Dmitri", "Eun-ji", "Farah", "Gonzalo", "Hana", "Ivo",
          "Józef", "Kwame", "Lena", "Mateo", "Nadia", "Oskar", "Priya"]
_LAST = ["Lovelace", "Järvinen", "Dubois", "Petrov", "Kim", "Haddad", "Ruiz", "Sato", "Novak",
         "Okafor", "Rossi", "Schmidt", "Silva", "Walker"]
_CITIES = ["Lisboa", "Zürich", "Kraków", "Osaka", "Montréal", "Nairobi", "Bergen", "Porto"]
_DOMAINS = ["example.org", "example.net", "example.com"]

SUBJECT = "{first_name}, your {city} member update for this month"

_STORIES = [
    ("Opening hours over the holidays",
     "The member desk keeps its usual hours until the twentieth and then closes for a week. "
     "Renewals, address changes and card replacements can still be handled online at any "
     "time, and anything sent during the break is answered in the order it arrived."),
    ("A new reading room",
     "The second floor reading room reopens with forty new seats, better light and power at "
     "every table. Quiet hours are from nine to noon; group study rooms can be booked for two "
     "hours at a time, up to a week ahead, from the members' page."),
    ("Workshops this season",
     "Eight evening workshops cover bookbinding, local history, photography for beginners and "
     "an introduction to family archives. Places are limited to twelve people per session, so "
     "please cancel in time if your plans change and someone on the waiting list gets in."),
    ("Your membership",
     "Your membership number is printed on your card and in every message we send. Keep it "
     "at hand when you call the desk: it lets us find your loans, reservations and preferences "
     "quickly, without asking for anything else."),
]


def _text() -> str:
    stories = "\n\n".join(f"{title}\n{'-' * len(title)}\n{body}" for title, body in _STORIES)
    return (
        "Hello {first_name} {last_name},\n\n"
        "here is what is new for members in {city} this month.\n\n"
        f"{stories}\n\n"
        "Member #{member_id}, registered as {email}.\n"
        "You receive this letter because you are a member; you can unsubscribe at any time.\n"
    )


def _html() -> str:
    stories = "\n".join(
        f'<tr><td style="padding:12px 24px;font-family:Georgia,serif;color:#333333">'
        f'<h2 style="font-size:18px;margin:0 0 8px 0;color:#1a4d80">{title}</h2>'
        f'<p style="font-size:15px;line-height:1.5;margin:0">{body}</p></td></tr>'
        for title, body in _STORIES)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Member update</title></head>\n"
        '<body style="margin:0;padding:0;background:#f4f4f4">\n'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        'style="max-width:640px;margin:0 auto;background:#ffffff">\n'
        '<tr><td style="padding:24px;font-family:Georgia,serif;font-size:22px;color:#1a4d80">'
        "Hello {first_name} {last_name},</td></tr>\n"
        '<tr><td style="padding:0 24px;font-family:Georgia,serif;font-size:15px;color:#333333">'
        "here is what is new for members in <b>{city}</b> this month.</td></tr>\n"
        f"{stories}\n"
        '<tr><td style="padding:24px;font-family:Arial,sans-serif;font-size:12px;'
        'color:#777777">Member #{member_id}, registered as {email}. You receive this letter '
        "because you are a member; you can unsubscribe at any time.</td></tr>\n"
        "</table>\n</body></html>\n"
    )


TEXT = _text()
HTML = _html()


def jinja(source: str) -> str:
    """The content as a Postroom template: `{field}` becomes `{{ recipient.field }}`."""
    return re.sub(r"\{(\w+)\}", r"{{ recipient.\1 }}", source)


def recipients(count: int, *, seed: int = 6, start: int = 0) -> Iterator[dict[str, str]]:
    """`count` distinct recipients with the five fields (lower-case, unique addresses)."""
    rng = random.Random(seed)
    for n in range(start, start + count):
        yield {
            "email": f"member{n:07d}@{_DOMAINS[n % len(_DOMAINS)]}",
            "first_name": rng.choice(_FIRST),
            "last_name": rng.choice(_LAST),
            "city": rng.choice(_CITIES),
            "member_id": str(100000 + n),
        }


@dataclass(frozen=True)
class AudienceFile:
    path: Path
    rows: int  # recipients in the file (the audience)
    duplicates: int  # rows whose address differs from another row's only in letter case
    quarantined: list[str]  # addresses to put in quarantine before the analysis

    @property
    def to_send(self) -> int:
        return self.rows - self.duplicates - len(self.quarantined)


def write_audience(path: Path, size: int, *, duplicates: float = 0.0,
                   quarantined: float = 0.0, seed: int = 6) -> AudienceFile:
    """A CSV of `size` rows: a share are case variants of other rows' addresses (appended at the
    end, as when two lists are merged) and a share of the others is returned for quarantine."""
    doubles = round(size * duplicates)
    unique = size - doubles
    rng = random.Random(seed + 1)
    chosen = rng.sample(range(unique), doubles + round(size * quarantined))
    doubled, held = sorted(chosen[:doubles]), chosen[doubles:]
    held_set = set(held)
    quarantine: list[str] = []
    copies: list[dict[str, str]] = []
    doubled_set = set(doubled)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["email", *FIELDS[:-1]])
        writer.writeheader()
        for n, row in enumerate(recipients(unique, seed=seed)):
            writer.writerow(row)
            if n in held_set:
                quarantine.append(row["email"])
            if n in doubled_set:
                copies.append({**row, "email": row["email"].capitalize()})
        writer.writerows(copies)
    return AudienceFile(path, size, doubles, quarantine)
