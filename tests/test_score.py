"""`python -m detector.score`: real files, the real tiny model, real `accelerate` processes, a real `datasets` stream."""
from __future__ import annotations

import json
from collections import Counter
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from detector import score

ROOT = Path(__file__).resolve().parent.parent
BROKEN = "This file is not a readable image"


@pytest.fixture(scope="module")
def collection(tmp_path_factory, face_paths) -> Path:
    """Nine images in a folder and a sub-folder, a file that is no image, and one over the size limit."""
    folder = tmp_path_factory.mktemp("collection")
    (folder / "more").mkdir()
    for path in face_paths:
        shutil.copy(path, folder / path.name)
        shutil.copy(path, folder / "more" / path.name)
    shutil.copy(face_paths[0], folder / "more" / "again.jpg")
    (folder / "broken.jpg").write_bytes(b"these bytes are no JPEG" * 10)
    (folder / "huge.png").write_bytes(b"\0" * (11 * 1024 * 1024))
    return folder


def run(args: list[str]) -> int:
    return score.main([*args, "--precision", "fp32", "--workers", "1"])


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    assert [row["id"] for row in a] == [row["id"] for row in b]
    assert [row["error"] for row in a] == [row["error"] for row in b]
    for x, y in zip(a, b):
        if x["p_fake"] is not None:
            assert abs(x["p_fake"] - y["p_fake"]) < 1e-5, (x["id"], x["p_fake"], y["p_fake"])
            assert (x["predicted"], json.loads(x["faces"])[0]["box"]) == (y["predicted"], json.loads(y["faces"])[0]["box"])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, collection, model_dir) -> Path:
    output = tmp_path_factory.mktemp("one") / "scores.parquet"
    assert run([str(collection), "--model", str(model_dir), "--output", str(output), "--shard-size", "3",
                "--csv", str(output.with_suffix(".csv"))]) == 0
    return output


def test_one_row_per_image_in_order_bad_files_become_error_rows(one_process, collection, model_dir):
    table = rows(one_process)
    assert [row["id"] for row in table] == ["broken.jpg", "fake_sdfd_1.jpg", "fake_sdfd_2.jpg", "huge.png",
                                            "more/again.jpg", "more/fake_sdfd_1.jpg", "more/fake_sdfd_2.jpg",
                                            "more/real_pixabay_1.jpg", "more/real_pixabay_2.jpg",
                                            "real_pixabay_1.jpg", "real_pixabay_2.jpg"]
    errors = {row["id"]: row["error"] for row in table if row["error"]}
    assert set(errors) == {"broken.jpg", "huge.png"}
    assert BROKEN in errors["broken.jpg"] and "the limit is 10 MB" in errors["huge.png"]
    scored = [row for row in table if not row["error"]]
    for row in scored:
        assert 0 <= row["p_fake"] <= 1 and abs(row["p_fake"] + row["p_real"] - 1) < 1e-6
        assert row["predicted"] in ("real", "fake") and len(json.loads(row["faces"])) >= 1  # face search is on
        assert row["verdict"] in ("likely real", "uncertain", "likely fake")
        assert (row["verdict"] == "likely fake") == (row["predicted"] == "fake")
        assert row["model"] == str(model_dir) and row["model_revision"].startswith("sha256:")
    by_id = {row["id"]: row for row in table}
    assert by_id["more/fake_sdfd_1.jpg"]["p_fake"] == pytest.approx(by_id["fake_sdfd_1.jpg"]["p_fake"], abs=1e-6)
    assert by_id["more/again.jpg"]["p_fake"] == pytest.approx(by_id["fake_sdfd_1.jpg"]["p_fake"], abs=1e-6)
    assert all(row["p_fake"] is None and row["predicted"] is None for row in table if row["error"])
    # the summary, the histogram and the CSV
    summary = json.loads(one_process.with_name("scores_summary.json").read_text())
    assert summary["rows"] == 11 and summary["errors"] == 2 and sum(summary["predicted"].values()) == 9
    verdicts = Counter(row["verdict"] for row in table if row["verdict"])  # the three levels the page shows
    assert summary["verdicts"] == dict(verdicts) and sum(verdicts.values()) == 9
    assert len(summary["error_reasons"]) == 2 and "metrics" not in summary  # no label column
    assert one_process.with_name("scores_hist.png").read_bytes().startswith(b"\x89PNG")
    assert one_process.with_suffix(".csv").read_text().splitlines()[0].split(",")[:5] == \
        ['"id"', '"p_fake"', '"p_real"', '"predicted"', '"verdict"']
    assert not Path(f"{one_process}.parts").exists()  # merged, then cleaned up


