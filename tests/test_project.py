"""The project as a newcomer meets it: README, CI script, generated docs, the wheel, dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import click

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


def test_readme_run_it_works_as_root_without_sudo_and_keeps_the_home_out_of_the_checkout():
    command = readme_block("Run it")
    # A bare `sudo` is "command not found" for root on a system without it.
    assert not re.search(r"(^|[;&|]\s*)sudo\b", command, re.M), command
    assert command.index("apt-get update") < command.index("apt-get install"), command
    homes = re.findall(r"listserv --home (\S+) (\w+)", command)
    assert [verb for _, verb in homes] == ["init", "serve"], command
    assert all(home.startswith(("~/", "/")) for home, _ in homes), "the home must not be the checkout"


def test_options_doc_is_generated_from_the_code():
    generated = subprocess.run([sys.executable, "-m", "listserv.options"], capture_output=True,
                               text=True, check=True).stdout
    assert (ROOT / "docs" / "options.md").read_text() == generated, \
        "run: python -m listserv.options > docs/options.md"


def test_settings_doc_is_generated_from_the_code():
    generated = subprocess.run([sys.executable, "-m", "listserv.config"], capture_output=True,
                               text=True, check=True).stdout
    assert (ROOT / "docs" / "settings.md").read_text() == generated, \
        "run: python -m listserv.config > docs/settings.md"


def commands(group: click.Group, prefix: str = "listserv"):
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from commands(command, path)


FOUNDATION = ("listserv init", "listserv list", "listserv lists", "listserv member", "listserv mta")


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
    for code in codes | {0, 2, 70, 141}:
        assert re.search(rf"^\| {code} \|", doc, re.M), f"exit status {code} missing from docs/cli.md"


def all_subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *all_subclasses(direct))]


def test_gpg_is_run_by_the_keyring_alone_and_python_gnupg_is_gone():
    """python-gnupg reads gpg's status from the stream where gpg echoes message text (issue 9):
    listserv runs gpg itself, in listserv/keyring/ only, with the status on a pipe of its own."""
    requires = importlib.metadata.requires("listserv") or []
    assert not any(r.startswith(("python-gnupg", "gnupg")) for r in requires), requires
    for path in sorted((ROOT / "listserv").rglob("*.py")):
        source = path.read_text()
        assert not re.search(r"^\s*(import|from) gnupg\b", source, re.M), path
        if path.parent.name != "keyring":
            assert not re.search(r"^\s*(import|from) subprocess\b", source, re.M), \
                f"{path.relative_to(ROOT)} starts processes; gpg runs only through listserv.keyring"
    run_module = (ROOT / "listserv" / "keyring" / "run.py").read_text()
    assert "--status-fd" in run_module and "stderr=subprocess.PIPE" in run_module


WRAPPERS = {"tinydb": "store.py", "aiosmtpd": "smtpd.py", "jinja2": "templates.py", "cryptography": "pkesk.py"}


def test_each_third_party_library_is_wrapped_by_one_module():
    """STYLE.md point 3: one module wraps each library and translates its errors."""
    for path in sorted((ROOT / "listserv").rglob("*.py")):
        source = path.read_text()
        for library, wrapper in WRAPPERS.items():
            if path.name != wrapper or path.parent.name != "listserv":
                assert not re.search(rf"^\s*(import|from) {library}\b", source, re.M), \
                    f"{path.relative_to(ROOT)} imports {library}; only listserv/{wrapper} may"


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


TESTS = ROOT / "tests"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(level, module) of each import in `path`: level 0 is absolute, 1 is `from . import`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.level, node.module or "")]
    return found


def test_tests_import_only_the_helpers_package_never_one_another():
    """A test module imports shared code from tests.helpers, never from another test module or
    from conftest (which holds fixtures only); the helpers import nothing of the tests."""
    helpers = TESTS / "helpers"
    sources = sorted(TESTS.rglob("*.py"))
    assert any(path.name.startswith("test_") for path in sources)
    for path in sources:
        where = path.relative_to(ROOT)
        for level, module in imported_modules(path):
            if path.is_relative_to(helpers):
                assert level == 1 or not module.startswith("tests"), f"{where} imports {module}"
                assert not module.startswith(("test_", "conftest")), f"{where} imports {module}"
                continue
            assert level == 0, f"{where}: relative import of {'.' * level}{module}; use tests.helpers"
            if module == "tests" or module.startswith("tests."):
                assert module == "tests.helpers" or module.startswith("tests.helpers."), \
                    f"{where} imports {module}: shared code belongs in tests/helpers/"
            assert "conftest" not in module.split("."), f"{where} imports conftest: fixtures are not imported"


def test_every_stage_has_its_tests_beside_it():
    stages = sorted(p.stem for p in (ROOT / "listserv" / "stages").glob("*.py") if p.stem != "__init__")
    assert stages
    missing = [s for s in stages if not (TESTS / "stages" / f"test_{s}.py").is_file()]
    assert not missing, f"listserv/stages/ modules without tests/stages/test_NAME.py: {missing}"


def delivery_doc() -> str:
    return (ROOT / "docs" / "delivery.md").read_text()


def test_delivery_doc_lists_every_shipped_template_and_no_other():
    from listserv.templates import shipped_templates

    match = re.search(r"<!-- shipped templates -->(.*?)<!-- /shipped templates -->", delivery_doc(), re.S)
    assert match, "docs/delivery.md lost its list of shipped templates"
    named = re.findall(r"`([^`]+\.j2)`", match.group(1))
    assert named == sorted(p.name for p in shipped_templates().iterdir() if p.name.endswith(".j2"))


def test_the_template_copy_command_of_delivery_doc_works_in_a_shell(tmp_path):
    """The block as written, with this test's python and home and without `sudo -u listserv`
    (the tests run as the home's owner)."""
    from listserv.templates import shipped_templates

    block = re.search(r"<!-- tested: copy a template -->\n```sh\n(.*?)\n```", delivery_doc(), re.S).group(1)
    home = tmp_path / "home"
    home.mkdir()
    script = (block.replace("sudo -u listserv ", "").replace("/opt/listserv/bin/python3", sys.executable)
              .replace("/var/lib/listserv", str(home)))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (home / "templates" / "footer.txt.j2").read_bytes() == (shipped_templates() / "footer.txt.j2").read_bytes()


def test_requests_doc_lists_the_commands_as_the_code_has_them():
    from listserv.stages.commands import render_markdown

    doc = (ROOT / "docs" / "requests.md").read_text()
    match = re.search(r"<!-- commands: generated from listserv/stages/commands.py -->\n(.*?)<!-- /commands -->", doc, re.S)
    assert match and match.group(1) == render_markdown()

