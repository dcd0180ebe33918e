//! The KV version 1 secrets engine (mount type `kv`): JSON objects stored through the
//! barrier under `logical/<mount uuid>/<key>`.

use crate::core::barrier::Plain;
use crate::core::engine::{Ctx, Engine, PathSpec};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use custos_acl::Operation::{self, *};
use serde_json::{Map, Value};

/// The KV v1 engine.
#[derive(Default)]
pub struct Kv;

const OPS: &[Operation] = &[Read, Create, Update, Delete, List];

#[async_trait::async_trait]
impl Engine for Kv {
    fn route(&self, _sub: &str) -> Option<PathSpec> {
        Some(PathSpec::new(OPS).existence())
    }

    async fn exists(&self, ctx: &Ctx<'_>) -> ApiResult<bool> {
        if ctx.sub.is_empty() {
            return Ok(true);
        }
        ctx.view.exists(ctx.sub).await
    }

    /// Only `version = "1"` is accepted; the options are kept on the mount.
    fn mount_options(&self, options: &Value) -> ApiResult<Map<String, Value>> {
        let o = options
            .as_object()
            .ok_or_else(|| ApiError::bad("options: must be an object"))?;
        if let Some(v) = o.get("version") {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            if v != "1" {
                return Err(ApiError::bad(format!(
                    "kv version {v:?} is not supported; only version 1 is available"
                )));
            }
        }
        Ok(o.clone())
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
        let key = ctx.sub;
        let v = &ctx.view;
        match req.op {
            List => {
                let prefix = if key.is_empty() || key.ends_with('/') {
                    key.to_string()
                } else {
                    format!("{key}/")
                };
                Response::list(v.list(&prefix).await?)
            }
            _ if key.is_empty() || key.ends_with('/') => {
                Err(ApiError::bad("missing secret path: a key name is required"))
            }
            Read => {
                let data: Map<String, Value> = v.get_json(key).await?.ok_or(ApiError::NotFound)?;
                Ok(Response::data(Value::Object(data)))
            }
            Create | Update => {
                if req.data.is_empty() {
                    return Err(ApiError::bad("missing data fields"));
                }
                v.write(vec![Plain::Put(
                    key.to_string(),
                    serde_json::to_vec(&req.data)?,
                )])
                .await?;
                Ok(Response::empty())
            }
            Delete => {
                v.write(vec![Plain::Delete(key.to_string())]).await?;
                Ok(Response::empty())
            }
            Patch => Err(ApiError::MethodNotAllowed),
        }
    }
}
