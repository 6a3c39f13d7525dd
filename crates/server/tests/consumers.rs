//! The consumer machinery on the embedded default: a handler that fails on one event.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::spawn_app_with;
use cornershop_messaging::{Handler, HandlerError};
use cornershop_store::StoredEvent;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A consumer that fails on carts of the customer "poison" until it is fixed.
struct Fussy {
    fixed: AtomicBool,
    handled: Mutex<Vec<String>>,
}

#[async_trait]
impl Handler for Fussy {
    fn name(&self) -> &'static str {
        "fussy-test-consumer"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "CartCreated"
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        if event.envelope.data["customerId"] == "poison" && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandlerError::Transient(
                "cannot digest customer 'poison'".into(),
            ));
        }
        self.handled.lock().unwrap().push(
            event.envelope.data["customerId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        Ok(())
    }
}

#[tokio::test]
async fn a_poison_event_is_dead_lettered_others_flow_and_a_retry_after_the_fix_succeeds() {
    let fussy = Arc::new(Fussy {
        fixed: AtomicBool::new(false),
        handled: Mutex::default(),
    });
    let app = spawn_app_with(
        |args| {
            args.workflow.consumer_max_attempts = 3;
            args.workflow.consumer_retry_delay = Duration::from_millis(10).into();
        },
        vec![fussy.clone()],
    )
    .await;
    app.new_cart("poison").await;
    app.new_cart("fine").await;
    app.settle().await;
    assert_eq!(*fussy.handled.lock().unwrap(), ["fine"]);

    let letters = app.json("/api/deadletters").await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["consumer"], "fussy-test-consumer");
    assert_eq!(letter["eventType"], "CartCreated");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["status"], "pending");
    assert!(letter["error"].as_str().unwrap().contains("poison"));
    let id = letter["id"].as_u64().unwrap();

    // Retried before the fix: fails again, stays pending.
    let again = app
        .post(&format!("/api/deadletters/{id}/retry"), &json!({}))
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        app.json("/api/deadletters?status=pending")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    fussy.fixed.store(true, Ordering::SeqCst);
    let retried = app
        .post(&format!("/api/deadletters/{id}/retry"), &json!({}))
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["status"], "resolved");
    assert_eq!(*fussy.handled.lock().unwrap(), ["fine", "poison"]);
    assert!(app
        .json("/api/deadletters?status=pending")
        .await
        .as_array()
        .unwrap()
        .is_empty());
    let missing = app.post("/api/deadletters/999/retry", &json!({})).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
