"""Tests of the layered config: defaults < YAML files < ``--set`` overrides, unknown keys and wrong types as a
:class:`ConfigError` naming the key, and the YAML dump of a resolved config read back to the same config.
"""

from pathlib import Path

import pytest

from cnn2gnn.config import (
    DataConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
    apply_override,
    build_config,
    dump_yaml,
    from_dict,
    read_yaml,
    to_dict,
)
from cnn2gnn.errors import ConfigError, UserError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("cls", [TeacherConfig, StudentConfig])
def test_defaults_build(cls):
    cfg = build_config(cls)
    assert cfg == cls()
    assert from_dict(cls, to_dict(cls())) == cls()


def test_teacher_and_student_defaults_differ_where_documented():
    t, s = TeacherConfig(), StudentConfig()
    assert t.optim == OptimConfig() and t.data == DataConfig()
    assert s.optim.optimizer == "adamw" and s.optim.epochs == 30
    assert s.data.augment is False and t.data.augment is False  # 5-epoch teachers do better without (ablations.md)


# ------------------------------------------------------------------------------------------- layering


def test_file_then_overrides_win(tmp_path):
    base = write(tmp_path / "base.yaml", "optim:\n  lr: 0.2\n  epochs: 7\ndata:\n  name: digits\n")
    top = write(tmp_path / "top.yaml", "optim:\n  epochs: 9\nrun:\n  seed: 3\n")
    cfg = build_config(TeacherConfig, files=[base, top], overrides=["optim.epochs=11", "model.arch=resnet20"])
    assert cfg.optim.lr == 0.2  # file over default
    assert cfg.optim.epochs == 11  # override over both files
    assert cfg.run.seed == 3  # second file
    assert cfg.data.name == "digits"
    assert cfg.model.arch == "resnet20"
    assert cfg.optim.batch_size == OptimConfig().batch_size  # untouched default
    assert cfg.data.val_fraction == DataConfig().val_fraction  # sibling of a key set in a file keeps its default


def test_later_file_wins_over_earlier(tmp_path):
    a = write(tmp_path / "a.yaml", "optim: {epochs: 2}\n")
    b = write(tmp_path / "b.yaml", "optim: {epochs: 4}\n")
    assert build_config(TeacherConfig, files=[a, b]).optim.epochs == 4
    assert build_config(TeacherConfig, files=[b, a]).optim.epochs == 2


def test_later_override_wins():
    cfg = build_config(TeacherConfig, overrides=["run.seed=1", "run.seed=5"])
    assert cfg.run.seed == 5


def test_empty_yaml_file_is_no_change(tmp_path):
    assert build_config(TeacherConfig, files=[write(tmp_path / "e.yaml", "")]) == TeacherConfig()


@pytest.mark.parametrize(
    ("assignment", "get", "expected"),
    [
        ("optim.lr=0.05", lambda c: c.optim.lr, 0.05),
        ("optim.lr=1e-3", lambda c: c.optim.lr, 1e-3),  # YAML 1.1 alone reads 1e-3 as a string
        ("optim.lr=2E+2", lambda c: c.optim.lr, 200.0),
        ("optim.grad_clip=1", lambda c: c.optim.grad_clip, 1.0),
        ("optim.grad_clip=null", lambda c: c.optim.grad_clip, None),
        ("data.limit_train=None", lambda c: c.data.limit_train, None),
        ("data.augment=false", lambda c: c.data.augment, False),
        ("data.root=/tmp/x", lambda c: c.data.root, "/tmp/x"),
        ("data.root='2024'", lambda c: c.data.root, "2024"),
        ("run.device=cuda:1", lambda c: c.run.device, "cuda:1"),
    ],
)
def test_override_values_are_parsed_as_yaml(assignment, get, expected):
    assert get(build_config(TeacherConfig, overrides=[assignment])) == expected


def test_scientific_notation_in_a_file(tmp_path):
    cfg = build_config(TeacherConfig, files=[write(tmp_path / "c.yaml", "optim:\n  lr: 5e-4\n  weight_decay: 1e-5\n")])
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == 1e-5


