"""Griffe extension: render Sphinx roles in dmc's docstrings as Markdown.

dmc's docstrings are NumPy style and use Sphinx roles such as
``:func:`dmc.models.spectral_step_size``` and ``:class:`Observations```.
mkdocstrings renders docstrings as Markdown, where a role would show up as
literal text.  This extension rewrites each role into inline code wrapped
in an optional cross-reference: it links to the object's API entry when
the name resolves (from the docstring's own scope) to a documented dmc
object, and stays plain code, without a warning, otherwise.

Loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|obj|data|exc):`(~?)([\w.]+)`")


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` into code plus an optional autoref."""

    def on_package(self, *, pkg, **kwargs):
        self._walk(pkg, set())

    def _walk(self, obj, seen):
        if obj.path in seen or obj.is_alias:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(lambda match: self._replace(obj, match),
                                            obj.docstring.value)
        for member in obj.members.values():
            self._walk(member, seen)

    @staticmethod
    def _replace(obj, match):
        short, target = match.groups()
        title = target.rsplit(".", 1)[-1] if short else target
        scope = obj if obj.is_module or obj.is_class else obj.parent
        identifier = target
        try:
            identifier = scope.resolve(target.split(".")[0])
            rest = target.split(".", 1)[1:]
            identifier = ".".join([identifier, *rest])
        except Exception:  # noqa: BLE001 - unresolvable names just stay code
            pass
        if not identifier.startswith("dmc"):
            return f"`{title}`"
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'
