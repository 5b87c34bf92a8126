"""listserv.toml as an operator edits it: every key declared once, a typo refused with its line."""

from __future__ import annotations

import tomllib

import pytest

from listserv.config import DEFAULT_TOML, SETTINGS, Home, Settings, key_lines
from listserv.deliver import RetryPolicy
from listserv.errors import ConfigProblem

from tests.helpers.cli import Cli


def settings_of(tmp_path, text: str) -> Settings:
    home = Home(tmp_path)
    home.config_file.write_text(text)
    return home.settings()


def refusal(tmp_path, text: str) -> str:
    with pytest.raises(ConfigProblem) as caught:
        settings_of(tmp_path, text)
    assert caught.value.exit_code == 78
    return str(caught.value)


def test_the_file_init_writes_holds_every_setting_at_its_default(tmp_path):
    home = tmp_path / "home"
    Cli(home).ok("init")
    written = (home / "listserv.toml").read_text()
    assert written == DEFAULT_TOML
    raw = tomllib.loads(written)
    assert {name for table in raw.values() for name in table} == {f.name for f in SETTINGS}
    assert Home(home).settings() == Settings()


def test_the_retry_defaults_are_the_settings_defaults():
    defaults = Settings()
    assert RetryPolicy() == RetryPolicy(defaults.retry_min, defaults.retry_max, defaults.lifetime)


def test_a_changed_value_is_read(tmp_path):
    settings = settings_of(tmp_path, '[server]\nlisten = "[::1]:2525"\n\n[delivery]\n'
                                     'relay = "127.0.0.1:10026"\nretry_min = 1.5\n')
    assert settings.listen == ("::1", 2525)
    assert settings.relay == ("127.0.0.1", 10026)
    assert settings.retry_min == 1.5
    assert settings.concurrency == Settings().concurrency


def test_a_misspelt_key_is_refused_with_its_line_and_the_likely_key(tmp_path):
    text = DEFAULT_TOML.replace('relay = ""', 'rely = "127.0.0.1:10026"')
    line = text.splitlines().index('rely = "127.0.0.1:10026"') + 1
    assert refusal(tmp_path, text) == (f"{tmp_path}/listserv.toml line {line}: unknown key 'rely' in "
                                       "[delivery]; did you mean 'relay'?")


def test_an_unknown_key_with_nothing_close_is_refused_without_a_guess(tmp_path):
    assert refusal(tmp_path, "[server]\n\nworkers = 8\n") == \
        f"{tmp_path}/listserv.toml line 3: unknown key 'workers' in [server]."


def test_a_misspelt_section_is_refused_with_its_line(tmp_path):
    assert refusal(tmp_path, '[server]\nlisten = "127.0.0.1:8025"\n[delivry]\nrelay = "x:25"\n') == \
        f"{tmp_path}/listserv.toml line 3: unknown section [delivry]; did you mean [delivery]?"


def test_a_key_above_every_section_says_where_it_belongs(tmp_path):
    assert refusal(tmp_path, '# relay first\nrelay = "127.0.0.1:25"\n[server]\n') == \
        f"{tmp_path}/listserv.toml line 2: unknown key 'relay' outside any section; it belongs under [delivery]."


@pytest.mark.parametrize("line, expected", [
    ('concurrency = "4"', '[delivery] concurrency must be a whole number of at least 1, not "4".'),
    ("concurrency = 0", "[delivery] concurrency must be a whole number of at least 1, not 0."),
    ("concurrency = true", "[delivery] concurrency must be a whole number of at least 1, not true."),
    ("retry_max = -1", "[delivery] retry_max must be a number of seconds greater than 0, not -1."),
    ('relay = "localhost"', '[delivery] relay must be a string HOST:PORT, or "" for none, not "localhost".'),
    ('starttls = "yes"', '[delivery] starttls must be one of "auto", "always", "never", not "yes".'),
    ("outbox = 7", "[delivery] outbox must be a string, not 7."),
])
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(tmp_path, line, expected):
    assert refusal(tmp_path, f"[delivery]\n{line}\n") == f"{tmp_path}/listserv.toml line 2: {expected}"


def test_a_section_that_is_not_a_table_is_refused(tmp_path):
    assert refusal(tmp_path, 'server = "127.0.0.1:8025"\n') == \
        f"{tmp_path}/listserv.toml line 1: 'server' must be the section [server]."


def test_a_file_tomllib_cannot_read_is_refused(tmp_path):
    assert "cannot be read" in refusal(tmp_path, "[server\n")


def test_lines_are_found_for_dotted_quoted_and_nested_keys_but_not_inside_strings():
    text = ('[server]\nnote = """\nrely = 1\n"""\n"max_data_kb" = 1\n'
            "[delivery]\ntls.ca = 1\n[delivery.extra]\n")
    lines = key_lines(text)
    assert lines[("server", "max_data_kb")] == 5
    assert ("server", "rely") not in lines
    assert lines[("delivery", "tls")] == lines[("delivery", "tls", "ca")] == 7
    assert lines[("delivery", "extra")] == 8


def test_a_dotted_unknown_key_is_refused_at_its_line(tmp_path):
    assert refusal(tmp_path, '[delivery]\nrelay = ""\ntls.ca_file = "ca.pem"\n') == \
        f"{tmp_path}/listserv.toml line 3: unknown key 'tls' in [delivery]."


def test_the_data_check_settings_are_read_and_checked(tmp_path):
    assert (settings_of(tmp_path, "[server]\ndata_threads = 8\ndata_timeout = 2.5\n").data_threads,
            settings_of(tmp_path, "[server]\ndata_timeout = 2.5\n").data_timeout) == (8, 2.5)
    for bad in ("0", "-1", "nan"):
        assert "data_timeout must be a number of seconds greater than 0" in \
            refusal(tmp_path, f"[server]\ndata_timeout = {bad}\n")
