"""``feedlot produce``: send consumption records the way farms would: SNS, the HTTP API or Firehose.

Input is the original case's format (one JSON object per line, a day of one farm per file; a
missing final newline is fine) or synthetic records (``--generate N``). Records travel in batches:
each SNS message is an envelope ``{"correlation_id": …, "records": [up to --batch-size records]}``
(the id is a message attribute too; the body keeps it where attributes are dropped, as in moto's
HTTP delivery) and never exceeds SNS's 256 KiB limit, and messages go out ten at a time with
``PublishBatch`` (whose 256 KiB aggregate limit is respected too). Lines are streamed, so a file
of any size is published in constant memory.

A line that is not JSON cannot be put in a JSON array without changing it: it is skipped and
reported (file and line number). Entries SNS fails are retried, then reported; the command exits
non-zero when anything was not published.

Outages: a call that fails on a connection error, a 5xx or throttling (and, once the topic was
seen, a topic that vanished: a restarted moto before ``feedlot local up`` provisions it again) is
retried with the same entries, with backoff (0.5 s doubling to 10 s), for up to ``--retry-for``
seconds (120) since the first failure in a row; each outage and its recovery are printed, and the
summary counts retries. A batch SNS answered is never sent again; a call whose answer was lost
after it was sent (connection reset, read timeout) may have been published, so it is resent and
counted as ``maybe sent twice`` (the landing keys on the SNS message id, and a record delivered
twice is one row: the pipeline counts it as redelivered, not as a new record).

``--via api`` POSTs the same JSON arrays to ``$FEEDLOT_INGEST_API_URL/consumo`` (API key from
``FEEDLOT_INGEST_API_KEY`` or the SSM parameter ``FEEDLOT_INGEST_API_KEY_PARAMETER``) from
``--concurrency`` threads; a body never exceeds ``FEEDLOT_INGEST_API_MAX_BODY_BYTES``. 5xx, 429 and
connection errors are retried with exponential backoff under the same ``idempotency-key``, so a
retry lands nothing twice; other 4xx are reported at once. Records the API reports as rejected were
still landed (the warehouse files them with their reason) and are counted, not failed.

``--via firehose`` writes each record as one JSON line (ending in a newline, so the delivered S3
objects are JSON Lines) with ``PutRecordBatch``: at most 500 records and 4 MiB per call, entries
Firehose reports as failed are retried, to the stream ``FEEDLOT_FIREHOSE_STREAM``.
"""
