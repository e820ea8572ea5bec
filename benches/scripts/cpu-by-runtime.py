#!/usr/bin/env python3
"""Where the CPU of a benchmark run goes, by runtime: reads `perf script --show-mmap-events
--show-task-events -F comm,pid` of a system-wide `perf record -a` and charges every sample to the
executable its process ran last (a process forked by containerd counts for the shim it execs),
then groups executables by runtime.

    perf record -a -F 999 -o perf.data -- target/<host triple>/release/wasmcell-bench --scenarios throughput ...
    perf script -i perf.data --show-mmap-events --show-task-events -F comm,pid | \
        python3 benches/scripts/cpu-by-runtime.py
"""
import collections
import re
import sys

# An executable (or, for code mapped from a memfd or a bare "/", the command name) -> runtime.
GROUPS = [
    ("wasmcell (shims + cells)", ("containerd-shim-wasmcell-v1", ".cwasm")),
    ("reference (shims + containers)", ("containerd-shim-wasmref-v1", "comm:youki")),
    ("runc (shims, runc, busybox)", ("containerd-shim-runc-v2", "/runc", "busybox", "comm:runc")),
    ("containerd", ("/containerd",)),
    ("bench driver", ("wasmcell-bench",)),
]

exe_of = {}
samples = collections.Counter()
comm_samples = collections.Counter()
fork = re.compile(r"PERF_RECORD_FORK\((\d+):\d+\):\((\d+):\d+\)")
mmap = re.compile(r"^\s*(\S+)\s.*PERF_RECORD_MMAP2? (\d+)/\d+: .* r-xp (\S+)$")
for line in sys.stdin:
    m = mmap.search(line)
    if m:
        comm, pid, path = m.group(1), int(m.group(2)), m.group(3)
        if path in ("/", "//anon"):
            # runc and youki run a copy of themselves from a memfd: name them by command.
            exe_of[pid] = "comm:" + comm.split(":")[0]
        elif ".so" not in path and not path.startswith("["):
            exe_of[pid] = path
        continue
    f = fork.search(line)
    if f:
        # A process forked without exec (the shim daemon from `shim start`, a cell from the
        # zygote, any thread) runs its parent's executable until it maps another.
        child, parent = int(f.group(1)), int(f.group(2))
        if parent in exe_of:
            exe_of[child] = exe_of[parent]
        continue
    if "PERF_RECORD" in line:
        continue
    parts = line.split()
    if len(parts) >= 2 and parts[-1].isdigit():
        samples[int(parts[-1])] += 1
        comm_samples[(int(parts[-1]), " ".join(parts[:-1]))] += 1

by_group = collections.Counter()
for pid, n in samples.items():
    exe = exe_of.get(pid, "")
    for name, markers in GROUPS:
        if any(exe.endswith(m) or exe.startswith(m) or m in exe for m in markers):
            by_group[name] += n
            break
    else:
        by_group["kernel threads, idle, other" if pid <= 0 or not exe else exe] += n

total = sum(by_group.values())
for name, n in by_group.most_common():
    print(f"{100.0 * n / total:6.1f}%  {n:8d}  {name}")

# wasmcell's own processes by command name (threads are named by role).
ours = collections.Counter()
for (pid, comm), n in comm_samples.items():
    if any(m in exe_of.get(pid, "") for m in GROUPS[0][1]):
        ours[comm] += n
if ours:
    print("wasmcell by command (thread) name:")
    for comm, n in ours.most_common(12):
        print(f"{100.0 * n / total:6.1f}%  {n:8d}  {comm}")
