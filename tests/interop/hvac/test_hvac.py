"""hvac (the Python Vault client, unmodified) against `custos server --dev`."""
import hvac
import pytest
import requests


def test_sys_is_initialized_health_and_seal_status(root_client):
    assert root_client.sys.is_initialized() is True
    health = root_client.sys.read_health_status(method="GET")
    assert health["initialized"] is True and health["sealed"] is False and health["standby"] is False
    status = root_client.sys.read_seal_status()
    assert status["sealed"] is False and status["t"] == 1 and status["n"] == 1
    assert root_client.sys.is_sealed() is False


def test_health_head_and_code_overrides(server):
    r = requests.head(server["url"] + "/v1/sys/health")
    assert r.status_code == 200 and r.text == ""
    r = requests.get(server["url"] + "/v1/sys/health?activecode=299")
    assert r.status_code == 299


def test_policies_with_hcl_are_created_read_and_listed(root_client):
    hcl = 'path "secret/app/*" {\n  capabilities = ["read", "list"]\n}\n'
    root_client.sys.create_or_update_policy(name="app-read", policy=hcl)
    assert "app-read" in root_client.sys.list_policies()["data"]["policies"]
    assert "app-read" in root_client.sys.list_acl_policies()["data"]["keys"]
    assert root_client.sys.read_acl_policy("app-read")["data"]["policy"] == hcl
    root_client.sys.create_or_update_acl_policy(name="other", policy='path "kv/*" { capabilities = ["read"] }')
    assert "other" in root_client.sys.list_acl_policies()["data"]["keys"]
    root_client.sys.delete_acl_policy("other")
    assert "other" not in root_client.sys.list_acl_policies()["data"]["keys"]


def test_dict_policy_is_sent_as_json_and_accepted(root_client):
    root_client.sys.create_or_update_policy(
        name="dict-policy", policy={"path": {"secret/dict/*": {"capabilities": ["read"]}}}
    )
    assert "dict-policy" in root_client.sys.list_policies()["data"]["policies"]


def test_policy_syntax_error_is_400_naming_the_line(root_client):
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        root_client.sys.create_or_update_policy(name="broken", policy='path "a" {\n  capabilities = ["read"\n}\n')
    assert "line 3" in str(e.value)


def test_token_create_lookup_renew_revoke_self(server, root_client):
    created = root_client.auth.token.create(policies=["default"], ttl="1h")
    token = created["auth"]["client_token"]
    assert created["auth"]["policies"] == ["default"]
    assert created["auth"]["lease_duration"] == 3600
    child = hvac.Client(url=server["url"], token=token)
    assert child.is_authenticated()
    me = child.auth.token.lookup_self()["data"]
    assert me["id"] == token and me["policies"] == ["default"] and 3500 < me["ttl"] <= 3600
    renewed = child.auth.token.renew_self(increment="2h")
    assert renewed["auth"]["lease_duration"] > 7000
    child.auth.token.revoke_self()
    assert not child.is_authenticated()


def test_token_lookup_and_revoke_by_root(server, root_client):
    token = root_client.auth.token.create(policies=["default"], ttl="30m")["auth"]["client_token"]
    assert root_client.auth.token.lookup(token)["data"]["ttl"] > 1700
    root_client.auth.token.revoke(token)
    with pytest.raises(hvac.exceptions.Forbidden):
        root_client.auth.token.lookup(token)


def test_policy_grants_200_and_missing_path_gets_403(server, root_client):
    root_client.sys.create_or_update_policy(
        name="kv-app", policy='path "secret/app/*" { capabilities = ["read", "list"] }'
    )
    root_client.secrets.kv.v1.create_or_update_secret(path="app/db", secret={"password": "s3cret"}, mount_point="secret")
    root_client.secrets.kv.v1.create_or_update_secret(path="ops/db", secret={"password": "other"}, mount_point="secret")
    token = root_client.auth.token.create(policies=["kv-app"], ttl="10m")["auth"]["client_token"]
    app = hvac.Client(url=server["url"], token=token)
    assert app.secrets.kv.v1.read_secret(path="app/db", mount_point="secret")["data"]["password"] == "s3cret"
    assert "db" in app.secrets.kv.v1.list_secrets(path="app", mount_point="secret")["data"]["keys"]
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.kv.v1.read_secret(path="ops/db", mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.kv.v1.create_or_update_secret(path="app/db", secret={"password": "x"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.sys.list_mounted_secrets_engines()
    # The refused write changed nothing.
    assert root_client.secrets.kv.v1.read_secret(path="app/db", mount_point="secret")["data"]["password"] == "s3cret"


def test_enable_and_list_audit_device(tmp_path, root_client):
    log = tmp_path / "audit.log"
    root_client.sys.enable_audit_device(device_type="file", path="hvac-file", options={"file_path": str(log)})
    devices = root_client.sys.list_enabled_audit_devices()["data"]
    assert devices["hvac-file/"]["type"] == "file"
    root_client.sys.read_health_status(method="GET")
    root_client.auth.token.lookup_self()
    lines = log.read_text().splitlines()
    assert len(lines) >= 3
    assert "hvac-root" not in log.read_text()
    root_client.sys.disable_audit_device(path="hvac-file")
    assert "hvac-file/" not in root_client.sys.list_enabled_audit_devices()["data"]


def test_mounts_enable_list_tune_disable(root_client):
    root_client.sys.enable_secrets_engine(backend_type="kv", path="nf-config", options={"version": "1"})
    mounts = root_client.sys.list_mounted_secrets_engines()["data"]
    assert mounts["nf-config/"]["type"] == "kv"
    root_client.sys.tune_mount_configuration(path="nf-config", default_lease_ttl="1h", max_lease_ttl="2h")
    tuned = root_client.sys.read_mount_configuration(path="nf-config")["data"]
    assert tuned["default_lease_ttl"] == 3600 and tuned["max_lease_ttl"] == 7200
    root_client.sys.disable_secrets_engine(path="nf-config")
    assert "nf-config/" not in root_client.sys.list_mounted_secrets_engines()["data"]


def test_missing_token_is_forbidden(server):
    anon = hvac.Client(url=server["url"], token="")
    with pytest.raises(hvac.exceptions.Forbidden):
        anon.sys.list_mounted_secrets_engines()


def test_seal_then_unseal_with_the_dev_key(server, root_client):
    root_client.sys.seal()
    assert root_client.sys.is_sealed() is True
    with pytest.raises(hvac.exceptions.VaultDown):
        root_client.auth.token.lookup_self()
    result = root_client.sys.submit_unseal_key(key=server["unseal_key"])
    assert result["sealed"] is False
    assert root_client.auth.token.lookup_self()["data"]["id"] == server["root"]
