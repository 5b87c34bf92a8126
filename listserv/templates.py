"""jinja2 templates: the deployment's HOME/templates/ first, then the ones shipped with listserv.

StrictUndefined everywhere, so a missing value is an error (and a failing test), never a blank
in a mail. HTML templates (*.html.j2) are autoescaped. jinja2 is imported only here.

`counted` ("1 post", "3 posts") is here for templates (the filter `counted`) and for the CLI's
own sentences alike, so no count anywhere reads "1 posts".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from .errors import TemplateError

_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_templates() -> Path:
    """templates/ inside the installed package (wheel), else the source checkout's templates/."""
    for candidate in (_PACKAGE_DIR / "templates", _PACKAGE_DIR.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise TemplateError("The shipped templates are missing from this installation.")


def counted(number: int, singular: str, plural: str | None = None) -> str:
    """'1 post', '2 posts'; `plural` for the words that do not just add an s ('1 copy', '2 copies')."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def environment(overrides: Path | None = None) -> jinja2.Environment:
    search = [str(p) for p in (overrides, shipped_templates()) if p is not None and p.is_dir()]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["counted"] = counted
    return env


class Templates:
    def __init__(self, overrides: Path | None = None):
        self._env = environment(overrides)

    def render(self, name: str, **values: Any) -> str:
        try:
            return self._env.get_template(name).render(**values)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"The template {name} cannot be rendered: {exc}.") from None
