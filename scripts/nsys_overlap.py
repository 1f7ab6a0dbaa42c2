#!/usr/bin/env python3
"""How much of a run's collective traffic overlaps compute, from an Nsight Systems SQLite export.

usage: nsys_overlap.py PROFILE.sqlite [--json OUT.json]

The compute stream is the one with the most kernel time. Communication is every NCCL kernel
(name containing "nccl", on any stream) and every device-to-device copy on a
stream that is not the compute stream: at world size 1 NCCL turns an all-gather into such a copy
on ProcessGroupNCCL's stream, at larger sizes it runs its kernels there. For each communication
operation it measures the time during which a compute-stream kernel runs at the same moment.
Prints one summary line; with --json also writes the figures. Reads only the CUPTI tables
(CUPTI_ACTIVITY_KIND_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, StringIds) that `nsys export --type
sqlite` writes. Not a profiler: it judges an existing profile.
"""
import argparse
import bisect
import json
import sqlite3
import sys

MEMCPY_DEVICE_TO_DEVICE = 8  # CUpti_ActivityMemcpyKind


def merged(intervals):
    """Sorted, non-overlapping union of (start, end) intervals."""
    out = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def covered(union, starts, start, end):
    """Length of [start, end) covered by the merged intervals `union` (`starts`: their starts)."""
    total = 0
    i = max(0, bisect.bisect_right(starts, start) - 1)
    while i < len(union) and union[i][0] < end:
        total += max(0, min(end, union[i][1]) - max(start, union[i][0]))
        i += 1
    return total


def table_exists(db, name):
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def analyse(path):
    db = sqlite3.connect(path)
    if not table_exists(db, "CUPTI_ACTIVITY_KIND_KERNEL"):
        raise SystemExit(f"{path}: no CUPTI_ACTIVITY_KIND_KERNEL table (profile without --trace=cuda?)")
    kernels = db.execute(
        "SELECT k.start, k.end, k.streamId, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k "
        "JOIN StringIds s ON s.id = k.shortName").fetchall()
    copies = []
    if table_exists(db, "CUPTI_ACTIVITY_KIND_MEMCPY"):
        copies = db.execute("SELECT start, end, streamId FROM CUPTI_ACTIVITY_KIND_MEMCPY WHERE copyKind = ?",
                            (MEMCPY_DEVICE_TO_DEVICE,)).fetchall()
    if not kernels:
        raise SystemExit(f"{path}: the profile holds no kernels")
    busy = {}
    for start, end, stream, name in kernels:
        if "nccl" not in name.lower():
            busy[stream] = busy.get(stream, 0) + (end - start)
    compute_stream = max(busy, key=busy.get)
    compute = merged((s, e) for s, e, stream, name in kernels if stream == compute_stream and "nccl" not in name.lower())
    starts = [s for s, _ in compute]
    # An NCCL kernel on the compute stream is communication that cannot overlap: it counts, at 0.
    communication = [(s, e, "nccl kernel") for s, e, stream, name in kernels if "nccl" in name.lower()]
    communication += [(s, e, "device copy") for s, e, stream in copies if stream != compute_stream]
    total = sum(e - s for s, e, _ in communication)
    overlapped = sum(covered(compute, starts, s, e) for s, e, _ in communication)
    any_overlap = sum(1 for s, e, _ in communication if covered(compute, starts, s, e) > 0)
    return {
        "compute_stream": compute_stream,
        "compute_kernel_seconds": sum(e - s for s, e in compute) / 1e9,
        "communication_ops": len(communication),
        "nccl_kernels": sum(1 for *_, kind in communication if kind == "nccl kernel"),
        "device_copies": sum(1 for *_, kind in communication if kind == "device copy"),
        "communication_seconds": total / 1e9,
        "overlapped_seconds": overlapped / 1e9,
        "overlap_fraction": overlapped / total if total else 0.0,
        "ops_with_any_overlap": any_overlap,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--json")
    args = parser.parse_args()
    result = analyse(args.profile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(f"overlap: {result['communication_ops']} communication ops ({result['nccl_kernels']} NCCL kernels, "
          f"{result['device_copies']} device copies off the compute stream), "
          f"{result['communication_seconds']:.4f} s, {100 * result['overlap_fraction']:.1f}% of it during compute "
          f"kernels; {result['ops_with_any_overlap']} ops overlap compute at all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
