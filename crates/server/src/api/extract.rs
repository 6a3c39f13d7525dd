//! Extractors that turn a request into a command's input and its context, refusing bad
//! input with a problem response rather than axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use cornershop_app::{CommandContext, IdempotencyKey};
use serde::de::DeserializeOwned;

use super::error::{json_error, ApiError};
use super::middleware::RequestIds;

pub(super) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `Path`, with rejections as problems, and no control characters in any segment (an id
/// or a SKU never holds one; `%00` in a URL is a probe, not a name).
pub(super) struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if has_encoded_control(parts.uri.path()) {
            return Err(ApiError::invalid(
                "the URL path must not contain control characters (such as %00)",
            ));
        }
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::from)?;
        Ok(Self(value))
    }
}

/// Whether a raw URL path holds a percent-encoded control character (`%00` to `%1F`,
/// `%7F`); raw ones cannot reach us (the HTTP parser refuses them).
fn has_encoded_control(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && match (w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()) {
                (b'0' | b'1', d) => d.is_ascii_hexdigit(),
                (b'7', b'F') => true,
                _ => false,
            }
    })
}

/// `Query`, with rejections as problems.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(super) struct Query<T>(pub T);

fn header_text(
    headers: &HeaderMap,
    name: &str,
    max_len: usize,
) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= max_len)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "header {name} must be 1 to {max_len} visible ASCII characters"
            ))
        })?;
    Ok(Some(text.to_string()))
}

fn context(parts: &Parts, body: &[u8]) -> Result<CommandContext, ApiError> {
    let ids = parts
        .extensions
        .get::<RequestIds>()
        .cloned()
        .unwrap_or_default();
    // Who did it is the token's subject (or, with authentication off, X-User-Id as sent),
    // never a header of its own.
    let caller = parts.extensions.get::<crate::auth::Caller>();
    let user_id = caller.map(|caller| caller.sub.clone());
    // A customer acts on its own carts and orders only; the bus checks it on the state it
    // loads for the command anyway.
    let acting_for = caller.and_then(|caller| caller.only_customer().map(str::to_string));
    // A key is the caller's own: another caller sending the same one is another request,
    // never the answer stored for the first.
    let idempotency_key = header_text(&parts.headers, IDEMPOTENCY_KEY, 255)?.map(|key| {
        let key = match &user_id {
            Some(sub) => format!("{sub} {key}"),
            None => key,
        };
        IdempotencyKey::new(key, parts.method.as_str(), parts.uri.path(), body)
    });
    Ok(CommandContext {
        correlation_id: ids.correlation_id,
        causation_id: ids.request_id,
        user_id,
        idempotency_key,
        trace_id: Some(ids.trace_id),
        acting_for,
        continues_transaction: false,
    })
}

/// The context of a command that has no body (DELETE, or a POST that names an action).
pub(super) struct Ctx(pub CommandContext);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        context(parts, b"").map(Ctx)
    }
}

/// A command's JSON body and its context. Unknown fields are refused by the body types
/// (`deny_unknown_fields`), so a typo never passes silently.
pub(super) struct Command<T> {
    pub body: T,
    pub ctx: CommandContext,
}

impl<S, T> FromRequest<S> for Command<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        // A body is parsed only when it says it is JSON: a form or a text sent by mistake
        // is refused, not guessed at.
        let is_json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|ct| ct.to_str().ok())
            .map(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the request body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await?;
        let mut parser = serde_json::Deserializer::from_slice(&bytes);
        let body = serde_path_to_error::deserialize(&mut parser).map_err(|e| json_error(&e))?;
        parser
            .end()
            .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")))?;
        Ok(Self {
            ctx: context(&parts, &bytes)?,
            body,
        })
    }
}
