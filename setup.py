"""rotwatch: keep deployed ML models from rotting unnoticed.

This file installs rotwatch locally (``make install`` runs ``pip install -e .[test]``)
and also serves Dataflow's ``--setup_file ./setup.py``: Dataflow builds a source
distribution from it and installs it on every worker, so the pipeline's code in
``pipelines/`` and the shared core in ``rotwatch/`` reach the workers unchanged.

Ranges are compatible pins: the lower bound is the version measured in this project
(see DESIGN.md), the upper bound the next major release.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "apache-beam[gcp]>=2.77.0,<3",
    "google-cloud-pubsub>=2.44.0,<3",
    "google-cloud-datastore>=2.27.0,<3",
    "grpcio>=1.70,<2",
    "protobuf>=5.28,<7",
    "scikit-learn>=1.9.1,<2",
    "joblib>=1.6.0,<2",
    "numpy>=1.26,<3",
    # the gateway: typed validation and an OpenAPI description out of the box
    "fastapi>=0.163,<1",
    # [standard] brings httptools + uvloop: about 1.5x the requests per core of h11
    # (bench/gateway.py), which the gateway's throughput target needs.
    "uvicorn[standard]>=0.54,<1",
    # reports and the demo's plots (rendered headless with the Agg backend)
    "matplotlib>=3.11,<4",
]

EXTRAS_REQUIRE = {
    # what `make test` needs on top of the product
    "test": [
        "pytest>=9.2,<10",
        "pytest-timeout>=2.4,<3",
        "httpx>=0.28,<1",
        # fuzzes the gateway from its own OpenAPI description
        "schemathesis>=4.32,<5",
        # `make lint` (run by `make test`): unused imports, undefined names
        "pyflakes>=3.2,<5",
    ],
    # peers that the benchmarks in bench/ compare against
    "bench": [
        "river>=0.26.1,<0.27",
        "psutil>=7.2,<8",
    ],
}

setup(
    name="rotwatch",
    version="0.1.0",
    description="Stream monitoring and automatic retraining for deployed ML models "
    "on Pub/Sub, Beam and Datastore",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["rotwatch*", "publishers*", "pipelines*", "trainer*",
                                    "emulators*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["rotwatch=rotwatch.cli:main"]},
)
