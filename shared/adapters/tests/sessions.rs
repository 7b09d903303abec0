//! Login sessions in the real Redis of `REDIS_URL` (`make test`): the sliding expiry, the
//! absolute lifetime, and revoking every session of a user at once.

use std::time::Duration;

use adapters::cache::{Cache, Session};
use adapters::config::SessionSettings;
use uuid::Uuid;

fn session() -> Session {
    Session {
        user_id: Uuid::new_v4(),
        account_id: Uuid::new_v4(),
    }
}

fn digest() -> String {
    format!("d-{}", Uuid::new_v4().simple())
}

/// A new session with these times: its digest and what it holds.
async fn opened(cache: &Cache, ttl_secs: u64, max_lifetime_secs: u64) -> (String, Session) {
    let (d, s) = (digest(), session());
    let times = SessionSettings {
        ttl_secs,
        max_lifetime_secs,
    };
    cache.put_session(&d, &s, &times).await.unwrap();
    (d, s)
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_however_often_it_is_used() {
    let cache = testkit::cache();
    let (d, s) = opened(&cache, 60, 1).await;
    assert_eq!(cache.touch_session(&d, 60).await.unwrap(), Some(s.clone()));
    // Used every 200 ms, well inside the sliding 60 s: still gone after its 1 s lifetime.
    let mut ended = false;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if cache.touch_session(&d, 60).await.unwrap().is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the session outlived its lifetime");
    let mut c = cache.conn().await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(cache.keys().session(&d))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!exists, "an ended session is deleted");
}

#[tokio::test]
async fn the_sliding_expiry_never_goes_past_the_deadline() {
    let cache = testkit::cache();
    let (d, _) = opened(&cache, 3600, 120).await;
    cache.touch_session(&d, 3600).await.unwrap().expect("live");
    let mut c = testkit::redis_connection().await;
    let ttl = testkit::pttl(&mut c, &cache.keys().session(&d)).await;
    assert!(ttl > 0 && ttl <= 120_000, "{ttl} ms");
}

#[tokio::test]
async fn a_session_without_a_deadline_is_not_honoured() {
    // Written before deadlines existed (or by hand): refused and deleted, never immortal.
    let cache = testkit::cache();
    let d = digest();
    let mut c = cache.conn().await.unwrap();
    let legacy = serde_json::to_string(&session()).unwrap();
    redis::cmd("SET")
        .arg(cache.keys().session(&d))
        .arg(legacy)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    assert_eq!(cache.touch_session(&d, 60).await.unwrap(), None);
}

#[tokio::test]
async fn revoking_a_user_ends_all_their_sessions_and_no_one_elses() {
    let cache = testkit::cache();
    let times = SessionSettings {
        ttl_secs: 600,
        max_lifetime_secs: 3600,
    };
    let mine = session();
    let theirs = session();
    let my_digests: Vec<String> = (0..3).map(|_| digest()).collect();
    for d in &my_digests {
        cache.put_session(d, &mine, &times).await.unwrap();
    }
    let their_digest = digest();
    cache
        .put_session(&their_digest, &theirs, &times)
        .await
        .unwrap();
    // One already logged out: not counted as revoked.
    assert!(cache.delete_session(&my_digests[2]).await.unwrap());

    assert_eq!(cache.revoke_user_sessions(mine.user_id).await.unwrap(), 2);
    for d in &my_digests {
        assert_eq!(cache.touch_session(d, 600).await.unwrap(), None, "{d}");
    }
    assert_eq!(
        cache.touch_session(&their_digest, 600).await.unwrap(),
        Some(theirs)
    );
    assert_eq!(cache.revoke_user_sessions(mine.user_id).await.unwrap(), 0);
    // A session opened after the revocation is live, and revocable in its turn.
    let later = digest();
    cache.put_session(&later, &mine, &times).await.unwrap();
    assert!(cache.touch_session(&later, 600).await.unwrap().is_some());
    assert_eq!(cache.revoke_user_sessions(mine.user_id).await.unwrap(), 1);
}
