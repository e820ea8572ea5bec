#!/usr/bin/env python3
"""Finds import circles between the files of each crate of the workspace.

A file "imports" another when it names an item of the other's module: a `use` of it, a path
through it (`crate::a::b::f()`, `super::X`, `child::f()`), or a re-export. A circle is a set of
files each of which reaches the others through such imports; the layering rule is that there is
none, so every file can be read knowing only what it imports. A file declaring a submodule
(`mod child;`) does not import it by that alone.

    test/scripts/module-cycles.py [CRATE_DIR ...]   (default: every member of the workspace)
    test/scripts/module-cycles.py --self-test       (the checker on crates made for it)

Prints each circle with the names that make each of its edges, and exits 1 if there is any;
exits 2 when a declared module's file cannot be found (so nothing goes unread). Macros are not
followed: a `macro_rules!` used from another file is no edge (none of the workspace's crates
defines one for another file).
"""

import re
import sys
from pathlib import Path

# Comments, then string and char literals, are blanked before anything is parsed, keeping every
# character's position (so a span of the blanked text is the same span of the source); a raw
# string (r"..", r#".."#) is handled by the same pass.
TOKEN = re.compile(
    r'//[^\n]*'                      # line comment (doc comments included)
    r'|/\*.*?\*/'                    # block comment (not nested: none of ours are)
    r'|r(#*)".*?"\1'                 # raw string
    r'|b?"(?:\\.|[^"\\])*"'          # string
    r"|b?'(?:\\.|[^'\\\n])'",        # char (a lifetime has no closing quote)
    re.S,
)
MOD_DECL = re.compile(r'((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])')
PATH_ATTR = re.compile(r'path\s*=\s*"([^"]+)"')
USE = re.compile(r'\buse\s+([^;]+);')
PUB_USE = re.compile(r'\bpub(?:\([^)]*\))?\s+use\s+([^;]+);')
PATH = re.compile(r'(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::\w+)+)')


def strip(text):
    def blank(m):
        token = m.group(0)
        fill = re.sub(r'[^\n]', ' ', token)
        if token.startswith(('"', 'b"', 'r')):
            return '"' + fill[1:-1] + '"' if len(token) > 1 else fill
        return fill
    return TOKEN.sub(blank, text)


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
        self.missing = []  # (declaring file, module name) of declared modules with no file
        for top in ('lib.rs', 'main.rs'):
            f = root / 'src' / top
            if f.exists():
                self.load((), f)

    def load(self, path, file):
        self.modules[path] = file
        self.children.setdefault(path, set())
        raw = file.read_text()
        text = strip(raw)
        scopes = self.scopes(path, text)
        for m in PUB_USE.finditer(text):
            for p in expand_use(m.group(1)):
                segs = p.split('::')
                if segs[-1] not in ('*', 'self'):
                    self.reexports.setdefault(path, {})[segs[-1]] = segs
        for m in MOD_DECL.finditer(text):
            name, kind = m.group(2), m.group(3)
            # Attributes are read from the source: the blanked text has no string in them.
            attrs = raw[m.start(1):m.end(1)]
            outer = max((sc for sc in scopes if sc[0] <= m.start() < sc[1]), key=lambda sc: sc[0])[2]
            child = outer + (name,)
            self.children.setdefault(outer, set()).add(name)
            if kind == '{':
                # An inline module is part of its file; paths through it land on this file.
                self.modules[child] = file
                self.children.setdefault(child, set())
                continue
            here = file.parent if file.name in ('lib.rs', 'main.rs', 'mod.rs') else file.parent / file.stem
            here = here.joinpath(*outer[len(path):])
            explicit = PATH_ATTR.search(attrs)
            candidates = [file.parent / explicit.group(1)] if explicit else [here / f'{name}.rs', here / name / 'mod.rs']
            for c in candidates:
                if c.exists():
                    self.load(child, c)
                    break
            else:
                self.missing.append((file, name))

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
            globs = {}  # scope -> modules whose names `use X::*` brings in
            for m in USE.finditer(text):
                for p in expand_use(m.group(1)):
                    paths.append((m.start(), p))
                    segs = p.split('::')
                    if segs[-1] == '*':
                        scope = scope_at(m.start())
                        source = self.resolve(scope, segs[:-1] or ['self'])
                        if source is not None:
                            globs.setdefault(scope, []).append(source)
            blanked = USE.sub(lambda m: ' ' * len(m.group(0)), text)
            paths += [(m.start(), m.group(1)) for m in PATH.finditer(blanked)]
            for pos, p in paths:
                segs = [s for s in p.split('::') if s and s != '*']
                if not segs:
                    continue
                scope = scope_at(pos)
                target = self.resolve(scope, segs)
                if target is None:
                    # A name a glob import brought in (`use super::*;` then `sibling::f()`).
                    for source in globs.get(scope, []):
                        target = self.resolve(source, ['self'] + segs)
                        if target is not None and target != source:
                            break
                    else:
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


