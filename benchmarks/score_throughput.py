"""Images per second: the CLI loop vs `detector.score` with 1 and 2 processes, on the same images.

    python -m benchmarks.score_throughput                 # 500 images from ../shared/data, the bundled model
    python -m benchmarks.score_throughput --images 100 --model path/to/model

The images are the first N rows of ../shared/data/manifest.csv after a fixed shuffle (seed 0). Each way is
run as a user runs it, in its own process, and timed end to end (Python start, model load and writing the
results included); for detector.score the scoring loop alone is also given (its slowest process):

  cli         python -m detector FILES... --json                 (one process, decoding in between batches)
  score x1    python -m detector.score MANIFEST --output ...      (one process, decoding in --workers)
  score x2    accelerate launch --multi_gpu --num_processes 2 -m detector.score ...   (ACCELERATE_USE_CPU=true:
              two CPU processes over gloo; each takes cores // 2 torch threads)

Face search is on in all three (the CLI's default). The p_fake of every image must agree across the three.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks import print_results

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def sample(count: int, seed: int = 0) -> list[Path]:
    with (SHARED_DATA / "manifest.csv").open(newline="") as handle:
        files = [row["file"] for row in csv.DictReader(handle)]
    random.Random(seed).shuffle(files)
    return [SHARED_DATA / name for name in files[:count]]


def timed(command: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: some input failed, still a full result
        raise SystemExit(f"{command[:6]}... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, done


def loop_seconds(stderr: str) -> float:
    """The slowest process's scoring loop ("process N wrote K shards in S s"): start-up and merging left out."""
    return max(float(seconds) for seconds in re.findall(r"process \d+ wrote \d+ shards in ([\d.]+) s", stderr))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--model", help="model folder or Hub id (default: the bundled model)")
    parser.add_argument("--workers", type=int, default=1, help="detector.score's DataLoader workers per process")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    files = sample(args.images)
    model = ["--model", args.model] if args.model else []
    common = [*model, "--batch-size", str(args.batch_size)]
    results: dict = {"images": len(files), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("file\n" + "".join(f"{path}\n" for path in files))

        seconds, done = timed([sys.executable, "-m", "detector", *map(str, files), "--json", *common])
        cli = {row["file"]: (row["probabilities"] or {}).get("fake") for row in json.loads(done.stdout)}
        results["cli images/s"] = len(files) / seconds

        score = ["-m", "detector.score", str(manifest), "--image-column", "file", *common,
                 "--workers", str(args.workers)]
        seconds, done = timed([sys.executable, *score, "--output", f"{tmp}/one.parquet"])
        results["score x1 images/s"] = len(files) / seconds
        results["score x1 loop only images/s"] = len(files) / loop_seconds(done.stderr)

        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        seconds, done = timed([*launch, *score, "--output", f"{tmp}/two.parquet"], env={"ACCELERATE_USE_CPU": "true"})
        if "on 2 process(es)" not in done.stderr:
            raise SystemExit("accelerate did not start 2 processes:\n" + done.stderr[-3000:])
        results["score x2 images/s"] = len(files) / seconds
        results["score x2 loop only images/s"] = len(files) / loop_seconds(done.stderr)
        results["score x2 processes that wrote shards"] = len(re.findall(r"process \d+ wrote [1-9]", done.stderr))

        differences = []
        for name in ("one", "two"):
            table = pq.read_table(f"{tmp}/{name}.parquet").to_pylist()
            assert [row["id"] for row in table] == [str(path) for path in files], f"{name}: rows out of order"
            differences += [abs(row["p_fake"] - cli[row["id"]]) for row in table
                            if row["p_fake"] is not None and cli.get(row["id"]) is not None]
        results["max |p_fake - cli p_fake|"] = max(differences) if differences else float("nan")
        results["errors"] = sum(1 for value in cli.values() if value is None)
    results["score x1 / cli"] = results["score x1 images/s"] / results["cli images/s"]
    results["score x2 / cli"] = results["score x2 images/s"] / results["cli images/s"]
    print_results(results, digits=3)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
