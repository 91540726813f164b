"""No import cycles inside accel_sim: the graph of every import statement (module level or
inside functions) between the package's modules, read from their source with ast, is acyclic."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "accel_sim"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict:
    """{module: set of accel_sim modules it imports}, __init__ modules as their package."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:   # relative: resolve against this module's package
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module
                targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in files else stem for alias in node.names]
            else:
                continue
            # names that are not Python files of ours (numpy, the compiled accel_sim._engine) are leaves
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict):
    """A cycle as a list of modules [m0, m1, ..., m0], or None (iterative depth-first search)."""
    state = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack, path = [(root, iter(sorted(graph[root])))], [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_graph_sees_imports():
    graph = import_graph()
    assert "accel_sim.array" in graph and "accel_sim.mac" in graph["accel_sim.array"]
    assert "accel_sim.formats" in graph["accel_sim.mac"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert find_cycle({"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg"}}) == ["pkg", "pkg.a", "pkg.b", "pkg"]


def test_no_import_cycle_in_accel_sim():
    """The package's __init__ is a node too: a module it imports that imports `accel_sim` back
    closes a cycle."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


if __name__ == "__main__":   # python tests/test_import_cycles.py: print the cycles one by one
    g = import_graph()
    while (c := find_cycle(g)):
        print(" -> ".join(c))
        g[c[-2]].discard(c[-1])
