"""Speed-up table from a pytest-benchmark JSON: each peer's median over ours, per group.

    python benches/report.py benches/results/cpu-2core.json [more.json ...] [--readme README.md]
        [--scaling cpu-1thread.json cpu-2threads.json]

Round-robin timings (benches/_inputs.bench_interleaved) count as one entry each. Entries
whose name starts with "medgan_fast" are ours, "none" is a baseline without the
feature (its group also gets an overhead table), every other entry is a peer. Each
peer is compared with the entry of ours that shares its suffix ("cv2_with_stats" with
"medgan_fast_with_stats", "kornia_cuda" with "medgan_fast_cuda"), else with the group's
first entry of ours. With --readme the
table replaces the text between <!-- bench-table:start --> and <!-- bench-table:end -->,
so the README's numbers always come from a saved run.
"""

import argparse
import json
import sys
from pathlib import Path

START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def entry_name(bench: dict) -> str:
    """The entry a benchmark times (benches/_inputs.bench records it), e.g. "scipy"."""
    return bench.get("extra_info", {}).get("entry", bench["name"])


def expand_interleaved(bench: dict) -> list[dict]:
    """A benchmark that timed several entries round-robin (_inputs.bench_interleaved) stands
    for all of them, each with its own median."""
    interleaved = bench.get("extra_info", {}).get("interleaved")
    if not interleaved:
        return [bench]
    return [{"name": bench["name"], "group": bench["group"], "extra_info": {"entry": entry},
             "stats": {"median": stats["median"]}, "paired_overhead": stats.get("paired_overhead")}
            for entry, stats in interleaved.items()]


def machine_line(data: dict) -> str:
    info = data.get("machine_info", {})
    ours = info.get("medgan_fast", {})
    parts = [ours.get("cpu_model") or info.get("cpu", {}).get("brand_raw", "unknown CPU")]
    if ours.get("cpu_threads"):
        parts.append(f"{ours['cpu_threads']} threads")
    if ours.get("gpu"):
        parts.append(ours["gpu"])
    build = ours.get("build", {})
    parts.append(f"torch {build.get('torch', '?')}")
    return ", ".join(parts) + f"; run {data.get('datetime', '?')[:19]}"


def table(paths: list[Path]) -> str:
    lines = []
    for path in paths:
        data = json.loads(path.read_text())
        groups: dict[str, list[dict]] = {}
        for bench in data["benchmarks"]:
            groups.setdefault(bench["group"], []).extend(expand_interleaved(bench))
        overheads = []
        lines += [f"Measured on {machine_line(data)} (`{path.as_posix()}`):", "",
                  "| benchmark | ours | ours (ms) | peer | peer (ms) | speed-up |",
                  "|---|---|---:|---|---:|---:|"]
        for group, benches in groups.items():
            ours = {entry_name(b): b for b in benches if entry_name(b).startswith("medgan_fast")}
            if not ours:
                continue
            baseline = next((b for b in benches if entry_name(b) == "none"), None)
            for bench in benches:
                peer = entry_name(bench)
                if baseline is not None and bench is not baseline:
                    overhead = bench["stats"]["median"] / baseline["stats"]["median"] - 1
                    paired = bench.get("paired_overhead")
                    paired_text = (f"{paired['median'] * 100:+.1f}% ({paired['q1'] * 100:+.1f} to "
                                   f"{paired['q3'] * 100:+.1f})" if paired else "-")
                    overheads.append(f"| {group} | {peer} | {bench['stats']['median'] * 1e3:.2f} | "
                                     f"{baseline['stats']['median'] * 1e3:.2f} | {overhead * 100:+.1f}% | "
                                     f"{paired_text} |")
                if peer in ours or peer == "none":
                    continue
                match = next((name for name in ours if name != "medgan_fast" and peer.endswith(name[len("medgan_fast"):])),
                             next(iter(ours)))
                ours_ms, peer_ms = ours[match]["stats"]["median"] * 1e3, bench["stats"]["median"] * 1e3
                lines.append(f"| {group} | {match} | {ours_ms:.2f} | {peer} | {peer_ms:.2f} | {peer_ms / ours_ms:.1f}x |")
        if overheads:
            lines += ["", "Overheads against the same work without the feature (\"none\"): of the medians, and "
                      "paired (per round, time / none's time; median and quartiles):", "",
                      "| benchmark | implementation | median (ms) | none (ms) | overhead | paired overhead |",
                      "|---|---|---:|---:|---:|---:|", *overheads]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def scaling_table(paths: list[Path]) -> str:
    """Our entries' medians in runs of one machine at different thread counts (each run its
    own process, MEDGAN_FAST_BENCH_THREADS), and the speed-up of the most threads over 1."""
    runs = []
    for path in paths:
        data = json.loads(path.read_text())
        threads = data.get("machine_info", {}).get("medgan_fast", {}).get("cpu_threads")
        medians = {}
        for bench in data["benchmarks"]:
            for entry in expand_interleaved(bench):
                if entry_name(entry).startswith("medgan_fast") and "cuda" not in entry_name(entry):
                    medians[(bench["group"], entry_name(entry))] = entry["stats"]["median"] * 1e3
        runs.append((threads, path, medians))
    runs.sort(key=lambda run: run[0] or 0)
    counts = [threads for threads, _, _ in runs]
    lines = [f"Thread scaling on {machine_line(json.loads(runs[-1][1].read_text())).split(',')[0]}, "
             f"each thread count in its own process ({', '.join(f'`{p.as_posix()}`' for _, p, _ in runs)}):", "",
             "| benchmark | ours | " + " | ".join(f"{n} thread{'s' * (n != 1)} (ms)" for n in counts)
             + f" | {counts[-1]} vs {counts[0]} |", "|---|---|" + "---:|" * (len(counts) + 1)]
    for key in runs[0][2]:
        if not all(key in medians for _, _, medians in runs):
            continue
        times = [medians[key] for _, _, medians in runs]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(f"{t:.2f}" for t in times)
                     + f" | {times[0] / times[-1]:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="pytest-benchmark JSON files")
    parser.add_argument("--readme", type=Path, help=f"replace the text between {START} and {END} in this file")
    parser.add_argument("--scaling", nargs="+", type=Path, default=[], metavar="JSON",
                        help="runs of one machine at different thread counts: add a thread-scaling table")
    args = parser.parse_args(argv)
    text = table(args.results)
    if args.scaling:
        text += "\n" + scaling_table(args.scaling)
    if args.readme is None:
        print(text)
        return 0
    readme = args.readme.read_text()
    if START not in readme or END not in readme:
        sys.exit(f"report: error: {args.readme} has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{text}{END}{tail}")
    print(f"report: wrote the table into {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
