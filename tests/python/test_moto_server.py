"""infra/scripts/moto_server.py gives moto's answers, only faster.

The patches run in this process (moto in-process, `mock_aws`); each test compares what the
patched moto answers with what moto's own code computes, or with the FIFO rules the executor
relies on.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.sqs import models

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def in_process_moto(monkeypatch):
    """The tests' clients reach the in-process moto: with `make test`'s AWS_ENDPOINT_URL
    they would reach the services' moto server instead."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)
spec = importlib.util.spec_from_file_location(
    "moto_server", REPO / "infra" / "scripts" / "moto_server.py"
)
moto_server = importlib.util.module_from_spec(spec)
spec.loader.exec_module(moto_server)


def client():
    return boto3.client(
        "sqs",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def content_fifo(sqs, name):
    """A FIFO queue with content-based deduplication: its URL."""
    return sqs.create_queue(
        QueueName=name,
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]


def backend_queue(name):
    return models.sqs_backends["123456789012"]["us-east-1"].get_queue(name)


@mock_aws
def test_attributes_are_moto_s_own_for_every_kind_of_queue():
    sqs = client()
    dlq = sqs.create_queue(QueueName="dlq.fifo", Attributes={"FifoQueue": "true"})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    fifo = sqs.create_queue(
        QueueName="commands.fifo",
        Attributes={
            "FifoQueue": "true",
            "ContentBasedDeduplication": "true",
            "VisibilityTimeout": "12",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}),
        },
    )["QueueUrl"]
    plain = sqs.create_queue(
        QueueName="plain",
        Attributes={"KmsMasterKeyId": "alias/x", "DelaySeconds": "0"},
    )["QueueUrl"]
    for i in range(6):
        sqs.send_message(QueueUrl=fifo, MessageBody=f"m{i}", MessageGroupId=f"g{i % 2}")
        sqs.send_message(QueueUrl=plain, MessageBody=f"p{i}", DelaySeconds=30 if i < 2 else 0)
    sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=2)
    sqs.receive_message(QueueUrl=plain, MaxNumberOfMessages=1)

    for name in ("dlq.fifo", "commands.fifo", "plain"):
        queue = backend_queue(name)
        expected = moto_server.ORIGINAL_ATTRIBUTES.fget(queue)
        assert dict(queue.attributes) == expected
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        answered = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert answered == {k: str(v) for k, v in expected.items() if v is not None}
    counts = backend_queue("plain").attributes
    assert (
        counts["ApproximateNumberOfMessages"],
        counts["ApproximateNumberOfMessagesDelayed"],
        counts["ApproximateNumberOfMessagesNotVisible"],
    ) == (3, 2, 1)


@mock_aws
def test_a_fifo_group_in_flight_holds_its_later_messages_back():
    sqs = client()
    url = content_fifo(sqs, "q.fifo")
    for body, group in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group)
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
    assert [m["Body"] for m in first["Messages"]] == ["a1", "a2", "b1"]

    sqs.send_message(QueueUrl=url, MessageBody="a3", MessageGroupId="a")
    sqs.send_message(QueueUrl=url, MessageBody="c1", MessageGroupId="c")
    # A long poll returns what it may (c1), never a3 while a1 and a2 are in flight.
    second = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert [m["Body"] for m in second["Messages"]] == ["c1"]
    assert "Messages" not in sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )

    deleted = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(first["Messages"])
        ],
    )
    assert len(deleted["Successful"]) == 3
    third = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    assert [m["Body"] for m in third["Messages"]] == ["a3"]


@mock_aws
def test_a_long_poll_with_only_blocked_messages_wakes_for_a_new_one():
    sqs = client()
    url = content_fifo(sqs, "w.fifo")
    sqs.send_message(QueueUrl=url, MessageBody="a1", MessageGroupId="a")
    sqs.send_message(QueueUrl=url, MessageBody="a2", MessageGroupId="a")
    held = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=30)
    assert [m["Body"] for m in held["Messages"]] == ["a1"]

    sender = threading.Timer(
        0.5, lambda: sqs.send_message(QueueUrl=url, MessageBody="b1", MessageGroupId="b")
    )
    sender.start()
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
    sender.join()
    assert [m["Body"] for m in got["Messages"]] == ["b1"]


@mock_aws
def test_an_earlier_receipt_handle_still_deletes_its_message():
    sqs = client()
    url = sqs.create_queue(QueueName="r")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    old = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"][0]
    time.sleep(1.1)
    new = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"][0]
    assert old["ReceiptHandle"] != new["ReceiptHandle"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=old["ReceiptHandle"])
    assert backend_queue("r").attributes["ApproximateNumberOfMessagesNotVisible"] == 0
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


@mock_aws
def test_pollers_receiving_at_once_never_hold_two_messages_of_a_group():
    sqs = client()
    url = content_fifo(sqs, "race.fifo")
    groups, per_group = 12, 15
    for n in range(per_group):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(g), "MessageBody": f"{g}:{n}", "MessageGroupId": f"g{g}"}
                for g in range(10)
            ],
        )
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(g), "MessageBody": f"{g}:{n}", "MessageGroupId": f"g{g}"}
                for g in range(10, groups)
            ],
        )
    held, seen, overlaps = {}, {g: [] for g in range(groups)}, []
    lock = threading.Lock()

    def poller(name):
        own = client()
        idle = 0
        while idle < 3:
            got = own.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                idle += 1
                time.sleep(0.02)
                continue
            idle = 0
            mine = {int(m["Body"].split(":")[0]) for m in got}
            with lock:
                overlaps.extend((g, name, held[g]) for g in mine if g in held)
                for g in mine:
                    held[g] = name
                for m in got:
                    g, n = map(int, m["Body"].split(":"))
                    seen[g].append(n)
            time.sleep(0.005)
            with lock:
                for g in mine:
                    held.pop(g, None)
            own.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(got)
                ],
            )

    threads = [threading.Thread(target=poller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert all(seen[g] == list(range(per_group)) for g in range(groups)), seen


@mock_aws
def test_deduplication_is_moto_s():
    sqs = client()
    url = sqs.create_queue(QueueName="d.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    for body in ("first", "again"):
        sqs.send_message(
            QueueUrl=url, MessageBody=body, MessageGroupId="g", MessageDeduplicationId="x"
        )
    sqs.send_message(
        QueueUrl=url, MessageBody="other", MessageGroupId="g", MessageDeduplicationId="y"
    )
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == ["first", "other"]
    # moto forgets an id with its message (SQS would keep it five minutes).
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    sqs.send_message(
        QueueUrl=url, MessageBody="after", MessageGroupId="h", MessageDeduplicationId="x"
    )
    sqs.send_message(
        QueueUrl=url, MessageBody="dropped", MessageGroupId="h", MessageDeduplicationId="y"
    )
    assert backend_queue("d.fifo").attributes["ApproximateNumberOfMessages"] == 1

    content = content_fifo(sqs, "c.fifo")
    for body in ("same", "same", "different"):
        sqs.send_message(QueueUrl=content, MessageBody=body, MessageGroupId="g")
    got = sqs.receive_message(QueueUrl=content, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == ["same", "different"]
