//! The engine interface from outside the server crate: an engine the core has never heard
//! of is registered in a [`Registry`] next to the real transparency log, and the core
//! routes to it, enforces what its paths declare (operations, token, sudo, existence check,
//! login), runs its lifecycle hooks, and scopes its storage to its mount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_acl::Operation::{self, *};
use custos_server::core::barrier::Plain;
use custos_server::core::engine::{Ctx, Engine, Login, PathSpec, Registry, Sys};
use custos_server::engines::tlog::TlogEngine;
use custos_server::error::{ApiError, ApiResult};
use custos_server::logical::{Request, Response};
use custos_server::mounts::MountEntry;
use custos_server::{Core, CoreConfig, StorageConfig};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A toy secrets-and-login engine: `data/<key>` (read/write with an existence check),
/// `public` (no token), `admin` (sudo), `login`.
#[derive(Default)]
struct Echo {
    unsealed: AtomicUsize,
    sealed: AtomicUsize,
    unmounted: AtomicUsize,
}

const RW: &[Operation] = &[Read, Create, Update, Delete];

#[async_trait::async_trait]
impl Engine for Echo {
    fn route(&self, sub: &str) -> Option<PathSpec> {
        Some(match sub.trim_end_matches('/') {
            "public" => PathSpec::new(&[Read]).open(),
            "admin" => PathSpec::new(&[Update]).sudo(),
            "login" => PathSpec::new(&[Update]).login(),
            s if s.starts_with("data/") => PathSpec::new(RW).existence(),
            _ => return None,
        })
    }

    async fn exists(&self, ctx: &Ctx<'_>) -> ApiResult<bool> {
        ctx.view.exists(ctx.sub).await
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
        match (ctx.sub, req.op) {
            ("public", _) => Ok(Response::data(
                json!({"caller": ctx.caller.is_some(), "mount": ctx.mount.path}),
            )),
            ("admin", _) => Ok(Response::data(json!({"by": ctx.requester()}))),
            (_, Read) => ctx
                .view
                .get_json::<Value>(ctx.sub)
                .await?
                .map(Response::data)
                .ok_or(ApiError::NotFound),
            (_, Delete) => {
                ctx.view.write(vec![Plain::Delete(ctx.sub.into())]).await?;
                Ok(Response::empty())
            }
            (_, op) => {
                // The router tells create from update with the existence check.
                let seen = if op == Create { "create" } else { "update" };
                let mut d = req.data.clone();
                d.insert("op".into(), json!(seen));
                ctx.view.put_json(ctx.sub, &d).await?;
                Ok(Response::data(Value::Object(d)))
            }
        }
    }

    async fn login(&self, _ctx: &Ctx<'_>, req: &Request) -> ApiResult<Login> {
        if req.str_field("password").as_deref() != Some("s3cret") {
            return Err(ApiError::LoginDenied("wrong password".into()));
        }
        Ok(Login {
            params: custos_auth::params::TokenParams {
                policies: vec!["echo-user".into()],
                ..Default::default()
            },
            display_name: "echo-user".into(),
            meta: Map::new(),
        })
    }

    async fn mount(&self, _sys: &Sys, m: &MountEntry) -> ApiResult<()> {
        if m.path.starts_with("refused") {
            return Err(ApiError::bad("this engine refuses mounts named refused*"));
        }
        Ok(())
    }

