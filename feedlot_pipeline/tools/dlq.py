"""``feedlot dlq list | show | redrive``: inspect and replay dead letters.

The sensor's dead-letter queue (FEEDLOT_SENSOR_DLQ) by default; ``--queue`` picks another one,
e.g. the failures inbox (FEEDLOT_FAILURES_INBOX) where the failure topic's documents arrive.

SQS cannot read a message without receiving it, so ``list`` and ``show`` *peek*: they receive
with a short visibility timeout and set every message's visibility back to 0 right after, so the
messages stay in the queue (their receive count goes up by one). ``redrive`` sends each message to
the target queue and deletes it from the DLQ only after the send succeeded: a crash in between
leaves a duplicate notice, which the sensor already treats as a redelivery (it dedupes by object
key), never a lost one. moto has no StartMessageMoveTask, so the move is done message by message,
the same on moto and AWS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from feedlot_pipeline.core.aws import client, queue_url
from feedlot_pipeline.core.settings import Settings

PEEK_VISIBILITY_SECONDS = 30  # longer than a scan of the queue; reset to 0 right after
MOVE_VISIBILITY_SECONDS = 60  # a batch must be sent and deleted within this
DEFAULT_MAX = 1000
FAILURE_ATTRIBUTES = ("reason", "stage", "original_message_id")


@dataclass(frozen=True)
class DeadLetter:
    """One received message: what ``list``/``show`` print and what ``redrive`` moves."""

    message_id: str
    receipt: str
    body: str
    attributes: dict[str, str]
    message_attributes: dict[str, str]

    @classmethod
    def from_sqs(cls, msg: dict) -> DeadLetter:
        return cls(
            message_id=msg["MessageId"],
            receipt=msg["ReceiptHandle"],
            body=msg.get("Body", ""),
            attributes=dict(msg.get("Attributes") or {}),
            message_attributes={
                name: str(value.get("StringValue", value.get("BinaryValue", "")))
                for name, value in (msg.get("MessageAttributes") or {}).items()
            },
        )

    def _body_json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def _field(self, name: str) -> str:
        """A failure attribute, else the same key of a failure document's body."""
        if name in self.message_attributes:
            return self.message_attributes[name]
        body = self._body_json()
        if isinstance(body, dict) and isinstance(body.get(name), str | int | float):
            return str(body[name])
        return ""

    @property
    def reason(self) -> str:
        return self._field("reason")

    @property
    def stage(self) -> str:
        return self._field("stage")

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount") or 0)

    @property
    def age_seconds(self) -> float:
        sent = self.attributes.get("SentTimestamp")
        return max(0.0, time.time() - int(sent) / 1000) if sent else 0.0

    def preview(self, width: int = 60) -> str:
        text = " ".join(self.body.split())
        return text if len(text) <= width else text[: width - 1] + "…"


# --- queue operations ----------------------------------------------------------------------------


def _resolve(name: str) -> str:
    sqs = client("sqs")
    try:
        return queue_url(name)
    except sqs.exceptions.QueueDoesNotExist:
        raise click.ClickException(f"queue {name!r} does not exist") from None


def peek(url: str, limit: int = DEFAULT_MAX, visibility: int = PEEK_VISIBILITY_SECONDS) -> list:
    """Receive up to ``limit`` distinct messages, keeping them invisible for ``visibility`` s.

    The caller releases (``release``) or deletes them. Stops when it has as many as the queue
    showed at the start, or at the first empty long poll.
    """
    sqs = client("sqs")
    found: dict[str, DeadLetter] = {}
    # Stop once the visible count at the start was seen, not after an empty poll (1 s each).
    visible = int(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
    )
    limit = min(limit, visible) if visible else limit
    while len(found) < limit:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, limit - len(found)),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for msg in batch:
            letter = DeadLetter.from_sqs(msg)
            if letter.message_id in found:  # at-least-once: a second copy, let it go
                release(url, [letter])
            else:
                found[letter.message_id] = letter
    return sorted(found.values(), key=lambda m: -m.age_seconds)


def _chunks(items: list, size: int = 10) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def release(url: str, letters: Iterable[DeadLetter]) -> None:
    """Make peeked messages visible again at once."""
    sqs = client("sqs")
    for chunk in _chunks(list(letters)):
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ],
        )


