"""Compiles the per-event state code with mypyc; the rest installs as plain Python.

Which modules, and why: detectors/compiled.py. Compiled, the same source extracts an
event's features in about half the time. The Python source stays the reference: a test
checks the compiled modules against it, event by event and pickle by pickle.

``VIGIL_COMPILE=0`` at install time skips the compilation (same behaviour, slower).
Everything else about the package is in pyproject.toml.
"""

import os
import runpy

from setuptools import setup

# Read from the file itself: importing the package here would import its dependencies.
MODULES = runpy.run_path("detectors/compiled.py")["COMPILED_MODULES"]


def ext_modules() -> list[object]:
    if os.environ.get("VIGIL_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    # mypy's settings for the project (plugins, strictness) are for checking, done by
    # ``make typecheck``; compiling needs none of them, nor the stubs of numpy. The build
    # runs isolated, with only the build requirements installed (pyproject.toml: msgspec
    # is one, for the Structs the decoding fast path reads). Modules that are imported but
    # not compiled are type-checked by ``make typecheck``, not here: their errors, if a
    # dependency is missing from the build environment, must not stop the install.
    options = ["--config-file=", "--ignore-missing-imports", "--follow-imports=silent"]
    # One group with a name inside the package: its shared library lands next to the
    # modules, where the editable install's finder looks, not at the top level.
    sources = [module.replace(".", "/") + ".py" for module in MODULES]
    return list(mypycify([*options, *sources], group_name="detectors.native"))


setup(ext_modules=ext_modules())
