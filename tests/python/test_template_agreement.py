"""template.yaml (what AWS runs) and the local emulation (what `make dev` and the tests run)
must describe the same system: every REST and WebSocket route, queue, table, function and
task in one exists in the other, with the same function behind each route.

The local side is read from the parts that do the emulating: `devstack --describe` (routes,
the SQS event source, the functions it runs), infra/scripts/aws_setup.py (queues and their
attributes; the connection table is created from the template and checked on moto here),
infra/scripts/dev.sh (the ingest task) and infra/scripts/migrate.sh (the migrations that
the template runs as a custom resource).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode.cfn_yaml import load as load_template

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "infra" / "scripts"))
import aws_setup  # noqa: E402

# Functions the template deploys that the devstack does not run, with the script and the
# command that stand in for each locally. Adding a function to the template means adding it
# to the devstack or here.
RUN_OTHERWISE_LOCALLY = {
    # The custom resource and `make migrate` apply the same adapters::schema migrations.
    "migrate-custom-resource": ("infra/scripts/migrate.sh", "--bin migrate"),
}
# Local tables by template resource.
LOCAL_TABLES = {"ConnectionsTable": aws_setup.CONNECTIONS_TABLE}


@pytest.fixture(scope="module")
def template():
    return load_template(str(REPO / "template.yaml"))


@pytest.fixture(scope="module")
def devstack():
    bin_dir = Path(os.environ.get("TRADING_BIN_DIR") or REPO / "target" / "debug")
    out = subprocess.run(
        [str(bin_dir / "devstack"), "--describe"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return json.loads(out)


def resources(template, kind):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def binary(function):
    return function["Metadata"]["BuildProperties"]["Binary"]


def stack_prefixed(value) -> str:
    """`${AWS::StackName}-commands.fifo` -> `commands.fifo`."""
    sub = value["Fn::Sub"] if isinstance(value, dict) else value
    assert sub.startswith("${AWS::StackName}-"), sub
    return sub[len("${AWS::StackName}-") :]


def test_every_template_function_is_built_with_cargo_lambda_and_runs_locally(template, devstack):
    functions = resources(template, "AWS::Serverless::Function")
    assert functions, "no functions in template.yaml"
    for name, f in functions.items():
        assert f["Metadata"]["BuildMethod"] == "rust-cargolambda", name
    deployed = {binary(f) for f in functions.values()}
    local = set(devstack["functions"])
    assert local - deployed == set(), "the devstack runs functions template.yaml lacks"
    assert deployed - local == set(RUN_OTHERWISE_LOCALLY), (
        "template.yaml deploys functions that nothing runs locally"
    )
    for name, (script, command) in RUN_OTHERWISE_LOCALLY.items():
        assert command in (REPO / script).read_text(), (name, script, command)


def test_rest_routes_agree(template, devstack):
    deployed = set()
    for f in resources(template, "AWS::Serverless::Function").values():
        for event in f["Properties"].get("Events", {}).values():
            if event["Type"] != "Api":
                continue
            props = event["Properties"]
            assert props["RestApiId"] == {"Ref": "RestApi"}, props
            deployed.add((props["Method"].upper(), props["Path"], binary(f)))
    local = {(r["method"], r["path"], r["function"]) for r in devstack["rest_routes"]}
    assert deployed, "no REST routes in template.yaml"
    assert deployed == local


def test_websocket_routes_agree(template, devstack):
    integrations = resources(template, "AWS::ApiGatewayV2::Integration")
    functions = resources(template, "AWS::Serverless::Function")
    deployed = set()
    for route in resources(template, "AWS::ApiGatewayV2::Route").values():
        props = route["Properties"]
        assert props["ApiId"] == {"Ref": "WebSocketApi"}
        integration = re.fullmatch(r"integrations/\$\{(\w+)\}", props["Target"]["Fn::Sub"])[1]
        uri = integrations[integration]["Properties"]["IntegrationUri"]["Fn::Sub"]
        function = re.search(r"\$\{(\w+)\.Arn\}", uri)[1]
        deployed.add((props["RouteKey"], binary(functions[function])))
        # API Gateway must be allowed to invoke that function.
        permissions = [
            p["Properties"]
            for p in resources(template, "AWS::Lambda::Permission").values()
            if p["Properties"]["FunctionName"] == {"Ref": function}
        ]
        assert any(p["Principal"] == "apigateway.amazonaws.com" for p in permissions), function
    local = {(r["route_key"], r["function"]) for r in devstack["websocket_routes"]}
    assert deployed == local


def test_queue_event_sources_agree(template, devstack):
    queues = resources(template, "AWS::SQS::Queue")
    deployed = set()
    for f in resources(template, "AWS::Serverless::Function").values():
        for event in f["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            props = event["Properties"]
            queue = props["Queue"]["Fn::GetAtt"][0]
            deployed.add(
                (
                    stack_prefixed(queues[queue]["Properties"]["QueueName"]),
                    binary(f),
                    props["BatchSize"],
                    "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                )
            )
    local = {
        (q["queue"], q["function"], q["max_batch_size"], q["report_batch_item_failures"])
        for q in devstack["queue_sources"]
    }
    assert deployed == local


def normalized(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_queues_agree(template):
    queues = resources(template, "AWS::SQS::Queue")
    by_local_name = {stack_prefixed(q["Properties"]["QueueName"]): q for q in queues.values()}
    assert set(by_local_name) == set(aws_setup.QUEUES)
    logical_to_local = {
        logical: stack_prefixed(q["Properties"]["QueueName"]) for logical, q in queues.items()
    }
    for name, spec in aws_setup.QUEUES.items():
        props = by_local_name[name]["Properties"]
        for attribute, value in spec["attributes"].items():
            if attribute == "VisibilityTimeout":
                continue  # short locally on purpose (see aws_setup.QUEUES)
            assert normalized(props.get(attribute)) == value, (name, attribute)
        for attribute in ("FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"):
            if attribute in props:
                assert spec["attributes"].get(attribute) == normalized(props[attribute]), (name, attribute)
        redrive = props.get("RedrivePolicy")
        assert (redrive is None) == ("redrive_to" not in spec), name
        if redrive:
            dlq = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert logical_to_local[dlq] == spec["redrive_to"]
            assert redrive["maxReceiveCount"] == spec["max_receive_count"]


def test_tables_agree_with_the_ones_on_moto(template):
    import boto3

    tables = resources(template, "AWS::DynamoDB::Table")
    assert set(tables) == set(LOCAL_TABLES)
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        pytest.fail("AWS_ENDPOINT_URL is not set: run through `make test`")
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"))
    for logical, local_name in LOCAL_TABLES.items():
        aws_setup.ensure_table(endpoint, local_name)
        props = tables[logical]["Properties"]
        described = ddb.describe_table(TableName=local_name)["Table"]
        assert sorted(described["KeySchema"], key=str) == sorted(props["KeySchema"], key=str)
        assert {a["AttributeName"]: a["AttributeType"] for a in described["AttributeDefinitions"]} == {
            a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]
        }
        assert {i["IndexName"]: i["KeySchema"] for i in described.get("GlobalSecondaryIndexes", [])} == {
            i["IndexName"]: i["KeySchema"] for i in props.get("GlobalSecondaryIndexes", [])
        }
        ttl = ddb.describe_time_to_live(TableName=local_name)["TimeToLiveDescription"]
        assert ttl.get("AttributeName") == props["TimeToLiveSpecification"]["AttributeName"]


def test_the_ingest_task_runs_locally(template):
    containers = [
        c["Name"]
        for t in resources(template, "AWS::ECS::TaskDefinition").values()
        for c in t["Properties"]["ContainerDefinitions"]
    ]
    assert containers == ["ingest"]
    dev = (REPO / "infra" / "scripts" / "dev.sh").read_text()
    assert re.search(r"start_proc ingest\b", dev), "dev.sh does not start the ingest task"
