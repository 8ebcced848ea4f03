"""The modules ``setup.py`` compiles with mypyc, and which of them run compiled here.

They are the per-event, per-entity state code: plain dict, string and float work, which
the interpreter's per-operation overhead dominates. The Python source stays the
reference; tests/unit/test_compiled.py checks the compiled modules against it.
"""

import importlib

# In import order (each imports only those before it). setup.py reads this list.
COMPILED_MODULES: tuple[str, ...] = (
    "detectors.features.state",
    "detectors.features.extractor",
    "detectors.arrival_tracker",
)


def compiled_modules() -> list[str]:
    """Those of COMPILED_MODULES running compiled; none after ``VIGIL_COMPILE=0``."""
    return [
        name
        for name in COMPILED_MODULES
        if not str(importlib.import_module(name).__file__).endswith(".py")
    ]
