"""Render every kustomization under deploy/k8s and validate each object offline.

``make deploy-check`` runs it (and ``make test`` runs that). For the base and each
overlay: ``kubectl kustomize DIR``, then every rendered object through
``kubernetes-validate`` in strict mode (an unknown or misspelt field fails) against one
pinned Kubernetes version. An object whose kind has no bundled schema fails too: nothing
passes unchecked. Exits 0 when all pass, 1 when an object fails, 2 when a tool is missing.

    python deploy/k8s/check.py [--kubernetes-version 1.32.0] [--kubectl kubectl]

The invariants that tie the manifests to Vigil's own settings (probe ports, setting
names, the TOML loading) are in tests/unit/test_deploy.py.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_KUBERNETES_VERSION = "1.32.0"


def kustomizations(root: Path = HERE) -> list[Path]:
    """The base first, then every overlay (directories holding a kustomization.yaml)."""
    found = sorted(p.parent for p in root.rglob("kustomization.yaml"))
    return sorted(found, key=lambda p: (p.name != "base", str(p)))


def render(directory: Path, kubectl: str) -> list[dict[str, Any]]:
    import yaml  # type: ignore[import-untyped]

    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def problems(objects: list[dict[str, Any]], version: str) -> list[str]:
    """One line per object that does not validate (strict) against ``version``."""
    import kubernetes_validate  # type: ignore[import-untyped]

    found = []
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        kind = obj.get("kind", "?")
        meta = obj.get("metadata") or {}
        name = f"{kind}/{meta.get('name', '?')}"
        key = (str(obj.get("apiVersion")), kind, str(meta.get("name")))
        if key in seen:
            found.append(f"{name}: rendered twice")
        seen.add(key)
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(root)"
            found.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            found.append(f"{name}: {exc.message}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION)
    parser.add_argument("--kubectl", default="kubectl", help="kubectl with kustomize (>= 1.14)")
    args = parser.parse_args(argv)
    kubectl = shutil.which(args.kubectl)
    if kubectl is None:
        print(
            f"deploy-check: {args.kubectl!r} not found; install kubectl (it renders the "
            "kustomizations) or pass KUBECTL=/path/to/kubectl to make",
            file=sys.stderr,
        )
        return 2
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        print("deploy-check: kubernetes-validate missing: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    failed = 0
    for directory in kustomizations():
        where = directory.relative_to(HERE.parent.parent)
        try:
            objects = render(directory, kubectl)
        except RuntimeError as exc:
            print(f"FAIL {where}: {exc}")
            failed += 1
            continue
        found = problems(objects, args.kubernetes_version)
        kinds = ", ".join(sorted({str(o.get("kind")) for o in objects}))
        status = "FAIL" if found or not objects else "ok  "
        print(
            f"{status} {where}: {len(objects)} objects ({kinds}), strict, "
            f"Kubernetes {args.kubernetes_version}"
        )
        for line in found:
            print(f"     {line}")
        failed += bool(found) or not objects
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