def launch(processes: int, args: list[str]) -> subprocess.CompletedProcess:
    """`accelerate launch` as a user types it for several CPU processes: torchrun + gloo.

    (`accelerate launch --cpu --num_processes 2` starts ONE process in accelerate 1.x; the multi-process CPU
    launch is `--multi_gpu` with ACCELERATE_USE_CPU=true.)"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "detector.score",
               *args, "--precision", "fp32", "--workers", "1"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"on {processes} process(es)" in done.stderr, done.stderr[-3000:]  # really that many
    return done


def test_one_process_failing_stops_every_process_with_its_reason(tmp_path, collection, model_dir):
    """Only process 1 cannot open the input: both stop before scoring, each log names process 1 and its reason, and
    no process meets a closed connection at a barrier (a traceback from process 0, before)."""
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(
        "import os, sys\n"
        "from detector import score\n"
        "from detector.errors import DetectorError\n"
        "real = score.open_source\n"
        "def open_source(args):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        raise DetectorError('this process cannot read the input')\n"
        "    return real(args)\n"
        "score.open_source = open_source\n"
        "raise SystemExit(score.main(sys.argv[1:]))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
               str(collection), "--model", str(model_dir), "--output", str(tmp_path / "scores.parquet"),
               "--precision", "fp32", "--workers", "0"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("process 1: this process cannot read the input") == 2, done.stderr[-3000:]
    # no process ends in an uncaught exception (torch prefixes their lines with [rankN]); the launcher still reports
    # the non-zero exit codes in its own summary
    assert "[rank0]" not in done.stderr and "[rank1]" not in done.stderr, done.stderr[-3000:]
    assert "Connection closed" not in done.stderr
    assert not (tmp_path / "scores.parquet.parts").exists()


def test_two_processes_give_the_rows_of_one(tmp_path, one_process, collection, model_dir):
    output = tmp_path / "two.parquet"
    done = launch(2, [str(collection), "--model", str(model_dir), "--output", str(output), "--shard-size", "3"])
    assert "process 0 wrote 2 shards" in done.stderr and "process 1 wrote 2 shards" in done.stderr  # 11 rows: 3+3 | 3+2
    assert_same_rows(rows(output), rows(one_process))


def test_killed_and_resumed_run_gives_the_same_file(tmp_path, one_process, collection, model_dir):
    output = tmp_path / "scores.parquet"
    args = [str(collection), "--model", str(model_dir), "--output", str(output), "--shard-size", "3", "--keep-parts"]
    assert run([*args, "--stop-after-shards", "2"]) == 3  # stops as if killed after its second shard
    parts = Path(f"{output}.parts")
    kept = {path.name: path.stat().st_ino for path in parts.glob("shard-*.parquet")}
    assert sorted(kept) == ["shard-000000.parquet", "shard-000001.parquet"] and not output.exists()

    assert run([*args, "--shard-size", "4"]) == 2  # a different job must not reuse these shards
    assert run(args) == 0
    assert {path.name: path.stat().st_ino for path in parts.glob("shard-*.parquet") if path.name in kept} == kept
    assert len(list(parts.glob("shard-*.parquet"))) == 4  # only the two missing shards were computed
    assert_same_rows(rows(output), rows(one_process))
    assert rows(output) == rows(one_process)  # the same process, the same math: the same file


def image_bytes(paths: list[Path]) -> list[dict]:
    return [{"bytes": path.read_bytes(), "path": path.name} for path in paths]


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory, face_paths) -> Path:
    """A dataset as the Hub stores one: Parquet files with an Image column (bytes), a ClassLabel and an id."""
    import datasets

    labels = [0 if path.name.startswith("real") else 1 for path in face_paths]
    cells = image_bytes(face_paths) + [{"bytes": b"no image here", "path": "bad.jpg"}]
    dataset = datasets.Dataset.from_dict(
        {"image": cells * 2, "label": (labels + [1]) * 2, "name": [f"item{i}" for i in range(2 * len(cells))]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["real", "fake"]),
                                    "name": datasets.Value("string")}))
    folder = tmp_path_factory.mktemp("hub_dataset")
    (folder / "data").mkdir()
    dataset.select(range(5)).to_parquet(str(folder / "data" / "train-00000-of-00002.parquet"))
    dataset.select(range(5, 10)).to_parquet(str(folder / "data" / "train-00001-of-00002.parquet"))
    return folder


def test_a_streamed_dataset_gives_the_rows_of_the_downloaded_one(tmp_path, parquet_dataset, model_dir):
    common = ["--dataset", str(parquet_dataset), "--split", "train", "--label-column", "label", "--id-column", "name",
              "--model", str(model_dir), "--shard-size", "3"]
    assert run([*common, "--output", str(tmp_path / "map.parquet")]) == 0
    launch(2, [*common, "--streaming", "--output", str(tmp_path / "streamed.parquet")])
    mapped, streamed = rows(tmp_path / "map.parquet"), rows(tmp_path / "streamed.parquet")
    assert [row["id"] for row in mapped] == [f"item{i}" for i in range(10)]
    assert_same_rows(streamed, mapped)
    assert [row["label"] for row in streamed] == ["fake", "fake", "real", "real", "fake"] * 2  # ClassLabel → name
    assert [bool(row["error"]) for row in streamed] == [False] * 4 + [True] + [False] * 4 + [True]
    summary = json.loads((tmp_path / "streamed_summary.json").read_text())
    assert summary["metrics"]["n"] == 8 and summary["metrics"]["confusion_matrix"]  # labels → training.metrics

    import datasets  # the same rows from a `save_to_disk` folder

    datasets.load_dataset(str(parquet_dataset), split="train").save_to_disk(str(tmp_path / "saved"))
    common[1] = str(tmp_path / "saved")
    assert run([*common, "--output", str(tmp_path / "saved.parquet")]) == 0
    assert rows(tmp_path / "saved.parquet") == mapped
    assert run([*common, "--streaming", "--output", str(tmp_path / "saved-streamed.parquet")]) == 0  # in 10 shards
    assert rows(tmp_path / "saved-streamed.parquet") == mapped


def test_a_stopped_stream_resumes_where_it_stopped(tmp_path, parquet_dataset, model_dir):
    common = ["--dataset", str(parquet_dataset), "--streaming", "--id-column", "name", "--model", str(model_dir),
              "--shard-size", "4"]
    assert run([*common, "--output", str(tmp_path / "whole.parquet")]) == 0
    resumed = tmp_path / "resumed.parquet"
    assert run([*common, "--output", str(resumed), "--keep-parts", "--stop-after-shards", "1"]) == 3
    first = Path(f"{resumed}.parts") / "rank000-shard-000000.parquet"
    inode = first.stat().st_ino
    assert run([*common, "--output", str(resumed), "--keep-parts"]) == 0
    assert first.stat().st_ino == inode  # kept, not recomputed
    assert sorted(p.name for p in Path(f"{resumed}.parts").glob("*.parquet")) == \
        [f"rank000-shard-00000{k}.parquet" for k in range(3)]
    assert rows(resumed) == rows(tmp_path / "whole.parquet")
    assert [row["id"] for row in rows(resumed)] == [f"item{i}" for i in range(10)]


class FakeHfApi:
    """Records what `push` asks of the Hub; keeps what it is given to upload."""

    instances: list["FakeHfApi"] = []

    def __init__(self, token=None):
        self.calls, self.uploaded = [], {}
        FakeHfApi.instances.append(self)

    existing_private = None  # an existing repo's visibility (None: the repo is new, made as asked)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        self.asked_private = kwargs.get("private", False)

    def repo_info(self, repo_id, repo_type=None):
        import types

        private = self.asked_private if self.existing_private is None else self.existing_private
        return types.SimpleNamespace(private=private)

    def create_commit(self, *, repo_id, repo_type, operations, commit_message, **kwargs):
        self.calls.append(("create_commit", repo_id, repo_type, [op.path_in_repo for op in operations]))
        for op in operations:
            data = op.path_or_fileobj
            self.uploaded[op.path_in_repo] = data if isinstance(data, bytes) else Path(data).read_bytes()
        return f"hub://datasets/{repo_id}/commit/{len(self.calls)}"


def test_manifest_with_labels_missing_files_and_push(tmp_path, collection, model_dir, monkeypatch):
    import huggingface_hub

    manifest = tmp_path / "list.csv"
    manifest.write_text("file,truth,key\n"
                        f"{collection / 'fake_sdfd_1.jpg'},fake,a\n"  # absolute
                        "photos/real_pixabay_1.jpg,real,b\n"  # relative to the manifest
                        "photos/gone.jpg,real,c\n"
                        "photos/broken.jpg,fake,d\n")
    (tmp_path / "photos").mkdir()
    shutil.copy(collection / "real_pixabay_1.jpg", tmp_path / "photos")
    shutil.copy(collection / "broken.jpg", tmp_path / "photos")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    output = tmp_path / "out" / "scores.parquet"
    assert run([str(manifest), "--image-column", "file", "--label-column", "truth", "--id-column", "key",
                "--model", str(model_dir), "--output", str(output), "--whole-image", "--push", "owner/scores"]) == 0
    table = rows(output)
    assert [(row["id"], row["label"]) for row in table] == [("a", "fake"), ("b", "real"), ("c", "real"), ("d", "fake")]
    assert "faces" not in table[0]  # whole-image mode: no face column
    assert table[2]["error"] == "No such file: gone.jpg" and BROKEN in table[3]["error"]
    assert table[0]["error"] is None and table[1]["error"] is None
    summary = json.loads(output.with_name("scores_summary.json").read_text())
    assert summary["metrics"]["n"] == 2 and summary["errors"] == 2

    api = FakeHfApi.instances[-1]
    assert api.calls[0] == ("create_repo", "owner/scores", {"repo_type": "dataset", "private": False, "exist_ok": True})
    (commit,) = api.calls[1:]  # one commit: data and card together or neither
    assert commit[0] == "create_commit" and commit[2] == "dataset"
    assert set(commit[3]) == {"data/scores.parquet", "data/scores_summary.json", "data/scores_hist.png", "README.md"}
    assert api.uploaded["data/scores.parquet"] == output.read_bytes()
    card = api.uploaded["README.md"].decode()
    assert str(model_dir) in card and "4** images" in card and "threshold" in card and "data/*.parquet" in card
    assert "- verdicts: " + ", ".join(f"{v}: {n}" for v, n in summary["verdicts"].items()) in card
    assert sum(summary["verdicts"].values()) == 2  # the two scored rows
    # the card lists the columns the file has: whole-image mode writes no faces or note column
    listed = re.findall(r"^\| `(\w+)` \|", card, re.M)
    assert listed == [name for name in pq.read_schema(output).names if not name.startswith("_")]
    assert "faces" not in listed and "note" not in listed


def test_pushing_to_an_existing_repo_of_other_visibility_says_so(tmp_path, caplog):
    api = FakeHfApi()
    api.existing_private = False  # a public repo already there
    (tmp_path / "scores.parquet").write_bytes(b"PAR1")
    with caplog.at_level("WARNING", logger="detector.score"):
        score.push([tmp_path / "scores.parquet"], "owner/scores", "card", api=api, private=True)
    assert "already exists and is public" in caplog.text
    assert [call[0] for call in api.calls] == ["create_repo", "create_commit"]


def test_bad_arguments_are_refused(tmp_path, collection):
    with pytest.raises(SystemExit):
        score.parse_args([str(collection)])  # no --output
    with pytest.raises(SystemExit):
        score.parse_args([str(collection), "--dataset", "x/y", "--output", "o.parquet"])
    assert score.main([str(tmp_path / "nothing-here"), "--output", str(tmp_path / "o.parquet"), "--model",
                       str(collection)]) == 2


def test_every_process_gets_work_and_a_resumed_job_keeps_its_shards(tmp_path):
    parts = score.Parts(tmp_path / "o.parquet")
    meta = {"shard_size": 1024}
    assert parts.shard_rows(meta, 500, 2, restart=False) == 250  # not one shard of 1024 for one process
    assert parts.shard_rows(meta, 5000, 2, restart=False) == 1024
    assert parts.shard_rows(meta, None, 4, restart=False) == 1024  # a stream
    parts.create({**meta, "shard_rows": 250}, restart=False)
    assert parts.shard_rows(meta, 500, 4, restart=False) == 250  # resumed on 4 processes: the same shards
    assert parts.shard_rows(meta, 500, 4, restart=True) == 125
    parts.check(meta)  # shard_rows is derived, not part of the job
    with pytest.raises(score.DetectorError, match="different job"):
        parts.check({"shard_size": 512})


def test_manifest_ids_are_read_as_written(tmp_path):
    """The CSV reader inferred types: id 007 came out as 7, and a label column of 0/1 as numbers."""
    from detector.score import manifest_source

    manifest = tmp_path / "list.csv"
    manifest.write_text("file,key,truth\na.jpg,007,0\nb.jpg,0042,1\n")
    rows = manifest_source(manifest, "file", "truth", "key").rows
    assert [row["id"] for row in rows] == ["007", "0042"] and [row["label"] for row in rows] == ["0", "1"]


def test_an_unlabelled_classlabel_row_is_unlabelled_not_fake():
    """ClassLabel -1 means "no label" (Hub test splits): it indexed label_names[-1] and became "fake"."""
    from detector.score import dataset_row

    names = ["real", "fake"]
    assert dataset_row({"image": "x", "label": -1}, 0, "image", "label", None, names)["label"] is None
    assert dataset_row({"image": "x", "label": 1}, 0, "image", "label", None, names)["label"] == "fake"
    assert dataset_row({"image": "x", "label": None}, 0, "image", "label", None, names)["label"] is None


READ: list[str] = []  # the rows a counting stream has produced, in this process


def counted_rows(shards: list[list[dict]]):
    for shard in shards:  # datasets hands each generator its slice of the list: its shards
        for row in shard:
            READ.append(row["name"])
            yield row


def counting_stream(face_paths, shards: int, rows_per_shard: int):
    """A stream in `shards` shards (as a Hub dataset's files) that records every row it produces in READ."""
    import datasets

    cells = image_bytes(face_paths)
    rows = [{"image": cells[i % len(cells)], "name": f"item{i}"} for i in range(shards * rows_per_shard)]
    return datasets.IterableDataset.from_generator(
        counted_rows, gen_kwargs={"shards": [rows[k * rows_per_shard:(k + 1) * rows_per_shard] for k in range(shards)]},
        features=datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")}))


def test_each_process_reads_only_its_own_files_of_a_stream(face_paths):
    """Two processes over a stream of four files: each reads two of them, in order, and the sort keys put the rank-0
    block before the rank-1 block. One file for two processes: each reads all of it, keeping every other row."""
    stream = counting_stream(face_paths, shards=4, rows_per_shard=3)
    seen = {}
    for rank in (0, 1):
        READ.clear()
        part, block = score.process_stream(stream, rank, 2)
        seen[rank] = [row["name"] for row in part]
        assert block and READ == seen[rank]  # read = kept: nothing read for another process
    assert seen[0] + seen[1] == [f"item{i}" for i in range(12)]
    keys = [score.stream_order(p, rank, 2, True) for rank in (0, 1) for p in range(6)]
    assert keys == sorted(keys)

    READ.clear()
    part, block = score.process_stream(counting_stream(face_paths, shards=1, rows_per_shard=6), 1, 2)
    assert not block and [row["name"] for row in part] == ["item1", "item3", "item5"] and len(READ) == 6
    assert [score.stream_order(p, 1, 2, False) for p in range(3)] == [1, 3, 5]


def test_a_resumed_stream_does_not_read_its_finished_files_again(tmp_path, face_paths, model_dir, monkeypatch):
    """Three files of 4 rows, stopped after one shard of 6 rows (the first file and 2 rows of the second): the rerun
    starts from the stream's saved state, at the second file (datasets resumes in the file it stopped in and skips
    its first rows by reading them); it reads 8 rows, not all 12 to skip 6. The file equals an uninterrupted run's."""
    import datasets

    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *args, **kwargs: counting_stream(face_paths, shards=3, rows_per_shard=4))
    common = ["--dataset", "owner/faces", "--streaming", "--id-column", "name", "--model", str(model_dir),
              "--shard-size", "6", "--whole-image"]
    assert run([*common, "--output", str(tmp_path / "whole.parquet")]) == 0
    READ.clear()
    output = tmp_path / "resumed.parquet"
    assert run([*common, "--output", str(output), "--stop-after-shards", "1"]) == 3
    assert READ == [f"item{i}" for i in range(6)]
    READ.clear()
    assert run([*common, "--output", str(output)]) == 0
    assert READ == [f"item{i}" for i in range(4, 12)]
    assert rows(output) == rows(tmp_path / "whole.parquet")


def test_the_job_records_the_precision_it_scored_in(tmp_path, collection, model_dir):
    """--precision auto is a choice made on the machine: the job's record names what it chose (a rerun elsewhere
    that chooses otherwise is another job)."""
    from detector import Detector

    output = tmp_path / "scores.parquet"
    assert score.main([str(collection), "--model", str(model_dir), "--output", str(output), "--precision", "auto",
                       "--workers", "0", "--keep-parts"]) == 0
    chosen = str(Detector.from_pretrained(model_dir).dtype).removeprefix("torch.")
    assert json.loads((Path(f"{output}.parts") / "meta.json").read_text())["precision"] == chosen


def test_labels_of_one_class_give_null_metrics_and_tables_that_say_undefined(tmp_path, face_paths, model_dir):
    """A collection of real photos only: ROC-AUC and the share of fakes caught do not exist; the summary is strict
    JSON (no NaN) with null for them, and the printed summary and the dataset card say "undefined"."""
    manifest = tmp_path / "reals.csv"
    manifest.write_text("file,truth\n" + "".join(f"{path},real\n" for path in face_paths[:2]))
    output = tmp_path / "scores.parquet"
    assert run([str(manifest), "--image-column", "file", "--label-column", "truth", "--model", str(model_dir),
                "--output", str(output), "--whole-image"]) == 0

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    summary = json.loads(output.with_name("scores_summary.json").read_text(), parse_constant=refuse)
    metrics = summary["metrics"]
    assert metrics["roc_auc"] is None and metrics["average_precision"] is None and metrics["recall"] is None
    assert 0.0 <= metrics["fpr"] <= 1.0
    assert "roc_auc undefined" in score.summary_text(summary) and "recall undefined" in score.summary_text(summary)
    card = score.dataset_card(summary, "m", "r", "a folder", "today", ["id", "p_fake"])
    assert "- roc_auc: undefined" in card and f"- fpr: {metrics['fpr']:.4f}" in card
