//! What the hub's two HTTP servers (the workload API on unix sockets, the
//! direct-method gateway on TLS) answer alike.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

/// A complete response.
pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// A response carrying `body` as JSON.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Whether a request's query carries a non-empty `api-version`, which both
/// APIs require on every call.
pub(crate) fn has_api_version(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query.split('&').any(|pair| {
            pair.strip_prefix("api-version=")
                .is_some_and(|version| !version.is_empty())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_must_be_present_and_non_empty() {
        assert!(has_api_version(Some("api-version=2020-07-07")));
        assert!(has_api_version(Some("a=b&api-version=1")));
        assert!(!has_api_version(Some("api-version=")));
        assert!(!has_api_version(Some("x-api-version=1")));
        assert!(!has_api_version(Some("xapi-version=1")));
        assert!(!has_api_version(None));
    }
}
