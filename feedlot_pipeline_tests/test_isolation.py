"""The suite is independent of a developer's running stack (`make dev`) and its shell."""

from __future__ import annotations

from feedlot_pipeline_tests.conftest import user_stack_variables


def test_a_developers_stack_variables_are_dropped_before_the_tests() -> None:
    shell = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "AWS_ENDPOINT_URL_SSM": "http://127.0.0.1:9030",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DAGSTER_HOME": "/home/dev/.feedlot/dagster_home",
        "FEEDLOT_WAREHOUSE_URL": "postgresql+psycopg://postgres@127.0.0.1:15432/feedlot",
        "FEEDLOT_STATE_DIR": ".feedlot",
        "FEEDLOT_TEST_MYSQL_URL": "mysql+pymysql://root@127.0.0.1:3306/test",
        "PATH": "/usr/bin",
    }
    assert sorted(user_stack_variables(shell)) == [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SSM",
        "DAGSTER_HOME",
        "FEEDLOT_STATE_DIR",
        "FEEDLOT_WAREHOUSE_URL",
    ]