def test_int_accepted_for_float_and_stored_as_float():
    cfg = build_config(TeacherConfig, overrides=["optim.lr=1"])
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float


def test_null_for_optional(tmp_path):
    path = write(tmp_path / "c.yaml", "data:\n  root: null\n  limit_train: ~\n")
    cfg = build_config(TeacherConfig, files=[path], overrides=["run.threads=null"])
    assert cfg.data.root is None and cfg.data.limit_train is None and cfg.run.threads is None


def test_optional_int_takes_an_int():
    assert build_config(TeacherConfig, overrides=["data.limit_train=100"]).data.limit_train == 100


# ------------------------------------------------------------------------------------------- unknown keys


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"overrides": ["nope=1"]}, "nope"),
        ({"overrides": ["optim.nope=1"]}, "optim.nope"),
        ({"overrides": ["nope.key=1"]}, "nope"),
        ({"base": {"nope": 1}}, "nope"),
        ({"base": {"optim": {"lrr": 0.1}}}, "optim.lrr"),
    ],
)
def test_unknown_key_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build_config(TeacherConfig, **kwargs)


@pytest.mark.parametrize(
    ("text", "key"),
    [("nope: 1\n", "nope"), ("optim:\n  lrr: 0.1\n", "optim.lrr"), ("data:\n  nme: digits\n", "data.nme")],
)
def test_unknown_key_in_a_file(tmp_path, text, key):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build_config(TeacherConfig, files=[path])


def test_unknown_key_lists_known_keys():
    with pytest.raises(ConfigError, match="epochs"):
        build_config(TeacherConfig, overrides=["optim.epoch=3"])


def test_from_dict_unknown_nested_key():
    with pytest.raises(ConfigError, match="'model.depth'"):
        from_dict(TeacherConfig, {"model": {"depth": 20}})


def test_student_key_is_unknown_to_teacher():
    with pytest.raises(ConfigError, match="'distill'"):
        build_config(TeacherConfig, overrides=["distill.alpha=0.5"])
    assert build_config(StudentConfig, overrides=["distill.alpha=0.7"]).distill.alpha == 0.7


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        build_config(TeacherConfig, overrides=["optim.lr"])


def test_apply_override_leaves_other_keys():
    data = to_dict(TeacherConfig())
    apply_override(data, "optim.lr=0.5")
    expected = to_dict(TeacherConfig())
    expected["optim"]["lr"] = 0.5
    assert data == expected


# ------------------------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("assignment", "key"),
    [
        ("optim.epochs=abc", "optim.epochs"),  # str for int
        ("optim.epochs=2.5", "optim.epochs"),  # float for int
        ("optim.epochs=2.0", "optim.epochs"),  # a whole float is still a float
        ("optim.epochs=true", "optim.epochs"),  # bool for int
        ("optim.lr=fast", "optim.lr"),  # str for float
        ("optim.lr=true", "optim.lr"),  # bool for float
        ("data.augment=1", "data.augment"),  # int for bool
        ("data.name=3", "data.name"),  # int for str
        ("data.limit_train=1.5", "data.limit_train"),  # float for Optional[int]
        ("data.limit_train=false", "data.limit_train"),  # bool for Optional[int]
        ("optim=3", "optim"),  # a value where a section belongs
        ("optim.epochs=[1, 2]", "optim.epochs"),
    ],
)
def test_wrong_type_names_the_key(assignment, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build_config(TeacherConfig, overrides=[assignment])


def test_wrong_type_in_a_file(tmp_path):
    path = write(tmp_path / "c.yaml", "optim:\n  batch_size: '64'\n")
    with pytest.raises(ConfigError, match="'optim.batch_size'"):
        build_config(TeacherConfig, files=[path])


def test_section_given_a_scalar_in_a_file(tmp_path):
    path = write(tmp_path / "c.yaml", "run: 5\n")
    with pytest.raises(ConfigError, match="'run'"):
        build_config(TeacherConfig, files=[path])


def test_null_for_a_required_value():
    with pytest.raises(ConfigError, match="'optim.epochs'"):
        build_config(TeacherConfig, overrides=["optim.epochs=null"])


# ------------------------------------------------------------------------------------------- files


def test_dump_yaml_round_trips(tmp_path):
    cfg = build_config(
        TeacherConfig,
        overrides=["optim.lr=1e-5", "optim.grad_clip=2", "data.root=/some/where", "data.limit_train=50", "run.seed=7"],
    )
    path = tmp_path / "config.yaml"
    text = dump_yaml(cfg, path)
    assert path.read_text() == text
    assert build_config(TeacherConfig, files=[path]) == cfg
    student = build_config(StudentConfig, overrides=["model.aggregate=gcn", "distill.teacher=runs/t"])
    dump_yaml(student, tmp_path / "s.yaml")
    assert build_config(StudentConfig, files=[tmp_path / "s.yaml"]) == student


def test_dump_yaml_leaves_no_temporary_file(tmp_path):
    dump_yaml(TeacherConfig(), tmp_path / "config.yaml")
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize(
    "text",
    [
        "optim: [1, 2\n",  # unclosed flow sequence
        "optim:\n  lr: 0.1\n lr: 2\n",  # bad indentation
        "a: b: c\n",
        "x: !!python/object/apply:os.system ['true']\n",  # code in YAML is refused, not run
    ],
)
def test_malformed_yaml(tmp_path, text):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match="bad.yaml"):
        build_config(TeacherConfig, files=[path])


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(path)


