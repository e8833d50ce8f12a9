"""The Resources value type: arithmetic and comparison that quota admission relies on."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spawner_ext.catalog.models import Capacity
from spawner_ext.resources import Resources

# CPU on the millicore grid, as every quantity the catalogue accepts ("500m", "2", "0.25")
amounts = st.builds(Resources,
                    cpu=st.integers(0, 512_000).map(lambda m: m / 1000),
                    memory=st.integers(0, 2**44),
                    gpu=st.integers(0, 64))


@given(amounts, amounts)
def test_addition_commutes(a, b):
    assert a + b == b + a


@given(amounts, amounts, amounts)
def test_addition_associates_despite_float_cpu(a, b, c):
    assert (a + b) + c == a + (b + c)


@given(amounts)
def test_zero_is_neutral_and_everything_fits_in_itself(a):
    assert a + Resources() == a
    assert a.fits_in(a)


@given(amounts, amounts, amounts)
def test_fits_in_is_monotone(used, asked, limit):
    """If the sum fits, each part fits; and adding to the limit never makes it stop fitting."""
    if (used + asked).fits_in(limit):
        assert used.fits_in(limit) and asked.fits_in(limit)
    if used.fits_in(limit):
        assert used.fits_in(limit + asked)


@given(amounts, amounts)
def test_exceeding_names_exactly_the_dimensions_over_the_limit(a, limit):
    over = a.exceeding(limit)
    assert set(over) == {d for d in ("cpu", "memory", "gpu") if getattr(a, d) > getattr(limit, d)}
    assert list(over) == [d for d in ("gpu", "cpu", "memory") if d in over]  # scarcest first, as refusals report


def test_three_tenths_of_a_cpu_fit_in_three_tenths():
    """0.1 + 0.1 + 0.1 is 0.30000000000000004 in floats: the grid keeps it a fit."""
    tenth = Resources(cpu=0.1)
    assert (tenth + tenth + tenth).fits_in(Resources(cpu=0.3))
    assert not (tenth + tenth + tenth + Resources(cpu=0.001)).fits_in(Resources(cpu=0.3))


def test_text_as_people_write_it():
    assert str(Resources(cpu=1.5, memory=4 * 2**30, gpu=1)) == "1.5 CPU, 4Gi memory, 1 GPU"
    assert str(Resources()) == "0 CPU, 0 memory, 0 GPU"
    assert Resources(memory=512 * 2**20).amount("memory") == "512Mi"
    assert Resources.unit("gpu") == "GPUs"


def test_frozen():
    with pytest.raises(AttributeError):
        Resources().gpu = 1  # type: ignore[misc]


def test_capacity_from_the_catalogue_is_the_same_amount():
    cap = Capacity(cpu="500m", memory="16Gi", gpu=2)
    assert cap.resources == Resources(cpu=0.5, memory=16 * 2**30, gpu=2)
    assert Resources(cpu=0.5, memory=2**30, gpu=2).fits_in(cap.resources)
    assert Resources(gpu=3).exceeding(cap.resources) == ("gpu",)
