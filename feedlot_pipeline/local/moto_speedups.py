"""The hot spots of moto's server, measured under the streaming soak, made cheap.

Profiled with py-spy at 20 records/s (moto at 95 % of a core, ~125 requests/s):

- 33 % of moto's time: routing every request calls ``backends.list_of_moto_modules()``, which
  lists moto's package directory and stats ~150 folders, inside a global lock. The list never
  changes while the server runs: computed once.
- 28 %: every ``SendMessage`` reads the queue's attributes for one flag, and building them counts
  the queue's messages three times over, asking the clock for every message
  (``Message.visible``/``delayed``), so a send costs O(backlog); every ``ReceiveMessage`` lists
  the visible messages the same way. The counts and the list take one clock reading per pass.

At 100 records/s with a backlog of 12,000 notices (py-spy, moto pegged, a receive of 10
messages taking ~1 s):

- 84 %: every message a ``ReceiveMessage`` returns checks its retention period through
  ``get_queue_attributes([...])``, which builds the queue's whole attribute dict three times
  per asked name, each counting the backlog three times: 9 passes over the queue per message
  returned. The check now reads the queue's retention period; ``get_queue_attributes`` builds the
  dict once, and the dict counts the backlog once.
- ``SendMessage`` (SNS fan-out to a queue included) built the attribute dict, counting the
  backlog, for one flag; it no longer counts (16 % of moto at 100 records/s into a 27k inbox).
- ``DeleteMessage`` scanned the queue twice per receipt, building a list of receipt handles for
  every message; it now finds the message through a receipt index (rebuilt on a miss) and
  removes it in place, under the queue's lock (moto's rebuilt the list outside the lock its
  ``SendMessage`` appends under, and lost a message sent meanwhile).

At 100 records/s after those (py-spy, moto at ~85 % of a core, most records fanned out from SNS
to the records inbox):

- 17 %: every message SNS delivers to a queue or an HTTP endpoint is signed with a certificate
  moto makes for that one message (a 2048-bit RSA signature and a random serial number) and then
  keeps in memory for ever (~1 KB a message). One certificate per subscription now, made on its
  first message; each message is still signed with it, as SNS signs each message.
- 12 %: werkzeug logs every request line (a lock and a write per request); only answers of 400
  and above are logged now (``quiet_request_log``).
- ~10 %, and as much again in every client: werkzeug's development server answers every request
  with ``Connection: close`` (http.server cannot drain an unread request body), so each request
  was a new TCP connection, a new server thread and a name lookup in the client. ``keep_alive``
  drains what the application left of a request with a known length and keeps HTTP/1.1
  connections open; a chunked request still closes its connection.

Behaviour is unchanged (same counts, same routing, same message fields); only the cost, and one
race of moto's that lost messages (``DeleteMessage`` above).
Applied by the local stack's moto (``python -m feedlot_pipeline.local.moto_server``, which also
journals the lake) and by the tests' and benchmarks' moto
(``python -m feedlot_pipeline.local.moto_speedups``).
"""

from __future__ import annotations

import sys
import threading
from typing import Any


