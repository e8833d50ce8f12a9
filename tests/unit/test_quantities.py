import pytest

from spawner_ext.quantities import QuantityError, format_cpu, format_memory, parse_cpu, parse_memory


@pytest.mark.parametrize("text,cores", [("500m", 0.5), (2, 2.0), ("0.25", 0.25), ("1", 1.0), (1.5, 1.5)])
def test_cpu(text, cores):
    assert parse_cpu(text) == cores


@pytest.mark.parametrize("text,num", [("4Gi", 4 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), (1024, 1024), ("1.5Gi", 1536 * 2**20)])
def test_memory(text, num):
    assert parse_memory(text) == num


@pytest.mark.parametrize("bad", ["4 cores", "", "abc", "-1", "1Gb", "1e3", True, "0"])
def test_bad_cpu(bad):
    with pytest.raises(QuantityError):
        parse_cpu(bad)


@pytest.mark.parametrize("bad", ["500m", "1.5", "16 GB", "0Gi"])
def test_bad_memory(bad):
    with pytest.raises(QuantityError):
        parse_memory(bad)


def test_format_roundtrip():
    assert format_cpu(0.5) == "500m" and format_cpu(2.0) == "2"
    assert format_memory(4 * 2**30) == "4Gi" and format_memory(1536 * 2**20) == "1536Mi"
