"""Files that survive a power loss: each file and its folder reach the disk (fsync) around the rename that publishes them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEST_IMG_SIZE
from detector import model as model_module
from detector import score
from detector.model import create_model


@pytest.fixture
def journal(monkeypatch) -> list[tuple]:
    """Every fsync (with the path its descriptor names) and every rename or folder exchange, in order."""
    events: list[tuple] = []
    real_fsync, real_rename, real_replace, real_exchange = os.fsync, os.rename, os.replace, model_module._exchange

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(source, target, *args, **kwargs):
        events.append(("rename", os.path.abspath(source), os.path.abspath(target)))
        return real_rename(source, target, *args, **kwargs)

    def replace(source, target, *args, **kwargs):
        events.append(("rename", os.path.abspath(source), os.path.abspath(target)))
        return real_replace(source, target, *args, **kwargs)

    def exchange(a, b):
        done = real_exchange(a, b)
        if done:
            events.append(("rename", os.path.abspath(a), os.path.abspath(b)))
        return done

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(model_module, "_exchange", exchange)
    return events


def published(events: list[tuple], target: Path) -> int:
    """The index of the rename that put something at `target`."""
    (index,) = [i for i, event in enumerate(events) if event[0] == "rename" and event[2] == str(target)]
    return index


def synced(events: list[tuple], start: int = 0, stop: int | None = None) -> list[str]:
    return [event[1] for event in events[start:stop] if event[0] == "fsync"]


def test_a_checkpoint_reaches_the_disk_before_it_replaces_the_last_one(tmp_path, journal):
    from accelerate import Accelerator

    from training.train import CHECKPOINT, STATE_FILE, save_checkpoint

    torch.manual_seed(0)
    model = create_model("mobilenetv2_100", img_size=TEST_IMG_SIZE)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    for epoch in (1, 2):  # the second save replaces a checkpoint that exists
        journal.clear()
        save_checkpoint(accelerator, tmp_path, {"epoch": epoch}, {"epoch": epoch})
        last = tmp_path / CHECKPOINT
        index = published(journal, last)
        staging = Path(journal[index][1])
        files = sorted(path.relative_to(last) for path in last.rglob("*") if path.is_file())
        assert STATE_FILE in {str(name) for name in files} and len(files) > 2  # weights, optimiser, generators, state
        before = synced(journal, stop=index)
        # after an exchange the staging name holds the old folder: the new files were synced under it before
        assert [name for name in files if str(staging / name) not in before] == []
        assert str(staging) in before  # the folder's own entries too
        assert str(tmp_path) in synced(journal, start=index)  # and the rename in the folder that holds last/


def test_a_parquet_shard_reaches_the_disk_before_its_name_appears(tmp_path, journal):
    path = tmp_path / "shard-000000.parquet"
    rows = [{score.ORDER: 0, "id": "a", "p_fake": 0.25, "p_real": 0.75, "predicted": "real", "verdict": "likely real",
             "error": None, "model": "m", "model_revision": "r"}]
    score.write_parquet(rows, path, score.schema(faces=False, has_label=False))
    index = published(journal, path)
    temporary = journal[index][1]
    assert temporary in synced(journal, stop=index)
    assert str(tmp_path) in synced(journal, start=index)
    import pyarrow.parquet as pq

    assert pq.read_table(path).column("id").to_pylist() == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_stream_state_reaches_the_disk_and_a_failed_write_leaves_the_old_file(tmp_path, journal):
    parts = score.Parts(tmp_path / "scores.parquet")
    parts.folder.mkdir()
    parts.save_stream_state(0, {"shards": 1})
    path = parts.folder / "rank000-stream.json"
    index = published(journal, path)
    assert journal[index][1] in synced(journal, stop=index) and str(parts.folder) in synced(journal, start=index)
    with pytest.raises(TypeError):
        parts.save_stream_state(0, {"shards": object()})  # not JSON: fails while writing
    assert parts.stream_state(0) == {"shards": 1} and [p.name for p in parts.folder.iterdir()] == [path.name]


def test_the_landmark_cache_reaches_the_disk_before_its_name_appears(tmp_path, journal):
    from training.face_mesh import LandmarkCache

    path = tmp_path / "landmarks.npz"
    points = np.arange(2 * 468 * 2, dtype=np.float32).reshape(2, 468, 2)
    LandmarkCache(["a.jpg", "b.jpg"], ["fa", "fb"], points, path).save()
    index = published(journal, path)
    assert journal[index][1] in synced(journal, stop=index) and str(tmp_path) in synced(journal, start=index)
    loaded = LandmarkCache.load(path)
    assert loaded.keys == ["a.jpg", "b.jpg"] and (loaded.points == points).all()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