def apply() -> None:
    from moto import backends
    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs import models as sqs
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]

    def counts(queue: Any) -> tuple[int, int, int]:
        now = unix_time_millis()
        visible = not_visible = delayed = 0
        for m in queue._messages:  # noqa: SLF001 - moto's own list
            is_delayed = now < m.delayed_until
            if now > m.visible_at:
                if not is_delayed:
                    visible += 1
            else:
                not_visible += 1
            if is_delayed:
                delayed += 1
        return visible, not_visible, delayed

    def visible_messages(queue: Any) -> list[Any]:
        now = unix_time_millis()
        return [
            m
            for m in queue._messages  # noqa: SLF001
            if now > m.visible_at and not now < m.delayed_until
        ]

    sending = threading.local()  # SendMessage reads one flag of the attribute dict: no counts

    def counted(queue: Any) -> tuple[int, int, int]:
        if getattr(sending, "on", False):
            return (0, 0, 0)
        return queue.__dict__.get("_feedlot_counts") or counts(queue)

    sqs.Queue.messages = property(visible_messages)
    sqs.Queue.approximate_number_of_messages = property(lambda q: counted(q)[0])
    sqs.Queue.approximate_number_of_messages_not_visible = property(lambda q: counted(q)[1])
    sqs.Queue.approximate_number_of_messages_delayed = property(lambda q: counted(q)[2])

    build_attributes = sqs.Queue.attributes.fget

    def attributes(queue: Any) -> dict[str, Any]:
        """moto's attribute dict, with the backlog counted once instead of three times."""
        queue._feedlot_counts = (0, 0, 0) if getattr(sending, "on", False) else counts(queue)
        try:
            return build_attributes(queue)
        finally:
            queue._feedlot_counts = None

    sqs.Queue.attributes = property(attributes)

    original_send = sqs.SQSBackend.send_message

    def send_message(backend: Any, *args: Any, **kwargs: Any) -> Any:
        """moto's; the attribute dict it builds for ContentBasedDeduplication skips the counts
        (they cost a pass over the backlog per message sent, SNS fan-out included)."""
        sending.on = True
        try:
            return original_send(backend, *args, **kwargs)
        finally:
            sending.on = False

    sqs.SQSBackend.send_message = send_message

    def get_queue_attributes(
        backend: Any, queue_name: str, attribute_names: list[str]
    ) -> dict[str, Any]:
        """As moto's (same validation first), building the attribute dict once."""
        queue = backend.get_queue(queue_name)
        if not attribute_names or "All" in attribute_names:
            return original_get_attributes(backend, queue_name, attribute_names)
        current = queue.attributes
        known = set(sqs.Queue.BASE_ATTRIBUTES) | set(sqs.Queue.FIFO_ATTRIBUTES)
        known |= set(sqs.Queue.KMS_ATTRIBUTES)
        if any(name not in known for name in attribute_names):
            return original_get_attributes(backend, queue_name, attribute_names)  # its errors
        return {
            name: current[name]
            for name in attribute_names
            if name in current and current[name] is not None
        }

    original_get_attributes = sqs.SQSBackend.get_queue_attributes
    sqs.SQSBackend.get_queue_attributes = get_queue_attributes

    def retained(backend: Any, queue_name: str, message: Any) -> bool:
        queue = backend.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return retain_until > unix_time()

    sqs.SQSBackend.is_message_valid_based_on_retention_period = retained

    from feedlot_pipeline.local.moto_records import note_removed as removed  # journal, if any

    def delete_message(queue: Any, receipt_handle: str) -> None:
        """moto's, with the message found through a receipt index instead of two scans, and
        removed in place under the queue's lock.

        moto's own rebuilds the message list and assigns it back, outside the lock ``SendMessage``
        appends under, so a notice sent while a delete ran was dropped with no trace: 1–2 of
        ~24,000 in saturated soaks, landed in the lake and never loaded.
        """
        if receipt_handle in queue.deleted_messages:
            return  # deleted already: AWS answers success
        index: dict[str, Any] = queue.__dict__.setdefault("_feedlot_receipts", {})
        with queue._messages_lock:  # noqa: SLF001 - the lock moto's add_message holds
            messages = queue._messages  # noqa: SLF001
            for attempt in (0, 1):
                message = index.get(receipt_handle)
                if message is not None:
                    try:
                        messages.remove(message)  # Message has no __eq__: by identity
                    except ValueError:
                        pass  # gone another way (a purge, a move to the DLQ): re-index
                    else:
                        queue.pending_messages.discard(message)
                        handles = message.all_receipt_handles
                        queue.deleted_messages.update(handles)
                        for handle in handles:
                            index.pop(handle, None)
                        removed(queue, message.id)
                        return
                if attempt == 0:  # a new receipt, or a message gone another way: re-index
                    index.clear()
                    for m in messages:
                        for handle in m.all_receipt_handles:
                            index[handle] = m
        raise ReceiptHandleIsInvalid()

    sqs.Queue.delete_message = delete_message
    _sign_sns_messages_with_one_certificate()


