"""An interactive Python for the terminal tests: a `wasi:cli/command` component made by
componentize-py (CPython in wasm). Run with a terminal (`ctr run -t`, `kubectl exec -it`), it
gives Python's prompt; each line typed is run, as in any Python REPL."""

import code
import sys

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        banner = f"Python {sys.version.split()[0]} (wasm) on wasmcell; exit() or Ctrl-D ends"
        code.interact(banner=banner, local={}, exitmsg="bye")
