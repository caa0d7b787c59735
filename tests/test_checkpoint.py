"""Tests of model folders and training state: a saved teacher loads back to identical outputs, every broken or
incompatible folder is a one-line CheckpointError naming the file, writes are atomic, and the resumable state
round-trips through ``torch.load(weights_only=True)`` with only the last checkpoint kept.
"""

import json
import os

import numpy as np
import pytest
import torch

from cnn2gnn.checkpoint import (
    FORMAT_VERSION,
    META,
    WEIGHTS,
    atomic_write_json,
    atomic_write_text,
    load_model,
    load_training_state,
    load_weights,
    save_model_dir,
    save_training_state,
)
from cnn2gnn.errors import CheckpointError, UserError
from cnn2gnn.models.cnn import create_teacher


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def teacher_meta(arch="resnet8", num_classes=10, width=4):
    return {
        "kind": "teacher",
        "arch": arch,
        "width": width,
        "data": "digits",
        "classes": [str(i) for i in range(num_classes)],
        "num_classes": num_classes,
        "in_channels": 1,
        "image_size": [8, 8],
        "mean": [0.3],
        "std": [0.4],
    }


def make_teacher(arch="resnet8", num_classes=10, width=4):
    model = create_teacher(arch, num_classes, in_channels=1, image_size=8, width=width)
    # move the BatchNorm statistics away from their defaults so that the round trip has to carry them
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 1, 8, 8) * 2 + 1)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = make_teacher()
    folder = tmp_path / "teacher"
    save_model_dir(folder, model, teacher_meta())
    return folder, model


def no_temporaries(folder):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")] == []


# ------------------------------------------------------------------------------------------- round trip


def test_save_and_load_teacher_gives_identical_outputs(saved):
    folder, model = saved
    loaded, meta = load_model(folder)
    assert not loaded.training
    assert meta["format_version"] == FORMAT_VERSION and meta["arch"] == "resnet8" and meta["num_classes"] == 10
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_model_folder_contents(saved):
    folder, _ = saved
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, META])
    meta = json.loads((folder / META).read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["kind"] == "teacher"
    assert no_temporaries(folder)


def test_saved_files_get_normal_permissions(saved):
    folder, _ = saved
    umask = os.umask(0)
    os.umask(umask)
    for name in (WEIGHTS, META):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_overwrites_an_existing_folder(saved):
    folder, _ = saved
    other = make_teacher()
    save_model_dir(folder, other, teacher_meta())
    loaded, _ = load_model(folder)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), other(x))
    assert no_temporaries(folder)


# ------------------------------------------------------------------------------------------- broken folders


def expect_error(folder, name):
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    message = str(err.value)
    assert name in message, message
    assert "\n" not in message
    return message


def test_checkpoint_error_is_a_user_error():
    assert issubclass(CheckpointError, UserError)


def test_missing_folder(tmp_path):
    assert "no such model folder" in expect_error(tmp_path / "nowhere", "nowhere")


def test_file_instead_of_folder(saved):
    folder, _ = saved
    assert "got a file" in expect_error(folder / WEIGHTS, WEIGHTS)


def test_missing_meta(saved):
    folder, _ = saved
    (folder / META).unlink()
    assert "missing" in expect_error(folder, META)


def test_missing_weights(saved):
    folder, _ = saved
    (folder / WEIGHTS).unlink()
    assert "missing" in expect_error(folder, WEIGHTS)


@pytest.mark.parametrize("text", ['{"kind": "teacher", "num_cl', "", "[1, 2]", "not json at all"])
def test_corrupted_meta(saved, text):
    folder, _ = saved
    (folder / META).write_text(text)
    assert "corrupted" in expect_error(folder, META)


def test_binary_meta(saved):
    folder, _ = saved
    (folder / META).write_bytes(b"\xff\xfe\x00{")
    expect_error(folder, META)


@pytest.mark.parametrize("key", ["format_version", "kind", "num_classes", "in_channels", "arch"])
def test_meta_without_a_needed_key(saved, key):
    folder, _ = saved
    meta = json.loads((folder / META).read_text())
    del meta[key]
    (folder / META).write_text(json.dumps(meta))
    expect_error(folder, META)


def test_unknown_kind(saved):
    folder, _ = saved
    meta = json.loads((folder / META).read_text())
    (folder / META).write_text(json.dumps({**meta, "kind": "transformer"}))
    assert "transformer" in expect_error(folder, META)


def test_unknown_architecture_in_meta(saved):
    folder, _ = saved
    meta = json.loads((folder / META).read_text())
    (folder / META).write_text(json.dumps({**meta, "arch": "resnet999"}))
    assert "resnet999" in expect_error(folder, META)


def test_truncated_weights(saved):
    folder, _ = saved
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    assert "truncated or corrupted" in expect_error(folder, WEIGHTS)


@pytest.mark.parametrize("size", [0, 7, 100, 4096])
def test_short_weights(saved, size):
    folder, _ = saved
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:size])
    expect_error(folder, WEIGHTS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes_as_weights(saved, seed):
    folder, _ = saved
    size = (folder / WEIGHTS).stat().st_size
    (folder / WEIGHTS).write_bytes(np.random.default_rng(seed).bytes(size))
    expect_error(folder, WEIGHTS)


def test_json_header_of_random_size(saved):
    folder, _ = saved
    header = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
    (folder / WEIGHTS).write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 3)
    expect_error(folder, WEIGHTS)


