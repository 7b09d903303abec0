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
            count = redrive["maxReceiveCount"]
            if isinstance(count, dict):  # !Ref of a parameter: its default
                count = template["Parameters"][count["Ref"]]["Default"]
            assert count == spec["max_receive_count"]


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


# The cache (ElastiCache RBAC) user each deployed function logs in as: only the ingest task
# may write prices (adapters::keyspace has the rules; a Rust test checks the access strings).
CACHE_USERS = {
    "ApiFunction": "trading-functions",
    "WebhookFunction": "trading-functions",
    "WsFunction": "trading-functions",
    "ExecutorFunction": "trading-functions",
    "IngestTaskDefinition": "trading-ingest",
}
# The database role each deployed function connects as (infra/migrations/0004_function_roles.sql).
FUNCTION_ROLES = {
    "ApiFunction": "trading_api",
    "WebhookFunction": "trading_api",
    "WsFunction": "trading_api",
    "ExecutorFunction": "trading_executor",
    "IngestTaskDefinition": "trading_ingest",
}


def ref(value):
    return value.get("Ref") if isinstance(value, dict) else None


def test_each_function_connects_as_its_own_database_role(template):
    migration = (REPO / "infra" / "migrations" / "0004_function_roles.sql").read_text()
    created = re.search(r"ARRAY\[([^\]]*)\]", migration).group(1)
    roles = set(re.findall(r"'(\w+)'", created))
    assert roles == set(FUNCTION_ROLES.values())

    username = {
        name: json.loads(s["Properties"]["GenerateSecretString"]["SecretStringTemplate"])["username"]
        for name, s in resources(template, "AWS::SecretsManager::Secret").items()
    }
    secret_of_role = {user: name for name, user in username.items()}
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]

    def secret_env(name, variable="DATABASE_SECRET_ARN"):
        resource = template["Resources"][name]
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            env = {e["Name"]: e["Value"] for e in resource["Properties"]["ContainerDefinitions"][0]["Environment"]}
        else:
            env = dict(globals_env, **resource["Properties"].get("Environment", {}).get("Variables", {}))
        return ref(env[variable])

    def readable_secrets(name):
        resource = template["Resources"][name]
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            role = template["Resources"][resource["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]]
            return {
                ref(r) if ref(r) else r
                for policy in role["Properties"]["Policies"]
                for statement in policy["PolicyDocument"]["Statement"]
                if "secretsmanager:GetSecretValue" in str(statement["Action"])
                for r in (statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]])
            }
        return {
            ref(p["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"])
            for p in resource["Properties"]["Policies"]
            if isinstance(p, dict) and "AWSSecretsManagerGetSecretValuePolicy" in p
        }

    cache_users = {
        u["Properties"]["UserName"]: u["Properties"] for u in resources(template, "AWS::ElastiCache::User").values()
    }
    for user, props in cache_users.items():
        # Each cache user's password is its secret's.
        (password,) = props["AuthenticationMode"]["Passwords"]
        assert username[re.search(r"\$\{(\w+)\}", password["Fn::Sub"]).group(1)] == user
    assert cache_users["default"]["AccessString"].startswith("off ")
    for name, role in FUNCTION_ROLES.items():
        assert secret_env(name) == secret_of_role[role], name
        cache_secret = secret_env(name, "REDIS_SECRET_ARN")
        assert username[cache_secret] == CACHE_USERS[name], name
        # It can read its own secrets and no other: not the owner's, not another role's.
        assert readable_secrets(name) == {secret_of_role[role], cache_secret}, name
        if template["Resources"][name]["Type"] == "AWS::Serverless::Function":
            assert template["Resources"][name].get("DependsOn") == "LedgerSchema", name

    # The migrations run as the owner and set every role's password from its secret.
    migrate = template["Resources"]["MigrateFunction"]["Properties"]["Environment"]["Variables"]
    assert username[ref(migrate["DATABASE_SECRET_ARN"])] == "trading"
    for role in roles:
        suffix = role.removeprefix("trading_").upper()
        assert ref(migrate[f"DATABASE_{suffix}_SECRET_ARN"]) == secret_of_role[role], role

    # The proxy accepts every database login.
    auth = template["Resources"]["DatabaseProxy"]["Properties"]["Auth"]
    database_secrets = {name for name, user in username.items() if user == "trading" or user in roles}
    assert {ref(a["SecretArn"]) for a in auth} == database_secrets

    # A new migration reaches the deployed database: SchemaVersion is the newest one.
    newest = max(int(p.name.split("_")[0]) for p in (REPO / "infra" / "migrations").glob("*.sql"))
    assert int(template["Resources"]["LedgerSchema"]["Properties"]["SchemaVersion"]) == newest
