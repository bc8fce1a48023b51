"""The package's declared architecture (``[tool.qwythos]`` in pyproject.toml), checked against the code.

Extras: every third-party module a verb can import (its code path in cli.py, followed through every internal
import, lazy ones included) is installed by the core dependencies plus the extras the table gives that verb —
what `pip install qwythos[<extras>]` would bring, requirements of requirements included. Imports behind an
option (``[tool.qwythos.optional]``) are exempt: the code names the package when the option is used. A
fresh venv per extra would take minutes; reading the imports takes a second and fails the same way.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "qwythos"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TABLE = PYPROJECT["tool"]["qwythos"]


def module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for p in (SRC / rel.with_suffix(".py"), SRC / rel / "__init__.py"):
        if p.is_file():
            return p
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(node: ast.AST, here: str, is_package: bool = False) -> set[str]:
    """Absolute names of everything imported anywhere under node (functions included)."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            if n.level == 0:
                out.add(n.module)
                continue
            base = here.split(".")[: len(here.split(".")) - n.level + (1 if is_package else 0)]
            mod = ".".join(base + ([n.module] if n.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in n.names}  # `from . import x` may import a module x
    return out


@cache
def module_imports(name: str) -> frozenset[str]:
    path = module_file(name)
    if path is None:
        return frozenset()
    return frozenset(imports(ast.parse(path.read_text()), name, path.name == "__init__.py"))


def closure(entries: set[str]) -> tuple[set[str], set[str]]:
    """(internal modules reached, third-party top-level names imported) from these imports."""
    seen, third, todo = set(), set(), list(entries)
    while todo:
        name = todo.pop()
        top = name.split(".")[0]
        if top != "qwythos":
            if top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
            continue
        parts = name.split(".")  # importing a.b.c runs a, a.b and a.b.c
        for k in range(2, len(parts) + 1):
            mod = ".".join(parts[:k])
            if mod not in seen and module_file(mod) is not None:
                seen.add(mod)
                todo += module_imports(mod)
    return seen, third


def verb_entries() -> dict[str, set[str]]:
    """verb -> the imports of its function in cli.py (``_<verb>`` registers it and imports lazily)."""
    tree = ast.parse((SRC / "cli.py").read_text())
    funcs = {f.name.lstrip("_"): f for f in tree.body if isinstance(f, ast.FunctionDef)}
    verbs_node = next(
        n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "VERBS"
    )
    verbs = [e.id.lstrip("_") for e in verbs_node.value.elts]
    module_level = imports(
        ast.Module([n for n in tree.body if not isinstance(n, ast.FunctionDef)], []), "qwythos.cli"
    )
    return {v: imports(funcs[v], "qwythos.cli") | module_level for v in verbs}


def requirement_names(reqs: list[str], extras: set[str]) -> set[str]:
    names = set()
    for r in reqs:
        spec, _, marker = r.partition(";")
        wanted = re.findall(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if wanted and not set(wanted) & extras:
            continue
        if "python_version" in marker or "sys_platform" in marker or "platform_" in marker:
            continue  # environment markers: not what decides an extra
        names.add(re.split(r"[\s\[<>=!~;(]", spec.strip(), maxsplit=1)[0])
    return names


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_by(extras: set[str]) -> set[str]:
    """Distributions `pip install qwythos[extras]` brings (transitively), canonical names."""
    project = PYPROJECT["project"]
    todo = list(project["dependencies"])
    optional = project["optional-dependencies"]
    pending, done_extras = set(extras), set()
    while pending:  # extras that name other extras: qwythos[curate,synth]
        e = pending.pop()
        done_extras.add(e)
        for r in optional[e]:
            if m := re.match(r"qwythos\[([^\]]+)\]", r):
                pending |= set(m.group(1).split(",")) - done_extras
            else:
                todo.append(r)
    out = set()
    queue = [(n, set()) for n in requirement_names(todo, set())]
    while queue:
        name, wanted = queue.pop()
        if canon(name) in out:
            continue
        out.add(canon(name))
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        queue += [(n, set()) for n in requirement_names(reqs, wanted)]
    return out


def distributions(top: str) -> set[str]:
    return {canon(d) for d in md.packages_distributions().get(top, [top])}


def test_every_verb_is_declared_with_the_extras_it_needs():
    verbs = verb_entries()
    assert set(verbs) == set(TABLE["verbs"]), "pyproject.toml [tool.qwythos.verbs] must list every CLI verb"
    optional = {canon(k) for k in TABLE["optional"]}
    problems = []
    for verb, entries in verbs.items():
        _, third = closure(entries)
        have = installed_by(set(TABLE["verbs"][verb]))
        for top in sorted(third):
            dists = distributions(top)
            if not dists & (have | optional):
                problems.append(
                    f"`qwythos {verb}` imports {top} ({', '.join(sorted(dists))}), "
                    f"not installed by extras {TABLE['verbs'][verb]}"
                )
    assert not problems, "\n".join(problems)


def test_the_check_sees_lazy_imports_and_optional_packages_are_really_optional():
    _, third = closure(verb_entries()["curate"])
    assert {"pyarrow", "rensa", "sentence_transformers"} <= third  # imported inside functions
    for name, why in TABLE["optional"].items():
        assert canon(name) not in installed_by(set()), f"{name} is a core dependency: not optional"
        assert why, f"[tool.qwythos.optional] {name}: say which option needs it"


@pytest.mark.parametrize("verb", ["init", "generate", "export"])
def test_model_verbs_need_only_the_core(verb):
    assert TABLE["verbs"][verb] == []


def breaches() -> set[str]:
    """'importer -> imported module' for every import across stages, or of the CLI from library code."""
    stages = set(TABLE["imports"]["stages"])
    out = set()
    for path in sorted(SRC.rglob("*.py")):
        here = module_name(path)
        if here.count(".") < 1:
            continue
        package = here.split(".")[1]
        for name in module_imports(here):
            parts = name.split(".")
            if parts[0] != "qwythos" or len(parts) < 2:
                continue
            target = ".".join(parts[:3]) if module_file(".".join(parts[:3])) else ".".join(parts[:2])
            if module_file(target) is None:
                continue
            sideways = package in stages and parts[1] in stages and parts[1] != package
            if sideways or (parts[1] == "cli" and package != "cli"):
                out.add(f"{here} -> {target}")
    return out


def test_stages_never_import_each_other_beyond_the_declared_debt():
    found, debt = breaches(), set(TABLE["imports"]["debt"])
    assert not found - debt, (
        "new imports across stages (or of the CLI); move the shared idea below the stages:\n"
        + ("\n".join(sorted(found - debt)))
    )
    assert not debt - found, "paid off: remove from [tool.qwythos.imports] debt:\n" + "\n".join(
        sorted(debt - found)
    )


def test_the_import_rule_sees_a_sideways_import(tmp_path, monkeypatch):
    fake = tmp_path / "qwythos"
    for sub in ("serve", "train"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "train" / "loop.py").write_text("")
    (fake / "cli.py").write_text("")
    (fake / "serve" / "app.py").write_text(
        "import qwythos.cli\n\n\ndef f():\n    from qwythos.train import loop\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    module_imports.cache_clear()
    try:
        assert breaches() == {"qwythos.serve.app -> qwythos.train", "qwythos.serve.app -> qwythos.cli"}
    finally:
        module_imports.cache_clear()
