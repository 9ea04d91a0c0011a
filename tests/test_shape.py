"""The library's shape: no import cycle in mlp/ (imports inside functions included)."""

import ast
from pathlib import Path

import pytest

MLP = Path(__file__).resolve().parents[1] / "mlp"


def module_name(path: Path) -> str:
  rel = path.relative_to(MLP.parent).with_suffix("")
  parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
  return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
  """The mlp modules a file imports, anywhere in it (``from mlp import x`` names module x)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name in modules}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:
        full = f"{node.module}.{a.name}"
        out.add(full if full in modules else node.module)
  return {m for m in out if m in modules and m != "mlp"}


def graph() -> dict[str, set[str]]:
  files = {module_name(p): p for p in MLP.rglob("*.py")}
  modules = set(files)
  return {m: imports_of(p, modules) - {m} for m, p in files.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m: str) -> list[str] | None:
    state[m] = 1
    stack.append(m)
    for n in sorted(g.get(m, ())):
      if state.get(n) == 1:
        return stack[stack.index(n) :] + [n]
      if n not in state and (c := visit(n)):
        return c
    stack.pop()
    state[m] = 2
    return None

  for m in sorted(g):
    if m not in state and (c := visit(m)):
      return c
  return None


def test_no_import_cycle_in_mlp():
  cycle = find_cycle(graph())
  assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
  g = graph()
  g["mlp.plan"] = g["mlp.plan"] | {"mlp.study"}  # study imports plan: now a cycle
  cycle = find_cycle(g)
  assert cycle is not None and "mlp.plan" in cycle and "mlp.study" in cycle


@pytest.mark.parametrize("name", ["mlp.study", "mlp.schedule", "mlp.crossval"])
def test_the_graph_sees_function_level_imports(name):
  assert name in graph()
  assert "mlp.plan" in graph()[name]
