-- Notifications the notification-service decided to send: at most one per (event, channel),
-- so a redelivered event records nothing new. The consumer records them (rendered, ready
-- to send); a dispatcher per channel sends the due ones (pending or retrying, next attempt
-- at or before now) and records each attempt's outcome here.
CREATE TABLE notifications (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id             TEXT    NOT NULL,
    event_type           TEXT    NOT NULL,
    channel              TEXT    NOT NULL,  -- email | sms | push
    template             TEXT    NOT NULL,
    order_id             TEXT    NOT NULL,
    customer_id          TEXT    NOT NULL,
    recipient            TEXT    NOT NULL,
    subject              TEXT    NOT NULL,
    body_text            TEXT    NOT NULL,
    body_html            TEXT,
    status               TEXT    NOT NULL,  -- pending | sent | retrying | failed
    attempts             INTEGER NOT NULL,
    provider_message_id  TEXT,
    last_error           TEXT,
    next_attempt_us      INTEGER NOT NULL,
    created_us           INTEGER NOT NULL,
    updated_us           INTEGER NOT NULL,
    UNIQUE (event_id, channel)
);

CREATE INDEX notifications_due ON notifications (channel, status, next_attempt_us);
CREATE INDEX notifications_by_order ON notifications (order_id, id);
CREATE INDEX notifications_by_customer ON notifications (customer_id, id);