def test_binary_file_as_config(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="weights.yaml"):
        read_yaml(path)


def test_missing_and_folder_config_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml"):
        build_config(TeacherConfig, files=[tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match="cannot read"):
        read_yaml(tmp_path)


# ------------------------------------------------------------------------------------------- choices and old keys


@pytest.mark.parametrize(
    ("assignment", "fragments"),
    [
        ("model.aggregate=bogus", ["'model.aggregate'", "one of sage, gcn", "'bogus'"]),
        ("model.aggregate=none", ["one of sage, gcn", "model.arch=mlp"]),  # the 0.1 spelling of the MLP
        ("model.arch=cnn", ["'model.arch'", "gnn, mlp"]),
        ("distill.train_graph=all", ["'distill.train_graph'", "batch, anchors"]),
        ("optim.optimizer=adam", ["'optim.optimizer'", "sgd, adamw"]),
        ("model.embed=3", ["'model.embed'", "none, randconv, patch"]),
    ],
)
def test_a_choice_outside_its_literal_names_the_key_and_the_allowed_values(assignment, fragments):
    with pytest.raises(ConfigError) as err:
        build_config(StudentConfig, overrides=[assignment])
    for fragment in fragments:
        assert fragment in str(err.value)


def test_the_policy_choices_are_the_policies():
    import typing

    from cnn2gnn.config import DistillConfig
    from cnn2gnn.policy import POLICIES

    assert typing.get_args(typing.get_type_hints(DistillConfig)["train_graph"]) == POLICIES


@pytest.mark.parametrize("key", ["model.anchors", "model.train_graph"])
def test_a_moved_key_in_an_override_says_where_it_went(key):
    with pytest.raises(ConfigError, match=f"'{key}' is now '(bank.size|distill.train_graph)'"):
        build_config(StudentConfig, overrides=[f"{key}=1"])


def test_a_config_file_of_version_0_1_is_read_in_todays_keys(tmp_path):
    old = write(tmp_path / "old.yaml", "model:\n  aggregate: none\n  anchors: 64\n  train_graph: anchors\n  k: 5\n")
    cfg = build_config(StudentConfig, files=[old])
    assert (cfg.model.arch, cfg.model.aggregate, cfg.model.k) == ("mlp", "sage", 5)
    assert (cfg.bank.size, cfg.distill.train_graph) == (64, "anchors")


def test_a_missing_required_key_is_named():
    from dataclasses import dataclass

    @dataclass
    class Needs:
        size: int
        name: str = "x"

    with pytest.raises(ConfigError, match="missing config key 'sec.size'"):
        from_dict(Needs, {}, prefix="sec.")