# Crates the checker must get right, each a dict of files: one with a circle (`circle`) of the
# shapes this script reads, one without (`clean`). `--self-test` runs them.
SELF_TEST = {
    'plain': (True, {
        'lib.rs': 'mod a;\nmod b;\n',
        'a.rs': 'use crate::b::g;\npub fn f() { g() }\n',
        'b.rs': 'pub fn g() { crate::a::f() }\n'}),
    'path attribute after another attribute': (True, {
        'lib.rs': '#[path = "impl/x.rs"]\n#[allow(dead_code)]\nmod a;\nmod b;\n',
        'impl/x.rs': 'pub fn f() { crate::b::g() }\n',
        'b.rs': 'pub fn g() { crate::a::f() }\n'}),
    'a sibling named through a glob import': (True, {
        'lib.rs': 'mod m;\n',
        'm/mod.rs': 'mod a;\nmod b;\n',
        'm/a.rs': 'use super::*;\npub fn f() { b::g() }\n',
        'm/b.rs': 'pub fn g() { super::a::f() }\n'}),
    'file modules declared in an inline module': (True, {
        'lib.rs': 'mod outer {\n    pub mod a;\n    pub mod b;\n}\n',
        'outer/a.rs': 'pub fn f() { crate::outer::b::g() }\n',
        'outer/b.rs': 'pub fn g() { crate::outer::a::f() }\n'}),
    'a re-export used from a child': (True, {
        'lib.rs': 'mod a;\nmod b;\npub use a::f;\n',
        'a.rs': 'pub fn f() { crate::b::g() }\n',
        'b.rs': 'pub fn g() { crate::f() }\n'}),
    'layers, and names in comments and strings': (False, {
        'lib.rs': 'mod a;\nmod b;\npub use b::g;\n',
        'a.rs': '// crate::b::g() is not called here\npub fn f() -> &\'static str { "crate::b::g" }\n',
        'b.rs': 'pub fn g() { crate::a::f(); }\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n'}),
}


def self_test():
    import tempfile
    failures = 0
    for name, (has_circle, files) in SELF_TEST.items():
        with tempfile.TemporaryDirectory() as d:
            for rel, text in files.items():
                f = Path(d) / 'src' / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(text)
            crate = Crate(Path(d))
            found = bool(circles(crate.edges())) or bool(crate.missing)
            if found != has_circle:
                failures += 1
                print(f'module-cycles self-test: {name}: circle found: {found}, expected: {has_circle}')
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / 'src').mkdir()
        (Path(d) / 'src' / 'lib.rs').write_text('mod gone;\n')
        if not Crate(Path(d)).missing:
            failures += 1
            print('module-cycles self-test: a module without its file is not reported')
    print(f'module-cycles self-test: {len(SELF_TEST) + 1 - failures} passed, {failures} failed')
    return 1 if failures else 0


def main(argv):
    if argv == ['--self-test']:
        return self_test()
    top = Path(__file__).resolve().parents[2]
    dirs = [Path(a) for a in argv] or workspace_members(top)
    status = 0
    for d in dirs:
        crate = Crate(d.resolve())
        for file, name in crate.missing:
            print(f'module-cycles: {file}: no file for `mod {name};`', file=sys.stderr)
            status = 2
        edges = crate.edges()
        for comp in circles(edges):
            status = max(status, 1)
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
