"""Tests of the CNN teachers: every registry entry builds and runs on tiny images, gradients reach every parameter,
the three-method interface agrees with itself, unknown names list the known ones, and a FrozenTeacher stays frozen.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn2gnn.errors import UserError
from cnn2gnn.models.cnn import TEACHERS, CifarResNet, FrozenTeacher, count_parameters, create_teacher

CIFAR = ["resnet8", "resnet20", "resnet56"]
TORCHVISION_SMALL = ["resnet18", "resnet34", "resnet50"]
TORCHVISION_LARGE = ["resnet101", "resnet152"]


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def test_registry_covers_the_documented_names():
    assert set(TEACHERS) == set(CIFAR + TORCHVISION_SMALL + TORCHVISION_LARGE)


@pytest.mark.parametrize("arch", CIFAR + TORCHVISION_SMALL)
@pytest.mark.parametrize(("channels", "size"), [(1, 16), (3, 32)])
def test_every_teacher_builds_and_runs(arch, channels, size):
    model = create_teacher(arch, num_classes=7, in_channels=channels, image_size=size, width=4).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (2, model.num_features)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", TORCHVISION_LARGE)
def test_large_teachers_build_and_run_once(arch):
    model = create_teacher(arch, num_classes=5, in_channels=3, image_size=16).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def test_large_images_keep_the_imagenet_stem_with_grey_input():
    model = create_teacher("resnet18", num_classes=3, in_channels=1, image_size=72).eval()
    assert model.body.conv1.kernel_size == (7, 7) and model.body.conv1.in_channels == 1
    assert not isinstance(model.body.maxpool, nn.Identity)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 72, 72)).shape == (2, 3)


def test_small_images_get_the_cifar_stem():
    model = create_teacher("resnet18", num_classes=3, in_channels=1, image_size=28)
    assert model.body.conv1.kernel_size == (3, 3) and model.body.conv1.stride == (1, 1)
    assert isinstance(model.body.maxpool, nn.Identity)


@pytest.mark.parametrize(("depth", "blocks"), [(8, 3), (20, 9), (56, 27)])
def test_cifar_resnet_depth_and_width(depth, blocks):
    model = CifarResNet(depth, num_classes=10, in_channels=3, width=8)
    assert len(model.blocks) == blocks
    assert model.num_features == 32 and model.fc.in_features == 32
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 6n+2 = 3x3 convolutions + the classifier


def test_cifar_resnet_rejects_a_bad_depth():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(10, num_classes=10)


def test_width_is_passed_to_cifar_resnets():
    narrow = create_teacher("resnet8", 10, 1, 8, width=4)
    wide = create_teacher("resnet8", 10, 1, 8, width=16)
    assert narrow.num_features == 16 and wide.num_features == 64
    assert count_parameters(narrow) < count_parameters(wide)


def test_resnet8_backward_reaches_every_parameter():
    model = create_teacher("resnet8", num_classes=10, in_channels=1, image_size=8, width=4).train()
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", ["resnet8", "resnet18"])
def test_forward_is_head_of_features(arch):
    model = create_teacher(arch, num_classes=4, in_channels=3, image_size=16, width=4).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model.forward_head(model.forward_features(x)))


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(UserError, match="resnet999") as err:
        create_teacher("resnet999", 10, 3, 32)
    for name in TEACHERS:
        assert name in str(err.value)


def test_a_narrow_network_trains_on_nchw_strides():
    # one-channel batches carry channels-last strides; oneDNN's AVX2 backward on channels-last activations of fewer
    # than 8 channels aborted a width-4 teacher run (the pinned digits test) on an AMD EPYC at one thread
    x = torch.randn(4, 8, 8, 1).permute(0, 3, 1, 2)  # as the datasets make them
    for width, strides in ((4, (64, 64, 8, 1)), (8, x.stride())):
        model, seen = create_teacher("resnet8", 10, 1, 8, width=width).train(), []
        model.stem.register_forward_pre_hook(lambda _, args, seen=seen: seen.append(args[0].stride()))
        model(x).sum().backward()
        with torch.no_grad():
            model(x)  # inference keeps the faster layout
        assert seen == [strides, x.stride()]


# ------------------------------------------------------------------------------------------- FrozenTeacher


@pytest.fixture
def frozen():
    model = create_teacher("resnet8", num_classes=5, in_channels=1, image_size=8, width=4)
    return model, FrozenTeacher(model)


def test_frozen_teacher_has_no_trainable_parameter(frozen):
    _, teacher = frozen
    assert all(not p.requires_grad for p in teacher.parameters())
    assert count_parameters(teacher) > 0


def test_frozen_teacher_stays_in_eval_mode(frozen):
    _, teacher = frozen
    assert not teacher.training
    assert teacher.train() is teacher
    assert not any(m.training for m in teacher.modules())
    teacher.train(True)
    assert not any(m.training for m in teacher.modules())
    parent = nn.ModuleDict({"teacher": teacher, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training
    assert not any(m.training for m in teacher.modules())


def test_frozen_teacher_output_has_no_graph(frozen):
    model, teacher = frozen
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    teacher.train()
    for out in (teacher(x), teacher.forward_features(x), teacher.forward_head(torch.randn(4, 16, requires_grad=True))):
        assert out.grad_fn is None and not out.requires_grad
    model.eval()
    with torch.no_grad():
        assert torch.equal(teacher(x), model(x))


def test_frozen_teacher_keeps_batchnorm_statistics(frozen):
    _, teacher = frozen
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    teacher(torch.randn(8, 1, 8, 8) * 3 + 1)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
