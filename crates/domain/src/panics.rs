//! The message of a caught panic, for the places that turn a panic into an error (a
//! consumer's handler, a rebuild, a read of the store) instead of letting it stop a task.

/// The message of a caught panic (a `&str` or `String` payload; anything else is named
/// as such).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
