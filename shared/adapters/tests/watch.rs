//! The Redis trigger index against the real Redis of `REDIS_URL` (`make test`), each test
//! under a key prefix of its own.

use adapters::watch::{WatchChange, WatchIndex, START_ID};
use domain::order::{Side, Trail};
use domain::trigger::{Condition, Watch};
use rust_decimal_macros::dec;
use testkit::service_env;
use uuid::Uuid;

fn index() -> WatchIndex {
    WatchIndex::new(
        &service_env("REDIS_URL"),
        &format!("t{}:", Uuid::new_v4().simple()),
    )
    .expect("redis url parses")
}

async fn raw() -> redis::aio::MultiplexedConnection {
    testkit::redis_connection().await
}

fn limit(symbol: &str, side: Side, price: rust_decimal::Decimal) -> Watch {
    Watch {
        order_id: Uuid::new_v4(),
        account_id: Uuid::new_v4(),
        symbol: symbol.into(),
        side,
        condition: Condition::Limit { price },
        expires_at_ms: None,
    }
}

fn trailing(symbol: &str, hwm: rust_decimal::Decimal) -> Watch {
    Watch {
        order_id: Uuid::new_v4(),
        account_id: Uuid::new_v4(),
        symbol: symbol.into(),
        side: Side::Sell,
        condition: Condition::Trailing {
            trail: Trail::Percent(dec!(2.5)),
            hwm,
        },
        expires_at_ms: Some(1_900_000_000_000),
    }
}

fn sorted(mut v: Vec<Watch>) -> Vec<Watch> {
    v.sort_by_key(|w| w.order_id);
    v
}

#[tokio::test]
async fn a_built_copy_loads_and_its_log_follows_every_change() {
    let ix = index();
    assert_eq!(ix.load().await.unwrap(), None, "never built");
    assert!(!ix.is_built().await.unwrap());
    assert_eq!(ix.last_id().await.unwrap(), START_ID);

    let a = limit("BTCUSDT", Side::Buy, dec!(60000.5));
    let b = trailing("ETHUSDT", dec!(3000));
    ix.rebuild(vec![a.clone(), b.clone()]).await.unwrap();
    assert!(ix.is_built().await.unwrap());
    let (watches, id) = ix.load().await.unwrap().expect("built");
    assert_eq!(sorted(watches), sorted(vec![a.clone(), b.clone()]));

    // A commit: c placed, a filled.
    let c = limit("BTCUSDT", Side::Sell, dec!(70000));
    ix.apply(std::slice::from_ref(&c), &[(a.symbol.clone(), a.order_id)])
        .await
        .unwrap();
    let poll = ix.poll(&id).await.unwrap();
    assert!(poll.built && !poll.gap);
    assert_eq!(
        poll.changes,
        vec![
            WatchChange::Put(c.clone()),
            WatchChange::Remove {
                symbol: "BTCUSDT".into(),
                order_id: a.order_id
            }
        ]
    );
    // Nothing new after the last id; the id stays.
    let (again, same) = ix.changes_since(&poll.last_id).await.unwrap();
    assert!(again.is_empty());
    assert_eq!(same, poll.last_id);
    let (watches, id2) = ix.load().await.unwrap().unwrap();
    assert_eq!(sorted(watches), sorted(vec![b, c]));
    assert_eq!(id2, poll.last_id);
    // Empty apply is a no-op.
    ix.apply(&[], &[]).await.unwrap();
    assert_eq!(ix.last_id().await.unwrap(), id2);
}

#[tokio::test]
async fn a_rebuild_keeps_commits_made_while_the_ledger_was_read() {
    let ix = index();
    let old = limit("BTCUSDT", Side::Buy, dec!(1));
    ix.rebuild(vec![old.clone()]).await.unwrap();
    // The runner notes the log position, then reads the ledger: a and b are live.
    let since = ix.last_id().await.unwrap();
    let a = limit("BTCUSDT", Side::Buy, dec!(100));
    let b = limit("SOLUSDT", Side::Sell, dec!(200));
    // Meanwhile the executor commits: c placed, b filled (the snapshot still has b).
    let c = trailing("SOLUSDT", dec!(150));
    ix.apply(std::slice::from_ref(&c), &[(b.symbol.clone(), b.order_id)])
        .await
        .unwrap();
    ix.rebuild_since(vec![a.clone(), b.clone()], &since)
        .await
        .unwrap();
    let (watches, _) = ix.load().await.unwrap().unwrap();
    assert_eq!(
        sorted(watches),
        sorted(vec![a, c]),
        "old dropped, b's removal and c's placement replayed"
    );
}

