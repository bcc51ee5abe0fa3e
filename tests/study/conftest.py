"""Fixtures of the study tests: a small real study folder (see tests/study/report_fixture.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, mnist):
    """Path of a small, really computed study (search + evaluation + ROAR tables), built once."""
    from tests.study.report_fixture import build_tiny_study

    return build_tiny_study(tmp_path_factory.mktemp("tiny") / "study", mnist)
