"""On a CUDA device (`make gpu-check`): the training recipe and a ResNet-20 train and predict on the GPU.

Every test here skips without CUDA, as in CI. The ResNet tests also skip where the job spec has no
"resnet" architecture (issue 14 part 1, built alongside): they are written against its contract,
`{"architecture": "resnet", "depth": 20, "width": 16}`.
"""

import pytest
import torch
from torch import nn

from bench.resnet import RESNET_20, available
from bench.synthetic_images import SHAPE, image_dataset
from bncore.data.builtin import load_dataset, prepare_data
from bncore.specs import AugmentationSpec, JobSpec, ModelSpec, TrainingSpec
from bncore.training.augmentation import BatchAugmenter
from bncore.training.devices import exact_fp32
from bncore.training.loop import train
from bncore.training.networks import build_network
from bncore.training.trained_model import TrainedModel

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
needs_resnet = pytest.mark.skipif(
    not available(), reason="the 'resnet' architecture is not in this checkout's ModelSpec (issue 14 part 1)"
)
CUDA, CPU = torch.device("cuda:0"), torch.device("cpu")
RECIPE = {
    "seed": 1,
    "batch_size": 128,
    "schedule": {"kind": "cosine", "warmup_epochs": 1},
    "augmentation": {"random_crop_padding": 4, "horizontal_flip": True},
    "label_smoothing": 0.1,
    "grad_clip_norm": 5.0,
}


def test_augmentation_draws_on_the_gpu_the_same_for_the_same_seed() -> None:
    images = torch.randn(256, 3, 32, 32, device=CUDA)
    spec = AugmentationSpec(random_crop_padding=4, horizontal_flip=True)
    first, second = BatchAugmenter(spec, 0, CUDA)(images), BatchAugmenter(spec, 0, CUDA)(images)
    assert first.device.type == "cuda" and torch.equal(first, second)
    assert not torch.equal(first, BatchAugmenter(spec, 1, CUDA)(images))
    padded = nn.functional.pad(images, (4,) * 4)
    for index in range(0, 256, 17):  # each sample is a crop of its padded self, mirrored or not
        crops = [
            padded[index, :, top : top + 32, left : left + 32].flip(-1)
            if flip
            else padded[index, :, top : top + 32, left : left + 32]
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
        ]
        assert any(torch.equal(first[index], crop) for crop in crops), index


def test_a_scheduled_augmented_cnn_learns_on_cuda_with_the_cpus_learning_rates() -> None:
    model = ModelSpec(architecture="cnn", num_classes=10, input_shape=[1, 8, 8], channels=[16, 32])
    data = prepare_data(load_dataset("digits"), (1, 8, 8), 0.2, 1)
    spec = TrainingSpec.model_validate({**RECIPE, "epochs": 4, "batch_size": 64})
    rates = {}
    for device in (CUDA, CPU):
        torch.manual_seed(1)
        result = train(build_network(model, (1, 8, 8)).to(device), data.to(device), spec)
        rates[device.type] = [m.learning_rate for m in result.history]
        if device == CUDA:
            assert result.history[-1].val_accuracy > 0.8
    assert rates["cuda"] == rates["cpu"]


def resnet_data(samples: int = 2048):
    return prepare_data(image_dataset(samples), SHAPE, 0.2, 0).to(CUDA)


@needs_resnet
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_a_resnet20_trains_on_cuda_with_bn_in_fp32_and_channels_last_under_autocast(bf16: bool) -> None:
    model = ModelSpec.model_validate({**RESNET_20, "input_shape": list(SHAPE)})
    torch.manual_seed(0)
    network = build_network(model, SHAPE).to(CUDA)
    seen: set[tuple[str, torch.dtype, bool]] = set()

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if module.training and isinstance(module, nn.BatchNorm2d | nn.Conv2d):
            layout = module.weight.is_contiguous(memory_format=torch.channels_last) and module.weight.shape[-1] > 1
            seen.add((type(module).__name__, output.dtype, layout))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = train(network, resnet_data(), TrainingSpec.model_validate({**RECIPE, "epochs": 6, "mixed_precision": bf16}))
    finally:
        hook.remove()

    bn_dtypes = {dtype for kind, dtype, _ in seen if kind == "BatchNorm2d"}
    conv_dtypes = {dtype for kind, dtype, _ in seen if kind == "Conv2d"}
    assert bn_dtypes == {torch.float32}
    assert conv_dtypes == ({torch.bfloat16} if bf16 else {torch.float32})
    assert any(layout for kind, _, layout in seen if kind == "Conv2d") == bf16  # 3×3 kernels NHWC while training
    assert all(p.is_contiguous() for p in network.parameters())  # stored in the usual layout
    assert all(m.running_var.dtype == torch.float32 for m in network.modules() if isinstance(m, nn.BatchNorm2d))
    assert result.history[-1].val_accuracy > 0.3  # ten classes: well above chance after six epochs


@needs_resnet
def test_a_resnet20s_predictions_on_cuda_equal_the_cpus_within_1e_4() -> None:
    data = resnet_data()
    spec = JobSpec.model_validate({"model": {**RESNET_20, "input_shape": list(SHAPE)}, "dataset": {"name": "digits"}})
    torch.manual_seed(0)
    network = build_network(spec.model, SHAPE).to(CUDA)
    train(network, data, TrainingSpec.model_validate({**RECIPE, "epochs": 2}))
    raw = data.x_val * data.input_std + data.input_mean

    with exact_fp32():
        on_cuda = TrainedModel(spec, network, data.input_mean, data.input_std).predict(raw).logits.cpu()
    network.cpu()
    on_cpu = TrainedModel(spec, network, data.input_mean.cpu(), data.input_std.cpu()).predict(raw.cpu()).logits

    torch.testing.assert_close(on_cuda, on_cpu, rtol=0, atol=1e-4)
