"""pytest settings for the whole tree.

The modules that ``setup.py`` compiles with mypyc import as extension modules, so
``--doctest-modules`` would find a compiled module where it expects its source file (and a
compiled class keeps no docstrings). Their doctests run against the Python source instead,
in tests/unit/test_compiled.py.
"""

from detectors.compiled import compiled_modules

collect_ignore = [name.replace(".", "/") + ".py" for name in compiled_modules()]
