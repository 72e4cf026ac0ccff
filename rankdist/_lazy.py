"""Public names imported on first use (PEP 562), for packages whose imports are heavy."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module


def lazy_exports(
    package: str, exports: Mapping[str, str], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import each name when first used.

    Parameters
    ----------
    package
        The package's ``__name__``.
    exports
        Public name -> the module that defines it.
    submodules
        Names of subpackages that are public too (``rankdist.analysis``).

    Returns
    -------
    tuple
        The module-level ``__getattr__`` and ``__dir__`` to assign in the package.
    """
    submodules = tuple(submodules)

    def __getattr__(name: str):
        if name in exports:
            value = getattr(import_module(exports[name]), name)
        elif name in submodules:
            value = import_module(f"{package}.{name}")
        else:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *exports, *submodules])

    return __getattr__, __dir__