@dataclass
class RedriveReport:
    moved: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # message id -> error (left in the DLQ)
    duplicated: list[str] = field(default_factory=list)  # sent, but the delete failed
    not_found: list[str] = field(default_factory=list)


def _redrive_attributes(letter: DeadLetter, source: str) -> dict[str, dict]:
    """The message's own attributes without the failure ones, plus where it came from."""
    attrs = {
        name: {"DataType": "String", "StringValue": value}
        for name, value in letter.message_attributes.items()
        if name not in FAILURE_ATTRIBUTES and value
    }
    attrs["redriven_from"] = {"DataType": "String", "StringValue": source}
    attrs["dlq_message_id"] = {"DataType": "String", "StringValue": letter.message_id}
    return dict(list(attrs.items())[:10])  # SQS allows ten attributes


def move(letters: list[DeadLetter], source_url: str, target_url: str) -> RedriveReport:
    """Send each letter to the target, then delete it from the source (never the reverse)."""
    sqs = client("sqs")
    report = RedriveReport()
    source_name = source_url.rstrip("/").rsplit("/", 1)[-1]
    for chunk in _chunks(letters):
        sent = sqs.send_message_batch(
            QueueUrl=target_url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": m.body,
                    "MessageAttributes": _redrive_attributes(m, source_name),
                }
                for i, m in enumerate(chunk)
            ],
        )
        ok = [chunk[int(e["Id"])] for e in sent.get("Successful", [])]
        for err in sent.get("Failed", []):
            letter = chunk[int(err["Id"])]
            report.failed[letter.message_id] = f"{err.get('Code')}: {err.get('Message')}"
            release(source_url, [letter])
        if not ok:
            continue
        deleted = sqs.delete_message_batch(
            QueueUrl=source_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(ok)],
        )
        report.moved.extend(ok[int(e["Id"])].message_id for e in deleted.get("Successful", []))
        report.duplicated.extend(ok[int(e["Id"])].message_id for e in deleted.get("Failed", []))
    return report


def redrive(
    source_url: str,
    target_url: str,
    ids: list[str] | None,
    *,
    dry_run: bool = False,
    limit: int = DEFAULT_MAX,
) -> tuple[list[DeadLetter], RedriveReport]:
    """Move the messages ``ids`` (all when None) from the DLQ to the target queue."""
    if source_url == target_url:
        raise click.ClickException("the target queue is the dead-letter queue itself")
    letters = peek(source_url, limit, MOVE_VISIBILITY_SECONDS)
    wanted = letters if ids is None else [m for m in letters if m.message_id in set(ids)]
    report = RedriveReport()
    if ids is not None:
        found = {m.message_id for m in wanted}
        report.not_found = [i for i in ids if i not in found]
    chosen = {m.message_id for m in wanted}
    release(source_url, [m for m in letters if m.message_id not in chosen])
    if dry_run:
        release(source_url, wanted)
        return wanted, report
    moved = move(wanted, source_url, target_url)
    moved.not_found = report.not_found
    return wanted, moved


# --- output --------------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


# --- commands ------------------------------------------------------------------------------------

QUEUE_HELP = "Queue name or URL (default: FEEDLOT_SENSOR_DLQ); e.g. the failures inbox."


def queue_option(func: Any) -> Any:
    return click.option("--queue", "queue", default=None, metavar="NAME|URL", help=QUEUE_HELP)(func)


def _queue(name: str | None) -> tuple[str, str]:
    name = name or Settings().sensor_dlq
    return name, _resolve(name)


@click.group()
def dlq() -> None:
    """Inspect and replay dead letters (the sensor DLQ unless --queue is given).

    list and show peek: they receive the messages with a 30 s visibility timeout and set it
    back to 0 straight after, so nothing is consumed (each message's receive count goes up
    by one). redrive sends each message back to the sensor queue and only then deletes it.
    """