def _sign_sns_messages_with_one_certificate() -> None:
    """moto's ``Subscription.get_post_data`` with the certificate made once per subscription."""
    import base64
    from datetime import timedelta

    import cryptography.x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.x509 import Name, NameAttribute
    from cryptography.x509.oid import NameOID
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.utils import iso_8601_datetime_with_milliseconds, utcnow
    from moto.moto_api._internal import mock_random
    from moto.sns import models as sns

    def certificate(sub: Any) -> str:
        """The subscription's signing certificate's name, published where moto serves it."""
        name = sub.__dict__.get("_feedlot_cert_name")
        if name is not None:
            return name
        key = sub.private_key()
        issuer = [
            NameAttribute(NameOID.COUNTRY_NAME, "US"),
            NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
            NameAttribute(NameOID.COMMON_NAME, "Amazon RSA 2048 M01"),
        ]
        cert = (
            cryptography.x509.CertificateBuilder()
            .subject_name(Name([NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")]))
            .issuer_name(Name(issuer))
            .public_key(key.public_key())
            .serial_number(cryptography.x509.random_serial_number())
            .not_valid_before(utcnow())
            .not_valid_after(utcnow() + timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        name = f"SimpleNotificationService-{mock_random.uuid4().hex}.pem"
        region = sub.topic.sns_backend.region_name
        sns.sns_backends[DEFAULT_ACCOUNT_ID][region]._message_public_keys[name] = (  # noqa: SLF001
            cert.public_bytes(serialization.Encoding.PEM)
        )
        sub.__dict__["_feedlot_cert_name"] = name
        return name

    def get_post_data(
        self: Any,
        message: str,
        message_id: str,
        subject: str | None,
        message_attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        key_name = certificate(self)
        timestamp = iso_8601_datetime_with_milliseconds()
        string_to_sign = (
            f"Message\n{message}\nMessageId\n{message_id}\nTimestamp\n{timestamp}\n"
            f"TopicArn\n{self.topic.arn}\nType\nNotification\n"
        )
        signature = self.private_key().sign(
            string_to_sign.encode("UTF-8"), padding.PKCS1v15(), hashes.SHA256()
        )
        region = self.topic.sns_backend.region_name
        post_data: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": self.topic.arn,
            "Message": message,
            "Timestamp": timestamp,
            "SignatureVersion": "2",
            "Signature": base64.b64encode(signature).decode("utf-8"),
            "SigningCertURL": f"https://sns.{region}.amazonaws.com/{key_name}",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
            f"&SubscriptionArn=arn:aws:sns:us-east-1:{self.account_id}:{self.topic.name}"
            ":2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
        }
        if subject:
            post_data["Subject"] = subject
        if message_attributes:
            post_data["MessageAttributes"] = message_attributes
        return post_data

    sns.Subscription.get_post_data = get_post_data


def quiet_request_log(handler_class: Any) -> None:
    """werkzeug's request handler logging only answers of 400 and above (errors stay visible)."""
    original = handler_class.log_request

    def log_request(self: Any, code: Any = "-", size: Any = "-") -> None:
        status = getattr(code, "value", code)
        if str(status).isdigit() and int(status) < 400:
            return
        original(self, code, size)

    handler_class.log_request = log_request


def keep_alive(handler_class: Any) -> Any:
    """werkzeug's request handler, keeping HTTP/1.1 connections open between requests.

    werkzeug closes every connection because ``http.server`` cannot skip the part of a request
    body an application did not read before parsing the next request line. Here the body is
    read through a stream limited to its Content-Length and drained after the answer; a request
    with a chunked body, or one that asked for ``Connection: close``, closes as before.
    """
    from werkzeug.wsgi import LimitedStream

    class _NothingLeft:
        """What werkzeug's after-answer drain reads instead of the kept-open socket (it would
        block there on the client's next request); the body was drained already."""

        def read(self, size: int = -1) -> bytes:
            return b""

    class KeepAliveHandler(handler_class):  # type: ignore[misc, valid-type]
        _body: LimitedStream | None = None
        _socket_file: Any = None

        # A kept-open connection answers in several small writes (status and headers, body;
        # "100 Continue" first for an S3 PUT): with Nagle's algorithm each waits for the
        # client's delayed ACK, ~40 ms per request (a closed connection flushed them).
        disable_nagle_algorithm = True

        def _keep(self) -> bool:
            if self.request_version != "HTTP/1.1":
                return False
            if "close" in self.headers.get("Connection", "").lower():
                return False
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return False
            length = self.headers.get("Content-Length")
            return length is None or length.strip().isdigit()

        def make_environ(self) -> dict[str, Any]:
            environ = super().make_environ()
            if self._socket_file is not None:
                length = int(self.headers.get("Content-Length") or 0)
                self._body = LimitedStream(self._socket_file, length)
                environ["wsgi.input"] = self._body
                environ["wsgi.input_terminated"] = True
            return environ

        def send_header(self, keyword: str, value: str) -> None:
            if keyword.lower() == "connection" and value.lower() == "close" and self._body:
                value = "keep-alive"  # http.server then leaves close_connection False
            super().send_header(keyword, value)

        def run_wsgi(self) -> None:
            if not self._keep():
                super().run_wsgi()
                return
            self._socket_file, self.rfile = self.rfile, _NothingLeft()
            try:
                super().run_wsgi()
            finally:
                self.rfile, self._socket_file = self._socket_file, None
                body, self._body = self._body, None
                if body is not None and not self.close_connection:
                    try:
                        body.exhaust()
                    except OSError:
                        self.close_connection = True

    KeepAliveHandler.__name__ = handler_class.__name__
    return KeepAliveHandler


def main() -> None:
    """``python -m moto.server`` with the speed-ups applied first (same arguments)."""
    apply()
    import moto.server

    quiet_request_log(moto.server.MotoRequestHandler)
    moto.server.MotoRequestHandler = keep_alive(moto.server.MotoRequestHandler)
    sys.argv[0] = "moto_server"
    moto.server.main(sys.argv[1:])


if __name__ == "__main__":
    main()
