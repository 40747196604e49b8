"""The code's shape: imports go one way, our own modules are never imported
"maybe", and the docs cite only files that exist. Read from the source (AST),
so every import counts, the ones inside functions included."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scratchcnn", "torch_reference", "benchmarks")


def _modules():
    """{dotted module name: path} for every .py file of our packages."""
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imported(node, module, is_package):
    """The names of our modules that an Import / ImportFrom node imports."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:                                   # relative import
            anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(anchor + ([base] if base else []))
        # "from pkg import sub" imports the submodule pkg.sub when there is one
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return {n for n in names if n in MODULES}


def _graph():
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _imported(node, name, path.name == "__init__.py")
        graph[name] = deps - {name}
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None (depth-first search, three colours)."""
    colour, stack = {}, []

    def visit(m):
        colour[m] = "grey"
        stack.append(m)
        for d in sorted(graph[m]):
            if colour.get(d) == "grey":
                return stack[stack.index(d):] + [d]
            if d not in colour:
                found = visit(d)
                if found:
                    return found
        colour[m] = "black"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in colour:
            found = visit(m)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycles():
    graph = _graph()
    assert "scratchcnn.config" in graph["scratchcnn.checkpoint"]        # the graph is really read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_architecture_module_imports_nothing():
    """Everything may import it (the torch reference, benchmarks, the CLI's parser): it must stay light."""
    tree = ast.parse((ROOT / "scratchcnn" / "architecture.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [getattr(n, "module", None) for n in imports] == ["typing"]


def test_the_study_tools_know_no_web_page():
    """scratchcnn.study (and all it imports, transitively) imports nothing from scratchcnn.explore:
    the explorer builds on the study tools and registers its own command, never the other way."""
    graph = _graph()
    assert "scratchcnn.study.saliency" in graph["scratchcnn.explore.analysis"]   # the graph is really read
    reached, todo = set(), [m for m in graph if m == "scratchcnn.study" or m.startswith("scratchcnn.study.")]
    while todo:
        m = todo.pop()
        if m not in reached:
            reached.add(m)
            todo += graph[m]
    assert sorted(m for m in reached if m.split(".")[:2] == ["scratchcnn", "explore"]) == []


def _guarded_imports(path):
    """Modules imported inside a ``try`` whose handler catches ImportError / ModuleNotFoundError."""
    guarded = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for h in node.handlers:
            types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            for inner in node.body:
                for n in ast.walk(inner):
                    if isinstance(n, ast.Import):
                        guarded += [a.name for a in n.names]
                    elif isinstance(n, ast.ImportFrom):
                        guarded.append(n.module or "")
    return guarded


def test_only_optional_third_party_imports_are_guarded():
    """An ``except ImportError`` around our own module turns a typo into a silent slowdown."""
    ours = [(str(p.relative_to(ROOT)), m) for p in MODULES.values() for m in _guarded_imports(p)
            if m.split(".")[0] in PACKAGES]
    assert ours == []


_CITED = re.compile(r"`((?:scratchcnn|torch_reference|benchmarks|tests|docs|notebooks)/[\w./-]*)`")


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md"])
def test_docs_cite_only_files_that_exist(doc):
    text = (ROOT / doc).read_text()
    cited = set(_CITED.findall(text))
    assert cited, f"{doc} cites no files at all?"
    missing = sorted(c for c in cited if not (ROOT / c.rstrip("/")).exists())
    assert missing == []


def test_no_file_cites_notes_outside_the_repository():
    """Facts are carried into the repository with how they were measured, not cited from elsewhere."""
    files = [p for pkg in (*PACKAGES, "tests") for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if p != Path(__file__) and re.search(r"\bPERF\.md\b|\.\./shared/", p.read_text())]
    assert offenders == []
