//! Our own JSON body extractor, so a bad body gets our error format and a message that says what
//! to fix: malformed JSON is 400, well-formed JSON with wrong fields or values is 422, too big 413.
//! A body, and every object within it, is a JSON object: see `object`.

use std::fmt;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::ApiError;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        // An empty body is an empty object: the old tool's clients may send none when every
        // field is optional; the v1 create then answers that `engine` is missing.
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        // Read through once as any JSON first, so that malformed JSON is 400 whatever its shape
        // (`[1,2` too, which `object` would refuse at its first byte).
        serde_json::from_slice::<IgnoredAny>(bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        object(&mut serde_json::Deserializer::from_slice(bytes))
            .map(JsonBody)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))
    }
}

/// Deserializes `T` from a JSON object only. serde's derived structs also take an array of their
/// fields in order (`[null,null]` for a quota), which no client means and the API's document does
/// not allow; every request body is read through this, and a struct within one takes it as
/// `#[serde(deserialize_with = "object")]`.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    struct ObjectOnly<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectOnly(PhantomData))
}
