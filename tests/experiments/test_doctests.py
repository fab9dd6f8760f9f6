"""The examples in the experiments modules' docstrings run and stay true."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import experiments
from experiments import ope, roi, sequential, stats


@pytest.mark.parametrize("module", [experiments, stats, sequential, ope, roi])
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
