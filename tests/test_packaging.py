"""What `pip install etcdops` brings must be enough to run it: every import is declared.

The test environment has far more installed (moto alone brings Flask and click), so a missing
dependency would pass every other test and fail only on an operator's host.
"""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import etcdops

PACKAGE = Path(etcdops.__file__).parent


def _imports() -> dict[str, tuple[Path, bool]]:
    """Every third-party top-level module etcdops imports: (a file, whether at module level)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                module = name.partition(".")[0]
                if module in sys.stdlib_module_names or module == "etcdops":
                    continue
                eager = id(node) in top_level or found.get(module, (path, False))[1]
                found[module] = (path, eager)
    return found


def _requirements(extra: str | None) -> set[str]:
    names = set()
    for requirement in importlib.metadata.requires("etcdops") or []:
        marker = re.search(r'extra == "([^"]+)"', requirement)
        if (marker.group(1) if marker else None) == extra:
            names.add(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower())
    return names


def _distribution(module: str) -> str:
    return importlib.metadata.packages_distributions()[module][0].lower().replace("_", "-")


def test_every_import_is_a_declared_dependency():
    base, demo = _requirements(None), _requirements("demo")
    imports = _imports()
    assert {"grpc", "botocore", "typer"} <= set(imports)  # the scan sees real imports
    for module, (path, eager) in imports.items():
        distribution = _distribution(module)
        where = f"{module} ({distribution}) imported in {path.relative_to(PACKAGE.parent)}"
        if distribution in base:
            continue
        # the demo's extras are imported only where the demo (or a fallback) needs them
        assert distribution in demo, f"{where} is not a dependency of etcdops"
        assert not eager, f"{where} at module level, but it is only in the [demo] extra"


def test_no_declared_dependency_goes_unused():
    used = {_distribution(module) for module in _imports()}
    assert _requirements(None) - used == set()
