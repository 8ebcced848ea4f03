"""Compiles the per-event feature code with mypyc; the rest installs as plain Python.

Feature extraction runs for every event and is plain dict and float work, which the
interpreter's per-operation overhead dominates; compiled, the same source runs about twice
as fast (``vigil bench pipeline``). The Python source stays the reference: a test checks
the compiled modules against it, event by event and pickle by pickle.

``VIGIL_COMPILE=0`` at install time skips the compilation (same behaviour, slower).
Everything else about the package is in pyproject.toml.
"""

import os

from setuptools import setup

COMPILED = ["detectors/features/state.py", "detectors/features/extractor.py"]


def ext_modules() -> list[object]:
    if os.environ.get("VIGIL_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    # mypy's settings for the project (plugins, strictness) are for checking, done by
    # ``make typecheck``; compiling needs none of them, nor the stubs of numpy.
    options = ["--config-file=", "--ignore-missing-imports"]
    # One group with a name inside the package: its shared library lands next to the
    # modules, where the editable install's finder looks, not at the top level.
    return list(mypycify([*options, *COMPILED], group_name="detectors.features.compiled"))


setup(ext_modules=ext_modules())
