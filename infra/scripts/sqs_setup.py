#!/usr/bin/env python3
"""Local SQS set-up against moto (called by services.sh with the venv's python).

    sqs_setup.py wait   ENDPOINT [TIMEOUT_S]   wait until moto answers HTTP
    sqs_setup.py create ENDPOINT               create the queues (idempotent),
                                               print the commands.fifo URL

Queues (mirroring template.yaml on AWS):
  commands-dlq.fifo  FIFO dead-letter queue
  commands.fifo      FIFO, explicit deduplication ids (ContentBasedDeduplication
                     false), high-throughput mode (dedup scope and throughput
                     limit per message group), visibility 30 s, redrive to the
                     DLQ after 5 receives.
"""
import json
import sys
import time
import urllib.error
import urllib.request

REGION = "us-east-1"


def wait(endpoint: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2) as r:
                r.read(1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except Exception as e:  # connection refused, reset, timeout
            last = e
            time.sleep(0.2)
    sys.exit(f"moto at {endpoint} not ready after {timeout}s: {last}")


def client(endpoint: str):
    import boto3

    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def ensure_queue(sqs, name: str, attributes: dict) -> str:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        pass
    sqs.create_queue(QueueName=name, Attributes=attributes)
    # GetQueueUrl gives the exact URL clients must use.
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def create(endpoint: str) -> None:
    sqs = client(endpoint)
    dlq_url = ensure_queue(
        sqs, "commands-dlq.fifo", {"FifoQueue": "true", "MessageRetentionPeriod": "1209600"}
    )
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    url = ensure_queue(
        sqs,
        "commands.fifo",
        {
            "FifoQueue": "true",
            "ContentBasedDeduplication": "false",
            "DeduplicationScope": "messageGroup",
            "FifoThroughputLimit": "perMessageGroupId",
            "VisibilityTimeout": "30",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}),
        },
    )
    print(url)
    print(dlq_url)


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("wait", "create"):
        sys.exit(__doc__)
    cmd, endpoint = sys.argv[1], sys.argv[2].rstrip("/")
    if cmd == "wait":
        wait(endpoint, float(sys.argv[3]) if len(sys.argv) > 3 else 30.0)
    else:
        create(endpoint)


if __name__ == "__main__":
    main()
