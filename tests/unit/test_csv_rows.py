"""recipients.csv_rows.parse_csv: bytes lines in, recipients or row errors out."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.domain.addresses import normalize_address
from postroom.domain.models import EmailFormat, RecipientRow
from postroom.errors import InputError
from postroom.recipients.csv_rows import MAX_COLUMNS, RowError, parse_csv


def parse(data: bytes) -> list[RecipientRow | RowError]:
    return list(parse_csv(io.BytesIO(data)))


def only_row(data: bytes) -> RecipientRow:
    (item,) = parse(data)
    assert isinstance(item, RecipientRow), item
    return item


def only_error(data: bytes) -> RowError:
    (item,) = parse(data)
    assert isinstance(item, RowError), item
    return item


# --- columns ---------------------------------------------------------------------------------


def test_recognized_columns_and_custom_fields() -> None:
    row = only_row(
        b"email,first_name,last_name,email_format,opted_out,loyalty,City\n"
        b"ann@example.com, Ann , Lee ,html,yes,gold,Paris\n"
    )
    assert row == RecipientRow(
        email="ann@example.com",
        first_name="Ann",
        last_name="Lee",
        email_format=EmailFormat.HTML,
        opted_out=True,
        fields={"loyalty": "gold", "city": "Paris"},
    )


def test_header_names_are_case_and_space_insensitive() -> None:
    row = only_row(b" Email , First_Name \nann@example.com,Ann\n")
    assert (row.email, row.first_name) == ("ann@example.com", "Ann")


def test_domain_is_lower_cased_local_part_kept() -> None:
    assert only_row(b"email\nAnn.Lee@Example.COM\n").email == "Ann.Lee@example.com"


def test_surrounding_spaces_of_email_are_stripped() -> None:
    assert only_row(b"email\n  ann@example.com  \n").email == "ann@example.com"


def test_normalize_address_rejects_garbage_with_input_error() -> None:
    with pytest.raises(InputError, match="@"):
        normalize_address("no-at-sign")


# --- email_format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", EmailFormat.UNKNOWN),
        ("unknown", EmailFormat.UNKNOWN),
        ("text", EmailFormat.TEXT),
        ("TEXT", EmailFormat.TEXT),
        ("html", EmailFormat.HTML),
        (" Html ", EmailFormat.HTML),
    ],
)
def test_email_format_values(value: str, expected: EmailFormat) -> None:
    data = f"email,email_format\nann@example.com,{value}\n".encode()
    assert only_row(data).email_format is expected


def test_invalid_email_format_is_a_row_error() -> None:
    error = only_error(b"email,email_format\nann@example.com,pdf\n")
    assert error.line == 2
    assert "email_format" in error.reason
    assert "'pdf'" in error.reason


# --- opted_out -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "Y", "t"])
def test_opted_out_truthy(value: str) -> None:
    assert only_row(f"email,opted_out\nann@example.com,{value}\n".encode()).opted_out is True


@pytest.mark.parametrize("value", ["0", "false", "No", "n", "F", ""])
def test_opted_out_falsy(value: str) -> None:
    assert only_row(f"email,opted_out\nann@example.com,{value}\n".encode()).opted_out is False


def test_opted_out_invalid_is_a_row_error() -> None:
    error = only_error(b"email,opted_out\nann@example.com,maybe\n")
    assert error == RowError(2, "opted_out must be true or false, got 'maybe'")
    assert str(error) == "line 2: opted_out must be true or false, got 'maybe'"


# --- row errors and line numbers -------------------------------------------------------------


def test_broken_utf8_line_is_reported_and_later_rows_parse() -> None:
    items = parse(b"email\nann@example.com\n\xff\xfebob@example.com\ncid@example.com\n")
    assert [type(i) for i in items] == [RecipientRow, RowError, RecipientRow]
    error = items[1]
    assert isinstance(error, RowError)
    assert error.line == 3
    assert "utf-8" in error.reason and "0xff" in error.reason
    assert isinstance(items[2], RecipientRow) and items[2].email == "cid@example.com"


def test_wrong_field_counts() -> None:
    items = parse(b"email,first_name\nann@example.com\nbob@example.com,Bob,extra\n")
    assert items == [
        RowError(2, "1 fields where the header has 2"),
        RowError(3, "3 fields where the header has 2"),
    ]


def test_empty_email_is_a_row_error() -> None:
    assert only_error(b"email,first_name\n ,Ann\n") == RowError(2, "email is empty")


def test_invalid_email_is_a_row_error_naming_it() -> None:
    error = only_error(b"email\nnot-an-address\n")
    assert error.line == 2
    assert "'not-an-address'" in error.reason


def test_too_long_name_is_a_row_error() -> None:
    error = only_error(b"email,last_name\nann@example.com," + b"x" * 201 + b"\n")
    assert error.line == 2 and "last_name" in error.reason


def test_empty_lines_are_skipped_without_shifting_line_numbers() -> None:
    items = parse(b"email,first_name\n\nann@example.com,Ann\n\n , \nbad\n")
    assert isinstance(items[0], RecipientRow) and items[0].email == "ann@example.com"
    assert len(items) == 2
    assert isinstance(items[1], RowError) and items[1].line == 6


def test_quoted_multiline_field_keeps_line_numbers_of_later_rows() -> None:
    items = parse(
        b'email,note\n'
        b'ann@example.com,"first\nsecond\nthird"\n'
        b"bob@example.com\n"
    )
    assert isinstance(items[0], RecipientRow)
    assert items[0].fields == {"note": "first\nsecond\nthird"}
    assert items[1] == RowError(5, "1 fields where the header has 2")


def test_crlf_line_ends() -> None:
    items = parse(b"email,note\r\nann@example.com,x\r\nbob@example.com,y\r\n")
    assert len(items) == 2
    assert [(i.email, i.fields) for i in items if isinstance(i, RecipientRow)] == [
        ("ann@example.com", {"note": "x"}),
        ("bob@example.com", {"note": "y"}),
    ]


def test_broken_line_inside_quoted_field_is_reported() -> None:
    items = parse(b'email,note\nann@example.com,"start\n\xff\nend"\nbob@example.com,x\n')
    assert [str(i) for i in items if isinstance(i, RowError)] == [
        "line 2: line 3 of this record is not valid utf-8: byte 0xff at column 1"
    ]
    assert [i.email for i in items if not isinstance(i, RowError)] == ["bob@example.com"]


def test_unterminated_quote_is_reported_and_the_following_rows_read() -> None:
    items = parse(b'email,note\nann@example.com,"oops\nbob@example.com,y\ncid@example.com,z\n')
    errors = [i for i in items if isinstance(i, RowError)]
    assert [e.line for e in errors] == [2] and "malformed CSV" in errors[0].reason
    assert [i.email for i in items if not isinstance(i, RowError)] == [
        "bob@example.com", "cid@example.com"]


def test_runaway_quoted_field_is_cut_after_the_limit() -> None:
    body = b"".join(b"p%d@example.com,z\n" % i for i in range(150))
    items = parse(b'email,note\nann@example.com,"oops\n' + body)
    errors = [i for i in items if isinstance(i, RowError)]
    assert [e.line for e in errors] == [2] and "more than 100 lines" in errors[0].reason
    assert len([i for i in items if not isinstance(i, RowError)]) == 150


def test_quoted_multiline_field_within_the_limit_is_kept() -> None:
    items = parse(b'email,note\nann@example.com,"two\nlines"\nbob@example.com,x\n')
    notes = [(i.fields or {})["note"] for i in items if not isinstance(i, RowError)]
    assert notes == ["two\nlines", "x"]


# --- header ----------------------------------------------------------------------------------


def test_missing_email_column_names_the_columns() -> None:
    with pytest.raises(InputError, match=r"no 'email' column.*columns: mail, first_name"):
        parse(b"mail,first_name\nann@example.com,Ann\n")


def test_duplicate_header_columns() -> None:
    with pytest.raises(InputError, match="duplicate columns in the header: email, tier"):
        parse(b"email,tier,Email,Tier\na,b,c,d\n")


def test_a_header_past_the_column_limit_is_refused() -> None:
    """Issue 12, finding 5: the duplicate check was quadratic (10^5 columns: 94 s)."""
    header = b"email," + b",".join(b"c%d" % i for i in range(MAX_COLUMNS * 20))
    with pytest.raises(InputError, match=rf"the header has {MAX_COLUMNS * 20 + 1:,} columns, "
                       rf"more than {MAX_COLUMNS:,}"):
        parse(header + b"\n")


def test_duplicates_are_found_among_many_columns() -> None:
    names = [b"email"] + [b"c%d" % i for i in range(MAX_COLUMNS - 3)] + [b"C7", b"c9"]
    with pytest.raises(InputError, match=r"duplicate columns in the header: c7, c9$"):
        parse(b",".join(names) + b"\n")
    unique = [b"email"] + [b"c%d" % i for i in range(MAX_COLUMNS - 1)]
    allowed = b",".join(unique) + b"\na@example.com" + b"," * (MAX_COLUMNS - 1)
    assert only_row(allowed + b"\n").email == "a@example.com"  # at the limit: read


def test_empty_file() -> None:
    with pytest.raises(InputError, match="empty"):
        parse(b"")


def test_broken_utf8_header() -> None:
    with pytest.raises(InputError, match=r"line 1 \(header\).*0xff"):
        parse(b"em\xffail\nann@example.com\n")


def test_utf8_bom_is_ignored() -> None:
    row = only_row(b"\xef\xbb\xbfemail,first_name\nann@example.com,Ann\n")
    assert (row.email, row.first_name) == ("ann@example.com", "Ann")


def test_other_encoding() -> None:
    items = list(parse_csv(io.BytesIO(b"email,first_name\nann@example.com,Ren\xe9e\n"),
                           encoding="latin-1"))
    assert isinstance(items[0], RecipientRow) and items[0].first_name == "Renée"


# --- property --------------------------------------------------------------------------------

_CSVISH = st.lists(
    st.sampled_from([b"a@b.co", b",", b'"', b"\n", b"\r", b"\xff", b" ", b"html", b"yes", b"x"]),
    max_size=12,
).map(b"".join)
_LINES = st.lists(st.one_of(st.binary(max_size=40), _CSVISH), max_size=8)
_HEADERS = st.one_of(
    st.just(b"email,first_name,email_format,opted_out\n"),
    st.just(b"email,note\n"),
    st.binary(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(header=_HEADERS, lines=_LINES)
def test_arbitrary_bytes_yield_only_rows_or_row_errors(header: bytes, lines: list[bytes]) -> None:
    try:
        items = list(parse_csv([header, *lines]))
    except InputError:
        return  # the header itself is unusable
    for item in items:
        assert isinstance(item, RecipientRow | RowError)
        if isinstance(item, RowError):
            assert 2 <= item.line <= len(lines) + 1
