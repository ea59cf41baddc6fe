#!/usr/bin/env python3
"""Import circles between the top-level modules of each crate of the workspace.

A module's files (`src/m.rs`, `src/m/**`) refer to other top-level modules through `crate::x`,
`crate::{x, y::z}` and, in `src/m.rs` itself, `super::x`; test code (`#[cfg(test)]` to the end of
the file) and comments are left out. Two modules that reach each other through such references form a circle.
Prints every circle and exits 1 if there is one; `just lint` runs it.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["services/*/src", "gateway/src", "libs/*/src", "examples/*/src", "tests/src", "bench/src"]


def top_modules(src):
    modules = {}
    for path in src.rglob("*.rs"):
        parts = path.relative_to(src).parts
        if parts in (("lib.rs",), ("main.rs",)) or parts[0] == "bin":
            continue
        name = parts[0][:-3] if len(parts) == 1 else parts[0]
        modules.setdefault(name, []).append(path)
    return modules


def code_of(text):
    """The file without its test code and without comments (doc links are not imports)."""
    cut = re.search(r"^\s*#\[cfg\((all\()?test", text, re.M)
    text = text[: cut.start()] if cut else text
    return re.sub(r"(^|\s)//.*$", "", text, flags=re.M)


def names_in_braces(text, start):
    """The first path segment of each item of the `{...}` group that opens at `start`."""
    depth, item, names, i = 0, "", [], start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == "}":
            depth -= 1
            if depth == 0:
                names.append(item)
                break
        if depth == 1 and c == ",":
            names.append(item)
            item = ""
        elif depth >= 1:
            item += c
        i += 1
    return [re.split(r"::|\s", n.strip())[0] for n in names if n.strip()]


def references(path, text, is_top_file):
    found = set()
    prefixes = ["crate"] + (["super"] if is_top_file else [])
    for prefix in prefixes:
        for m in re.finditer(rf"\b{prefix}::(\{{|[A-Za-z_][A-Za-z0-9_]*)", text):
            if m.group(1) == "{":
                found.update(names_in_braces(text, m.end() - 1))
            else:
                found.add(m.group(1))
    return found


def edges(src):
    modules = top_modules(src)
    graph = {name: set() for name in modules}
    for name, files in modules.items():
        for path in files:
            text = code_of(path.read_text())
            is_top = path.parent == src
            for target in references(path, text, is_top):
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def circles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    failed = False
    for pattern in CRATES:
        for src in sorted(ROOT.glob(pattern)):
            graph = edges(src)
            for component in circles(graph):
                failed = True
                inner = [f"{a}->{b}" for a in component for b in sorted(graph[a]) if b in component]
                print(f"{src.relative_to(ROOT)}: circle {', '.join(component)} ({'; '.join(inner)})")
    if not failed:
        print("import-circles: none")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
