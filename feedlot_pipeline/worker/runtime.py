"""What every worker job runs inside: its work dir, its log file and its Dagster Pipes session.

A job runs on the EC2 instance, started by the SSM agent as a shell command. Dagster's side
(``worker.pipes_ssm``) puts ``DAGSTER_PIPES_CONTEXT`` / ``DAGSTER_PIPES_MESSAGES`` in front of
that command; the job then loads its context from S3 and writes its messages to S3
(``PipesS3ContextLoader`` / ``PipesS3MessageWriter``). Without those variables (a person running
the command by hand) the job runs the same and only logs locally.

Layout of the work dir (the instance's EBS data volume, FEEDLOT_WORKER_WORKDIR)::

    <workdir>/logs/<job-id>.log     the job's own log, kept (the EBS backups keep it too)
    <workdir>/tmp/<job-id>/         the job's temporary files, removed when the job ends

A failure propagates out of the Pipes context, so dagster_pipes sends it in its ``closed``
message and Dagster raises with the worker's own error; the command then prints the error on
stderr and exits 1.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from feedlot_pipeline.core.memory import peak_rss_mb
from feedlot_pipeline.core.settings import WorkerSettings

PIPES_UPLOAD_SECONDS = 1.0  # how often buffered Pipes messages are uploaded to S3
LOGGER_NAME = "feedlot.worker"
_JOB_ID = re.compile(r"[^A-Za-z0-9_.-]")


class WorkerError(RuntimeError):
    """A failure with a message meant for people (bad input, missing object, …)."""


class WorkerTerminated(RuntimeError):
    """The process got SIGTERM (the SSM command was cancelled): unwind, report, clean up."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; WorkerError when it is not one."""
    if not uri.startswith("s3://"):
        raise WorkerError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise WorkerError(f"no bucket in {uri!r}")
    return bucket, key


