"""The archive settings of issue 14: secrets only from the environment, sinks need a target."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.errors import ConfigError
from postroom.settings import load_settings


@pytest.mark.parametrize("key", ["ledger_key", "imap_password"])
def test_archive_secrets_may_not_be_written_in_the_file(tmp_path: Path, key: str) -> None:
    config = tmp_path / "postroom.toml"
    config.write_text(f'[archive]\n{key} = "00112233"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=f"POSTROOM_ARCHIVE__{key.upper()}"):
        load_settings(config)


def test_a_sink_needs_its_target(tmp_path: Path) -> None:
    config = tmp_path / "postroom.toml"
    config.write_text('[archive]\nsink = "directory"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"archive\.directory is needed"):
        load_settings(config)
    config.write_text('[archive]\nsink = "imap"\nimap_url = "ftp://x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="imaps://user@host/folder"):
        load_settings(config)
    config.write_text(f'[archive]\nsink = "directory"\ndirectory = "{tmp_path}"\n',
                      encoding="utf-8")
    assert load_settings(config).archive.directory == tmp_path
