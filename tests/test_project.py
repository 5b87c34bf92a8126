"""The project as a newcomer meets it: README, CI script, generated docs, the wheel, dependencies."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import gnupg

from listserv.cli import main
from listserv.errors import ListservError

ROOT = Path(__file__).resolve().parent.parent


def readme_block(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"\*\*{title}\*\*.*?```sh\n(.*?)\n```", readme, re.S)
    assert match, f"README has no '{title}' command block"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = readme_block("Test it")
    assert "\n" not in command and "pytest" in command
    ci = (ROOT / ".ci" / "run").read_text()
    assert any(line == command or line.startswith(command + " || ") for line in ci.splitlines()), ci


def test_options_doc_is_generated_from_the_code():
    generated = subprocess.run([sys.executable, "-m", "listserv.options"], capture_output=True,
                               text=True, check=True).stdout
    assert (ROOT / "docs" / "options.md").read_text() == generated, \
        "run: python -m listserv.options > docs/options.md"


def commands(group: click.Group, prefix: str = "listserv"):
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from commands(command, path)


FOUNDATION = ("listserv init", "listserv list", "listserv lists", "listserv member")


def test_cli_doc_names_every_command_option_and_exit_status():
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert "--home" in doc and "LISTSERV_HOME" in doc
    for path, command in commands(main):
        if not path.startswith(FOUNDATION):
            continue  # the serving commands are documented with their own issue
        assert f"`{path}" in doc, f"docs/cli.md does not document {path}"
        for param in command.params:
            for flag in param.opts:
                if flag.startswith("--") and flag != "--help":
                    assert flag in doc, f"docs/cli.md does not mention {flag} of {path}"
    codes = {cls.exit_code for cls in [ListservError, *all_subclasses(ListservError)]
             if not cls.__name__.endswith(("Refusal", "Unauthorized", "Recipient", "Large", "Malformed"))}
    for code in codes | {0, 2, 70}:
        assert re.search(rf"^\| {code} \|", doc, re.M), f"exit status {code} missing from docs/cli.md"


def all_subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *all_subclasses(direct))]


def test_gnupg_module_is_the_python_gnupg_distribution():
    """The PyPI package 'gnupg' is a stale fork installing the same module name."""
    assert importlib.metadata.packages_distributions()["gnupg"] == ["python-gnupg"]
    version = tuple(int(part) for part in importlib.metadata.version("python-gnupg").split(".")[:3])
    assert version >= (0, 5, 5)
    assert hasattr(gnupg.GPG, "scan_keys_mem")  # python-gnupg's API, not the fork's
    requires = importlib.metadata.requires("listserv") or []
    assert any(re.match(r"python-gnupg\s*>=\s*0\.5\.5", r) for r in requires), requires


WRAPPERS = {"gnupg": "keyring.py", "tinydb": "store.py", "aiosmtpd": "smtpd.py", "jinja2": "templates.py"}


def test_each_third_party_library_is_wrapped_by_one_module():
    """STYLE.md point 3: one module wraps each library and translates its errors."""
    for path in sorted((ROOT / "listserv").rglob("*.py")):
        source = path.read_text()
        for library, wrapper in WRAPPERS.items():
            if path.name != wrapper or path.parent.name != "listserv":
                assert not re.search(rf"^\s*(import|from) {library}\b", source, re.M), \
                    f"{path.relative_to(ROOT)} imports {library}; only listserv/{wrapper} may"
        if path.name != "keyring.py":
            # python-gnupg's GPG object is Keyring.gpg: reaching for it is using python-gnupg.
            assert not re.search(r"\.gpg\b(?!\.j2)", source), \
                f"{path.relative_to(ROOT)} calls python-gnupg through .gpg; add a Keyring method"


def test_the_wheel_ships_the_templates(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True)
    [wheel] = tmp_path.glob("listserv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [n for n in names if n.startswith("listserv/templates/")]
    assert shipped, names
    assert sorted(n.removeprefix("listserv/templates/") for n in shipped) == sorted(
        str(p.relative_to(ROOT / "templates")) for p in (ROOT / "templates").rglob("*") if p.is_file())
    assert "listserv/__init__.py" in names and "listserv/cli/__init__.py" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"listserv = listserv.cli:main" in metadata
