"""Reading a user's YAML text file, bounded: UTF-8 text only, no key given twice, no alias bomb, no nesting too deep.

The one owner of these rules for every command that reads a YAML file a user hands over: a study spec
(study/spec.py) and bma-trial's --config (bma/cli.py). It sits in bma, at the bottom of the package's layers, so
both import it downwards (tests/test_layers.py). Every problem is a ``SpecError`` naming the file (or the
``where`` given) and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# YAML aliases (*name) repeat a node without copying it: a few lines can stand for billions of values. A spec
# expands to a few hundred nodes (paper.yaml: ~100); refuse one that expands past this, before building it.
MAX_YAML_NODES = 50_000


class SpecError(ValueError):
    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s) in the study spec:\n  " + "\n  ".join(problems))


def read_text_file(path: Path, expected: str, max_bytes: int, where: str | None = None) -> str:
    """The UTF-8 text of ``path``; SpecError naming the file when it is missing, a folder, too large, binary or
    not UTF-8 (each is what a new user hands over by mistake: a results folder, a .db file, a Latin-1 export)."""
    where = where or str(path)
    problem, data = None, b""
    try:
        if path.is_dir():
            problem = f"{path}: is a folder (expected {expected})"
        elif not path.is_file():
            problem = f"{path}: no such file (expected {expected})"
        elif (size := path.stat().st_size) > max_bytes:
            problem = f"{path}: {size:,} bytes is too large (expected {expected}, at most {max_bytes:,} bytes)"
        else:
            data = path.read_bytes()
    except (OSError, ValueError) as exc:  # unreadable, a path with a NUL byte
        problem = f"{path}: cannot be read ({type(exc).__name__}: {exc}); expected {expected}"
    if problem is None and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        problem = f"{path}: UTF-16 text; expected {expected} saved as UTF-8"
    elif problem is None and b"\x00" in data:
        problem = f"{path}: not a text file (it holds NUL bytes: binary data); expected {expected}"
    if problem is None:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problem = (f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                       f"expected {expected} saved as UTF-8")
    raise SpecError(where, [problem])


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader; parse_yaml checks the composed node tree before any Python object is built."""


def parse_yaml(text: str, where: str = "<spec>") -> Any:
    """Parse YAML text, refusing what PyYAML accepts silently: a key given twice in one mapping (the last one
    would win), aliases that expand past MAX_YAML_NODES nodes or refer to themselves, and nesting too deep to
    parse. Raises SpecError."""
    raw, duplicates = _parse_yaml(text, where)
    if duplicates:
        raise SpecError(where, duplicates)
    return raw


def _parse_yaml(text: str, where: str) -> tuple[Any, list[str]]:
    """(the document, duplicate-key problems); SpecError for what cannot be parsed or expands too far."""
    loader = _SpecLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None, []
            problems, fatal = _node_problems(node)
            if fatal:
                raise SpecError(where, problems)
            return loader.construct_document(node), problems
        except yaml.YAMLError as exc:
            raise SpecError(where, [f"not valid YAML: {exc}"]) from None
        except RecursionError:
            raise SpecError(where, ["top level: YAML nested too deeply to parse; expected a study spec"]) from None
    finally:
        loader.dispose()


def _node_problems(root: yaml.Node) -> tuple[list[str], bool]:
    """(problems, fatal): duplicate keys (with their YAML path and lines), and whether the document expands past
    MAX_YAML_NODES or refers to itself (fatal: it must not be built). Sizes are counted once per distinct node, so
    an alias bomb is measured without being expanded."""
    problems: list[str] = []
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, path: str) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Recursive(path)
        active.add(key)
        kids: list[tuple[str, yaml.Node]] = []
        if isinstance(node, yaml.SequenceNode):
            kids = [(f"{path}[{i}]", v) for i, v in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                here = f"{path}.{name}" if path else name
                kids += [(here, k), (here, v)]
                if k.tag == "tag:yaml.org,2002:merge" or not isinstance(k, yaml.ScalarNode):
                    continue  # `<<: *base` merges a mapping in; keys written beside it override it by design
                if (k.tag, k.value) in seen:
                    problems.append(f"{here}: key given twice in one mapping (lines {seen[k.tag, k.value] + 1} and "
                                    f"{k.start_mark.line + 1}); YAML would silently keep the last one")
                else:
                    seen[k.tag, k.value] = k.start_mark.line
        total = 1
        for child_path, child in kids:
            total += size(child, child_path)
            if total > MAX_YAML_NODES:
                break
        active.discard(key)
        sizes[key] = total
        return total

    try:
        total = size(root, "")
    except _Recursive as exc:
        return [f"{exc.path or 'top level'}: a YAML alias refers to the node that contains it (a recursive "
                "structure); expected plain values"], True
    except RecursionError:
        return ["top level: YAML nested too deeply to parse; expected a study spec"], True
    if total > MAX_YAML_NODES:
        return [f"top level: the YAML expands to more than {MAX_YAML_NODES:,} values through its aliases (*name); "
                "expected a study spec of plain values (an alias bomb?)"], True
    return problems, False


class _Recursive(Exception):
    def __init__(self, path: str):
        self.path = path