#[tokio::test]
async fn a_flushed_copy_reads_as_unbuilt_and_readers_miss_no_later_change() {
    let ix = index();
    let a = limit("BTCUSDT", Side::Buy, dec!(100));
    ix.rebuild(vec![a.clone()]).await.unwrap();
    let (_, id) = ix.load().await.unwrap().unwrap();
    // Redis loses everything of the index.
    ix.drop_all().await.unwrap();
    assert_eq!(ix.load().await.unwrap(), None);
    // A commit lands in the empty Redis before anyone rebuilds.
    let b = limit("ETHUSDT", Side::Sell, dec!(5000));
    ix.apply(std::slice::from_ref(&b), &[]).await.unwrap();
    let poll = ix.poll(&id).await.unwrap();
    assert!(!poll.built, "the marker is gone");
    assert_eq!(poll.changes, vec![WatchChange::Put(b.clone())]);
    // A rebuild from a ledger read before that commit still ends with both.
    ix.rebuild_since(vec![a.clone()], START_ID).await.unwrap();
    let (watches, _) = ix.load().await.unwrap().unwrap();
    assert_eq!(sorted(watches), sorted(vec![a, b]));
}

#[tokio::test]
async fn moved_marks_are_saved_only_for_orders_still_there() {
    let ix = index();
    let t = trailing("ETHUSDT", dec!(3000));
    let gone = trailing("ETHUSDT", dec!(3000));
    ix.rebuild(vec![t.clone(), gone.clone()]).await.unwrap();
    ix.apply(&[], &[(gone.symbol.clone(), gone.order_id)])
        .await
        .unwrap();
    let before = ix.last_id().await.unwrap();
    let mut moved = t.clone();
    moved.condition = Condition::Trailing {
        trail: Trail::Percent(dec!(2.5)),
        hwm: dec!(3100.25),
    };
    let mut moved_gone = gone.clone();
    moved_gone.condition = moved.condition;
    assert_eq!(
        ix.save_marks(&[moved.clone(), moved_gone]).await.unwrap(),
        1
    );
    let (watches, _) = ix.load().await.unwrap().unwrap();
    assert_eq!(watches, vec![moved]);
    assert_eq!(ix.last_id().await.unwrap(), before, "marks are not logged");
    assert_eq!(ix.save_marks(&[]).await.unwrap(), 0);
}

#[tokio::test]
async fn long_logs_are_read_in_pages_and_trimmed_logs_show_a_gap() {
    let ix = index();
    ix.rebuild(vec![]).await.unwrap();
    let since = ix.last_id().await.unwrap();
    let many: Vec<Watch> = (0..10_050)
        .map(|i| limit(&format!("S{}USDT", i % 7), Side::Buy, dec!(1)))
        .collect();
    ix.apply(&many, &[]).await.unwrap();
    let poll = ix.poll(&since).await.unwrap();
    assert_eq!(poll.changes.len(), many.len());
    assert_eq!(poll.changes[10_049], WatchChange::Put(many[10_049].clone()));
    assert!(!poll.gap);
    assert_eq!(ix.load().await.unwrap().unwrap().0.len(), many.len());

    // Trim the log behind a slow reader's position.
    let mid = poll.last_id.clone();
    ix.apply(&[limit("BTCUSDT", Side::Buy, dec!(1))], &[])
        .await
        .unwrap();
    ix.apply(&[limit("BTCUSDT", Side::Buy, dec!(2))], &[])
        .await
        .unwrap();
    let mut c = raw().await;
    redis::cmd("XTRIM")
        .arg(ix.log_key())
        .arg("MAXLEN")
        .arg(1)
        .query_async::<i64>(&mut c)
        .await
        .unwrap();
    let poll = ix.poll(&mid).await.unwrap();
    assert!(poll.gap, "an unread entry was trimmed");
    assert_eq!(poll.changes.len(), 1);
    ix.drop_all().await.unwrap();
}
