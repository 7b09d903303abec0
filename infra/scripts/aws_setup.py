#!/usr/bin/env python3
"""Local AWS set-up against moto (called by services.sh with the venv's python).

    aws_setup.py wait   ENDPOINT [TIMEOUT_S]   wait until moto answers HTTP
    aws_setup.py create ENDPOINT               create the queues and the connection table
                                               (idempotent), print the commands.fifo URL
    aws_setup.py table  ENDPOINT NAME          create a connection table named NAME
                                               (idempotent; the e2e tests make one per stack)

The connection table is created from the `ConnectionsTable` resource of template.yaml (key
schema, attribute definitions, indexes, billing mode, TTL), so the local table and the
deployed one cannot drift apart.

Queues (mirroring template.yaml on AWS):
  commands-dlq.fifo  FIFO dead-letter queue
  commands.fifo      FIFO, explicit deduplication ids (ContentBasedDeduplication
                     false), high-throughput mode (dedup scope and throughput
                     limit per message group), visibility 30 s, redrive to the
                     DLQ after 5 receives.
"""
import json
import os
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


TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "template.yaml")
CONNECTIONS_TABLE = "connections"


def client(endpoint: str, service: str = "sqs"):
    import boto3

    return boto3.client(
        service,
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


# The local queues, by name: the attributes template.yaml gives CommandsDlq and
# CommandsQueue (tests/python/test_template_agreement.py holds them equal), except the
# visibility timeout, which is short here so that tests see retries quickly, and the
# encryption, which moto does not model. "redrive_to" names the dead-letter queue.
QUEUES = {
    "commands-dlq.fifo": {
        "attributes": {"FifoQueue": "true", "MessageRetentionPeriod": "1209600"},
    },
    "commands.fifo": {
        "attributes": {
            "FifoQueue": "true",
            "ContentBasedDeduplication": "false",
            "DeduplicationScope": "messageGroup",
            "FifoThroughputLimit": "perMessageGroupId",
            "VisibilityTimeout": "30",
        },
        "redrive_to": "commands-dlq.fifo",
        "max_receive_count": 20,
    },
}


def create(endpoint: str) -> None:
    sqs = client(endpoint)
    urls = {}
    # Dead-letter queues first: the others' redrive policies name them.
    for name, spec in sorted(QUEUES.items(), key=lambda kv: "redrive_to" in kv[1]):
        attributes = dict(spec["attributes"])
        if "redrive_to" in spec:
            dlq_arn = sqs.get_queue_attributes(
                QueueUrl=urls[spec["redrive_to"]], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec["max_receive_count"]}
            )
        urls[name] = ensure_queue(sqs, name, attributes)
    print(urls["commands.fifo"])
    print(urls["commands-dlq.fifo"])


def template_resource(name: str) -> dict:
    """A resource of template.yaml. CloudFormation's short tags (!Ref, !Sub, ...) are read
    as plain values: the table's schema uses none of them."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)

    Loader.add_multi_constructor("!", any_tag)
    with open(TEMPLATE) as f:
        return yaml.load(f, Loader=Loader)["Resources"][name]


def ensure_table(endpoint: str, name: str) -> None:
    props = template_resource("ConnectionsTable")["Properties"]
    ddb = client(endpoint, "dynamodb")
    try:
        ddb.describe_table(TableName=name)
        return
    except ddb.exceptions.ResourceNotFoundException:
        pass
    args = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    ddb.create_table(**args)
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"],
                "Enabled": bool(ttl.get("Enabled", True)),
            },
        )


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("wait", "create", "table"):
        sys.exit(__doc__)
    cmd, endpoint = sys.argv[1], sys.argv[2].rstrip("/")
    if cmd == "wait":
        wait(endpoint, float(sys.argv[3]) if len(sys.argv) > 3 else 30.0)
    elif cmd == "table":
        if len(sys.argv) < 4:
            sys.exit(__doc__)
        ensure_table(endpoint, sys.argv[3])
    else:
        create(endpoint)
        ensure_table(endpoint, CONNECTIONS_TABLE)


if __name__ == "__main__":
    main()
