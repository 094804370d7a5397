#!/usr/bin/env python3
"""Fails when the modules of a crate's `src/` import each other in a cycle.

Usage: check-module-cycles.py SRC_DIR...

A module is a file (`a/b.rs` and `a/b/mod.rs` are `a::b`); an edge is a `crate::` or `super::`
path in its code (comments and doc links do not count), resolved to the longest module prefix.
A child's use of its parent is not an edge (that is how Rust modules share their private
items); a parent's use of a child is.
"""
import collections
import os
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")
COMMENT = re.compile(r"(?m)^\s*//.*$")


def modules(root):
    """Module path -> file, for every `.rs` file under `root`."""
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            file = os.path.join(directory, name)
            parts = os.path.relpath(file, root)[: -len(".rs")].split("/")
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            found["::".join(parts)] = file
    return found


def edges(mods):
    """Module -> the modules its code names."""
    graph = collections.defaultdict(set)
    for module, file in mods.items():
        with open(file) as f:
            code = COMMENT.sub("", f.read())
        for base, path in PATH.findall(code):
            segments = [s for s in path.split("::") if s]
            if base == "super":
                segments = module.split("::")[:-1] + segments
            for k in range(len(segments), 0, -1):
                target = "::".join(segments[:k])
                if target in mods:
                    if target != module and not module.startswith(target + "::"):
                        graph[module].add(target)
                    break
    return graph


def cycles(graph, nodes):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def main(roots):
    failed = False
    for root in roots:
        mods = modules(root)
        graph = edges(mods)
        for component in cycles(graph, sorted(mods)):
            failed = True
            print(f"{root}: modules import each other in a cycle:")
            for module in component:
                print(f"  {module} -> {', '.join(sorted(graph[module] & set(component)))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    sys.exit(main(sys.argv[1:]))
