"""The stage registry (`analysis/stages.py`) against dvc.yaml, and code dependencies correct by
construction: every `analysis` module a stage's command imports (computed from the source's
import statements, function-level imports included) is a dependency of that DVC stage, and no
module imports in a cycle."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest

from analysis import stages
from analysis.common.io import load_yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "analysis"
# Files a module reads at run time (not imports): a stage importing the module depends on them.
RESOURCES = {
    "analysis/data/relations.py": ["analysis/data/resources/vsr_rel_meta_category_dict.txt"],
}


def dvc_stages() -> dict:
    return load_yaml((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file of module ``analysis.x.y`` (a module or a package), or None."""
    rel = Path(*name.split("."))
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _in_type_checking(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path) -> set[str]:
    """The `analysis` modules ``path`` imports (module level and inside functions; imports
    under ``if TYPE_CHECKING:`` do not run and are left out)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "analysis"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "analysis":
                continue
            found.add(node.module)
            for alias in node.names:  # `from analysis.x import y`: y may be a module
                if module_file(f"{node.module}.{alias.name}") is not None:
                    found.add(f"{node.module}.{alias.name}")
    return {m for m in found if module_file(m) is not None}


def closure(start: list[str]) -> set[Path]:
    """Every file imported, transitively, from the modules ``start``."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imports_of(module_file(name))
    return {module_file(m).relative_to(ROOT) for m in seen}


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def test_registry_matches_dvc_yaml():
    """The DVC stages are the registry's pipeline stages in the registry's order, then the
    paper; each runs ``python -m analysis <command> <args>`` (per entry for foreach stages) and
    records its wall time as an output."""
    spec = dvc_stages()
    assert list(spec) == [s.name for s in stages.PIPELINE] + [stages.QUARTO_STAGE]
    for stage in stages.PIPELINE:
        entry = spec[stage.name]
        item = None
        if stage.foreach:
            assert entry["foreach"] == "${" + stage.foreach + "}"
            entry = entry["do"]
            # a mapping (conditions.pairs) is iterated by key, a list by item
            item = "${key}" if stage.foreach == "conditions.pairs" else "${item}"
        assert shlex.split(entry["cmd"]) == ["python", "-m", "analysis", stage.cli,
                                             *stage.argv(item)]
        assert stage.cli in stages.COMMANDS
        key = stage.cli + "".join(f"-{a}" for a in stage.argv(item)[1::2])
        expected = f"results/runtimes/{key}.json"
        outs = [o if isinstance(o, str) else next(iter(o)) for o in entry["outs"]]
        assert expected in outs, f"{stage.name}: runtime record {expected} is not an output"


def test_dvc_fans_out_per_condition_and_text_stages_read_no_image(tmp_path):
    """DVC's own resolution of dvc.yaml: one embed and one probe stage per text condition,
    whose deps name that condition's embeddings and never the images; image conditions' embed
    stages depend on the images manifest; each pair's stage on its two conditions only."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    names = proc.stdout.split()
    params = load_yaml((ROOT / "params.yaml").read_text())["conditions"]
    for cond in params["text"]:
        assert f"embed@{cond}" in names and f"probe_suite@{cond}" in names
    for cond in params["image"]:
        assert f"embed_image@{cond}" in names
    for pair in params["pairs"]:
        assert f"probe_suite_pairs@{pair}" in names
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        by_name = {s.addressing: s for s in repo.index.stages}
        for cond in params["text"]:
            for name in (f"embed@{cond}", f"probe_suite@{cond}"):
                deps = [str(Path(d.def_path)) for d in by_name[name].deps]
                assert not any(d.startswith(("data/images", "results/embeddings/clip_image"))
                               for d in deps), (name, deps)
                assert "results/embeddings" not in deps, (name, deps)
            assert "results/images/manifest.csv" not in [
                d.def_path for d in by_name[f"embed@{cond}"].deps]
        for cond in params["image"]:
            assert "results/images/manifest.csv" in [
                d.def_path for d in by_name[f"embed_image@{cond}"].deps]
        for pair, p in params["pairs"].items():
            emb = sorted(d.def_path for d in by_name[f"probe_suite_pairs@{pair}"].deps
                         if d.def_path.startswith("results/embeddings"))
            assert emb == sorted([f"results/embeddings/{p['image']}", f"results/embeddings/{p['text']}"])


def test_every_registered_module_has_main():
    import importlib

    for stage in stages.STAGES:
        assert callable(importlib.import_module(stage.module).main), stage.name


@pytest.mark.parametrize("stage", [s for s in stages.PIPELINE], ids=lambda s: s.name)
def test_stage_deps_cover_the_code_it_imports(stage):
    """A stage's deps list every analysis file its command imports (and the data files those
    modules read), so changing any of them makes `dvc status` report the stage as changed."""
    entry = dvc_stages()[stage.name]
    entry = entry.get("do", entry)
    deps = [d if isinstance(d, str) else next(iter(d)) for d in entry.get("deps", [])]
    files = closure(["analysis.__main__", stage.module])
    needed = sorted(str(f) for f in files if f.name != "__init__.py")
    needed += [r for f in list(needed) for r in RESOURCES.get(f, [])]
    missing = [f for f in needed if not covered(Path(f), deps)]
    assert not missing, f"dvc.yaml stage {stage.name}: add to deps: {missing}"
    code_deps = [d for d in deps if d.startswith("analysis/")]
    unused = [d for d in code_deps if not any(covered(Path(f), [d]) for f in needed)]
    assert not unused, f"dvc.yaml stage {stage.name}: deps it does not import: {unused}"
    for d in deps:
        if not d.startswith(("data/", "results/")):  # inputs made by other stages
            assert (ROOT / d).exists(), f"{stage.name}: dep {d} does not exist"


def test_package_init_files_hold_no_code():
    """Package ``__init__`` files are docstrings only (so they need not be stage deps)."""
    for init in PACKAGE.rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
                and not (isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "__version__")]
        assert not code, f"{init.relative_to(ROOT)} holds code: {[ast.unparse(n) for n in code]}"


def test_no_module_imports_in_a_cycle():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in imports_of(path) if m != name}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(nxt_ := node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[nxt_] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_each_stage_module_is_named_for_its_stage():
    """A newcomer goes from a dvc.yaml stage to its code in one hop: the module's file name is
    the stage's command (several stages may run one command, e.g. embed and embed_image)."""
    for stage in stages.STAGES:
        assert stage.module.rsplit(".", 1)[1] == stage.cli, stage


def test_paper_deps_cover_the_code_its_cells_import():
    """The paper stage runs ``python -m analysis paper``; its deps cover that command's code and
    what the manuscript's cells import (`analysis.report.paper_data`, `analysis.report.figures`)."""
    entry = dvc_stages()[stages.QUARTO_STAGE]
    assert shlex.split(entry["cmd"]) == ["python", "-m", "analysis", stages.QUARTO_STAGE]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in entry["deps"]]
    files = closure(["analysis.__main__", stages.get(stages.QUARTO_STAGE).module,
                     "analysis.report.paper_data", "analysis.report.figures"])
    needed = sorted(str(f) for f in files if f.name != "__init__.py")
    needed += [r for f in list(needed) for r in RESOURCES.get(f, [])]
    missing = [f for f in needed if not covered(Path(f), deps)]
    assert not missing, f"dvc.yaml stage paper: add to deps: {missing}"
