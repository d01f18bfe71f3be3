"""`python -m detector.score`: score a whole collection into one Parquet table, on one CPU or many GPUs.

    python -m detector.score photos/ --output scores.parquet
    python -m detector.score manifest.csv --image-column file --label-column label --output scores.parquet --csv scores.csv
    python -m detector.score --dataset owner/name --split test --streaming --output scores.parquet
    accelerate launch --num_processes 8 -m detector.score --dataset owner/name --output scores.parquet

Input: a folder (searched recursively for images), a CSV/Parquet manifest (image paths relative to the
manifest's folder), or a `datasets` dataset (a Hub id, a local dataset folder or script, or a folder
written by `Dataset.save_to_disk`), optionally streamed. Output: one row per input, in input order (see
`COLUMNS`). `accelerate` splits the work (`Accelerator.split_between_processes` over fixed-size shards of
row indices; for a stream, each process reads a contiguous block of the source's own shards, so no row is
read twice); images are decoded in DataLoader workers and judged by `Detector.analyze_batch`. Every process
writes finished shards to `<output>.parts/`; a rerun skips the shards already there (a stream resumes from
`IterableDataset.state_dict()`, without reading finished rows again), and the main process merges them into
the final file (written to a temporary name, then renamed). A bad input (missing, undecodable, too large) becomes a row with
`error` set; it never stops the job.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path, write_text
from .errors import DetectorError
from .verdicts import VERDICTS
from .images import EXTENSIONS, images_in, load_image
from .logs import configure_logging
from .metrics import show
from .model import PRECISIONS, hub_revision, weights_sha256

logger = logging.getLogger("detector.score")  # the same name under `python -m`

COLUMNS = {  # the output table's columns, in order: a promise to scripts (add, never rename)
    "id": "the input: a path relative to the folder, the manifest's id/image cell, or the dataset's id column / row number",
    "label": "the input's own label, as written (only with a label column)",
    "p_fake": "probability that the image is generated/manipulated (the most suspicious face's, with face search)",
    "p_real": "1 - p_fake",
    "predicted": "'real' or 'fake': p_fake against the model's calibrated threshold (else the more probable class)",
    "verdict": "'likely real', 'uncertain' or 'likely fake': p_fake against the model's two thresholds",
    "faces": "JSON list of {box, label, probabilities} per face found (face search only; [] when none was found)",
    "note": "set when no face was found and the whole image was analysed",
    "error": "why this input could not be scored (null when it was)",
    "model": "the model's source (Hub id or folder)",
    "model_revision": "the Hub commit of the weights, else sha256: of model.safetensors",
}
ORDER = "_order"  # internal: the row's position in the input (a stream's: see `stream_order`)
SAVED_STREAM_SHARDS = 64  # a save_to_disk folder streamed: its rows in this many shards (fewer rows: one each)
BLOCK = 2 ** 40  # a stream read in blocks: rank r's row at position p has order r·BLOCK + p
FORMAT_VERSION = 2  # 2: the verdict column


# ---------------------------------------------------------------- inputs


@dataclass
class Source:
    """What to score. Map-style: `rows` (a list of dicts or a `datasets.Dataset`); streamed: `stream`."""

    description: str
    rows: Any = None  # indexable, len(): each item {"id", "image", "label"?}; image: path | bytes | {"bytes", "path"}
    stream: Any = None  # a datasets.IterableDataset yielding the same items
    has_label: bool = False
    label_names: list[str] | None = None  # ClassLabel names, to turn integer labels into words
    columns: tuple = ()  # a dataset's (image, label, id) columns

    @property
    def streaming(self) -> bool:
        return self.stream is not None


def folder_source(folder: Path) -> Source:
    files = images_in(folder)
    if not files:
        raise DetectorError(f"No images ({', '.join(EXTENSIONS)}) in {folder}.")
    rows = [{"id": str(p.relative_to(folder)), "image": str(p)} for p in files]
    return Source(description=f"folder {folder}", rows=rows)


def csv_header(path: Path) -> list[str]:
    """A CSV's column names: its cells are then read as written (an id "007" stays "007", not the number 7)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def manifest_source(path: Path, image_column: str, label_column: str | None, id_column: str | None) -> Source:
    """A CSV or Parquet table of image paths (relative ones are resolved against the table's folder)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path) if path.suffix.lower() == ".parquet" else pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(csv_header(path), pa.string())))
    except Exception as err:  # pyarrow's own errors name the line or the column
        raise DetectorError(f"Could not read the manifest {path}: {err}") from None
    columns = table.column_names
    for option, column in (("--image-column", image_column), ("--label-column", label_column), ("--id-column", id_column)):
        if column and column not in columns:
            raise DetectorError(f"{path.name} has no column {column!r} ({option}); its columns: {columns}")
    images = table.column(image_column).to_pylist()
    ids = table.column(id_column).to_pylist() if id_column else images
    labels = table.column(label_column).to_pylist() if label_column else None
    root = path.parent
    rows = []
    for index, (image, identifier) in enumerate(zip(images, ids)):
        row = {"id": str(identifier), "image": None if image is None else str(root / str(image))}
        if labels is not None:
            row["label"] = None if labels[index] is None else str(labels[index])
        rows.append(row)
    return Source(description=f"manifest {path}", rows=rows, has_label=label_column is not None)


def dataset_source(name: str, config: str | None, split: str, image_column: str, label_column: str | None,
                   id_column: str | None, streaming: bool) -> Source:
    """A Hub dataset id, a local dataset folder or loading script, or a `save_to_disk` folder."""
    import datasets

    local = Path(name).expanduser()
    try:
        if local.is_dir() and (local / "dataset_info.json").is_file() and (local / "state.json").is_file():
            dataset = datasets.load_from_disk(str(local))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split]
            if streaming:  # in shards, so that processes split it by shard and a resume skips whole ones
                dataset = dataset.to_iterable_dataset(num_shards=max(1, min(len(dataset), SAVED_STREAM_SHARDS)))
        else:
            dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except (FileNotFoundError, ValueError, KeyError, datasets.exceptions.DatasetNotFoundError) as err:
        raise DetectorError(f"Could not load dataset {name!r} (config {config}, split {split!r}): {err}") from err
    features = dataset.features or {}
    for option, column in (("--image-column", image_column), ("--label-column", label_column), ("--id-column", id_column)):
        if column and features and column not in features:
            raise DetectorError(f"Dataset {name!r} has no column {column!r} ({option}); its columns: {list(features)}")
    if isinstance(features.get(image_column), datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))  # decoded (and validated) by us
    keep = [column for column in (image_column, label_column, id_column) if column]
    dataset = dataset.select_columns(list(dict.fromkeys(keep)))
    label_feature = features.get(label_column) if label_column else None
    names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
    source = Source(description=f"dataset {name}" + (f" ({config})" if config else "") + f" split {split}",
                    has_label=label_column is not None, label_names=names,
                    columns=(image_column, label_column, id_column))
    if streaming:
        source.stream = dataset
    else:
        source.rows = DatasetRows(dataset, image_column, label_column, id_column, names)
    return source


class DatasetRows:
    """A `datasets.Dataset` seen as rows {"id", "image", "label"?} (read lazily, in the worker that decodes them)."""

    def __init__(self, dataset, image_column, label_column, id_column, label_names):
        self.dataset, self.image_column, self.label_column, self.id_column = dataset, image_column, label_column, id_column
        self.label_names = label_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return dataset_row(self.dataset[int(index)], index, self.image_column, self.label_column, self.id_column,
                           self.label_names)


def dataset_row(item: dict, index: int, image_column, label_column, id_column, label_names) -> dict:
    row = {"id": str(item[id_column]) if id_column else str(index), "image": item.get(image_column)}
    if label_column:
        label = item.get(label_column)
        if label_names and isinstance(label, int):  # a ClassLabel: -1 is "no label" (common in Hub test splits)
            row["label"] = label_names[label] if 0 <= label < len(label_names) else None
        else:
            row["label"] = None if label is None else str(label)
    return row


def open_source(args: argparse.Namespace) -> Source:
    if args.dataset:
        return dataset_source(args.dataset, args.config, args.split, args.image_column or "image", args.label_column,
                              args.id_column, args.streaming)
    path = Path(args.input).expanduser()
    if path.is_dir():
        return folder_source(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet"):
        return manifest_source(path, args.image_column or "image", args.label_column, args.id_column)
    raise DetectorError(f"{args.input} is neither a folder nor a .csv/.parquet manifest (a Hub dataset: --dataset).")


# ---------------------------------------------------------------- decoding (in DataLoader workers)


def decode(row: dict, order: int) -> dict:
    """A row → {order, id, label?, image (RGB) or error}; never raises."""
    out = {ORDER: order, "id": row.get("id"), "image": None, "error": None}
    if "label" in row:
        out["label"] = row["label"]
    image = row.get("image")
    try:
        if image is None:
            raise DetectorError("No image in this row.")
        if isinstance(image, dict):  # a datasets Image cell, not decoded: {"bytes", "path"}
            image = image.get("bytes") or image.get("path")
            if image is None:
                raise DetectorError("No image in this row.")
        out["image"] = load_image(image)
    except DetectorError as err:
        out["error"] = str(err)
    except Exception as err:  # never let one file stop the job
        out["error"] = f"Could not read this image ({type(err).__name__}: {err})."
    return out


class Decoded(torch.utils.data.Dataset):
    """The given indices of `rows` (a list, a dict or `DatasetRows`), decoded; an index is the row's order in the input."""

    def __init__(self, rows, indices: list[int]):
        self.rows, self.indices = rows, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        try:
            row = self.rows[index]
        except Exception as err:
            return {ORDER: index, "id": str(index), "image": None, "error": f"Could not read this row ({err})."}
        return decode(row, index)


