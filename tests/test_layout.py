"""The package's layout: module-level imports form no cycle, and importing the package loads no pipeline."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "recbole_cora"


def module_imports(inside_functions=False):
    """{module: the package's modules it imports at module level (``inside_functions``: anywhere)}."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        found = set()
        tree = ast.parse(path.read_text())
        for node in (ast.walk(tree) if inside_functions else tree.body):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recbole_cora"):
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("recbole_cora")}
        graph[name] = {module for module in found if module in names and module != name}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_module_level_imports_form_no_cycle():
    graph = module_imports()
    assert "recbole_cora.training.trainer" in graph and "recbole_cora.plan" in graph
    assert cycles(graph) == []


def test_imports_inside_functions_form_no_cycle_either():
    # the layers run one way: the pipeline and runs -> training -> tasks -> models and data; a function-level
    # import that went back up would hide a cycle from the test above
    assert cycles(module_imports(inside_functions=True)) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_importing_the_package_loads_no_pipeline_until_it_is_used():
    code = ("import sys, recbole_cora; loaded = [m for m in ('recbole_cora.quick_start', 'recbole_cora.runs', "
            "'recbole_cora.training') if m in sys.modules]; print(loaded); "
            "from recbole_cora import run_recbole_cora; print(run_recbole_cora.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "recbole_cora.quick_start", out


def test_dependencies_run_one_way():
    graph = module_imports(inside_functions=True)
    above = {  # a layer never imports these (anywhere in its modules)
        "recbole_cora.model": ("recbole_cora.tasks", "recbole_cora.training", "recbole_cora.runs", "recbole_cora.config",
                               "recbole_cora.quick_start", "recbole_cora.stages"),
        "recbole_cora.tasks": ("recbole_cora.training", "recbole_cora.runs", "recbole_cora.quick_start",
                               "recbole_cora.stages"),
        "recbole_cora.training": ("recbole_cora.runs", "recbole_cora.quick_start", "recbole_cora.stages"),
    }
    wrong = sorted((module, other) for module, imports in graph.items() for layer, forbidden in above.items()
                   if module.startswith(layer) for other in imports if other.startswith(forbidden))
    assert wrong == []
