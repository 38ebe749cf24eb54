"""Shared fixtures: the Kafka-protocol broker (Tansu or Apache Kafka), shared data, free ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--broker", choices=["tansu", "apache"],
                     default=os.environ.get("STADTWACHT_TEST_BROKER", "tansu"),
                     help="broker for tests marked 'broker': the embedded Tansu (default) or Apache Kafka "
                          "(resolved from Maven Central; env STADTWACHT_TEST_BROKER)")


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--broker")


@pytest.fixture(scope="session")
def compiled_kernels(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile the numba kernels once into their on-disk cache, so `stadtwacht run` processes started by
    broker tests load them in well under a second (a fresh checkout would otherwise spend tens of seconds
    of each first process's readiness wait compiling)."""
    from prometheus_client import CollectorRegistry

    from stadtwacht.config import load_config
    from stadtwacht.pipeline import Pipeline

    Pipeline(load_config(None)[0], CollectorRegistry(), tmp_path_factory.mktemp("kernels")).compile_kernels()


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_kind: str, tmp_path_factory: pytest.TempPathFactory,
                    compiled_kernels: None) -> Iterator[str]:
    """Bootstrap servers of a broker started for this test session."""
    if broker_kind == "apache":
        from tests.support.apache_kafka import ApacheKafka

        ok, why = ApacheKafka.available()
        if not ok:
            pytest.skip(f"Apache Kafka tier unavailable: {why}")
        with ApacheKafka(tmp_path_factory.mktemp("apache-kafka")) as kafka:
            yield kafka.bootstrap
    else:
        from stadtwacht.broker import EmbeddedBroker

        with EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log") as broker:
            yield broker.bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing one broker never see each other's topics or groups."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED} (../shared beside the repository)")
    return SHARED