def test_weights_of_another_architecture(tmp_path):
    folder = tmp_path / "t"
    save_model_dir(folder, make_teacher("resnet8"), teacher_meta("resnet20"))
    message = expect_error(folder, WEIGHTS)
    assert "do not match" in message and "resnet20" in message


def test_weights_of_another_width(tmp_path):
    folder = tmp_path / "t"
    save_model_dir(folder, make_teacher(width=4), teacher_meta(width=8))
    assert "shape" in expect_error(folder, WEIGHTS)


def test_weights_for_another_class_count(tmp_path):
    folder = tmp_path / "t"
    save_model_dir(folder, make_teacher(num_classes=10), teacher_meta(num_classes=7))
    message = expect_error(folder, WEIGHTS)
    assert "fc.weight" in message and "(7, 16)" in message


def test_newer_format_version(saved):
    folder, _ = saved
    meta = json.loads((folder / META).read_text())
    (folder / META).write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    message = expect_error(folder, META)
    assert "newer" in message and "upgrade" in message


def test_format_version_of_the_wrong_type(saved):
    folder, _ = saved
    meta = json.loads((folder / META).read_text())
    (folder / META).write_text(json.dumps({**meta, "format_version": "1"}))
    expect_error(folder, META)


def test_load_weights_leaves_the_model_alone_on_mismatch(tmp_path):
    src, dst = make_teacher(num_classes=10), make_teacher(num_classes=7)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    save_model_dir(tmp_path, src, teacher_meta())
    with pytest.raises(CheckpointError, match="for teacher"):
        load_weights(tmp_path / WEIGHTS, dst, what="teacher")
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


# ------------------------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "file.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["file.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "file.txt"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"not serialisable": object()})
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


# ------------------------------------------------------------------------------------------- training state


def train_a_step(model, optimizer, scheduler):
    model.train()
    loss = model(torch.randn(4, 1, 8, 8)).logsumexp(1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def optimizer_and_scheduler(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return optimizer, scheduler


def test_training_state_round_trip_keeps_only_the_last(tmp_path):
    model = make_teacher()
    optimizer, scheduler = optimizer_and_scheduler(model)
    for epoch in range(3):
        train_a_step(model, optimizer, scheduler)
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "note": [1, 2.5, "x"],
        }
        save_training_state(tmp_path, epoch, model, state)
    ckpt = tmp_path / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch0002.safetensors", "epoch0002.state.pt", "latest.json"]
    assert json.loads((ckpt / "latest.json").read_text())["epoch"] == 2

    raw = torch.load(ckpt / "epoch0002.state.pt", weights_only=True)
    assert raw["epoch"] == 2 and raw["note"] == [1, 2.5, "x"]

    fresh = create_teacher("resnet8", 10, 1, 8, width=4)
    loaded = load_training_state(tmp_path, fresh)
    assert loaded["epoch"] == 2
    assert torch.equal(loaded["rng_torch"], state["rng_torch"])
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    opt2, sched2 = optimizer_and_scheduler(fresh)
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    assert sched2.last_epoch == scheduler.last_epoch == 3
    assert opt2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    momentum = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    momentum2 = [opt2.state[p]["momentum_buffer"] for p in fresh.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, momentum2, strict=True))

    # one more step from each gives the same weights: the state carries everything the optimizer needs
    torch.manual_seed(1)
    train_a_step(model, optimizer, scheduler)
    torch.manual_seed(1)
    train_a_step(fresh, opt2, sched2)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_keep_more_than_one(tmp_path):
    model = make_teacher()
    for epoch in range(4):
        save_training_state(tmp_path, epoch, model, {}, keep=2)
    names = sorted(p.name for p in (tmp_path / "ckpt").glob("epoch*"))
    assert names == ["epoch0002.safetensors", "epoch0002.state.pt", "epoch0003.safetensors", "epoch0003.state.pt"]


def test_no_training_state_is_none(tmp_path):
    assert load_training_state(tmp_path, make_teacher()) is None


def test_corrupted_training_state(tmp_path):
    model = make_teacher()
    save_training_state(tmp_path, 0, model, {"x": 1})
    path = tmp_path / "ckpt" / "epoch0000.state.pt"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="epoch0000.state.pt"):
        load_training_state(tmp_path, model)
    path.unlink()
    with pytest.raises(CheckpointError, match="missing training state"):
        load_training_state(tmp_path, model)


def test_training_state_of_another_model(tmp_path):
    save_training_state(tmp_path, 0, make_teacher(num_classes=10), {})
    with pytest.raises(CheckpointError, match="epoch0000.safetensors"):
        load_training_state(tmp_path, make_teacher(num_classes=3))


def test_corrupted_checkpoint_pointer(tmp_path):
    model = make_teacher()
    save_training_state(tmp_path, 0, model, {})
    (tmp_path / "ckpt" / "latest.json").write_text('{"format_version": 1, "ep')
    with pytest.raises(CheckpointError, match="latest.json"):
        load_training_state(tmp_path, model)
    (tmp_path / "ckpt" / "latest.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(CheckpointError, match="newer"):
        load_training_state(tmp_path, model)
