"""Web pages shared by the township dashboard (center) and the station pages (agent).

Server-rendered Jinja2 templates with inline SVG charts and a little JavaScript; every asset
ships in the package, nothing is fetched from the internet.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from litestar import Request, Response
from litestar.enums import MediaType

from web import charts, i18n

STATIC_DIR = Path(str(resources.files("web") / "static"))
_env = jinja2.Environment(
    loader=jinja2.PackageLoader("web", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals.update(text=i18n.text, label=i18n.label, options=i18n.options, bar_chart=charts.bar_chart,
                    donut_chart=charts.donut_chart)


def lang_of(request: Request[Any, Any, Any]) -> str:
    """?lang=en|zh wins (and is remembered in a cookie), then the cookie, then Chinese."""
    return i18n.pick(request.query_params.get("lang") or request.cookies.get("lang"))


def page(request: Request[Any, Any, Any], template: str, status_code: int = 200, **context: Any) -> Response[str]:
    lang = lang_of(request)
    html = _env.get_template(template).render(lang=lang, T=i18n.translations(lang), current=request.url.path,
                                              **context)
    # Pages show children's personal data: the browser keeps no copy (shared office computers).
    response: Response[str] = Response(html, media_type=MediaType.HTML, status_code=status_code,
                                       headers={"Cache-Control": "no-store"})
    if request.query_params.get("lang") in i18n.LANGS:
        response.set_cookie("lang", lang, max_age=365 * 86400, samesite="lax")
    return response


class Obj(dict[str, Any]):
    """API JSON for templates: keys also read as attributes (a.name), missing ones as None."""

    def __getattr__(self, name: str) -> Any:
        value = self.get(name)
        if isinstance(value, dict):
            return Obj(value)
        return value


def obj(value: Any) -> Any:
    """Wrap API JSON (recursively) for templates: dicts become Obj, lists are mapped."""
    if isinstance(value, dict):
        return Obj({k: obj(v) for k, v in value.items()})
    if isinstance(value, list):
        return [obj(v) for v in value]
    return value
