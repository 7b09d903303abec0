//! The connection table against DynamoDB (moto), with the schema of template.yaml.

use adapters::connections::ConnectionTable;
use domain::realtime::Connection;
use uuid::Uuid;

#[tokio::test]
async fn connections_are_stored_found_by_account_and_expire_in_code() {
    let table = ConnectionTable::new(&testkit::connection_table());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let now = adapters::now_ms();
    let mut c1 = Connection::new("AAAAAAAAAAAAAA1=", a, now);
    c1.symbols = vec!["BTCUSDT".into()];
    let c2 = Connection::new("AAAAAAAAAAAAAA2=", a, now);
    let other = Connection::new("AAAAAAAAAAAAAA3=", b, now);
    // Expired an hour ago but not yet deleted by DynamoDB's TTL sweeper.
    let mut dead = Connection::new("AAAAAAAAAAAAAA4=", a, now - 3 * 3_600_000);
    dead.ttl = now / 1000 - 3_600;
    for c in [&c1, &c2, &other, &dead] {
        table.put(c).await.expect("put");
    }
    let mut mine = table.by_account(a, now).await.expect("query");
    mine.sort_by(|x, y| x.connection_id.cmp(&y.connection_id));
    assert_eq!(mine, vec![c1.clone(), c2.clone()]);
    assert_eq!(
        table.get(&c1.connection_id, now).await.expect("get"),
        Some(c1.clone())
    );
    assert_eq!(
        table.get(&dead.connection_id, now).await.expect("get"),
        None
    );
    assert_eq!(table.scan(now).await.expect("scan").len(), 3);

    // update only touches a connection that still exists.
    let mut moved = c1.clone();
    moved.symbols = vec!["ETHUSDT".into(), "BTCUSDT".into()];
    moved.max_rate_ms = 1000;
    assert!(table.update(&moved).await.expect("update"));
    assert_eq!(
        table.get(&c1.connection_id, now).await.expect("get"),
        Some(moved.clone())
    );
    table.delete(&c1.connection_id).await.expect("delete");
    assert!(!table.update(&moved).await.expect("update"));
    assert_eq!(table.get(&c1.connection_id, now).await.expect("get"), None);
    table
        .delete(&c1.connection_id)
        .await
        .expect("deleting twice is fine");
    assert_eq!(table.by_account(a, now).await.expect("query"), vec![c2]);
}

#[tokio::test]
async fn an_unreachable_table_is_a_dependency_error() {
    let table = ConnectionTable::new("no-such-table");
    let e = table.get("x", 0).await.expect_err("no table");
    assert_eq!(e.dependency, "dynamodb");
}
