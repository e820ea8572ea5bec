#!/usr/bin/env python3
"""Finds import circles between the files of each crate of the workspace.

A file "imports" another when it names an item of the other's module: a `use` of it, a path
through it (`crate::a::b::f()`, `super::X`, `child::f()`), or a re-export. A circle is a set of
files each of which reaches the others through such imports; the layering rule is that there is
none, so every file can be read knowing only what it imports. A file declaring a submodule
(`mod child;`) does not import it by that alone.

    test/scripts/module-cycles.py [CRATE_DIR ...]   (default: every member of the workspace)

Prints each circle with the names that make each of its edges, and exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

# Comments, then string and char literals, are blanked before anything is parsed; a raw string
# (r"..", r#".."#) is rare in this code and handled by the same pass.
TOKEN = re.compile(
    r'//[^\n]*'                      # line comment (doc comments included)
    r'|/\*.*?\*/'                    # block comment (not nested: none of ours are)
    r'|r(#*)".*?"\1'                 # raw string
    r'|b?"(?:\\.|[^"\\])*"'          # string
    r"|b?'(?:\\.|[^'\\\n])'",        # char (a lifetime has no closing quote)
    re.S,
)
MOD_DECL = re.compile(r'(?:#\[([^\]]*)\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])')
PATH_ATTR = re.compile(r'path\s*=\s*"([^"]+)"')
USE = re.compile(r'\buse\s+([^;]+);')
PUB_USE = re.compile(r'\bpub(?:\([^)]*\))?\s+use\s+([^;]+);')
PATH = re.compile(r'(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::\w+)+)')


def strip(text):
    return TOKEN.sub(lambda m: '"' if m.group(0).startswith(('"', 'b"', 'r')) else ' ', text)


def expand_use(tree):
    """`a::{b, c::{d, e}}` → ['a::b', 'a::c::d', 'a::c::e'] (renames dropped)."""
    tree = re.sub(r'\s+', '', re.sub(r'\s+as\s+\w+', '', tree))
    out = []

    def walk(prefix, part):
        depth, start, items = 0, 0, []
        for i, ch in enumerate(part):
            if ch == '{':
                depth += 1
            elif ch == '}':
                depth -= 1
            elif ch == ',' and depth == 0:
                items.append(part[start:i])
                start = i + 1
        items.append(part[start:])
        for item in items:
            if not item:
                continue
            if '{' in item:
                head, rest = item.split('{', 1)
                walk(prefix + head, rest[: rest.rfind('}')])
            else:
                out.append(prefix + item)

    walk('', tree)
    return [p.rstrip(':') for p in out]


class Crate:
    def __init__(self, root):
        self.root = root
        self.modules = {}   # module path tuple -> file
        self.children = {}  # module path tuple -> set of child names
        self.reexports = {}  # module path tuple -> {name: path segments it re-exports}
        for top in ('lib.rs', 'main.rs'):
            f = root / 'src' / top
            if f.exists():
                self.load((), f)

    def load(self, path, file):
        self.modules[path] = file
        self.children.setdefault(path, set())
        text = strip(file.read_text())
        for m in PUB_USE.finditer(text):
            for p in expand_use(m.group(1)):
                segs = p.split('::')
                if segs[-1] not in ('*', 'self'):
                    self.reexports.setdefault(path, {})[segs[-1]] = segs
        for m in MOD_DECL.finditer(text):
            attrs, name, kind = m.group(1) or '', m.group(2), m.group(3)
            child = path + (name,)
            self.children[path].add(name)
            if kind == '{':
                # An inline module is part of its file; paths through it land on this file.
                self.modules[child] = file
                self.children.setdefault(child, set())
                continue
            here = file.parent if file.name in ('lib.rs', 'main.rs', 'mod.rs') else file.parent / file.stem
            explicit = PATH_ATTR.search(attrs)
            candidates = [file.parent / explicit.group(1)] if explicit else [here / f'{name}.rs', here / name / 'mod.rs']
            for c in candidates:
                if c.exists():
                    self.load(child, c)
                    break

    def module_of_file(self, file):
        return min((p for p, f in self.modules.items() if f == file), key=len)

    def resolve(self, current, segments, depth=0):
        """The module a path names an item of, or None for another crate's path. A name a
        module re-exports (`pub use error::Error`) resolves to where it is defined."""
        first, rest = segments[0], segments[1:]
        if first == 'crate':
            mod = ()
        elif first == 'self':
            mod = current
        elif first == 'super':
            mod = current[:-1]
            while rest and rest[0] == 'super':
                mod, rest = mod[:-1], rest[1:]
        elif first in self.children.get(current, ()):
            mod, rest = current + (first,), rest
        else:
            return None
        for seg in rest:
            if seg in self.children.get(mod, ()):
                mod = mod + (seg,)
                continue
            again = self.reexports.get(mod, {}).get(seg)
            if again and depth < 8:
                return self.resolve(mod, again, depth + 1) or mod
            break
        return mod

    def scopes(self, mod, text):
        """(start, end, module path) of the file's inline modules, innermost last."""
        out = [(0, len(text), mod)]
        for m in MOD_DECL.finditer(text):
            if m.group(3) != '{':
                continue
            depth, i = 1, m.end()
            while i < len(text) and depth:
                depth += {'{': 1, '}': -1}.get(text[i], 0)
                i += 1
            outer = max((s for s in out if s[0] <= m.start() < s[1]), key=lambda s: s[0])
            out.append((m.start(), i, outer[2] + (m.group(2),)))
        return out

    def edges(self):
        """{(from_file, to_file): set of names}."""
        found = {}
        for mod, file in self.modules.items():
            if mod and self.modules.get(mod[:-1]) == file:
                continue  # an inline module: scanned with its file
            text = strip(file.read_text())
            scopes = self.scopes(mod, text)

            def scope_at(pos):
                return max((s for s in scopes if s[0] <= pos < s[1]), key=lambda s: s[0])[2]

            paths = []
            for m in USE.finditer(text):
                paths += [(m.start(), p) for p in expand_use(m.group(1))]
            blanked = USE.sub(lambda m: ' ' * len(m.group(0)), text)
            paths += [(m.start(), m.group(1)) for m in PATH.finditer(blanked)]
            for pos, p in paths:
                segs = [s for s in p.split('::') if s and s != '*']
                if not segs:
                    continue
                target = self.resolve(scope_at(pos), segs)
                if target is None:
                    continue
                to = self.modules.get(target)
                if to is not None and to != file:
                    found.setdefault((file, to), set()).add('::'.join(segs))
        return found


def circles(edges):
    """Strongly connected components of more than one file (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def workspace_members(top):
    """The `members` of the workspace's Cargo.toml."""
    import tomllib
    with open(top / 'Cargo.toml', 'rb') as f:
        members = tomllib.load(f)['workspace']['members']
    return [top / m for m in members]


def main(argv):
    top = Path(__file__).resolve().parents[2]
    dirs = [Path(a) for a in argv] or workspace_members(top)
    status = 0
    for d in dirs:
        crate = Crate(d.resolve())
        edges = crate.edges()
        for comp in circles(edges):
            status = 1
            rel = lambda f: str(f.relative_to(top)) if f.is_relative_to(top) else str(f)
            print(f'import circle in {rel(d.resolve())}:')
            members = set(comp)
            for (a, b), names in sorted(edges.items()):
                if a in members and b in members:
                    print(f'  {rel(a)} -> {rel(b)}: {", ".join(sorted(names))}')
    if status == 0:
        print(f'module-cycles: no import circle in {len(dirs)} crates')
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
