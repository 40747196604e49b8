"""The code's shape: imports go one way, our own modules are never imported
"maybe", and the docs cite only files that exist. Read from the source (AST),
so every import counts, the ones inside functions included."""
import ast
import builtins
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


def test_the_architecture_module_never_imports_torch():
    """Everything may import it (the torch reference, benchmarks, study tools): checking a spec
    needs the layer classes' shape rules, never torch."""
    tree = ast.parse((ROOT / "scratchcnn" / "architecture.py").read_text())
    modules = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
               for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in ([n] if isinstance(n, ast.ImportFrom) else n.names)}
    assert "torch" not in modules and "torch_reference" not in modules
    assert modules <= {"json", "keyword", "math", "os", "re", "typing", "difflib", "inspect", "scratchcnn"}


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


def _may_catch_import_error(handler):
    """Whether an ``except`` clause can catch the ImportError of a failed import: a bare
    ``except:``, ImportError or any base of ModuleNotFoundError (ModuleNotFoundError, ImportError,
    Exception, BaseException), alone or in a tuple. A name that is not a builtin exception class
    (an alias, ``builtins.ImportError``, a variable) counts as catching it: it cannot be told here."""
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for t in types:
        cls = getattr(builtins, t.id, None) if isinstance(t, ast.Name) else None
        if not (isinstance(cls, type) and issubclass(cls, BaseException)) or issubclass(ModuleNotFoundError, cls):
            return True
    return False


def _runs_in_the_try(body):
    """The nodes of a try body that run while its handlers are active: not the bodies of functions
    (or lambdas) defined there, which run later, whenever they are called."""
    todo = list(body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _guarded_imports(source, module="module", is_package=False):
    """Our modules imported inside a ``try`` (or ``try ... except*``) one of whose handlers can
    catch the ImportError, at any depth (function-level imports included). ``module``: the dotted
    name of the file (``is_package``: it is an ``__init__.py``), to name the target of a relative
    import, which is always one of ours."""
    guarded = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            continue
        if not any(_may_catch_import_error(h) for h in node.handlers):
            continue
        for n in _runs_in_the_try(node.body):
            if isinstance(n, ast.Import):
                guarded += [a.name for a in n.names if a.name.split(".")[0] in PACKAGES]
            elif isinstance(n, ast.ImportFrom) and n.level:
                parts = module.split(".")
                anchor = parts[:max(len(parts) - n.level + is_package, 0)]
                guarded.append(".".join(anchor + [n.module] if n.module else anchor)
                               or "." * n.level + (n.module or ""))
            elif isinstance(n, ast.ImportFrom) and n.module.split(".")[0] in PACKAGES:
                guarded.append(n.module)
    return guarded


# The one place that imports our modules inside a try/except, and why it is not a "maybe import":
# the benchmark worker's command loop catches every error of a command and replies it to the
# parent, whose WorkerProcess.call (benchmarks/_common.py) raises it. The imports are lazy so a
# worker only loads what its commands need (the memory benchmark measures the worker's RSS).
# Entries are (file, module imported); an entry that no longer matches fails the test.
ALLOWED_GUARDED = {
    ("benchmarks/_worker.py", "benchmarks._layer_ops"),
    ("benchmarks/_worker.py", "benchmarks._peak"),
}


def test_own_modules_are_never_imported_inside_a_try():
    """A try/except around our own module turns a typo into a silent fallback (a slowdown, a
    missing feature): whatever the handler catches, if it can catch the ImportError, refuse it."""
    found = {(str(p.relative_to(ROOT)), m) for name, p in MODULES.items()
             for m in _guarded_imports(p.read_text(), name, p.name == "__init__.py")}
    assert found - ALLOWED_GUARDED == set()
    assert ALLOWED_GUARDED - found == set(), "stale entries in ALLOWED_GUARDED"


_OURS = "    from scratchcnn.kernels import fused\n"


@pytest.mark.parametrize("handler", [
    "except ImportError:", "except ModuleNotFoundError:", "except Exception:",
    "except BaseException:", "except:", "except (ValueError, ImportError):",
    "except (OSError, Exception) as e:", "except builtins.ImportError:", "except ERRORS:",
    "except KeyError:\n    pass\nexcept Exception:", "except Exception as e:", "except (Exception,):",
    "except (KeyError, BaseException):", "except* Exception:",
])
def test_the_guard_checker_refuses_any_handler_that_can_catch_the_import_error(handler):
    assert _guarded_imports(f"try:\n{_OURS}{handler}\n    pass\n") == ["scratchcnn.kernels"]


@pytest.mark.parametrize("source, expected", [
    # function-level, nested in other statements, plain "import", every package, relative imports
    ("def f():\n    if x:\n        try:\n            import torch_reference.model as m\n"
     "        except Exception:\n            m = None\n", ["torch_reference.model"]),
    ("try:\n    for i in x:\n        import benchmarks._peak, numpy\nexcept:\n    pass\n",
     ["benchmarks._peak"]),
    ("try:\n    from . import fused\nexcept ImportError:\n    pass\n", ["scratchcnn.kernels"]),
    ("try:\n    from .fused import step\nexcept ImportError:\n    pass\n", ["scratchcnn.kernels.fused"]),
    ("try:\n    from .... import x\nexcept ImportError:\n    pass\n", ["...."]),
    # not guarded: third-party modules, no handler, a handler that cannot catch ImportError,
    # imports in else/finally or after the try, a function defined in the try (runs later)
    ("try:\n    import numba\nexcept ImportError:\n    numba = None\n", []),
    (f"try:\n{_OURS}finally:\n    pass\n", []),
    (f"try:\n{_OURS}except (OSError, KeyError):\n    pass\n", []),
    (f"try:\n    x = 1\nexcept Exception:\n    pass\nelse:\n{_OURS}", []),
    (f"try:\n    x = 1\nexcept Exception:\n    pass\nfinally:\n{_OURS}", []),
    (f"try:\n    def f():\n    {_OURS}except Exception:\n    pass\n", []),
])
def test_the_guard_checker_on_snippets(source, expected):
    assert _guarded_imports(source, "scratchcnn.kernels.step") == expected


def test_the_guard_checker_resolves_relative_imports_in_a_package():
    source = "try:\n    from . import fused\nexcept ImportError:\n    pass\n"
    assert _guarded_imports(source, "scratchcnn.kernels", is_package=True) == ["scratchcnn.kernels"]


_CITED = re.compile(r"`((?:scratchcnn|torch_reference|benchmarks|tests|docs|notebooks)/[\w./-]*)`")


@pytest.mark.parametrize("doc", ["README.md", "README.zh-CN.md", "benchmarks/README.md",
                                 *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_docs_cite_only_files_that_exist(doc):
    text = (ROOT / doc).read_text()
    cited = set(_CITED.findall(text))
    assert cited, f"{doc} cites no files at all?"
    missing = sorted(c for c in cited if not (ROOT / c.rstrip("/")).exists())
    assert missing == []


def test_no_file_cites_notes_outside_the_repository():
    """Facts are carried into the repository with how they were measured, not cited from elsewhere."""
    files = [p for pkg in (*PACKAGES, "tests") for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / "README.md", ROOT / "README.zh-CN.md", ROOT / "benchmarks" / "README.md",
              *(ROOT / "docs").glob("*.md")]
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if p != Path(__file__) and re.search(r"\bPERF\.md\b|\.\./shared/", p.read_text())]
    assert offenders == []
