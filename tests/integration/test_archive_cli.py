"""`postroom archive ledger ...` and `archive verify` as a user runs them, and the auditor's
script of docs/archive.md run as written against a real export."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from postroom.testing.smtp_server import CaptureServer
from tests.integration.test_cli import Cli, _template

DOCS = Path(__file__).resolve().parents[2] / "docs" / "archive.md"


def auditor_script(tmp_path: Path) -> Path:
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"<!-- auditor-script -->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/archive.md lost its auditor script"
    path = tmp_path / "check_export.py"
    path.write_text(block.group(1), encoding="utf-8")
    return path


def _audit(script: Path, export: Path, public: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), str(export), public],
                          capture_output=True, text=True, timeout=60)


def _send(cli: Cli, people: str) -> int:
    cli.run("recipients", "import", str(cli.write("p.csv", "email,first_name\n" + people)))
    cli.run("templates", "create", str(_template(cli)))
    delivery = cli.json("deliveries", "create", "-t", "news", "--set", "email_bcc=true")
    assert cli.json("deliveries", "send", str(delivery["id"]))["state"] == "finished"
    return int(delivery["id"])


def test_ledger_commands_and_the_auditors_check(
    tmp_path: Path, capture: Callable[..., CaptureServer],
) -> None:
    cli = Cli(tmp_path, capture().port)
    made = cli.run("archive", "ledger", "keygen", "--out", str(tmp_path / "ledger.key")).stdout
    public = made.split("public key:")[1].split()[0]
    seed = (tmp_path / "ledger.key").read_text().strip()
    assert seed not in made
    cli.env["POSTROOM_ARCHIVE__LEDGER_KEY"] = seed
    assert cli.run("archive", "ledger", "public-key").stdout.strip() == public

    first = _send(cli, "".join(f"a{i}@example.com,A{i}\n" for i in range(6)))
    cli.run("recipients", "import", str(cli.write("q.csv", "email,first_name\n" + "".join(
        f"b{i}@example.com,B{i}\n" for i in range(4)))))
    second = cli.json("deliveries", "create", "-t", "news", "--set", "email_bcc=true")
    cli.json("deliveries", "send", str(second["id"]))
    signed = cli.json("archive", "ledger", "checkpoint")
    assert signed["checkpoint"]["count"] == 16  # 6 of the first, then all 10 recipients

    verified = cli.json("archive", "ledger", "verify")
    assert verified["ok"] and verified["entries"] == 16 and verified["public_key"] == public
    for output in (json.dumps(verified), cli.run("archive", "ledger", "checkpoints").stdout):
        assert seed not in output

    # The first delivery's entries in full, the second's as stubs, then the checkpoints.
    export = tmp_path / "first.jsonl"
    cli.run("archive", "ledger", "export", "--delivery", str(first), "--out", str(export))
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    full = [x for x in lines if "message_id" in x]
    assert len(full) == 6 and {x["delivery"] for x in full} == {first}
    assert len([x for x in lines if "digest" in x]) == 10
    script = auditor_script(tmp_path)
    checked = _audit(script, export, public)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "6 entries checked" in checked.stdout and "signed up to entry 16" in checked.stdout

    # One character of one entry's sha256 changed in the file: the auditor's check fails there.
    text = export.read_text().splitlines()
    item = json.loads(text[2])
    item["sha256"] = ("0" if item["sha256"][0] != "0" else "1") + item["sha256"][1:]
    text[2] = json.dumps(item)
    export.write_text("\n".join(text) + "\n")
    refused = _audit(script, export, public)
    assert refused.returncode == 1 and "line 3" in refused.stderr, refused.stderr
    # Another key: the checkpoint does not verify.
    _, other = _keypair(cli, tmp_path)
    cli.run("archive", "ledger", "export", "--out", str(export))
    assert _audit(script, export, public).returncode == 0
    assert _audit(script, export, other).returncode != 0

    # The database edited: verify names the entry and exits 1.
    with sqlite3.connect(tmp_path / "p.db") as db:
        db.execute("UPDATE archive_ledger SET hash = ? WHERE seq = 9", ("ab" * 32,))
    broken = cli.run("archive", "ledger", "verify", "--json", ok=False)
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["first_fault"]["seq"] == 9


def _keypair(cli: Cli, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "other.key"
    made = cli.run("archive", "ledger", "keygen", "--out", str(path)).stdout
    return path, made.split("public key:")[1].split()[0]
