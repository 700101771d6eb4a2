"""Reading the config file: safely (a regular file, bounded in bytes and in values once its YAML
aliases are expanded), as YAML with the location of every value, and its duplicate keys.

:func:`read_config_file` gives the data, the :class:`~pcswitcher.config.located.Marks` of its values and the
duplicate keys as problems; a file that cannot be read or parsed at all is a
:class:`~pcswitcher.errors.ConfigError` at once.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pcswitcher import paths
from pcswitcher.config.located import JsonPath, Marks, Problem, where
from pcswitcher.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "MAX_CONFIG_NODES", "read_config_file"]

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_CONFIG_BYTES = 1024 * 1024
#: The most values a config may hold, each alias counted as often as it is used: bounds the
#: work and memory a file of YAML aliases (a "billion laughs") could ask for.
MAX_CONFIG_NODES = 20_000


def _open_regular(path: Path) -> int:
    """Open ``path`` for reading if it is a regular file (never blocks on a FIFO or a device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}:1:1: the config file does not exist", paths.init_hint("-c", path)
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}:1:1: cannot read the config file: {exc.strerror or exc}",
            "check its permissions (it must be readable by you)",
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = (
            "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        )
        raise ConfigError(f"{path}:1:1: the config path is {kind}", "give the path of a config file")
    return fd


def _read(path: Path) -> str:
    fd = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{path}:1:1: cannot read the config file: {exc.strerror or exc}",
            "check that it is a readable file",
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}:1:1: the config file is larger than {MAX_CONFIG_BYTES // 1024} KiB",
            "give the pc-switcher config file (a few KiB), not another file",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: the config file is not UTF-8 text", "save it as UTF-8"
        ) from None


def _expanded_size(root: Node, limit: int) -> tuple[int, Node | None]:
    """The number of values the document holds once every alias is expanded (counting stops past
    ``limit``), and an alias that refers to a collection containing it (a cycle), if any."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_nodes:
            raise _Cycle(node)
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total = min(total + size(child), limit + 1)
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    try:
        return size(root), None
    except _Cycle as cycle:
        return 0, cycle.node
    except RecursionError:  # nested deeper than Python's stack: no config is
        return limit + 1, None


class _Cycle(Exception):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node


def _check_size(path: Path, root: Node) -> None:
    count, cycle = _expanded_size(root, MAX_CONFIG_NODES)
    if cycle is not None:
        mark = cycle.start_mark
        raise ConfigError(
            f"{path}:{mark.line + 1}:{mark.column + 1}: a YAML alias refers to a list or mapping "
            "that contains it (an endless value)",
            "write the values out instead of the alias (*name)",
        )
    if count > MAX_CONFIG_NODES:
        raise ConfigError(
            f"{path}:1:1: the config holds more than {MAX_CONFIG_NODES} values once its YAML aliases "
            "are expanded",
            "write the settings out without nested aliases (*name); a config needs far fewer values",
        )


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    line, column = 1, 1
    what = " ".join(str(exc).split())
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
        what = " ".join(p for p in (exc.context, exc.problem) if p) or what
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what = f"the character U+{code:04X} is not allowed"
    return ConfigError(
        f"{path}:{line}:{column}: invalid YAML: {what}",
        "fix the YAML syntax at that place (indent with spaces, quote values containing ': ' or '#')",
    )


def _key_of(loader: yaml.SafeLoader, node: Node) -> Any:
    if isinstance(node, ScalarNode):
        return loader.construct_object(node, deep=True)
    return None


def _find_duplicates(loader: yaml.SafeLoader, root: Node) -> list[Problem]:
    """Keys written twice in a mapping (PyYAML silently keeps the last one)."""
    problems: list[Problem] = []
    seen_nodes: set[int] = set()

    def walk(node: Node, path: JsonPath) -> None:
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[tuple[str, str], yaml.Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                if isinstance(key_node, ScalarNode):
                    ident = (key_node.tag, key_node.value)
                    key = _key_of(loader, key_node)
                    if ident in first:
                        mark = key_node.start_mark
                        problems.append(
                            Problem(
                                mark.line + 1,
                                mark.column + 1,
                                f"duplicate key {key!r} in {where(path)} "
                                f"(first defined at line {first[ident].line + 1})",
                                "remove one of the two: YAML would silently keep only the last one",
                                (*path, key),
                                priority=-1,
                            )
                        )
                    else:
                        first[ident] = key_node.start_mark
                    walk(value_node, (*path, key))
                else:
                    walk(value_node, (*path, None))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return problems


def _collect_marks(loader: yaml.SafeLoader, root: Node) -> Marks:
    marks = Marks()
    seen: set[int] = set()

    def walk(node: Node, path: JsonPath) -> None:
        marks.values[path] = node.start_mark
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:  # merges are flattened by now; last one wins
                key = _key_of(loader, key_node)
                try:
                    hash(key)
                except TypeError:
                    continue
                marks.keys[(*path, key)] = key_node.start_mark
                walk(value_node, (*path, key))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return marks


def _parse(path: Path, text: str) -> tuple[Any, Marks, list[Problem]]:
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_size(path, root)  # before anything expands the aliases
        # Duplicates first: constructing flattens merge keys (<<) into the nodes.
        duplicates = [] if root is None else _find_duplicates(loader, root)
        data = None if root is None else loader.construct_document(root)
        if root is None or data is None:  # no document, or an empty one ("---" alone)
            raise ConfigError(
                f"{path}:1:1: the config file is empty",
                "delete it and run `pc-switcher init` to write the default config, or write the settings",
            )
        marks = _collect_marks(loader, root)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None
    except RecursionError:
        raise ConfigError(
            f"{path}:1:1: the config nests lists or mappings too deeply",
            "write the settings with a few levels of nesting, as `pc-switcher init` does",
        ) from None
    finally:
        loader.dispose()
    return data, marks, duplicates


def read_config_file(path: Path) -> tuple[Any, Marks, list[Problem]]:
    """The data of the config file ``path``, where each value is, and its duplicate keys."""
    return _parse(path, _read(path))
