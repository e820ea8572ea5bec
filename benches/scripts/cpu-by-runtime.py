#!/usr/bin/env python3
"""Where the CPU of a benchmark run goes, by runtime: reads `perf script --show-mmap-events
--show-task-events -F comm,pid` of a system-wide `perf record -a` and charges every sample to the
executable its process ran last (a process forked by containerd counts for the shim it execs),
then groups executables by runtime.

    perf record -a -F 999 -o perf.data -- target/release/wasmcell-bench --scenarios throughput ...
    perf script -i perf.data --show-mmap-events --show-task-events -F comm,pid | \
        python3 benches/scripts/cpu-by-runtime.py
"""
import collections
import re
import sys

GROUPS = [
    ("wasmcell (shims + cells)", ("containerd-shim-wasmcell-v1",)),
    ("reference (shims + containers)", ("containerd-shim-wasmref-v1",)),
    ("runc (shims, runc, busybox)", ("containerd-shim-runc-v2", "/runc", "busybox")),
    ("containerd", ("/containerd",)),
    ("bench driver", ("wasmcell-bench",)),
]

exe_of = {}
samples = collections.Counter()
mmap = re.compile(r"PERF_RECORD_MMAP2? (\d+)/\d+: .* r-xp (\S+)$")
for line in sys.stdin:
    m = mmap.search(line)
    if m:
        path = m.group(2)
        if ".so" not in path and not path.startswith("["):
            exe_of[int(m.group(1))] = path
        continue
    if "PERF_RECORD" in line:
        continue
    parts = line.split()
    if len(parts) >= 2 and parts[-1].isdigit():
        samples[int(parts[-1])] += 1

by_group = collections.Counter()
for pid, n in samples.items():
    exe = exe_of.get(pid, "")
    for name, markers in GROUPS:
        if any(exe.endswith(m) or m in exe for m in markers):
            by_group[name] += n
            break
    else:
        by_group["kernel threads, idle, other" if pid <= 0 or not exe else exe] += n

total = sum(by_group.values())
for name, n in by_group.most_common():
    print(f"{100.0 * n / total:6.1f}%  {n:8d}  {name}")
