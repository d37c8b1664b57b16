"""What results depend on besides the code: recorded with golden data and in metrics.json."""

import itertools

from llmiqa.environment import (
    KERNEL_FLAGS,
    broken_dependency,
    machine,
    torchvision_for,
    versions,
)


def test_machine_names_the_cpu_and_the_kernels_torch_runs():
    described = machine()
    assert described["cpu"] and described["cores"] >= 1
    assert set(described["flags"]) <= set(KERNEL_FLAGS)
    assert isinstance(described["torch_cpu_capability"], str)  # AVX2, AVX512, DEFAULT, ...


def test_versions_says_which_packages_are_missing():
    found = versions(("numpy", "no-such-distribution-llmiqa"))
    assert found["numpy"].count(".") >= 1
    assert found["no-such-distribution-llmiqa"] is None


def chained(*errors: BaseException) -> BaseException:
    """The first error raised from the second, and so on, as a real traceback chains them."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


def test_a_broken_dependency_is_told_from_a_bug():
    lazy = ModuleNotFoundError("Could not import module 'Qwen2_5_VLForConditionalGeneration'")
    mismatch = chained(lazy, RuntimeError("operator torchvision::nms does not exist"))
    assert "operator torchvision::nms does not exist" in broken_dependency(mismatch)
    missing = chained(ValueError("x"), ModuleNotFoundError("No module named 'scipy'", name="scipy"))
    assert "No module named 'scipy'" in broken_dependency(missing)
    ours = ModuleNotFoundError("No module named 'llmiqa.gone'", name="llmiqa.gone")
    assert broken_dependency(ours) is None  # llmiqa's own import: a bug
    assert broken_dependency(ValueError("a bug")) is None


def test_each_torch_has_its_torchvision():
    assert torchvision_for("2.14.1") == "0.29.1"
    assert torchvision_for("2.13.0+cpu") == "0.28.0+cpu"
    assert torchvision_for("1.13.1") is None
