"""Fixtures of the simulated cluster's own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim.build_sim_lib import build


@pytest.fixture(scope="session")
def sim_libvitastor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated libvitastor_client.so, built once per session into a temporary directory."""
    return build(tmp_path_factory.mktemp("sim-libvitastor"))
