"""moto's server, with its SQS requests made cheap when the queue is deep.

moto 5.2.5 (pinned in requirements.txt) builds a queue's whole attribute dict, counting every
message three times (visible, delayed, in flight), for each `queue.attributes.get(name)`. It
does that twice per SendMessage and nine times per message a ReceiveMessage returns (the
retention check goes through `get_queue_attributes`, which recomputes the dict three times per
name). With 2,000 messages queued a send took 270 ms and a receive of ten 1.9 s, so a backlog
left by an outage fed itself and the chaos run's queue never drained. Its long poll also spun
at full CPU whenever every visible message belonged to a FIFO group already in flight.

Patched, a receive of ten at 8,000 queued takes 60 ms and a send 12 ms (`make chaos` needs a
backlog of thousands to drain). The patches change no answer moto gives, only how it computes
them, and close one race:
- the clock is read with `time.time()` (moto builds two datetimes and imports a module per
  read, three reads per queued message for a count);
- `Queue.attributes` is a mapping that computes an attribute when it is read;
- `Message.had_receipt_handle` compares without building a list per message, and a delete
  finds its message by its receipt handle instead of scanning the queue twice;
- receives, deletes and visibility changes of FIFO bookkeeping take one lock: moto's
  receive reads which groups are in flight, then marks its messages, without one, so two
  pollers receiving at once could each take a message of the same group (SQS never hands
  out a group's next message while one is in flight; the executor relies on it);
- a send finds the newest queued message of its deduplication id instead of comparing with
  every queued message, and the server lists moto's modules once, not under its lock on
  every request (every request waited for that lock: half the samples of a profile);
- a long poll waits for a new message (or 20 ms) between passes, outside that lock,
  instead of spinning while every visible message belongs to a group in flight.

Run it as moto_server: `python moto_server.py -H 127.0.0.1 -p PORT`.
"""

import json
import sys
import threading
import time
from collections.abc import Mapping

from moto import backends as moto_backends
from moto.server import main
from moto.sqs import models
from moto.sqs.exceptions import ReceiptHandleIsInvalid

# How long a long poll sleeps when the queue holds only messages it may not return yet (their
# group is in flight, or they are invisible): no notification announces those becoming
# receivable, so the poll looks again after this long.
BLOCKED_POLL_SECS = 0.02

# The FIFO bookkeeping's lock: one receive pass, delete or visibility change at a time.
BOOKKEEPING = threading.RLock()

# Every receipt handle given out, to the message it was given for.
RECEIPTS = {}


class LazyAttributes(Mapping):
    """A queue's attributes, each computed when read, with moto's names and values."""

    def __init__(self, queue):
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        self._names = dict.fromkeys(names)

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        queue = self._queue
        if name == "RedrivePolicy" and queue.redrive_policy:
            value = json.dumps(queue.redrive_policy)
        else:
            value = getattr(queue, models.camelcase_to_underscores(name))
        if isinstance(value, bool):
            value = str(value).lower()
        return value

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


def lazy_attributes(queue):
    return LazyAttributes(queue)


original_get_queue_attributes = models.SQSBackend.get_queue_attributes


def get_queue_attributes(self, queue_name, attribute_names):
    # `All` hands the mapping itself to the response: give it a plain dict, as moto does.
    attributes = original_get_queue_attributes(self, queue_name, attribute_names)
    return dict(attributes)


models_unix_time = models.unix_time


def unix_time(dt=None):
    return models_unix_time(dt) if dt is not None else time.time()


def unix_time_millis(dt=None):
    return unix_time(dt) * 1000.0


def had_receipt_handle(self, receipt_handle):
    return receipt_handle == self.receipt_handle or receipt_handle in self._old_receipt_handles


original_mark_received = models.Message.mark_received


def mark_received(self, visibility_timeout=None):
    original_mark_received(self, visibility_timeout)
    RECEIPTS[self.receipt_handle] = self


def delete_message(self, receipt_handle):
    with BOOKKEEPING:
        if receipt_handle in self.deleted_messages:
            # Already deleted - gracefully handle deleting it again (as moto does).
            return
        message = RECEIPTS.get(receipt_handle)
        if message is None or message not in self._messages:
            raise ReceiptHandleIsInvalid()
        self.pending_messages.discard(message)
        self.deleted_messages.update(message.all_receipt_handles)
        for handle in message.all_receipt_handles:
            RECEIPTS.pop(handle, None)
        self._messages = [m for m in self._messages if m is not message]


original_add_message = models.Queue.add_message


def add_message(self, message):
    # moto compares the new message's deduplication id with every queued message's; the
    # newest queued message of an id decides alone (an older one of the same id was sent
    # longer before), so it is looked up instead.
    if self.lambda_event_source_mappings or not self.fifo_queue:
        return original_add_message(self, message)
    if self.content_based_deduplication or message.deduplication_id:
        newest = self.__dict__.setdefault("_newest_by_dedup_id", {})
        prior = newest.get(message.deduplication_id)
        if (
            prior is not None
            and prior in self._messages
            and (message.sent_timestamp - prior.sent_timestamp) / 1000
            < models.DEDUPLICATION_TIME_IN_SECONDS
        ):
            return
        newest[message.deduplication_id] = message
    with self._messages_lock:
        self._messages.append(message)
        self._messages_lock.notify_all()


original_receive_message = models.SQSBackend.receive_message


def receive_message(
    self,
    queue_name,
    count,
    wait_seconds_timeout,
    visibility_timeout,
    message_attribute_names=None,
):
    queue = self.get_queue(queue_name)
    deadline = time.time() + (wait_seconds_timeout or 0)
    while True:
        with BOOKKEEPING:
            # One pass of moto's own receive (a wait of 0 does not wait).
            result = original_receive_message(
                self, queue_name, count, 0, visibility_timeout, message_attribute_names
            )
        left = deadline - time.time()
        if result or left <= 0:
            return result
        with queue._messages_lock:
            queue._messages_lock.wait(timeout=min(left, BLOCKED_POLL_SECS))


original_change_message_visibility = models.SQSBackend.change_message_visibility


def change_message_visibility(self, queue_name, receipt_handle, visibility_timeout):
    with BOOKKEEPING:
        return original_change_message_visibility(
            self, queue_name, receipt_handle, visibility_timeout
        )


def list_of_moto_modules():
    return MOTO_MODULES


# moto's server lists its package's directories, under the lock every request takes, to find
# the request's service: once is enough (they do not change while it runs).
MOTO_MODULES = tuple(moto_backends.list_of_moto_modules())

# moto's own, kept for tests/python/test_moto_server.py to compare against.
ORIGINAL_ATTRIBUTES = models.Queue.attributes

models.unix_time = unix_time
models.unix_time_millis = unix_time_millis
models.Queue.attributes = property(lazy_attributes)
models.SQSBackend.get_queue_attributes = get_queue_attributes
models.Message.had_receipt_handle = had_receipt_handle
models.Message.mark_received = mark_received
models.Queue.delete_message = delete_message
models.Queue.add_message = add_message
moto_backends.list_of_moto_modules = list_of_moto_modules
models.SQSBackend.receive_message = receive_message
models.SQSBackend.change_message_visibility = change_message_visibility

if __name__ == "__main__":
    sys.exit(main())
