"""Keep the public API honest: exported names exist, are documented, and follow conventions."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import rankdist


def test_all_names_exist_and_are_documented():
    for name in rankdist.__all__:
        obj = getattr(rankdist, name)
        if callable(obj) and not isinstance(obj, dict):
            assert inspect.getdoc(obj), f"rankdist.{name} has no docstring"


def test_public_functions_document_their_parameters():
    for fn in (rankdist.ingest, rankdist.neighbors, rankdist.load, rankdist.purity_table):
        doc = inspect.getdoc(fn)
        assert "Parameters" in doc and "Returns" in doc, fn.__name__
        for param in inspect.signature(fn).parameters:
            assert param in doc, f"{fn.__name__}: parameter {param!r} not in its docstring"


def test_cluster_parameters_share_one_doc():
    """Every function that starts a cluster documents its options with the one shared text."""
    from rankdist.cluster._docs import CLUSTER_PARAMS
    from rankdist.cluster.client import cluster_client, doctor_report
    from rankdist.datasets.atlas import synth_atlas

    for fn in (rankdist.neighbors, synth_atlas, cluster_client, doctor_report):
        doc = inspect.getdoc(fn)
        assert "%(" not in doc, f"{fn.__name__}: a placeholder left in its docstring"
        for param in ("cluster", "workers", "jobs", "profile"):
            if param in inspect.signature(fn).parameters:
                assert CLUSTER_PARAMS[param] in doc, (
                    f"{fn.__name__} documents {param!r} in its own words; write "
                    f"%({param})s in its docstring and decorate it with "
                    "@doc_params(**CLUSTER_PARAMS) (rankdist/cluster/_docs.py)"
                )


def test_contract_signatures():
    ingest = inspect.signature(rankdist.ingest).parameters
    assert list(ingest)[:2] == ["source", "store_path"]
    for p in ("cell_type", "coarse_type", "batch", "genes"):
        assert ingest[p].default is None and ingest[p].kind is inspect.Parameter.KEYWORD_ONLY
    nb = inspect.signature(rankdist.neighbors).parameters
    assert list(nb)[:5] == ["store", "encoding", "k", "cutoffs", "client"]
    assert nb["encoding"].default == "spearman" and nb["client"].default is None
    assert set(rankdist.ENCODINGS) >= {"spearman", "pearson"}


# --- layout: the folder tree is the data flow ---------------------------------------------

PACKAGE = Path(rankdist.__file__).resolve().parent

#: Each part of rankdist may import only parts on lower rows (and its own modules).
#: Function-level (lazy) imports count the same as top-level ones.
LAYERS = (
    ("_lazy", "_progress", "layout"),
    ("io", "cluster"),
    ("encode",),
    ("reduce",),
    ("tiles",),
    ("request",),
    ("api", "analysis", "datasets"),
    ("pp",),
    ("planning", "report", "tl"),
    ("demo",),
    ("cli",),
)
RANK = {part: row for row, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """rankdist modules ``path`` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    here = _module_name(path).split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "rankdist"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "rankdist":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                if module == "rankdist" and alias.name in rankdist._EXPORTS:
                    found.add(rankdist._EXPORTS[alias.name])
                elif _is_module(sub):
                    found.add(sub)
                else:
                    found.add(module)
    return found


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _import_graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _import_graph()} - {"__init__"}
    assert parts <= set(RANK), f"add {sorted(parts - set(RANK))} to LAYERS"


def test_no_lower_layer_imports_a_higher_one():
    wrong = []
    for module, imported in _import_graph().items():
        if _part(module) == "__init__":
            continue  # the package's lazy public names (PEP 562) may point anywhere
        for other in imported:
            a, b = _part(module), _part(other)
            if a != b and b != "__init__" and RANK[b] >= RANK[a]:
                wrong.append(f"{module} imports {other}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    graph = _import_graph()
    # Tarjan would be shorter to state; the graph is small, so compare reachability.
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt in graph and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    cycles = sorted(
        f"{a} <-> {b}"
        for a in graph
        for b in reach[a]
        if a < b and a in reach[b] and not (b.startswith(a + ".") or a.startswith(b + "."))
    )
    assert not cycles, "\n".join(cycles)


def test_modules_stay_small():
    long = {
        _module_name(p): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


#: About 400 lines: a module a reader holds in their head.
MAX_MODULE_LINES = 420


# --- docs/architecture.md lists every module -------------------------------------------------

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

#: A row of the module table: ``| `io/store.py` | what it does |``, paths relative to rankdist/.
_MODULE_ROW = re.compile(r"^\|\s*`(?P<path>[^`]+\.py)`\s*\|", re.MULTILINE)


def test_architecture_doc_lists_every_module():
    listed = _MODULE_ROW.findall(ARCHITECTURE.read_text())
    on_disk = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
    doubled = sorted({path for path in listed if listed.count(path) > 1})
    missing = sorted(on_disk - set(listed))
    stale = sorted(set(listed) - on_disk)
    problems = []
    if missing:
        problems.append(f"modules missing from its module table (add a row each): {missing}")
    if stale:
        problems.append(f"rows for modules not under rankdist/ (remove them): {stale}")
    if doubled:
        problems.append(f"modules listed more than once: {doubled}")
    assert not problems, f"{ARCHITECTURE}: " + "; ".join(problems)


# --- Zarr is opened in one place, so every read of a chunk is checked --------------------

#: The module that owns how rankdist opens Zarr (checksums, required chunks).
ZARR_OPENER = "rankdist.io.verified"
_ZARR_OPENS = ("open_group", "open_array", "open", "open_consolidated")


def _direct_zarr_opens(path: Path) -> list[str]:
    """``zarr.open*(...)`` calls and ``from zarr import open*`` in ``path``, as text."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module in ("zarr", "zarr.api.synchronous"):
            names = [a.name for a in node.names if a.name in _ZARR_OPENS]
            found += [f"from {node.module} import {name}" for name in names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _ZARR_OPENS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "zarr"
        ):
            found.append(f"line {node.lineno}: zarr.{node.func.attr}(...)")
    return found


def test_zarr_is_opened_only_through_the_verified_module():
    direct = {
        _module_name(p): calls
        for p in sorted(PACKAGE.rglob("*.py"))
        + sorted((PACKAGE.parent / "benchmarks").glob("*.py"))
        if _module_name(p) != ZARR_OPENER and (calls := _direct_zarr_opens(p))
    }
    assert not direct, (
        f"open Zarr with {ZARR_OPENER}.open_group / open_array (chunks checked, every chunk "
        f"written), not zarr's own: {direct}"
    )