def collate(items: list[dict]) -> list[dict]:
    return items


# ---------------------------------------------------------------- scoring


def model_revision(folder: Path) -> str:
    """The Hub commit when the model came from the Hub cache (…/snapshots/<commit>), else the weights' sha256."""
    digest = weights_sha256(folder)
    return hub_revision(folder) or ("unknown" if digest is None else "sha256:" + digest[:16])


def score_items(detector, items: list[dict], faces: bool, model: str, revision: str, has_label: bool) -> list[dict]:
    """Decoded items → output rows; a batch that fails is retried image by image, so one bad image fails alone."""
    good = [item for item in items if item["error"] is None]
    analyses: dict[int, Any] = {}
    try:
        for item, analysis in zip(good, detector.analyze_batch([item["image"] for item in good], faces=faces)):
            analyses[item[ORDER]] = analysis
    except Exception:
        for item in good:
            try:
                analyses[item[ORDER]] = detector.analyze_batch([item["image"]], faces=faces)[0]
            except Exception as err:
                item["error"] = str(err) if isinstance(err, DetectorError) else f"Analysis failed ({type(err).__name__}: {err})."
    rows = []
    for item in items:
        analysis = analyses.get(item[ORDER])
        row = {ORDER: item[ORDER], "id": item["id"]}
        if has_label:
            row["label"] = item.get("label")
        p_fake = float(analysis.p_fake) if analysis else None
        row.update({
            "p_fake": p_fake,
            "p_real": float(analysis.probabilities["real"]) if analysis else None,
            "predicted": analysis.label if analysis else None,
            "verdict": analysis.verdict if analysis else None,
        })
        if faces:
            row["faces"] = json.dumps([face.to_dict() for face in analysis.faces]) if analysis else None
            row["note"] = analysis.note if analysis else None
        row.update({"error": item["error"] if analysis is None else None, "model": model, "model_revision": revision})
        rows.append(row)
    return rows


