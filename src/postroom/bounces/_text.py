"""Reading the human-readable text of a bounce: addresses, status codes, the returned copy.

Non-standard bounces (Exim, qmail, Sendmail without DSN, Gmail, Yahoo, Exchange, Lotus, ...)
all say the same things in different words: *which recipients failed*, *what the remote server
answered*, and *here is a copy of your message*. These helpers find those three by the shape of
the text (an address alone on a line, `<address>:` at the start of a line, a separator line
announcing the copy), not by the name of the MTA, so that an MTA we have never seen is read the
same way as one we have.
"""

from __future__ import annotations

import re
import textwrap

__all__ = [
    "ADDRESS",
    "clean_address",
    "enhanced_status",
    "field_address",
    "find_addresses",
    "smtp_stage",
    "split_original",
    "strip_address",
    "unannounced_copy",
]

_LOCAL = (r"(?:\"[^\"\r\n]{1,64}\"|[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
          r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{0,63})")
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?\.){1,10}[A-Za-z0-9-]{2,63}"
ADDRESS = re.compile(rf"(?<![\w.@/=-]){_LOCAL}@{_DOMAIN}(?![\w-])")
MAX_LINE = 1000  # characters of one line worth searching for addresses
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")

# A line that announces the returned message (the copy of what was sent), in the wordings of
# the common MTAs: "------ This is a copy of the message, including all the headers. ------",
# "--- Below this line is a copy of the message.", "----- Original message -----",
# "----- Unsent message follows -----", "Message headers follow.", "Original message follows."
_ORIGINAL_MARKERS = tuple(
    re.compile(pattern, re.I)
    for pattern in (
        r"^\W*(?:this is a copy of|below (?:this line )?is a copy of|enclosed is a copy of"
        r"|included is a copy of|here is a copy of|a copy of the original message)\b",
        r"^\W*(?:original|returned|unsent|undelivered|undeliverable|rejected|attached)"
        r"\s+(?:message|mail|e-?mail)(?:\s+(?:follows?|header|headers|info))?\W*$",
        r"^\W*(?:original|returned|unsent|undelivered|rejected)\s+(?:message|mail)"
        r"(?:'s)?\s+(?:follows?|headers?(?:\s+follows?)?|is (?:attached|following|below))\b",
        r"^\W*(?:original\s+)?message\s+headers?\s+(?:follows?|is following|below)\b",
        r"^\W*the\s+headers?\s+of\s+the\s+original\s+message",
        r"^\W*original message:\s*$",
    )
)
# Where in the SMTP session a reply came: Postfix "(in reply to end of DATA command)", Sendmail
# ">>> DATA", Exim "after end of data", DragonFly "did not like our final DATA".
_STAGE = re.compile(
    r"in\s+reply\s+to\s+(?:end\s+of\s+)?(?:data|rcpt\s+to|mail\s+from)(?:\s+command)?"
    r"|>>>\s*(?:data|rcpt\s+to|mail\s+from)\b|after\s+(?:end\s+of\s+data|data|rcpt\s+to"
    r"|mail\s+from|initial\s+connection)|did\s+not\s+like\s+our\s+(?:final\s+data|rcpt\s+to"
    r"|mail\s+from)", re.I)
_HEADER_LINE = re.compile(r"^[ \t]*[A-Za-z][A-Za-z0-9-]*:[ \t]*\S")


def strip_address(value: str) -> str | None:
    """The first address in a field value (`rfc822; <a@b>` → `a@b`), or None."""
    match = ADDRESS.search(value)
    if match is None:
        return None
    return clean_address(match.group(0))


# A DSN field names one address and nothing else, so a single-label domain (`user@localhost`,
# a local Postfix's own recipients) or an address literal (`user@[192.0.2.1]`) is an address
# there, where in prose it would be too loose to trust.
_FIELD_ADDRESS = re.compile(
    rf"(?<![\w.@/=-]){_LOCAL}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,62}}[A-Za-z0-9])?"
    rf"|\[[0-9A-Fa-f.:]{{2,45}}\])(?![\w.-])")


def field_address(value: str) -> str | None:
    """The address of a DSN recipient field (`rfc822; user@localhost` → `user@localhost`): any
    address `strip_address` finds, else one at a dotless domain or an address literal."""
    found = strip_address(value)
    if found is not None:
        return found
    match = _FIELD_ADDRESS.search(value)
    return clean_address(match.group(0)) if match is not None else None


def clean_address(address: str) -> str:
    """An address as found in text, without the quotes and dots that surround it in prose
    (`'ann@example.org'.` → `ann@example.org`)."""
    if address.startswith("'"):
        address = address.lstrip("'")
    return address.strip(".")


def enhanced_status(text: str) -> str | None:
    """The first RFC 3463 enhanced status code in a text (`5.1.1`), ignoring IPs and versions."""
    match = _ENHANCED.search(text)
    if match is None:
        return None
    return ".".join(match.groups())


def split_original(text: str) -> tuple[str, str | None]:
    """Cut a bounce text at the line that announces the returned message.

    Returns (the bounce's own text, the header block of the returned copy or None). The copy's
    header block starts at its first header-looking line after the marker.
    """
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if len(line) > 200 or not any(p.search(line) for p in _ORIGINAL_MARKERS):
            continue
        rest = lines[index + 1 : index + 400]
        start = next((i for i, candidate in enumerate(rest[:20])
                      if _HEADER_LINE.match(candidate)), None)
        headers = None
        if start is not None:
            block = []
            for candidate in rest[start:]:
                if not candidate.strip():
                    break
                block.append(candidate)
            headers = textwrap.dedent("\n".join(block)) + "\n"
        return "\n".join(lines[:index]), headers
    return text, None


_COPY_FIELD = re.compile(
    r"^(?:received|message-id|date|from|to|subject|return-path|mime-version|content-type"
    r"|reply-to|user-agent|x-mailer|dkim-signature)\s*:", re.I)


def unannounced_copy(text: str) -> tuple[str, str] | None:
    """Some MTAs (Zoho, some gateways) append the returned headers with no announcing line:
    three header fields in a row, one of them Received/Message-ID/Date, start the copy.
    Returns (the bounce's own text, the copy's header block), or None."""
    lines = text.split("\n")
    for index in range(len(lines) - 2):
        window = lines[index:index + 3]
        if all(_COPY_FIELD.match(line) for line in window) and any(
                line.lower().startswith(("received", "message-id", "date")) for line in window):
            block = []
            for candidate in lines[index:index + 400]:
                if not candidate.strip():
                    break
                block.append(candidate)
            return "\n".join(lines[:index]), "\n".join(block) + "\n"
    return None


def find_addresses(text: str) -> list[tuple[int, str]]:
    """Every address in a text with the index of the line it is on, in order of appearance."""
    found = []
    for number, line in enumerate(text.split("\n")):
        for match in ADDRESS.finditer(line[:MAX_LINE]):
            found.append((number, clean_address(match.group(0))))
    return found


def smtp_stage(text: str) -> str | None:
    """The last phrase in a text that says at which SMTP command the failure came."""
    matches = list(_STAGE.finditer(text))
    return " ".join(matches[-1].group(0).split()) if matches else None