@dlq.command(name="list")
@queue_option
@click.option("--max", "limit", type=int, default=DEFAULT_MAX, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
def list_(queue: str | None, limit: int, as_json: bool) -> None:
    """List messages: id, age, reason, stage, receive count, a preview. Consumes nothing.

    Peeks: receives with a 30 s visibility timeout, then sets it back to 0 at once.
    """
    name, url = _queue(queue)
    letters = peek(url, limit)
    release(url, letters)
    if as_json:
        for m in letters:
            click.echo(
                json.dumps(
                    {
                        "id": m.message_id,
                        "age_s": round(m.age_seconds, 1),
                        "reason": m.reason,
                        "stage": m.stage,
                        "receive_count": m.receive_count,
                        "preview": m.preview(),
                    },
                    ensure_ascii=False,
                )
            )
        return
    more = f" (the first {limit}; raise --max)" if len(letters) >= limit else ""
    click.echo(f"{name}: {len(letters)} message(s){more}")
    if not letters:
        return
    click.echo(f"{'ID':36}  {'AGE':>7}  {'RECV':>4}  {'STAGE':26}  REASON / PREVIEW")
    for m in letters:
        click.echo(
            f"{m.message_id:36}  {_age(m.age_seconds):>7}  {m.receive_count:>4}  "
            f"{m.stage[:26]:26}  {m.reason[:70]}"
        )
        click.echo(f"{'':36}  {'':>7}  {'':>4}  {'':26}  {m.preview()}")


@dlq.command()
@queue_option
@click.argument("message_id")
def show(queue: str | None, message_id: str) -> None:
    """Print one message in full: attributes, then the body pretty-printed."""
    name, url = _queue(queue)
    letters = peek(url)
    release(url, letters)
    found = [m for m in letters if m.message_id == message_id]
    if not found:
        raise click.ClickException(f"no message {message_id} in {name} ({len(letters)} looked at)")
    m = found[0]
    click.echo(f"id:             {m.message_id}")
    click.echo(f"queue:          {name}")
    click.echo(f"age:            {_age(m.age_seconds)}")
    click.echo(f"receive count:  {m.receive_count}")
    for key, value in sorted(m.message_attributes.items()):
        click.echo(f"attribute {key}: {value}")
    for key, value in sorted(m.attributes.items()):
        click.echo(f"sqs {key}: {value}")
    click.echo("body:")
    click.echo(_pretty(m.body))
    body = m._body_json()
    if isinstance(body, dict) and isinstance(body.get("payload"), str):
        click.echo("payload (parsed):")
        click.echo(_pretty(body["payload"]))


@dlq.command(name="redrive")
@queue_option
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every message of the queue.")
@click.option(
    "--to",
    "target",
    default=None,
    metavar="NAME|URL",
    help="Target queue (default: FEEDLOT_SENSOR_QUEUE).",
)
@click.option("--dry-run", is_flag=True, help="Say what would move; move nothing.")
def redrive_cmd(
    queue: str | None, ids: tuple[str, ...], all_: bool, target: str | None, dry_run: bool
) -> None:
    """Move messages (IDs, or --all) back to the sensor queue: sent first, then deleted."""
    if all_ == bool(ids):
        raise click.UsageError("give message IDs or --all (not both)")
    name, url = _queue(queue)
    target_name = target or Settings().sensor_queue
    target_url = _resolve(target_name)
    letters, report = redrive(url, target_url, None if all_ else list(ids), dry_run=dry_run)
    if all_ and len(letters) >= DEFAULT_MAX:
        click.echo(f"moved the first {DEFAULT_MAX} messages: run again for the rest", err=True)
    for missing in report.not_found:
        click.echo(f"not found in {name}: {missing}", err=True)
    if dry_run:
        for m in letters:
            click.echo(f"would move {m.message_id}  {m.reason[:70]}")
        click.echo(f"dry run: {len(letters)} message(s) would move {name} → {target_name}")
        return
    for message_id, error in report.failed.items():
        click.echo(f"not moved {message_id}: {error}", err=True)
    for message_id in report.duplicated:
        click.echo(f"sent but still in {name} (delete failed): {message_id}", err=True)
    click.echo(
        f"redrive {name} → {target_name}: {len(report.moved)} moved, "
        f"{len(report.failed)} failed, {len(report.duplicated)} duplicated, "
        f"{len(report.not_found)} not found"
    )
    if report.failed or report.not_found:
        raise SystemExit(1)


# --- re-landing failure documents ----------------------------------------------------------------

# The Lambdas whose failure documents carry a whole landing event, and where their handler is.
RELAND_SOURCES = {"feedlot-sns-landing": "sns_handler", "feedlot-s3-landing": "s3_handler"}


@dataclass
class RelandReport:
    landed: dict[str, list[str]] = field(default_factory=dict)  # document id -> raw keys
    failed: dict[str, str] = field(default_factory=dict)  # document id -> why
    skipped: dict[str, str] = field(default_factory=dict)  # not a landing failure: left as is


def _event_of(document: dict) -> dict:
    """The Lambda event a failure document was made of; the local failure record when the
    document's copy was truncated to fit SNS."""
    if document.get("payload_truncated"):
        path = (document.get("details") or {}).get("failure_record")
        if not path:
            raise ValueError("payload truncated and no failure record named")
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)["requestPayload"]
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"payload truncated; failure record {path}: {err}") from None
    event = json.loads(document["payload"])
    if not isinstance(event, dict):
        raise ValueError("payload is not a Lambda event")
    return event


