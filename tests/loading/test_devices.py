"""Device, dtype and batch size are decided once, before any image; a device this machine
lacks is one line saying what it has."""

import pytest
import torch

from llmiqa.errors import UsageError
from llmiqa.loading.devices import default_batch_size, resolve_device, resolve_dtype


def test_auto_picks_the_best_device_here():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device(None).type == resolve_device("auto").type == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu", "not a device name"),
        ("xla", "unsupported device type"),
        ("cuda:7", "CUDA"),
    ],
)
def test_devices_that_cannot_be_used_are_one_line(name, message):
    if name == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(UsageError, match=message) as error:
        resolve_device(name)
    assert str(error.value).startswith(f"--device {name}: ") and "\n" not in str(error.value)


def test_dtypes_default_to_float32_on_a_cpu_and_take_a_name():
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) is torch.float32
    assert resolve_dtype("auto", cpu) is torch.float32
    assert resolve_dtype("bfloat16", cpu) is torch.bfloat16
    with pytest.raises(UsageError, match="unknown dtype 'half'"):
        resolve_dtype("half", cpu)


def test_batching_is_for_gpus():
    assert default_batch_size(torch.device("cpu")) == 1
    assert default_batch_size(torch.device("cuda")) == 8
