"""listserv.toml: the commented defaults that `init` writes are the code's defaults."""

from __future__ import annotations

import pytest

from listserv.config import DEFAULT_TOML, Home, Settings
from listserv.errors import UsageError


def test_the_written_defaults_are_the_defaults(tmp_path):
    home = Home(tmp_path)
    home.initialise()
    assert home.config_file.read_text() == DEFAULT_TOML
    assert home.settings() == Settings()
    for name in ("data_threads", "data_timeout", "max_data_kb", "concurrency", "starttls"):
        assert f"\n{name} = " in DEFAULT_TOML


def test_the_data_check_settings_are_read_and_checked(tmp_path):
    home = Home(tmp_path)
    home.config_file.write_text("[server]\ndata_threads = 8\ndata_timeout = 2.5\n")
    assert (home.settings().data_threads, home.settings().data_timeout) == (8, 2.5)
    for bad in ("0", "-1", "nan"):
        home.config_file.write_text(f"[server]\ndata_timeout = {bad}\n")
        with pytest.raises(UsageError, match="data_timeout must be more than 0"):
            home.settings()