    async fn unseal(&self, _sys: &Sys) -> ApiResult<()> {
        self.unsealed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn seal(&self) {
        self.sealed.fetch_add(1, Ordering::SeqCst);
    }

    async fn unmount(&self, _sys: &Sys, _m: &MountEntry) -> ApiResult<()> {
        self.unmounted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn req(op: Operation, path: &str, token: Option<&str>, data: Value) -> Request {
    Request {
        id: String::new(),
        op,
        path: path.into(),
        data: data.as_object().cloned().unwrap_or_default(),
        token: token.map(|t| zeroize::Zeroizing::new(t.to_string())),
        remote_addr: Some("127.0.0.1:1".parse().unwrap()),
        head: false,
        raw_body: None,
        peer_certs: Vec::new(),
    }
}

async fn call(
    core: &Arc<Core>,
    op: Operation,
    path: &str,
    token: Option<&str>,
    data: Value,
) -> ApiResult<Value> {
    let r = core.handle(req(op, path, token, data)).await?;
    let mut v = Value::Object(r.data.unwrap_or_default());
    if let Some(a) = r.auth {
        v["client_token"] = json!(a.client_token);
        v["policies"] = json!(a.policies);
    }
    Ok(v)
}

async fn core_with_echo(dir: &std::path::Path) -> (Arc<Core>, Arc<Echo>, String, String) {
    let store = custos_server::open_storage(&StorageConfig::Sqlite {
        path: dir.join("custos.db"),
    })
    .await
    .unwrap();
    let tlog = Arc::new(TlogEngine::new("test.example/log".into(), Vec::new()));
    let echo = Arc::new(Echo::default());
    let mut r = Registry::new(tlog.clone());
    r.secrets("echo", echo.clone());
    r.auth("echo", Arc::new(Echo::default()));
    r.system("tlog", "tlog/", tlog);
    let core = Core::new(store, CoreConfig::default(), r).await.unwrap();
    let init = core.init(1, 1, Some("root")).await.unwrap();
    let share = hex::encode(&init.keys[0][..]);
    core.submit_unseal_share(Some(&share), false).await.unwrap();
    (core, echo, "root".into(), share)
}

#[tokio::test]
async fn a_registered_engine_is_routed_by_what_its_paths_declare() {
    let d = tempfile::tempdir().unwrap();
    let (core, echo, root, _) = core_with_echo(d.path()).await;
    assert_eq!(echo.unsealed.load(Ordering::SeqCst), 1);
    let root = Some(root.as_str());
    call(&core, Update, "sys/mounts/e", root, json!({"type": "echo"}))
        .await
        .unwrap();
    // Existence check: the first write is a create, the second an update.
    let v = call(&core, Update, "e/data/a", root, json!({"x": 1}))
        .await
        .unwrap();
    assert_eq!(v["op"], "create");
    let v = call(&core, Update, "e/data/a", root, json!({"x": 2}))
        .await
        .unwrap();
    assert_eq!(v["op"], "update");
    assert_eq!(
        call(&core, Read, "e/data/a", root, json!({}))
            .await
            .unwrap()["x"],
        2
    );
    // An undeclared operation is 405, an undeclared path 404.
    assert!(matches!(
        call(&core, List, "e/data/a", root, json!({})).await,
        Err(ApiError::MethodNotAllowed)
    ));
    assert!(matches!(
        call(&core, Read, "e/nothing", root, json!({})).await,
        Err(ApiError::NoRoute(_))
    ));
    // A path declared open needs no token; the others do.
    let v = call(&core, Read, "e/public", None, json!({}))
        .await
        .unwrap();
    assert_eq!(v, json!({"caller": false, "mount": "e/"}));
    assert!(matches!(
        call(&core, Read, "e/data/a", None, json!({})).await,
        Err(ApiError::NoToken)
    ));
    // An unknown type is refused, naming the types the registry offers.
    let e = call(&core, Update, "sys/mounts/x", root, json!({"type": "kv"}))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "secrets engine type \"kv\" is not available in this build (available: echo)"
    );
}

#[tokio::test]
async fn sudo_and_create_capabilities_are_enforced_for_engine_paths() {
    let d = tempfile::tempdir().unwrap();
    let (core, _, root, _) = core_with_echo(d.path()).await;
    let root = Some(root.as_str());
    call(&core, Update, "sys/mounts/e", root, json!({"type": "echo"}))
        .await
        .unwrap();
    let policy = r#"path "e/data/*" { capabilities = ["update", "read"] }
path "e/admin" { capabilities = ["update"] }"#;
    call(
        &core,
        Update,
        "sys/policies/acl/writer",
        root,
        json!({ "policy": policy }),
    )
    .await
    .unwrap();
    let t = call(
        &core,
        Update,
        "auth/token/create",
        root,
        json!({"policies": ["writer"]}),
    )
    .await
    .unwrap()["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let t = Some(t.as_str());
    // `update` without `create`: a new key is a create, and refused.
    assert!(matches!(
        call(&core, Update, "e/data/new", t, json!({"x": 1})).await,
        Err(ApiError::NotGranted { op: "create", .. })
    ));
    call(&core, Update, "e/data/new", root, json!({"x": 1}))
        .await
        .unwrap();
    call(&core, Update, "e/data/new", t, json!({"x": 2}))
        .await
        .unwrap();
    // A sudo path needs the sudo capability.
    assert!(matches!(
        call(&core, Update, "e/admin", t, json!({})).await,
        Err(ApiError::PermissionDenied(_))
    ));
    let v = call(&core, Update, "e/admin", root, json!({}))
        .await
        .unwrap();
    assert_eq!(v["by"], "root");
}

#[tokio::test]
async fn a_login_path_returns_an_identity_and_the_core_mints_the_token() {
    let d = tempfile::tempdir().unwrap();
    let (core, _, root, _) = core_with_echo(d.path()).await;
    call(
        &core,
        Update,
        "sys/auth/echo",
        Some(&root),
        json!({"type": "echo"}),
    )
    .await
    .unwrap();
    assert!(matches!(
        call(
            &core,
            Update,
            "auth/echo/login",
            None,
            json!({"password": "no"})
        )
        .await,
        Err(ApiError::LoginDenied(_))
    ));
    let v = call(
        &core,
        Update,
        "auth/echo/login",
        None,
        json!({"password": "s3cret"}),
    )
    .await
    .unwrap();
    assert_eq!(v["policies"], json!(["default", "echo-user"]));
    let t = v["client_token"].as_str().unwrap();
    let me = call(&core, Read, "auth/token/lookup-self", Some(t), json!({}))
        .await
        .unwrap();
    assert_eq!(me["display_name"], "echo-user");
    assert_eq!(me["path"], "auth/echo/login");
}

#[tokio::test]
async fn mount_hook_refusal_undoes_the_mount_and_unmount_removes_the_view() {
    let d = tempfile::tempdir().unwrap();
    let (core, echo, root, _) = core_with_echo(d.path()).await;
    let root = Some(root.as_str());
    let e = call(
        &core,
        Update,
        "sys/mounts/refused",
        root,
        json!({"type": "echo"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "this engine refuses mounts named refused*");
    let mounts = call(&core, Read, "sys/mounts", root, json!({}))
        .await
        .unwrap();
    assert!(mounts.get("refused/").is_none(), "{mounts}");

    call(&core, Update, "sys/mounts/e", root, json!({"type": "echo"}))
        .await
        .unwrap();
    call(&core, Update, "e/data/a", root, json!({"x": 1}))
        .await
        .unwrap();
    let uuid = call(&core, Read, "sys/mounts/e", root, json!({}))
        .await
        .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    call(&core, Delete, "sys/mounts/e", root, json!({}))
        .await
        .unwrap();
    // Once to undo the refused mount, once for this one.
    assert_eq!(echo.unmounted.load(Ordering::SeqCst), 2);
    // Nothing of the mount's view is left on disk.
    let db = rusqlite::Connection::open(d.path().join("custos.db")).unwrap();
    let left: i64 = db
        .query_row(
            "SELECT count(*) FROM kv WHERE key LIKE ?1",
            [format!("logical/{uuid}/%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn seal_runs_every_engines_seal_hook_and_unseal_reopens_them() {
    let d = tempfile::tempdir().unwrap();
    let (core, echo, root, share) = core_with_echo(d.path()).await;
    call(
        &core,
        Update,
        "sys/mounts/e",
        Some(&root),
        json!({"type": "echo"}),
    )
    .await
    .unwrap();
    core.seal().unwrap();
    assert_eq!(echo.sealed.load(Ordering::SeqCst), 1);
    assert!(matches!(
        call(&core, Read, "e/public", None, json!({})).await,
        Err(ApiError::Sealed)
    ));
    core.submit_unseal_share(Some(&share), false).await.unwrap();
    assert_eq!(echo.unsealed.load(Ordering::SeqCst), 2);
    call(&core, Read, "e/public", None, json!({}))
        .await
        .unwrap();
    // The transparency log, a system engine, came back with the policy change logged.
    let v = call(&core, Read, "sys/tlog/key", None, json!({}))
        .await
        .unwrap();
    assert_eq!(v["origin"], "test.example/log");
}

/// A PKI mount's CA keys live under its own view (`pki/<uuid>/`) and its certificates in the
/// inventory: unmounting removes both, so a CA key never outlives its mount on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmounting_a_pki_mount_removes_its_ca_keys_and_certificate_rows() {
    use custos_testkit::{dev_server, ok, sba_pki, SBA_DOMAIN};
    let s = dev_server().await;
    let (api, root) = (&s.api, s.root_token.as_str());
    sba_pki(api, root, "1h").await;
    ok(
        api,
        root,
        "POST",
        "pki/issue/sba",
        json!({"common_name": format!("amf.{SBA_DOMAIN}"), "nf_instance_id": "4947a69a-f61b-4bc1-b9da-47c9c5d14b64", "nf_type": "AMF"}),
    )
    .await;
    let uuid = ok(api, root, "GET", "sys/mounts/pki", json!({})).await["data"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let db = rusqlite::Connection::open(s.dir.path().join("custos.db")).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [&uuid], |r| r.get(0)).unwrap() };
    let keys = "SELECT count(*) FROM kv WHERE key LIKE 'pki/' || ?1 || '/%'";
    let certs = "SELECT count(*) FROM certs WHERE mount = ?1";
    assert!(count(keys) >= 3, "issuer, key and role are stored");
    assert_eq!(count(certs), 1);
    ok(api, root, "DELETE", "sys/mounts/pki", json!({})).await;
    assert_eq!(count(keys), 0);
    assert_eq!(count(certs), 0);
}
