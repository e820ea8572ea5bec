"""The benchmark's large program: a `wasi:cli/command` component made by componentize-py, which
embeds CPython (about 18 MiB of wasm). It prints one line, so a start measures loading and
instantiating the interpreter, not running Python code."""

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        print("large component ok")
