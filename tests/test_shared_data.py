"""A test that needs a file of ../shared/data: skips on a bare clone, fails under CI."""

import pytest

from tests.shared_data import shared_data_file


def test_a_present_file_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"x")
    assert shared_data_file("cifar10-jpeg.tar.gz", folder=tmp_path) == tmp_path / "cifar10-jpeg.tar.gz"


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_a_missing_file_skips_with_one_line_naming_it_outside_ci(tmp_path, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        shared_data_file("cifar10-jpeg.tar.gz", folder=tmp_path)
    reason = str(skipped.value)
    assert "\n" not in reason
    assert reason.startswith(f"{tmp_path / 'cifar10-jpeg.tar.gz'} is missing")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_file_fails_under_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="cifar10-jpeg.tar.gz is missing.*CI is set"):
        shared_data_file("cifar10-jpeg.tar.gz", folder=tmp_path)
