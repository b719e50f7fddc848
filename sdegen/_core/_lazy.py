"""Public names imported on first use (PEP 562's module `__getattr__`).

A package lists its lazy names as ordinary imports under `if TYPE_CHECKING:` — what
type checkers and the documentation read — and its `__getattr__` calls [`load`][]:
the table name → module is read from those import statements (with `ast`, once), so
adding a lazy public name is one import line, and `dir()` stays complete.
"""

import ast
import functools
import importlib
from typing import Any


@functools.cache
def _table(package: str, path: str) -> dict[str, tuple[str, str | None]]:
    """`{public name: (module, attribute or None for a submodule)}` from the imports
    under `if TYPE_CHECKING:` in the package's `__init__.py` at `path`."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    table: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"):  # fmt: skip
            continue
        for imp in node.body:
            if not isinstance(imp, ast.ImportFrom) or imp.level != 1:
                raise TypeError(
                    f"{path}: only `from .x import y as y` under TYPE_CHECKING"
                )
            for alias in imp.names:
                public = alias.asname or alias.name
                if imp.module is None:  # `from . import data as data`: a subpackage
                    table[public] = (f"{package}.{alias.name}", None)
                else:
                    table[public] = (f"{package}.{imp.module}", alias.name)
    return table


def lazy_names(package: str, path: str) -> list[str]:
    """The names `package` imports on first use."""
    return list(_table(package, path))


def load(package: str, path: str, namespace: dict[str, Any], name: str) -> Any:
    """Import the lazy public `name` of `package` (whose `__init__.py` is at `path`),
    store it in the package's `namespace` (later lookups are plain attributes) and
    return it; `AttributeError` for a name the package does not have."""
    entry = _table(package, path).get(name)
    if entry is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module, attr = entry
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    namespace[name] = value
    return value
