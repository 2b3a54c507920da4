"""Shared fixtures: the real dockerd, test containers, and the real exporter
running as a subprocess (the helpers they use are in helpers.py).

Tests under tests/unit need neither root nor Docker. Everything else runs
against the real kernel and the dockerd that `make test-env` started.

Several test sessions may share one dockerd while developing; every session
holds a shared lock, and a test that disturbs the whole host (restarting
dockerd, asserting that nothing foreign exists) asks for `host_exclusive`.
"""

from __future__ import annotations

import fcntl
import os

import pytest

from helpers import LOCK_PATH, TEST_IMAGE, Containers, ExporterProcess, Hand
from podman_helpers import PODMAN_SOCKET, PodmanContainers


@pytest.fixture(scope="session")
def host_lock():
    """Shared hold on the test host for the whole session (see host_exclusive)."""
    fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    yield fd
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@pytest.fixture
def host_exclusive(host_lock):
    """For tests that disturb the whole host or assert that nothing foreign is there."""
    fcntl.flock(host_lock, fcntl.LOCK_EX)
    yield
    fcntl.flock(host_lock, fcntl.LOCK_SH)


@pytest.fixture(scope="session")
def docker_client(host_lock):
    import docker

    client = docker.from_env(timeout=30)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"dockerd is not reachable ({exc}); run `make test-env` (as root) first")
    client.images.get(TEST_IMAGE)
    yield client
    client.close()


@pytest.fixture
def containers(docker_client):
    c = Containers(docker_client)
    yield c
    c.cleanup()


@pytest.fixture
def podman(host_lock):
    """Containers and networks of the test Podman (scripts/podman-env.sh), removed after the test."""
    try:
        p = PodmanContainers()
        p.client.ping()
    except Exception as exc:
        pytest.fail(f"no Podman at {PODMAN_SOCKET} ({exc}); run `make test-env` (as root) first")
    yield p
    p.cleanup()


@pytest.fixture
def hand():
    """Veths, bridges and namespaces made by hand for one test, removed after it."""
    h = Hand()
    yield h
    h.cleanup()


@pytest.fixture
def exporter(docker_client):
    """Start the real daemon with extra flags: exporter('--no-collector.veths')."""
    started: list[ExporterProcess] = []

    def start(*args: str, env: dict | None = None, ready: bool = True) -> ExporterProcess:
        p = ExporterProcess(*args, env=env)
        started.append(p)
        return p.wait_ready() if ready else p

    yield start
    for p in started:
        p.stop()