def schema(faces: bool, has_label: bool):
    import pyarrow as pa

    fields = [(ORDER, pa.int64()), ("id", pa.string())]
    if has_label:
        fields.append(("label", pa.string()))
    fields += [("p_fake", pa.float64()), ("p_real", pa.float64()), ("predicted", pa.string()), ("verdict", pa.string())]
    if faces:
        fields += [("faces", pa.string()), ("note", pa.string())]
    fields += [("error", pa.string()), ("model", pa.string()), ("model_revision", pa.string())]
    return pa.schema(fields)


def write_parquet(rows: list[dict], path: Path, table_schema) -> None:
    """Atomically: a reader (or a resumed run) sees the whole file or none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=table_schema)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


class Parts:
    """`<output>.parts/`: meta.json (what is being scored) + one Parquet per finished shard."""

    def __init__(self, output: Path):
        self.folder = output.with_name(output.name + ".parts")

    def shard(self, index: int, rank: int | None = None) -> Path:
        return self.folder / (f"shard-{index:06d}.parquet" if rank is None else f"rank{rank:03d}-shard-{index:06d}.parquet")

    def done_marker(self, rank: int) -> Path:
        return self.folder / f"rank{rank:03d}.done"

    def stream_state(self, rank: int) -> dict | None:
        """Where process `rank`'s part of a stream stopped: its finished shards and `IterableDataset.state_dict()`."""
        path = self.folder / f"rank{rank:03d}-stream.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_stream_state(self, rank: int, state: dict) -> None:
        write_text(self.folder / f"rank{rank:03d}-stream.json", json.dumps(state))

    def check(self, meta: dict) -> None:
        """Refuse to mix in another job's shards (every process checks, so all stop together)."""
        meta_file = self.folder / "meta.json"
        if meta_file.is_file():
            old = {key: value for key, value in json.loads(meta_file.read_text()).items() if key != "shard_rows"}
            if old != meta:
                changed = sorted(key for key in set(old) | set(meta) if old.get(key) != meta.get(key))
                raise DetectorError(f"{self.folder} holds shards of a different job (changed: {changed}); pass --restart "
                                    f"to start over, or choose another --output.")

    def shard_rows(self, meta: dict, rows: int | None, processes: int, restart: bool) -> int:
        """Rows per shard: --shard-size, or fewer so that every process gets work (a folder of 500 on 2 processes:
        2 shards of 250, not one of 1024); a resumed job keeps the size it started with, whatever its processes."""
        meta_file = self.folder / "meta.json"
        if not restart and meta_file.is_file():
            return int(json.loads(meta_file.read_text()).get("shard_rows") or meta["shard_size"])
        if rows is None:  # a stream: its length is unknown
            return meta["shard_size"]
        return max(1, min(meta["shard_size"], math.ceil(rows / processes)))

    def create(self, meta: dict, restart: bool) -> None:
        """Main process: (re)start the folder; the shards of the same job are kept."""
        if restart and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_file = self.folder / "meta.json"
        if not meta_file.is_file():
            write_text(meta_file, json.dumps(meta, indent=2))


