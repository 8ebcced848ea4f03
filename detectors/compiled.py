"""The modules ``setup.py`` compiles with mypyc, and which of them run compiled here.

They are the per-event, per-entity state code, the valid-event fast path of the
decoding, and the per-record passes over a batch that call them: plain dict, string and
float work, which the interpreter's per-operation overhead dominates. The Python source stays the
reference; tests/unit/test_compiled.py checks the compiled modules against it.
"""

import importlib
from typing import Any

# In import order (each imports only those before it). setup.py reads this list.
COMPILED_MODULES: tuple[str, ...] = (
    "detectors.features.state",
    "detectors.features.extractor",
    "detectors.arrival_tracker",
    "detectors.feature_rows",
    "schemas.fast_path",
    "stream.ingest",
    "stream.range_filter",
)


def compiled_modules() -> list[str]:
    """Those of COMPILED_MODULES running compiled; none after ``VIGIL_COMPILE=0``."""
    return [
        name
        for name in COMPILED_MODULES
        if not str(importlib.import_module(name).__file__).endswith(".py")
    ]


def attributes(obj: object) -> dict[str, Any]:
    """``obj``'s attributes by name, whether its class is compiled or not.

    A class compiled by mypyc has no ``__dict__``; it lists its attributes in
    ``__mypyc_attrs__``, which is what mypyc's own pickling reads. The two list them in
    different orders; sorted by name, a pickle of either is the same bytes.
    """
    names: tuple[str, ...] | None = getattr(type(obj), "__mypyc_attrs__", None)
    if names is None:
        return dict(sorted(vars(obj).items()))
    return {name: getattr(obj, name) for name in sorted(names) if hasattr(obj, name)}
