//! The HTTP edge: Vault's wire format over axum.

use crate::core::Core;
use crate::error::ApiError;
use crate::logical::{Request, Response};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::Extension;
use custos_acl::Operation;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The API router: every path goes through [`handle`].
pub fn router(core: Arc<Core>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(core)
}

fn error_response(e: &ApiError, head: bool) -> axum::response::Response {
    if let ApiError::Internal(inner) = e {
        tracing::error!(error = %inner, detail = ?inner, "internal error");
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(json!({ "errors": e.messages() }).to_string())
    };
    let mut r = axum::response::Response::new(body);
    *r.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let ApiError::RateLimited(secs) = e {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(*secs));
    }
    r
}

fn success_response(id: &str, r: Response, head: bool) -> axum::response::Response {
    let status = StatusCode::from_u16(r.status.unwrap_or(200)).unwrap_or(StatusCode::OK);
    let cache_control = r.cache_control;
    let (ctype, body): (&str, bytes::Bytes) = if let Some((ct, raw)) = r.raw {
        (ct, raw)
    } else if r.bare {
        (
            "application/json",
            Value::Object(r.data.unwrap_or_default())
                .to_string()
                .into_bytes()
                .into(),
        )
    } else if r.data.is_none() && r.auth.is_none() && r.warnings.is_empty() {
        let mut resp = axum::response::Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        return resp;
    } else {
        let mut env = json!({
            "request_id": id,
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": r.data.clone().map(Value::Object).unwrap_or(Value::Null),
            "wrap_info": Value::Null,
            "warnings": if r.warnings.is_empty() { Value::Null } else { json!(r.warnings) },
            "auth": r.auth.as_ref().map(|a| json!(a)).unwrap_or(Value::Null),
            "mount_type": "",
        });
        if r.top_level {
            if let (Some(obj), Some(d)) = (env.as_object_mut(), r.data) {
                for (k, v) in d {
                    obj.entry(k).or_insert(v);
                }
            }
        }
        ("application/json", env.to_string().into_bytes().into())
    };
    let mut resp = axum::response::Response::new(if head {
        Body::empty()
    } else {
        Body::from(body)
    });
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(ctype) {
        resp.headers_mut().insert("content-type", v);
    }
    if let Some(cc) = cache_control {
        resp.headers_mut()
            .insert("cache-control", HeaderValue::from_static(cc));
    }
    resp
}

fn operation(method: &Method, list: bool) -> Result<Operation, ApiError> {
    Ok(match method.as_str() {
        "GET" | "HEAD" if list => Operation::List,
        "GET" | "HEAD" => Operation::Read,
        "POST" | "PUT" => Operation::Update,
        "DELETE" => Operation::Delete,
        "PATCH" => Operation::Patch,
        "LIST" => Operation::List,
        _ => return Err(ApiError::MethodNotAllowed),
    })
}

fn token_from(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    if let Some(t) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        if !t.is_empty() {
            return Some(Zeroizing::new(t.to_string()));
        }
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let t = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))?
        .trim();
    (!t.is_empty()).then(|| Zeroizing::new(t.to_string()))
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::bad("invalid percent-encoding in path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad("path is not valid UTF-8"))
}

fn parse_query(q: Option<&str>) -> Result<Map<String, Value>, ApiError> {
    let mut m = Map::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(&k.replace('+', " "))?;
        let v = percent_decode(&v.replace('+', " "))?;
        m.insert(k, Value::String(v));
    }
    Ok(m)
}

async fn build_request(
    core: &Core,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    remote: Option<SocketAddr>,
) -> Result<Request, ApiError> {
    let raw_path = uri
        .path()
        .strip_prefix("/v1/")
        .ok_or_else(|| ApiError::NoRoute(uri.path().to_string()))?;
    let path = percent_decode(raw_path)?;
    if path.contains('\0') || path.split('/').any(|s| s == ".." || s == ".") {
        return Err(ApiError::bad(
            "invalid path: '.', '..' and NUL are not allowed",
        ));
    }
    let limit = core.cfg.limits.max_request_bytes;
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::TooLarge(limit));
        }
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge(limit))?;
    let mut query = parse_query(uri.query())?;
    let list = query
        .remove("list")
        .and_then(|v| v.as_str().map(|s| s == "true" || s == "1"))
        .unwrap_or(false);
    let op = operation(method, list)?;
    let mut data = Map::new();
    let binary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/ocsp-request"));
    let raw_body = binary.then(|| bytes.to_vec());
    if !binary && !bytes.is_empty() && !bytes.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("failed to parse JSON input: {e}")))?;
        match v {
            Value::Object(m) => data = m,
            Value::Null => {}
            _ => {
                return Err(ApiError::bad(
                    "failed to parse JSON input: the body must be a JSON object",
                ))
            }
        }
    }
    if matches!(op, Operation::Read | Operation::List | Operation::Delete) {
        for (k, v) in query {
            data.entry(k).or_insert(v);
        }
    }
    Ok(Request {
        id: uuid::Uuid::new_v4().to_string(),
        op,
        path,
        data,
        token: token_from(headers),
        remote_addr: remote,
        head: method == Method::HEAD,
        raw_body,
        peer_certs: Vec::new(),
    })
}

/// The single handler behind every `/v1/...` path.
pub async fn handle(
    State(core): State<Arc<Core>>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    peer: Option<Extension<crate::listener::PeerCertificates>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let start = Instant::now();
    let head = method == Method::HEAD;
    let timeout = Duration::from_secs(core.cfg.limits.request_timeout_secs);
    let remote = remote.map(|Extension(ConnectInfo(a))| a);
    let work = async {
        let mut req = build_request(&core, &method, &uri, &headers, body, remote).await?;
        if let Some(Extension(p)) = peer {
            req.peer_certs = p.0.iter().map(|c| c.as_ref().to_vec()).collect();
        }
        let id = req.id.clone();
        let r = core.handle(req).await?;
        Ok::<_, ApiError>((id, r))
    };
    let resp = match tokio::time::timeout(timeout, work).await {
        Ok(Ok((id, r))) => success_response(&id, r, head),
        Ok(Err(e)) => error_response(&e, head),
        Err(_) => error_response(&ApiError::Timeout(timeout.as_secs()), head),
    };
    core.metrics
        .observe(method.as_str(), resp.status().as_u16(), start.elapsed());
    resp
}
