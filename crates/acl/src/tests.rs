#![allow(clippy::unwrap_used)]
use super::*;
use serde_json::json;

fn acl(docs: &[&str]) -> Acl {
    let ps: Vec<Policy> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| parse_policy(&format!("p{i}"), d).unwrap())
        .collect();
    Acl::new(&ps)
}

#[test]
fn exact_path_beats_any_glob() {
    let a = acl(&[r#"
        path "secret/*" { capabilities = ["read"] }
        path "secret/admin" { capabilities = ["deny"] }
    "#]);
    assert!(a.check("secret/foo", Operation::Read, false, None).is_ok());
    assert_eq!(
        a.check("secret/admin", Operation::Read, false, None),
        Err(Denial::Capability)
    );
}

#[test]
fn vault_priority_rule_1_later_wildcard_wins() {
    // "secret/+/x*" has its first wildcard earlier than "secret/a/*".
    let a = acl(&[r#"
        path "secret/+/x*" { capabilities = ["deny"] }
        path "secret/a/*" { capabilities = ["read"] }
    "#]);
    assert!(a.check("secret/a/xy", Operation::Read, false, None).is_ok());
}

#[test]
fn vault_priority_rule_2_trailing_glob_loses() {
    let a = acl(&[r#"
        path "secret/+" { capabilities = ["read"] }
        path "secret/*" { capabilities = ["deny"] }
    "#]);
    // Both patterns have their first wildcard at the same position; the glob loses.
    assert!(a.check("secret/x", Operation::Read, false, None).is_ok());
}

#[test]
fn vault_priority_rule_3_more_plus_segments_lose() {
    let a = acl(&[r#"
        path "a/+/+" { capabilities = ["deny"] }
        path "a/+/c" { capabilities = ["read"] }
    "#]);
    assert!(a.check("a/b/c", Operation::Read, false, None).is_ok());
}

#[test]
fn vault_priority_rule_4_shorter_loses() {
    let a = acl(&[r#"
        path "secret/*" { capabilities = ["deny"] }
        path "secret/data*" { capabilities = ["read"] }
    "#]);
    assert!(a
        .check("secret/data/x", Operation::Read, false, None)
        .is_ok());
    assert!(a
        .check("secret/other", Operation::Read, false, None)
        .is_err());
}

#[test]
fn plus_matches_exactly_one_segment() {
    let a = acl(&[r#"path "kv/+/config" { capabilities = ["read"] }"#]);
    assert!(a
        .check("kv/team/config", Operation::Read, false, None)
        .is_ok());
    assert!(a
        .check("kv/a/b/config", Operation::Read, false, None)
        .is_err());
    assert!(a.check("kv/config", Operation::Read, false, None).is_err());
}

#[test]
fn glob_does_not_match_the_bare_parent() {
    let a = acl(&[r#"path "secret/*" { capabilities = ["read"] }"#]);
    assert!(a.check("secret", Operation::Read, false, None).is_err());
    assert!(a.check("secretx", Operation::Read, false, None).is_err());
}

#[test]
fn deny_in_any_policy_overrides_grants_on_the_same_path() {
    let a = acl(&[
        r#"path "secret/x" { capabilities = ["read", "update"] }"#,
        r#"path "secret/x" { capabilities = ["deny"] }"#,
    ]);
    assert!(a.check("secret/x", Operation::Read, false, None).is_err());
    assert_eq!(a.capabilities("secret/x"), vec!["deny"]);
}

#[test]
fn capabilities_merge_across_policies() {
    let a = acl(&[
        r#"path "secret/x" { capabilities = ["read"] }"#,
        r#"path "secret/x" { capabilities = ["update"] }"#,
    ]);
    assert_eq!(a.capabilities("secret/x"), vec!["read", "update"]);
}

#[test]
fn sudo_paths_need_sudo_capability() {
    let a = acl(&[r#"path "sys/audit/*" { capabilities = ["update"] }"#]);
    assert_eq!(
        a.check("sys/audit/file", Operation::Update, true, None),
        Err(Denial::Sudo)
    );
    let b = acl(&[r#"path "sys/audit/*" { capabilities = ["update", "sudo"] }"#]);
    assert!(b
        .check("sys/audit/file", Operation::Update, true, None)
        .is_ok());
}

#[test]
fn root_policy_grants_everything() {
    let root = Policy {
        name: "root".into(),
        rules: vec![],
    };
    let a = Acl::new([&root]);
    assert!(a
        .check("anything/at/all", Operation::Delete, true, None)
        .is_ok());
}

#[test]
fn allowed_parameters_restrict_keys_and_values() {
    let a = acl(&[r#"
        path "pki/issue/nf" {
            capabilities = ["update"]
            allowed_parameters = {
                "common_name" = ["*.5gc.mnc001.mcc001.3gppnetwork.org"]
                "ttl" = []
            }
        }
    "#]);
    let ok = json!({"common_name": "amf.5gc.mnc001.mcc001.3gppnetwork.org", "ttl": "1h"});
    assert!(a
        .check("pki/issue/nf", Operation::Update, false, ok.as_object())
        .is_ok());
    let bad_value = json!({"common_name": "evil.example.com"});
    assert_eq!(
        a.check(
            "pki/issue/nf",
            Operation::Update,
            false,
            bad_value.as_object()
        ),
        Err(Denial::ParameterNotAllowed("common_name".into()))
    );
    let extra = json!({"common_name": "x.5gc.mnc001.mcc001.3gppnetwork.org", "alt_names": "a"});
    assert_eq!(
        a.check("pki/issue/nf", Operation::Update, false, extra.as_object()),
        Err(Denial::ParameterNotAllowed("alt_names".into()))
    );
}

#[test]
fn denied_parameters_refuse_keys_and_values() {
    let a = acl(&[r#"
        path "auth/token/create" {
            capabilities = ["update"]
            denied_parameters = { "policies" = ["root"], "no_parent" = [] }
        }
    "#]);
    let root = json!({"policies": ["default", "root"]});
    assert_eq!(
        a.check(
            "auth/token/create",
            Operation::Update,
            false,
            root.as_object()
        ),
        Err(Denial::ParameterDenied("policies".into()))
    );
    let orphan = json!({"no_parent": true});
    assert!(a
        .check(
            "auth/token/create",
            Operation::Update,
            false,
            orphan.as_object()
        )
        .is_err());
    let fine = json!({"policies": ["default"]});
    assert!(a
        .check(
            "auth/token/create",
            Operation::Update,
            false,
            fine.as_object()
        )
        .is_ok());
}

#[test]
fn required_parameters_must_be_present() {
    let a = acl(&[r#"
        path "kv/x" {
            capabilities = ["update"]
            required_parameters = ["owner"]
        }
    "#]);
    assert_eq!(
        a.check("kv/x", Operation::Update, false, json!({}).as_object()),
        Err(Denial::ParameterRequired("owner".into()))
    );
    // Reads are not parameter-checked.
    assert_eq!(
        a.check("kv/x", Operation::Read, false, None),
        Err(Denial::Capability)
    );
}

#[test]
fn syntax_error_names_the_line() {
    let err = parse_policy(
        "bad",
        "path \"a\" {\n  capabilities = [\"read\"]\n\n  oops = \n}\n",
    )
    .unwrap_err();
    match err {
        PolicyError::Syntax { line, .. } => assert!(line >= 4, "line {line}"),
        other => panic!("expected syntax error, got {other:?}"),
    }
    assert!(err_string("path \"a\" {").contains("line 1"));
}

fn err_string(doc: &str) -> String {
    parse_policy("x", doc).unwrap_err().to_string()
}

#[test]
fn unknown_capability_and_misplaced_glob_are_rejected() {
    assert!(err_string(r#"path "a" { capabilities = ["write"] }"#).contains("unknown capability"));
    assert!(err_string(r#"path "a/*/b" { capabilities = ["read"] }"#).contains("last character"));
    assert!(err_string(r#"path "a" { capabilites = ["read"] }"#).contains("invalid key"));
    assert!(err_string(r#"other "a" { }"#).contains("only \"path\""));
}

#[test]
fn json_policy_form_as_sent_by_hvac_is_accepted() {
    let p = parse_policy(
        "j",
        r#"{"path": {"secret/*": {"capabilities": ["read", "list"]}}}"#,
    )
    .unwrap();
    let a = Acl::new([&p]);
    assert!(a.check("secret/a", Operation::List, false, None).is_ok());
    assert!(err_string("{\"path\": \n [1,").contains("line 2"));
}

#[test]
fn default_policy_parses_and_allows_self_lookup_only() {
    let p = parse_policy("default", DEFAULT_POLICY).unwrap();
    let a = Acl::new([&p]);
    assert!(a
        .check("auth/token/lookup-self", Operation::Read, false, None)
        .is_ok());
    assert!(a
        .check("auth/token/create", Operation::Update, false, None)
        .is_err());
    assert!(a
        .check("sys/policies/acl/x", Operation::Read, false, None)
        .is_err());
}
