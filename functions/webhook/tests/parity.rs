//! An unknown webhook and a wrong (or missing) passphrase get the same 401 after the same
//! work, proved by counting that work (`adapters::webhooks::AuthWork`: lookups of a webhook
//! and digest comparisons), not by timing it: a timing test either flakes or proves nothing.

mod common;

use adapters::webhooks::{new_webhook_id, AuthWork};
use common::{alert, hook, send, SENDER};

#[tokio::test]
async fn an_unknown_webhook_and_a_wrong_passphrase_do_the_same_work() {
    let deps = testkit::app_deps().await;
    let h = hook(&deps).await;
    let wrong = adapters::auth::random_secret();
    let unknown = new_webhook_id();
    let cases = [
        (
            "unknown webhook",
            unknown.as_str(),
            alert(Some(&h.passphrase), "a"),
        ),
        ("wrong passphrase", h.id.as_str(), alert(Some(&wrong), "a")),
        ("no passphrase", h.id.as_str(), alert(None, "a")),
        (
            "unknown webhook, no passphrase",
            unknown.as_str(),
            alert(None, "a"),
        ),
    ];
    let mut seen = Vec::new();
    for (what, id, body) in &cases {
        let (answer, work) = AuthWork::count(send(&deps, id, body, SENDER)).await;
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        seen.push((what, answer.text, work));
    }
    let (_, first_text, first_work) = &seen[0];
    assert_eq!(
        *first_work,
        AuthWork {
            lookups: 1,
            digest_comparisons: 1,
            digest_bytes: 64,
        },
        "one lookup and one comparison with a digest of SHA-256's length"
    );
    for (what, text, work) in &seen {
        assert_eq!(text, first_text, "{what}: the same answer");
        assert_eq!(work, first_work, "{what}: the same work");
    }
    // The right passphrase does that work too, and then the order's.
    let (answer, work) =
        AuthWork::count(send(&deps, &h.id, &alert(Some(&h.passphrase), "b"), SENDER)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!((work.lookups, work.digest_comparisons), (1, 1), "{work:?}");
    // Outside a counting scope nothing is counted, and nothing fails.
    let outside = send(&deps, &unknown, &alert(Some(&wrong), "c"), SENDER).await;
    assert_eq!(outside.status, 401);
}
