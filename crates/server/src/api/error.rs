//! One error type for the whole API, mapped to `application/problem+json` (RFC 9457) in
//! one place. Every detail is written for the person reading it.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cornershop_app::AppError;
use cornershop_domain::ErrorKind;
use cornershop_store::Unavailable;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short, stable identifier of the kind of problem; becomes `type` = /problems/{slug}.
    pub slug: &'static str,
    pub detail: String,
    /// Sent as `Retry-After` (seconds): the request may succeed later unchanged.
    pub retry_after: Option<u32>,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/invalid-input`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-input", detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }
}

/// A value the request sent that does not parse (`values`): a 400 whose detail names the
/// field and says what it takes.
impl From<cornershop_domain::ValueError> for ApiError {
    fn from(e: cornershop_domain::ValueError) -> Self {
        Self::invalid(e.message)
    }
}

impl ApiError {
    /// The store cannot take the request now: 507 while the disk is full, else 503; both
    /// with `Retry-After`, since the same request may pass later unchanged.
    pub fn unavailable(kind: Option<Unavailable>, error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %error, "the store is unavailable; answering with Retry-After");
        let (status, slug, detail) = match kind {
            Some(Unavailable::DiskFull) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "storage-full",
                "the shop's storage is full, so it cannot record changes now; nothing of this \
                 request was stored, reads still work, and writes resume once space is freed",
            ),
            Some(Unavailable::OutcomeUnknown) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome-unknown",
                "the connection to the database broke while this request was being stored, so \
                 it cannot be told whether it was; repeat it with the same Idempotency-Key",
            ),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the shop's database cannot be reached right now; nothing of this request was \
                 stored; try again in a few seconds",
            ),
        };
        let mut problem = Self::new(status, slug, detail);
        problem.retry_after = Some(RETRY_AFTER_SECONDS);
        problem
    }
}

/// What `Retry-After` tells a client when the store is unavailable.
pub(crate) const RETRY_AFTER_SECONDS: u32 = 2;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("/problems/{}", self.slug),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let body = serde_json::to_vec(&problem).expect("a problem serializes");
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match &error {
            AppError::Domain(e) => match e.kind() {
                ErrorKind::Invalid => Self::invalid(e.to_string()),
                ErrorKind::NotFound => Self::not_found(e.to_string()),
                ErrorKind::Conflict => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            },
            AppError::Invalid(detail) => Self::invalid(detail.clone()),
            AppError::Contended { .. } => Self::new(
                StatusCode::CONFLICT,
                "concurrency-conflict",
                error.to_string(),
            ),
            // A writer told to write the previous schema (a rolling upgrade) meeting an event
            // that schema cannot say: refused until the writer writes the current one.
            AppError::Encode(_) => Self::new(
                StatusCode::CONFLICT,
                "schema-cannot-express",
                error.to_string(),
            ),
            AppError::IdempotencyKeyReused(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                error.to_string(),
            ),
            AppError::Store(store) if store.unavailability().is_some() => {
                Self::unavailable(store.unavailability(), store)
            }
            AppError::Store(_) | AppError::Decode(_) | AppError::Keys(_) => {
                tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "request failed inside the server");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server could not complete the request; it has been logged",
                )
            }
        }
    }
}

/// A key failure met outside a command (opening a value for an answer).
impl From<cornershop_app::KeyError> for ApiError {
    fn from(error: cornershop_app::KeyError) -> Self {
        AppError::from(error).into()
    }
}

/// A store failure met outside a command (a query, a listing): reported like any other
/// failure inside the server.
impl From<cornershop_store::StoreError> for ApiError {
    fn from(error: cornershop_store::StoreError) -> Self {
        AppError::from(error).into()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "the request body is larger than this server accepts",
            )
        } else {
            Self::invalid(format!("the request body could not be read: {rejection}"))
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid(format!(
            "the URL path is not valid: {}",
            rejection.body_text()
        ))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(format!(
            "the query string is not valid: {}",
            rejection.body_text()
        ))
    }
}

/// Turns a JSON parse error into a sentence that says what was wrong and where.
pub(crate) fn json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = error.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof => {
            ApiError::invalid(format!("the request body is not valid JSON: {inner}"))
        }
        Category::Data | Category::Io => {
            let path = error.path().to_string();
            if path == "." {
                ApiError::invalid(format!(
                    "the request body is not what this route expects: {inner}"
                ))
            } else {
                ApiError::invalid(format!("field `{path}` is not valid: {inner}"))
            }
        }
    }
}
