-- Notifications the notification-service decided to send: at most one per (event, channel),
-- so a redelivered event records nothing new, whichever process sees it. The consumer
-- records them (rendered, ready to send); a dispatcher per channel, the one process that
-- holds the channel's lease, sends the due ones (pending or retrying, next attempt at or
-- before now) and records each attempt's outcome here.
CREATE TABLE notifications (
    id                   BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id             UUID        NOT NULL,
    event_type           TEXT        NOT NULL,
    channel              TEXT        NOT NULL,  -- email | sms | push
    template             TEXT        NOT NULL,
    order_id             TEXT        NOT NULL,
    customer_id          TEXT        NOT NULL,
    recipient            TEXT        NOT NULL,
    subject              TEXT        NOT NULL,
    body_text            TEXT        NOT NULL,
    body_html            TEXT,
    status               TEXT        NOT NULL,  -- pending | sent | retrying | failed
    attempts             BIGINT      NOT NULL,
    provider_message_id  TEXT,
    last_error           TEXT,
    next_attempt_at      TIMESTAMPTZ NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    UNIQUE (event_id, channel)
);

CREATE INDEX notifications_due ON notifications (channel, status, next_attempt_at);
CREATE INDEX notifications_by_order ON notifications (order_id, id);
CREATE INDEX notifications_by_customer ON notifications (customer_id, id);
