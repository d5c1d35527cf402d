"""Read a user's YAML file safely: bounded size, bounded alias expansion, no duplicate keys.

    text = read_text("clusters/mine.yaml", what="cluster file")
    data = loads(text, source="clusters/mine.yaml")

``read_text`` opens regular files only (a FIFO, a device such as ``/dev/zero``
or a directory is refused before anything is read) and reads at most
``MAX_BYTES``. ``loads`` composes the YAML node graph (linear in the text), then
refuses, before any Python object is built: aliases that would expand beyond
``MAX_NODES`` nodes (a "billion laughs" file) or refer to themselves, nesting
deeper than ``MAX_DEPTH``, and a key written twice in one mapping (YAML would
keep the last one silently). Messages name the file, line and column, never the
file's content (a YAML parser's own message quotes the offending line).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from .errors import ClusterFileError, XpuflowError, shown

__all__ = ["MAX_BYTES", "MAX_NODES", "MAX_DEPTH", "read_text", "loads"]

MAX_BYTES = 1 << 20  # a cluster profile is a few KB
MAX_NODES = 100_000  # YAML nodes once every alias is expanded
MAX_DEPTH = 64  # nesting of mappings and lists
_MERGE = "tag:yaml.org,2002:merge"


def read_text(path: str | os.PathLike[str], *, what: str, error: type[XpuflowError] = ClusterFileError,
              limit: int = MAX_BYTES, fix: str = "check the path; a profile is a few KB") -> str:
    """The UTF-8 text of the regular file at ``path``, at most ``limit`` bytes; ``error`` otherwise (``fix``: the
    advice when the file is too large)."""
    where = f"{what} {shown(os.fspath(path))}"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{where}: cannot read the file: {e.strerror}. Fix: check the path.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
            raise error(f"{where}: is {kind}. Fix: give the path of a YAML file.")
        if info.st_size > limit:  # refused before reading (the loop below bounds a file that grows meanwhile)
            raise error(f"{where}: is larger than {limit // 1024} KiB, too large for a {what}. Fix: {fix}.")
        chunks, held = [], 0
        while held <= limit:
            chunk = os.read(fd, min(limit + 1 - held, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            held += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise error(f"{where}: cannot read the file: {e.strerror}. Fix: check the path.") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{where}: is larger than {limit // 1024} KiB, too large for a {what}. Fix: {fix}.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}). "
                    "Fix: save it as UTF-8.") from None


def loads(text: str, source: str, *, error: type[XpuflowError] = ClusterFileError) -> Any:
    """Parse one YAML document with the safe loader, within the limits above."""
    import yaml  # imported here: keeps `import xpuflow` cheap

    if len(text) > MAX_BYTES:
        raise error(f"{source}: larger than {MAX_BYTES // 1024} KiB. Fix: a profile is a few KB.")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, source, error)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(e.problem or e.context or "cannot be parsed").split())[:120]
        raise error(f"{source}: not valid YAML{at}: {problem}. Fix: check indentation and quoting.") from None
    except yaml.reader.ReaderError as e:
        char = e.character if isinstance(e.character, int) else ord(e.character)
        raise error(f"{source}: not valid YAML: control character #x{char:04x} at offset {e.position}. "
                    "Fix: remove it; a profile is plain text.") from None
    except yaml.YAMLError as e:
        raise error(f"{source}: not valid YAML: {type(e).__name__}. Fix: check the file.") from None
    except RecursionError:
        raise error(f"{source}: nested more than {MAX_DEPTH} levels deep. Fix: check the file.") from None
    finally:
        loader.dispose()


def _check(root: Any, source: str, error: type[XpuflowError]) -> None:
    """Refuse self-referring aliases, expansion beyond MAX_NODES, depth beyond MAX_DEPTH, duplicate keys.

    Each node is visited once: an alias is a shared node, so its expanded size and height are
    memoised (size = 1 + the sizes of its children) and nothing is built. The recursion stops
    at MAX_DEPTH, so it stays far below Python's limit.
    """
    import yaml

    scalar, mapping = yaml.ScalarNode, yaml.MappingNode
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()

    def fail(node: Any, what: str) -> XpuflowError:
        return error(f"{source}: line {node.start_mark.line + 1}: {what}")

    def visit(node: Any, depth: int) -> int:
        if node.__class__ is scalar:
            return 1
        key = id(node)
        if key in size:
            if depth + height[key] > MAX_DEPTH:
                raise fail(node, f"nested more than {MAX_DEPTH} levels deep. Fix: check the file.")
            return size[key]
        if key in on_path:
            raise fail(node, "an alias refers to a value that contains it. Fix: remove the recursive alias.")
        if depth > MAX_DEPTH:
            raise fail(node, f"nested more than {MAX_DEPTH} levels deep. Fix: check the file.")
        on_path.add(key)
        if isinstance(node, mapping):
            _no_duplicate_keys(node, source, error, yaml)
            children = [n for pair in node.value for n in pair]
        else:
            children = node.value
        total = 1 + sum(visit(child, depth + 1) for child in children)
        on_path.discard(key)
        if total > MAX_NODES:
            raise fail(node, f"aliases expand to more than {MAX_NODES} values. Fix: write the values out; a profile "
                             "needs no alias bomb.")
        size[key] = total
        height[key] = 1 + max((height.get(id(c), 0) for c in children), default=0)
        return total

    visit(root, 1)


def _no_duplicate_keys(node: Any, source: str, error: type[XpuflowError], yaml: Any) -> None:
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
            continue
        if (key.tag, key.value) in seen:
            raise error(f"{source}: line {key.start_mark.line + 1}: key {shown(key.value)} appears twice in one "
                        "mapping (YAML would keep only the last). Fix: remove or rename one of them.")
        seen.add((key.tag, key.value))
