"""No import circles between the project's modules, counting imports made inside functions.

One exception, and the test lists it: a module's command-line entry (the code under
`if __name__ == "__main__":` and a function only that block calls) may import a higher
module. Run as a script, the file is the module `__main__`, so the higher module imports a
fresh copy of it, not a half-initialised one; `import schedule` or `import mup` never
imports train.py or model.py."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_files(root):
    """{module name: path} for the top-level files and gpu_tests/ (tests/ import everything)."""
    files = {p.stem: p for p in root.glob("*.py")}
    files.update({f"gpu_tests.{p.stem}": p for p in (root / "gpu_tests").glob("*.py")})
    return files


def _is_main_guard(node):
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def _imported(node, modules):
    """The project modules an Import/ImportFrom node names."""
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
        [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        for candidate in (name, name.split(".")[0]):
            if candidate in modules:
                out.add(candidate)
                break
    return out


def _imports_in(nodes, modules):
    return {m for n in nodes for sub in ast.walk(n) if isinstance(sub, (ast.Import, ast.ImportFrom))
            for m in _imported(sub, modules)}


def _names_used(nodes):
    return {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for node in nodes for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _uses(tree, mod, name):
    """Whether another module's code refers to mod.name (`from mod import name` or `m.name`
    with m bound by `import mod [as m]`)."""
    aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
               for a in n.names if a.name == mod}
    return any((isinstance(n, ast.ImportFrom) and n.module == mod and name in {a.name for a in n.names})
               or (isinstance(n, ast.Attribute) and n.attr == name and isinstance(n.value, ast.Name)
                   and n.value.id in aliases) for n in ast.walk(tree))


def import_graph(root):
    """-> (edges {module: {imported modules}}, entry edges {(module, imported)}): imports
    anywhere in a file count, except in its command-line entry (see the module docstring)."""
    files = module_files(root)
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in files.items()}
    edges, entry_edges = {}, set()
    for mod, tree in trees.items():
        guards = [n for n in tree.body if _is_main_guard(n)]
        called = {c.func.id for g in guards for c in ast.walk(g)
                  if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
        defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        entries = []
        for name in called & set(defs):
            rest = [n for n in tree.body if n is not defs[name] and n not in guards]
            used_here = name in _names_used(rest)
            used_elsewhere = any(_uses(t, mod, name) for other, t in trees.items() if other != mod)
            if not used_here and not used_elsewhere:
                entries.append(defs[name])
        body = [n for n in tree.body if n not in guards and n not in entries]
        edges[mod] = _imports_in(body, files) - {mod}
        entry_edges |= {(mod, m) for m in _imports_in(guards + entries, files) - {mod} - edges[mod]}
    return edges, entry_edges


def find_cycle(edges):
    """One import cycle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None
    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_project_has_no_import_cycle():
    edges, _ = import_graph(ROOT)
    assert {"train", "checkpoint", "model", "mup", "schedule"} <= set(edges)
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
    # The layering the design states: lower modules never import higher ones.
    assert edges["mup"] <= {"prepare"} and "train" not in edges["schedule"]
    assert "train" not in edges["checkpoint"] and "checkpoint" in edges["train"]


def test_only_these_command_line_entries_import_a_higher_module():
    _, entry_edges = import_graph(ROOT)
    # mup.py's coordinate check builds Xmodels; schedule.py's table reads configs with
    # train.load_config. Neither import runs on `import mup` / `import schedule`.
    assert entry_edges == {("mup", "model"), ("schedule", "train")}


def test_a_cycle_made_inside_a_function_is_found(tmp_path):
    (tmp_path / "gpu_tests").mkdir()
    (tmp_path / "low.py").write_text("def helper():\n    import high\n    return high\n")
    (tmp_path / "high.py").write_text("import low\n")
    edges, _ = import_graph(tmp_path)
    assert find_cycle(edges) == ["high", "low", "high"]
    # ... while a command-line entry that nothing else calls does not count.
    (tmp_path / "low.py").write_text("def main():\n    import high\n\n"
                                     "if __name__ == '__main__':\n    main()\n")
    edges, entry_edges = import_graph(tmp_path)
    assert find_cycle(edges) is None and entry_edges == {("low", "high")}
    # A "main" that another module calls is library code again.
    (tmp_path / "high.py").write_text("import low\nlow.main()\n")
    assert find_cycle(import_graph(tmp_path)[0]) == ["high", "low", "high"]
