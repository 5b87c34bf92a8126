"""The layout docs/architecture.md draws, kept true: the order of each path is code on one
screen, stages get plain values, and the parts of a home are reached only where the map says."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "listserv"
PATHS = ("receive", "refused", "distribute", "bounce", "settle", "answer", "receive_for_admins", "forward",
         "receive_key_request", "send_key")
PATH_LINES = 20  # each path, its docstring included, fits in this many lines
# What a stage may not import: the parts of a home, and the layers above the stages.
NOT_FOR_STAGES = {"store", "spool", "context", "ledger", "outbox", "digest", "server", "pipeline",
                  "smtpd", "deliver", "cli", "tinydb", "aiosmtpd"}
# Who may hold the whole Context (listserv.context).
HOLD_THE_CONTEXT = {"pipeline.py", "server.py", "smtpd.py", "context.py", "revocation.py", "__init__.py"}


def imported(path: Path) -> set[str]:
    """The last dotted name of every module `path` imports (listserv's own and others')."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                names |= {node.module.split(".")[0] if node.level == 0 else node.module.split(".")[-1]}
            else:
                names |= {alias.name for alias in node.names}
    return names


def _is_stage_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) or (isinstance(node, ast.BoolOp) and all(map(_is_stage_call, node.values)))


def _is_step(statement: ast.stmt) -> bool:
    """One line of a path: a stage call, its result named, a return -- or a guard (an `if`
    whose body is such lines) where a path ends early or skips a step."""
    if isinstance(statement, ast.Expr):
        return _is_stage_call(statement.value) or isinstance(statement.value, ast.Constant)  # docstring
    if isinstance(statement, ast.Assign):
        return _is_stage_call(statement.value)
    if isinstance(statement, ast.Return):
        return True
    if isinstance(statement, ast.If):
        return not statement.orelse and all(map(_is_step, statement.body)) and len(statement.body) <= 2
    return False


def test_the_pipeline_is_the_order_of_each_path_on_one_screen():
    source = (PACKAGE / "pipeline.py").read_text()
    assert len(source.splitlines()) < 160
    functions = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}
    assert set(PATHS) == set(functions), sorted(functions)  # nothing but paths
    for name in PATHS:
        node = functions[name]
        assert node.end_lineno - node.lineno < PATH_LINES, f"pipeline.{name} is longer than {PATH_LINES} lines"
        for statement in functions[name].body:
            assert _is_step(statement), f"pipeline.{name} line {statement.lineno} is not a stage call or a return"
    assert "def answer" in source  # the request address's path


def test_a_stage_gets_plain_values_and_reaches_no_part_of_the_home():
    for path in sorted((PACKAGE / "stages").glob("*.py")):
        wrong = imported(path) & NOT_FOR_STAGES
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_only_the_pipeline_the_server_and_the_cli_hold_the_context():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "context" in imported(path):
            assert path.parent.name == "cli" or path.name in HOLD_THE_CONTEXT, path.relative_to(ROOT)


def test_a_stage_that_would_fail_the_shape_check_is_caught():
    """The shape check itself can fail: inline bookkeeping (a loop, a dict built) is refused."""
    body = ast.parse("def receive(raw, route, ctx):\n    rows = {}\n    for x in raw:\n        rows[x] = 1\n").body[0].body
    assert not all(map(_is_step, body))
