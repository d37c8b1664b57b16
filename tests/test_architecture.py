"""The shape of the code, checked: imports flow one way (no module imports, even inside a
function or for type hints only, a module that imports it back), and the README's code map
names every module there is."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llmiqa"


def module_name(file: Path) -> str:
    parts = list(file.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(f): f for f in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, file: Path, known: set[str]) -> set[str]:
    """Every llmiqa module `file` imports anywhere in it (top level, functions, type-checking
    blocks), and the packages that importing a submodule runs. `llmiqa/__init__`'s lazy
    exports (importlib on attribute access) import nothing when it is imported."""
    found = set()
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            while target.startswith("llmiqa"):  # the module and every package above it
                found.add(target)
                target = target.rpartition(".")[0]
    found.discard(name)
    return {m for m in found if not name.startswith(m + ".")}  # its own packages: not imports


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append([node, *component])

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, file in found.items():
        edges[name] |= imports(name, file, set(found))
    return edges


def test_no_module_imports_a_module_that_imports_it_back():
    assert cycles(graph()) == []


def test_the_check_sees_a_cycle_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "c", "b"]]
    assert "llmiqa.raters.base" in graph()["llmiqa.raters.spec"]  # function-level included


def code_map() -> list[str]:
    """The modules the README's code map names, in its order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Code map") :]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    return re.findall(r"`(llmiqa/[\w/]+\.py)`", section)


def test_the_readme_code_map_names_every_module():
    named = set(code_map())
    files = {str(f.relative_to(ROOT)) for f in PACKAGE.rglob("*.py")}
    assert files - named == set(), "modules missing from the README's code map"
    assert named - files == set(), "the README's code map names modules that do not exist"


def test_the_code_map_is_in_import_order():
    """Each module imports only modules the map lists before it: it reads top down."""
    order = {module_name(ROOT / path): n for n, path in enumerate(code_map())}
    late = [
        f"{module} imports {other}"
        for module, others in graph().items()
        for other in others
        if order[other] > order[module]
    ]
    assert late == []


def folder(path: str) -> str:
    """The part of the program a module belongs to: its folder under llmiqa/, or the root."""
    parts = path.split("/")
    return parts[1] if len(parts) > 2 else "(root)"


def test_each_folder_is_one_block_of_the_code_map():
    """With the import order above, folders then import only folders listed before them:
    no two parts of the program depend on each other. (cli.py, the root's one module over
    everything, closes the map.)"""
    listed = [folder(path) for path in code_map() if path != "llmiqa/cli.py"]
    blocks = [name for n, name in enumerate(listed) if n == 0 or listed[n - 1] != name]
    assert len(blocks) == len(set(blocks)), f"a folder split across the code map: {blocks}"


def test_the_root_holds_only_the_foundation_and_the_command_line():
    root = {f.name for f in PACKAGE.glob("*.py")}
    assert root == {"__init__.py", "background.py", "cli.py", "environment.py", "errors.py",
                    "settings.py"}  # fmt: skip


def writes_to_stderr(file: Path) -> bool:
    return any(
        isinstance(node, ast.Attribute) and node.attr == "stderr"
        for node in ast.walk(ast.parse(file.read_text()))
    )


def test_only_the_command_line_writes_to_stderr():
    """The library says things through logger "llmiqa" (the command line shows it), so a
    program that embeds llmiqa decides where they go."""
    writers = {str(f.relative_to(ROOT)) for f in PACKAGE.rglob("*.py") if writes_to_stderr(f)}
    assert {w for w in writers if w != "llmiqa/cli.py" and folder(w) != "commands"} == set()
    assert "llmiqa/commands/score.py" in writers  # the check sees a writer


def test_the_library_leaves_its_test_support_to_the_commands():
    """llmiqa.tiny (random checkpoints) is for `llmiqa tiny` and the tests, not for scoring."""
    users = {name for name, others in graph().items() if "llmiqa.tiny" in others}
    assert {u for u in users if not u.startswith(("llmiqa.tiny", "llmiqa.commands"))} == set()


def test_every_command_adds_itself():
    from llmiqa.commands import COMMANDS

    files = {f.stem for f in (PACKAGE / "commands").glob("*.py")} - {"__init__", "arguments"}
    assert {command.__name__.rpartition(".")[2] for command in COMMANDS} == files
    assert all(callable(c.add_command) and callable(c.run) for c in COMMANDS)


def scorer_uses(source: str) -> set[str]:
    """What `source` takes of the Scorer's module beyond its seam: names imported from
    llmiqa.scoring.pipeline other than Seam, and any use of a Scorer or a `scorer`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "llmiqa.scoring.pipeline":
            found |= {alias.name for alias in node.names} - {"Seam"}
        elif isinstance(node, ast.Name) and node.id in ("Scorer", "scorer"):
            found.add(node.id)
        elif isinstance(node, ast.arg) and node.arg == "scorer":
            found.add(node.arg)
    return found


def without_class(source: str, name: str) -> str:
    """`source` less the body of its class `name`."""
    tree = ast.parse(source)
    tree.body = [n for n in tree.body if not (isinstance(n, ast.ClassDef) and n.name == name)]
    return ast.unparse(tree)


def test_the_ray_driver_knows_the_scorer_only_by_its_seam():
    """llmiqa.distributed plans and commits through `Scorer.seam()` alone, so what it needs
    of the Scorer is one small value, not the Scorer's attributes. The one exception is
    score --ray's ShardWorker: an actor that owns a whole Scorer and runs the single-process
    code on a shard; the driver around it holds none."""
    files = sorted((PACKAGE / "distributed").glob("*.py"))
    sources = {f.name: f.read_text() for f in files}
    sources["shards.py"] = without_class(sources["shards.py"], "ShardWorker")
    uses = {name: scorer_uses(text) for name, text in sources.items()}
    assert uses == {name: set() for name in sources}
    seen = "from llmiqa.scoring.pipeline import Scorer, Seam\ndef f(scorer): scorer.raters"
    assert scorer_uses(seen) == {"Scorer", "scorer"}  # the check sees a use


def assigned(target: ast.expr) -> list[ast.expr]:
    """What an assignment binds: each element of a tuple or list target, else the target."""
    if isinstance(target, ast.Tuple | ast.List):
        return [leaf for element in target.elts for leaf in assigned(element)]
    return [target.value] if isinstance(target, ast.Starred) else [target]


def set_late(source: str, name: str) -> set[str]:
    """The attributes class `name` in `source` sets outside `__init__` (what it keeps in a
    container it built there, a pool or a timing, it may add to)."""
    (cls,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and
              n.name == name]  # fmt: skip
    found = set()
    for method in cls.body:
        if not isinstance(method, ast.FunctionDef) or method.name == "__init__":
            continue
        for node in ast.walk(method):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.NamedExpr):
                targets = [node.target]
            else:
                continue
            for leaf in (leaf for target in targets for leaf in assigned(target)):
                if isinstance(leaf, ast.Attribute) and getattr(leaf.value, "id", "") == "self":
                    found.add(f"{method.name}: self.{leaf.attr}")
    return found


def test_the_ray_driver_sets_nothing_after_it_is_built():
    """RayCluster's phases pass values (a Placement, the seam, the ledger) instead of
    leaving them on the cluster for a later phase to find."""
    assert set_late((PACKAGE / "distributed" / "cluster.py").read_text(), "RayCluster") == set()
    seen = "class C:\n def __init__(self): self.a = 1\n def f(self): self.b, c = 2, 3"
    assert set_late(seen, "C") == {"f: self.b"}  # the check sees a late attribute
