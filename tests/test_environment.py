"""What results depend on besides the code: recorded with golden data and in metrics.json."""

from llmiqa.environment import KERNEL_FLAGS, machine, versions


def test_machine_names_the_cpu_and_the_kernels_torch_runs():
    described = machine()
    assert described["cpu"] and described["cores"] >= 1
    assert set(described["flags"]) <= set(KERNEL_FLAGS)
    assert isinstance(described["torch_cpu_capability"], str)  # AVX2, AVX512, DEFAULT, ...


def test_versions_says_which_packages_are_missing():
    found = versions(("numpy", "no-such-distribution-llmiqa"))
    assert found["numpy"].count(".") >= 1
    assert found["no-such-distribution-llmiqa"] is None