def run_shards(accelerator, detector, source: Source, parts: Parts, args, table_schema, model: str, revision: str,
               progress) -> int:
    """Score this process's unfinished shards; returns how many shards it wrote."""
    faces = not args.whole_image
    loader_options = dict(batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
    if args.workers:
        loader_options["prefetch_factor"] = 4
    written = 0
    if not source.streaming:
        total = len(source.rows)
        shards = math.ceil(total / args.shard_rows)
        # The main process lists the finished shards and tells the others: listed by each, a fast process's first
        # shard could change a slower one's list, and the two would split different lists.
        todo = [[k for k in range(shards) if not parts.shard(k).is_file()] if accelerator.is_main_process else None]
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(todo)
        todo = todo[0]
        with accelerator.split_between_processes(todo) as mine:
            mine = list(mine)
        if accelerator.is_main_process:
            progress.total = sum(min(args.shard_rows, total - k * args.shard_rows) for k in todo)
            progress.refresh()
        indices = [i for k in mine for i in range(k * args.shard_rows, min((k + 1) * args.shard_rows, total))]
        if not indices:
            return 0
        loader = torch.utils.data.DataLoader(Decoded(source.rows, indices), shuffle=False, **loader_options)
        buffer: list[dict] = []
        shard_iter = iter(mine)
        current = next(shard_iter)
        for items in loader:
            buffer += score_items(detector, items, faces, model, revision, source.has_label)
            if accelerator.is_main_process:
                progress.update(len(items) * accelerator.num_processes)  # the others go about as fast
            while current is not None:
                end = min((current + 1) * args.shard_rows, total)
                if not buffer or buffer[-1][ORDER] < end - 1:
                    break
                size = end - current * args.shard_rows
                write_parquet(buffer[:size], parts.shard(current), table_schema)
                buffer, written = buffer[size:], written + 1
                if args.stop_after_shards and written >= args.stop_after_shards:
                    raise Stopped()
                current = next(shard_iter, None)
        return written
    # a stream: this process's part (`process_stream`), read shard by shard; its shard k holds its positions
    # [k·S, (k+1)·S); after each one, the stream's state is saved beside it, and a rerun starts from there: at the
    # source file it stopped in (datasets skips that file's finished rows by reading them; earlier files are not read)
    rank, processes = accelerator.process_index, accelerator.num_processes
    if parts.done_marker(rank).is_file():
        return 0
    mine, block = process_stream(source.stream, rank, processes)
    shard, state = 0, parts.stream_state(rank)
    if state is not None:
        shard = state["shards"]
        mine.load_state_dict(state["stream"])
        raw = iter(mine)
    else:
        while parts.shard(shard, rank).is_file():
            shard += 1
        if shard:
            logger.warning("process %d: %d finished rows of the stream are read again to be skipped (their shards have "
                           "no saved stream state)", rank, shard * args.shard_rows)
        raw = itertools.islice(iter(mine), shard * args.shard_rows, None)  # finished shards: read, never decoded
    image_column, label_column, id_column = source.columns
    rows_done = shard * args.shard_rows
    while True:
        chunk = list(itertools.islice(raw, args.shard_rows))
        if not chunk:
            break
        orders = [stream_order(rows_done + j, rank, processes, block) for j in range(len(chunk))]
        rows = {order: dataset_row(item, order, image_column, label_column, id_column, source.label_names)
                for order, item in zip(orders, chunk)}
        loader = torch.utils.data.DataLoader(Decoded(rows, orders), shuffle=False, **loader_options)
        buffer = []
        for items in loader:
            buffer += score_items(detector, items, faces, model, revision, source.has_label)
            if accelerator.is_main_process:
                progress.update(len(items) * processes)
        write_parquet(buffer, parts.shard(shard, rank), table_schema)
        shard, written, rows_done = shard + 1, written + 1, rows_done + len(chunk)
        parts.save_stream_state(rank, {"shards": shard, "stream": mine.state_dict()})  # after the shard: a crash
        # between the two computes that shard again
        if args.stop_after_shards and written >= args.stop_after_shards:
            raise Stopped()
    write_text(parts.done_marker(rank), str(rows_done))
    return written


def process_stream(stream, rank: int, processes: int):
    """This process's part of a stream, and whether it is a block: a contiguous run of the source's own shards (its
    files), read by this process only. A source with fewer shards than processes cannot be split so: each process
    then reads every row and keeps one in `processes` (`split_dataset_by_node`), which costs that many reads."""
    if processes == 1:
        return stream, True
    if stream.num_shards >= processes:
        return stream.shard(num_shards=processes, index=rank, contiguous=True), True
    from datasets.distributed import split_dataset_by_node

    if rank == 0:
        logger.warning("the stream has %d shard(s) for %d processes: each process reads every row and keeps 1 in %d "
                       "(%d× the reading of one process); a source in at least %d files is split by file",
                       stream.num_shards, processes, processes, processes, processes)
    return split_dataset_by_node(stream, rank=rank, world_size=processes, strategy="examples"), False


def stream_order(position: int, rank: int, processes: int, block: bool) -> int:
    """The sort key of this process's row at `position` of its part: blocks follow one another in rank order; rows
    kept one in N interleave."""
    return rank * BLOCK + position if block else position * processes + rank


class Stopped(Exception):
    """Raised by the testing hook --stop-after-shards: the job stops as if killed, its shards kept."""


def merge(parts: Parts, source: Source, args, processes: int, table_schema, output: Path) -> None:
    """All shards → `output` in input order (main process), written to a temporary name, fsynced, then renamed.

    Map-style shards are already in order and are copied one by one (memory: one shard); a stream's rows
    alternate between processes, so its shards are read whole and sorted. DetectorError when some are missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    final_schema = table_schema.remove(table_schema.get_field_index(ORDER))
    with atomic_path(output) as temporary:
        if source.streaming:
            missing = [rank for rank in range(processes) if not parts.done_marker(rank).is_file()]
            if missing:
                raise DetectorError(f"Processes {missing} did not finish their part of the stream; rerun to resume.")
            tables = [pq.read_table(f, schema=table_schema) for f in sorted(parts.folder.glob("rank*-shard-*.parquet"))]
            table = (pa.concat_tables(tables) if tables else table_schema.empty_table()).sort_by(ORDER)
            if not source.columns[2]:  # no --id-column: a row's id is its number in the input
                table = table.set_column(table.schema.get_field_index("id"), "id",
                                         pa.array([str(i) for i in range(table.num_rows)], pa.string()))
            pq.write_table(table.drop_columns([ORDER]), temporary)
        else:
            total = len(source.rows)
            files = [parts.shard(k) for k in range(math.ceil(total / args.shard_rows))]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise DetectorError(f"{len(missing)} shards are missing ({missing[:3]}...); rerun to resume.")
            expected = 0
            with pq.ParquetWriter(temporary, final_schema) as writer:
                for file in files:
                    table = pq.read_table(file, schema=table_schema)
                    if table.column(ORDER).to_pylist() != list(range(expected, expected + table.num_rows)):
                        raise DetectorError(f"{file} does not hold the rows it should; pass --restart.")
                    expected += table.num_rows
                    writer.write_table(table.drop_columns([ORDER]))
            if expected != total:
                raise DetectorError(f"The shards in {parts.folder} hold {expected} rows, not {total}; pass --restart.")


# ---------------------------------------------------------------- summary, files, Hub


SUMMARISED = ("label", "p_fake", "predicted", "verdict", "error")  # the columns the summary reads


def summarise(table, threshold: float | None, label_map: dict[str, str] | None) -> dict:
    """Counts by verdict and by predicted label, errors by reason, and `training.metrics` where there is a label
    column."""
    rows = table.select([c for c in SUMMARISED if c in table.column_names]).to_pylist()
    errors = Counter(row["error"] for row in rows if row["error"])
    summary = {
        "rows": len(rows),
        "scored": len(rows) - sum(errors.values()),
        "verdicts": {verdict: count for verdict in VERDICTS
                     if (count := sum(row.get("verdict") == verdict for row in rows))},
        "predicted": dict(Counter(row["predicted"] for row in rows if row["predicted"])),
        "errors": sum(errors.values()),
        "error_reasons": dict(errors.most_common()),
        "threshold": threshold,
    }
    if "label" in table.column_names:
        labelled = [row for row in rows if row["label"] is not None and row["p_fake"] is not None]
        names = sorted({row["label"] for row in labelled})
        if labelled:
            try:  # training only where there are labels to score against
                from .labels import resolve_label_map
                from .metrics import binary_metrics

                mapping = resolve_label_map(names, label_map, "label")
            except (DetectorError, ImportError) as err:
                summary["metrics_skipped"] = str(err)
            else:
                is_fake = np.array([mapping[row["label"]] == 1 for row in labelled])
                p_fake = np.array([row["p_fake"] for row in labelled])
                summary["metrics"] = binary_metrics(is_fake, p_fake, 0.5 if threshold is None else threshold)
    return summary


def plot_histogram(p_fake: list[float], path: Path, threshold: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(p_fake, bins=50, range=(0, 1), color="#4a7ab8")
    if threshold is not None:
        ax.axvline(threshold, color="crimson", linestyle="--", label=f"threshold {threshold:.3f}")
        ax.legend()
    ax.set(xlabel="p_fake", ylabel="images", title=f"p_fake over {len(p_fake)} images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_text(summary: dict) -> str:
    lines = [f"rows {summary['rows']}, scored {summary['scored']}, errors {summary['errors']}"]
    lines += [f"  {verdict}: {count}" for verdict, count in summary.get("verdicts", {}).items()]
    lines += [f"  predicted {label}: {count}" for label, count in sorted(summary["predicted"].items())]
    lines += [f"  error ({count}): {reason}" for reason, count in summary["error_reasons"].items()]
    metrics = summary.get("metrics")
    if metrics:
        lines.append("  metrics: " + ", ".join(f"{k} {show(metrics[k])}" for k in ("accuracy", "precision", "recall", "f1",
                                                                                  "roc_auc", "fpr")))
    return "\n".join(lines)


def dataset_card(summary: dict, model: str, revision: str, source: str, when: str, written: list[str]) -> str:
    """The dataset card; its column table lists the columns of the `written` schema, in their order."""
    threshold = summary["threshold"]
    counts = ", ".join(f"{label}: {count}" for label, count in sorted(summary["predicted"].items())) or "none"
    verdicts = ", ".join(f"{verdict}: {count}" for verdict, count in summary.get("verdicts", {}).items()) or "none"
    columns = "\n".join(f"| `{name}` | {COLUMNS[name]} |" for name in written if name in COLUMNS)
    metrics = summary.get("metrics")
    metric_text = ("\n## Agreement with the input's labels\n\n" + "\n".join(
        f"- {key}: {show(metrics[key])}" for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "fpr")) + "\n"
        ) if metrics else ""
    return f"""---
tags:
- deepfake-detection
- model-scores
configs:
- config_name: default
  data_files: data/*.parquet
---
# Deepfake detector scores

Scores of **{summary['rows']}** images from {source}, computed on {when} by `python -m detector.score`.

- model: `{model}` (revision `{revision}`)
- threshold: {'argmax (no calibrated threshold)' if threshold is None else f'p_fake ≥ {threshold:.4f} → fake'}
- verdicts: {verdicts}
- predicted (`fake` at the threshold): {counts}
- errors: {summary['errors']} (rows with `error` set and no score)

A score is the model's opinion, not proof: the model was trained on face crops and can be wrong,
especially on kinds of photos it never saw.

## Columns

| column | meaning |
| --- | --- |
{columns}
{metric_text}"""


def push(files: list[Path], repo_id: str, card: str, api=None, private: bool = False) -> str:
    """Create the Hub dataset repo if needed, then upload `files` under data/ and `card` as README.md in ONE commit
    (an interruption publishes all of it or nothing, never data beside a stale card); returns the commit URL.
    An existing repo keeps its visibility: when it differs from `private`, a warning says so.

    `api` is an `HfApi`-like object (tests pass a fake); by default one is made with the token in $HF_TOKEN."""
    from huggingface_hub import CommitOperationAdd

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    visible = getattr(api.repo_info(repo_id, repo_type="dataset"), "private", private)
    if visible is not None and bool(visible) != private:
        logger.warning("%s already exists and is %s: its visibility is left as it is (change it on the Hub)",
                       repo_id, "private" if visible else "public")
    operations = [CommitOperationAdd(path_in_repo=f"data/{Path(file).name}", path_or_fileobj=str(file)) for file in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
    commit = api.create_commit(repo_id=repo_id, repo_type="dataset", operations=operations,
                               commit_message="Scores and dataset card")
    return str(getattr(commit, "commit_url", commit))


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m detector.score",
                                     description="Score a folder, a manifest or a dataset into one Parquet table.")
    parser.add_argument("input", nargs="?", help="an image folder (searched recursively) or a .csv/.parquet manifest")
    parser.add_argument("--output", required=True, type=Path, help="the Parquet file to write (shards go to OUTPUT.parts/)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV here")
    data = parser.add_argument_group("a datasets dataset instead of INPUT")
    data.add_argument("--dataset", help="Hub dataset id, local dataset folder/script, or a save_to_disk folder")
    data.add_argument("--config", help="the dataset's configuration name")
    data.add_argument("--split", default="train", help="(default: train)")
    data.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it first")
    columns = parser.add_argument_group("columns")
    columns.add_argument("--image-column", help="the image (or image path) column (default: image)")
    columns.add_argument("--label-column", help="the input's real/fake label: copied, and metrics in the summary")
    columns.add_argument("--label-map", help="label → real/fake for the metrics, e.g. 'Real=real,Fake=fake'")
    columns.add_argument("--id-column", help="the column that names each row (default: the path / row number)")
    parser.add_argument("--model", help="a local model folder or Hub id (default: $DETECTOR_MODEL, else the bundled model)")
    parser.add_argument("--whole-image", action="store_true", help="judge each image whole, without face search")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward pass (default: 16)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: as the model's threshold was fitted (see python -m detector --help)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="DataLoader decoding workers per process (default: 2)")
    parser.add_argument("--shard-size", type=int, default=1024, metavar="N",
                        help="rows per shard written to OUTPUT.parts/ (the unit of resuming; default: 1024)")
    parser.add_argument("--restart", action="store_true", help="discard the shards of an earlier job at OUTPUT.parts/")
    parser.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ after the final file is written")
    parser.add_argument("--push", metavar="OWNER/NAME", help="publish the results as a Hub dataset (token: $HF_TOKEN)")
    parser.add_argument("--private", action="store_true", help="with --push: a private dataset repo")
    parser.add_argument("--stop-after-shards", type=int, help=argparse.SUPPRESS)  # testing: stop as if killed
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.dataset):
        parser.error("give either INPUT (a folder or manifest) or --dataset")
    if args.streaming and not args.dataset:
        parser.error("--streaming needs --dataset")
    for option in ("batch_size", "shard_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    return args


STOPPED = "stopped (--stop-after-shards)"


def agree(accelerator, error: str | None) -> str | None:
    """Every process's error (None: none), gathered on all: they stop together, each saying which process failed and
    why, where one failing alone would leave the others to meet a closed connection at the next barrier."""
    if accelerator.num_processes == 1:
        return error
    from accelerate.utils import gather_object

    errors = gather_object([error])
    return "; ".join(f"process {rank}: {text}" for rank, text in enumerate(errors) if text) or None


def job_meta(args, source: Source, model: str, revision: str, processes: int, precision: str) -> dict:
    """What is being scored, and how (`precision`: the weights' dtype, as "auto" chose it)."""
    meta = {"format": FORMAT_VERSION, "input": source.description, "model": model, "model_revision": revision,
            "faces": not args.whole_image, "shard_size": args.shard_size, "precision": precision,
            "streaming": source.streaming}
    if source.streaming:
        meta["processes"] = processes  # a stream's shards are per process: resume with as many
    else:
        meta["rows"] = len(source.rows)
    return meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    from accelerate import Accelerator
    from tqdm import tqdm

    from .detector import Detector
    from .model import default_source

    accelerator = Accelerator()
    processes = accelerator.num_processes
    if accelerator.device.type == "cpu":  # processes share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))
    if not accelerator.is_main_process:  # one copy of the library's messages; each process still says what it did
        logging.getLogger().setLevel(logging.WARNING)
        logger.setLevel(logging.INFO)
    output = args.output.expanduser().resolve()
    error = None
    try:
        detector = Detector.from_pretrained(args.model or default_source(), device=str(accelerator.device),
                                            batch_size=args.batch_size, precision=args.precision)
        model, revision = detector.loaded.source, model_revision(detector.loaded.folder)
        source = open_source(args)
        faces = not args.whole_image
        table_schema = schema(faces, source.has_label)
        parts = Parts(output)
        meta = job_meta(args, source, model, revision, processes, str(detector.dtype).removeprefix("torch."))
        if not args.restart:
            parts.check(meta)
        args.shard_rows = parts.shard_rows(meta, None if source.streaming else len(source.rows), processes, args.restart)
    except DetectorError as err:
        error = str(err)
    except Exception as err:  # not a user's mistake: its traceback is logged, and every process still stops
        logger.exception("process %d could not start", accelerator.process_index)
        error = f"{type(err).__name__}: {err}"
    error = agree(accelerator, error)
    if error:
        logger.error("%s", error)
        return 2
    if accelerator.is_main_process:
        output.parent.mkdir(parents=True, exist_ok=True)
        parts.create({**meta, "shard_rows": args.shard_rows}, args.restart)
    accelerator.wait_for_everyone()
    logger.info("scoring %s with %s on %d process(es), shards of %d in %s", source.description, model, processes,
                args.shard_rows, parts.folder)
    started = time.perf_counter()
    with tqdm(unit="image", file=sys.stderr, disable=not accelerator.is_main_process or None, smoothing=0.1) as progress:
        written, outcome = 0, None
        try:
            written = run_shards(accelerator, detector, source, parts, args, table_schema, model, revision, progress)
        except Stopped:
            outcome = STOPPED
        except Exception as err:  # a row's bad image is a row's error; this is the job's (a full disk, a lost stream)
            logger.exception("process %d failed", accelerator.process_index)
            outcome = f"{type(err).__name__}: {err}"
    if outcome is None:
        logger.info("process %d wrote %d shards in %.1f s", accelerator.process_index, written,
                    time.perf_counter() - started)
    outcome = agree(accelerator, outcome)  # every process waits here for the others, as at a barrier
    if outcome == STOPPED or (outcome and STOPPED in outcome):
        logger.warning("stopped after %d shards (--stop-after-shards); rerun to resume", args.stop_after_shards)
        return 3
    if outcome:
        logger.error("%s; the finished shards are kept in %s: rerun to resume", outcome, parts.folder)
        return 1
    if not accelerator.is_main_process:
        return 0
    try:
        merge(parts, source, args, processes, table_schema, output)
    except DetectorError as err:
        logger.error("%s", err)
        return 1
    finish(args, output, detector, model, revision, source.description, parts)
    return 0


def finish(args, output: Path, detector, model: str, revision: str, description: str, parts: Parts) -> None:
    """The CSV, the summary and the histogram from the final file; push when asked (main process only)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    written = [output]
    if args.csv:
        parquet = pq.ParquetFile(output)
        with atomic_path(args.csv) as csv_temporary, pacsv.CSVWriter(csv_temporary, parquet.schema_arrow) as writer:
            for batch in parquet.iter_batches():
                writer.write_batch(batch)
        written.append(args.csv)
    columns = [c for c in SUMMARISED if c in pq.read_schema(output).names]
    table = pq.read_table(output, columns=columns)
    label_map = None
    if args.label_map:
        from .labels import parse_label_map

        label_map = parse_label_map(args.label_map)
    summary = summarise(table, detector.threshold, label_map)
    summary.update({"model": model, "model_revision": revision, "input": description,
                    "when": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    stem = output.with_suffix("")
    histogram, summary_file = Path(f"{stem}_hist.png"), Path(f"{stem}_summary.json")
    plot_histogram([p for p in table.column("p_fake").to_pylist() if p is not None], histogram, detector.threshold)
    write_text(summary_file, json.dumps(summary, indent=2, default=float, allow_nan=False))
    written += [histogram, summary_file]
    print(summary_text(summary))
    logger.info("wrote %s", ", ".join(str(path) for path in written))
    if args.push:
        card = dataset_card(summary, model, revision, description, summary["when"], pq.read_schema(output).names)
        url = push([output, summary_file, histogram], args.push, card, private=args.private)
        logger.info("published %s", url)
    if not args.keep_parts:
        shutil.rmtree(parts.folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