def reland(letters: list[DeadLetter], url: str, *, dry_run: bool = False) -> RelandReport:
    """Run each landing failure's event through its Lambda handler again (the landing code:
    same raw keys, so a record landed before is not landed twice); delete a document only after
    its event landed. Other documents are left in the queue."""
    from feedlot_pipeline.core.settings import LocalSettings
    from feedlot_pipeline.local.lambda_runtime import LambdaContext, load_handler

    local = LocalSettings()
    report = RelandReport()
    done: list[DeadLetter] = []
    keep: list[DeadLetter] = []
    for letter in letters:
        document = letter._body_json()
        source = document.get("source") if isinstance(document, dict) else None
        if (
            not isinstance(document, dict)
            or document.get("type") != "feedlot_failure"
            or document.get("stage") != "lambda"
            or source not in RELAND_SOURCES
        ):
            report.skipped[letter.message_id] = (
                "not a landing Lambda's failure (redrive notices, replay partitions)"
            )
            keep.append(letter)
            continue
        try:
            event = _event_of(document)
            if dry_run:
                report.landed[letter.message_id] = []
                keep.append(letter)
                continue
            handler = load_handler(getattr(local, RELAND_SOURCES[source]))
            context = LambdaContext(
                function_name=source,
                invoked_function_arn=f"arn:aws:lambda:local:000000000000:function:{source}",
                aws_request_id=f"reland-{letter.message_id}",
            )
            result = handler(event, context) or {}
        except Exception as err:  # noqa: BLE001 - reported per document; the rest go on
            report.failed[letter.message_id] = f"{type(err).__name__}: {err}"[:500]
            keep.append(letter)
            continue
        report.landed[letter.message_id] = list(result.get("landed") or [])
        done.append(letter)
    release(url, keep)
    sqs = client("sqs")
    for chunk in _chunks(done):
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)],
        )
    return report


@dlq.command(name="reland")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every landing failure in the queue.")
@click.option(
    "--queue",
    "queue",
    default=None,
    metavar="NAME|URL",
    help="Queue of failure documents [default: FEEDLOT_FAILURES_INBOX].",
)
@click.option("--dry-run", is_flag=True, help="Say what would be landed; land nothing.")
def reland_cmd(queue: str | None, ids: tuple[str, ...], all_: bool, dry_run: bool) -> None:
    """Land again the records of landing Lambdas' failure documents (IDs, or --all).

    Each document's event goes through its handler again (the same landing code, the same raw
    keys: nothing already landed lands twice); the document is deleted once its event landed.
    """
    if all_ == bool(ids):
        raise click.UsageError("give document IDs or --all (not both)")
    name, url = _queue(queue or Settings().failures_inbox)
    letters = peek(url, DEFAULT_MAX, MOVE_VISIBILITY_SECONDS)
    wanted = letters if all_ else [m for m in letters if m.message_id in set(ids)]
    release(url, [m for m in letters if m not in wanted])
    missing = [] if all_ else sorted(set(ids) - {m.message_id for m in wanted})
    report = reland(wanted, url, dry_run=dry_run)
    for message_id in missing:
        click.echo(f"not found in {name}: {message_id}", err=True)
    for message_id, keys in report.landed.items():
        verb = "would land" if dry_run else f"landed {len(keys)} raw object(s)"
        click.echo(f"{message_id}: {verb}")
    for message_id, why in report.failed.items():
        click.echo(f"{message_id}: NOT landed: {why}", err=True)
    if ids:
        for message_id, why in report.skipped.items():
            click.echo(f"{message_id}: skipped, {why}", err=True)
    click.echo(
        f"reland from {name}: {len(report.landed)} landed, {len(report.failed)} failed, "
        f"{len(report.skipped)} other document(s) left in place"
    )
    if report.failed or missing:
        raise SystemExit(1)