def output_location(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of the --output URI; the prefix ends with '/' unless empty."""
    bucket, prefix = parse_s3_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def run_args(
    job: str, input_uri: str, output_uri: str, job_id: str, workdir: str | None = None
) -> list[str]:
    """``worker run JOB …`` arguments after the ``feedlot`` command: the one contract between
    whoever starts a worker job (the Dagster asset over SSM, the worker bench) and the CLI.
    """
    args = ["worker", "run", job, "--input", input_uri, "--output", output_uri]
    if workdir is not None:
        args += ["--workdir", workdir]
    return [*args, "--job-id", job_id]


def default_job_id(job: str) -> str:
    """A job id for a run by hand: the job, the UTC time and the pid (names the log file)."""
    return f"{job}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"


def safe_job_id(job_id: str) -> str:
    """The job id as a file name: letters, digits, '_', '-' and '.' only."""
    return _JOB_ID.sub("_", job_id)[:128].lstrip(".") or "job"


class _LocalPipes:
    """Stands in for the Pipes context when Dagster did not start the process: logs only."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def report_custom_message(self, payload: Any) -> None:
        self._logger.debug("custom message (no Pipes session): %s", payload)

    def report_asset_materialization(self, asset_key: str, metadata: Any = None, **_: Any) -> None:
        self._logger.debug("materialization of %s (no Pipes session)", asset_key)

    is_asset_step = False


@dataclass
class JobContext:
    """What a job gets: its ids and URIs, its dirs, and one place to log and report to."""

    job: str
    job_id: str
    input_uri: str
    output_uri: str
    workdir: Path
    tmp_dir: Path
    log_path: Path
    logger: logging.Logger
    pipes: Any  # dagster_pipes.PipesContext, or _LocalPipes without Dagster
    pipes_active: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def log(self, message: str, level: int = logging.INFO) -> None:
        """To the local log file and stderr, and to the Dagster run when Pipes is active."""
        self.logger.log(level, message)
        if self.pipes_active:
            self.pipes.log.log(level, message)

    def report_custom_message(self, payload: Mapping[str, Any]) -> None:
        self.pipes.report_custom_message(dict(payload))

    def report_materialization(self, asset_key: str, metadata: Mapping[str, Any]) -> None:
        """Report ``asset_key``'s materialization; when Dagster runs the step for another single
        asset, that one (dagster_pipes refuses a key outside the step)."""
        step_assets = self.pipes_active and self.pipes.is_asset_step
        keys = list(self.pipes.asset_keys) if step_assets else []
        if keys and asset_key not in keys:
            if len(keys) != 1:
                self.log(f"not reporting {asset_key}: the step targets {keys}", logging.WARNING)
                return
            asset_key = keys[0]
        self.pipes.report_asset_materialization(asset_key=asset_key, metadata=dict(metadata))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def put_output(self, name: str, body: bytes, content_type: str) -> str:
        """Write one result object under the --output prefix; return its URI."""
        from feedlot_pipeline.core.aws import client

        bucket, prefix = output_location(self.output_uri)
        client("s3").put_object(
            Bucket=bucket, Key=f"{prefix}{name}", Body=body, ContentType=content_type
        )
        return f"s3://{bucket}/{prefix}{name}"

    def put_log(self) -> str:
        """Upload the job's log file as it is now (``<output>/<job-id>.log``)."""
        for handler in self.logger.handlers:
            handler.flush()
        return self.put_output(f"{self.job_id}.log", self.log_path.read_bytes(), "text/plain")


def _file_logger(job_id: str, log_path: Path) -> logging.Logger:
    """A logger writing to the job's log file and to stderr (the SSM output keeps that)."""
    logger = logging.getLogger(f"{LOGGER_NAME}.{job_id}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    fmt.converter = time.gmtime
    file_handler = logging.FileHandler(log_path, encoding="utf-8")
    file_handler.setFormatter(fmt)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(file_handler)
    logger.addHandler(stream)
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.flush()
        logger.removeHandler(handler)
        handler.close()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM becomes WorkerTerminated in the main thread, so the job unwinds and reports."""

    def handler(signum: int, _frame: Any) -> None:
        raise WorkerTerminated(f"terminated by signal {signum} (the SSM command was cancelled?)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _pipes_session() -> Iterator[tuple[Any, bool]]:
    """The Pipes context over S3 when Dagster started us; None when it did not."""
    from dagster_pipes import (
        PipesEnvVarParamsLoader,
        PipesS3ContextLoader,
        PipesS3MessageWriter,
        open_dagster_pipes,
    )

    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        yield None, False
        return
    from feedlot_pipeline.core.aws import client

    s3 = client("s3")
    with open_dagster_pipes(
        context_loader=PipesS3ContextLoader(client=s3),
        message_writer=PipesS3MessageWriter(client=s3, interval=PIPES_UPLOAD_SECONDS),
    ) as pipes:
        yield pipes, True


def _upload_failure(ctx: JobContext, err: BaseException) -> None:
    """Best effort: the log and a failure report in --output, so the error is kept there too."""
    import json

    try:
        body = {
            "job": ctx.job,
            "job_id": ctx.job_id,
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "input": ctx.input_uri,
            "seconds": round(ctx.elapsed(), 3),
            "peak_rss_mb": peak_rss_mb(),
        }
        ctx.put_output("report.json", json.dumps(body, indent=2).encode(), "application/json")
        ctx.put_log()
    except Exception as upload_err:  # noqa: BLE001 - the job's own error matters more
        ctx.logger.warning("could not write the failure to %s: %s", ctx.output_uri, upload_err)


JobFunction = Callable[[JobContext], Mapping[str, Any]]


def run_job(
    job: str,
    function: JobFunction,
    *,
    input_uri: str,
    output_uri: str,
    workdir: Path | None = None,
    job_id: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Mapping[str, Any]:
    """Run ``function`` inside the Pipes session, the work dir and the log file; return its
    result. Exceptions propagate (after Pipes has reported them and temp files are gone)."""
    job_id = safe_job_id(job_id or default_job_id(job))
    root = Path(workdir or WorkerSettings().worker_workdir)
    with _sigterm_raises(), _pipes_session() as (pipes, active):
        (root / "logs").mkdir(parents=True, exist_ok=True)
        log_path = root / "logs" / f"{job_id}.log"
        tmp_dir = root / "tmp" / job_id
        logger = _file_logger(job_id, log_path)
        ctx = JobContext(
            job=job,
            job_id=job_id,
            input_uri=input_uri,
            output_uri=output_uri,
            workdir=root,
            tmp_dir=tmp_dir,
            log_path=log_path,
            logger=logger,
            pipes=pipes if active else _LocalPipes(logger),
            pipes_active=active,
            options=dict(options or {}),
        )
        try:
            shutil.rmtree(tmp_dir, ignore_errors=True)  # a leftover of a killed run
            tmp_dir.mkdir(parents=True)
            ctx.log(
                f"{job} {job_id}: input {input_uri}, output {output_uri}, work dir {root}"
                + ("" if active else " (no Dagster Pipes session: logging locally only)")
            )
            return function(ctx)
        except BaseException as err:
            logger.error("%s %s failed:\n%s", job, job_id, traceback.format_exc().rstrip())
            if active and isinstance(err, Exception):
                pipes.log.error(f"{job} {job_id} failed: {type(err).__name__}: {err}")
            _upload_failure(ctx, err)
            raise
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            _close_logger(logger)
