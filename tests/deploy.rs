//! The deployment files under `deploy/`, checked without docker, kubectl or
//! a network: every YAML file parses; the Istio `WasmPlugin` and the
//! compose Envoy carry the default policy with only their documented
//! differences; images, names and ports agree across the Kubernetes
//! manifests, the Istio resources, docker-compose, its Envoy and the
//! counter's Dockerfile; compose's Redis is the one of the rate-limiting
//! analysis; and `deploy/oci.py` (behind `make oci`) writes an OCI image
//! layout in the compat variant Istio pulls, consistent blob by blob.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sluice_core::policy::{Global, Policy};

/// Image tags follow the workspace version.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const NAMESPACE: &str = "mcp";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML file (empty ones left out), as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text).map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}"))).filter(|v| !v.is_null()).collect()
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: one document expected");
    docs.remove(0)
}

/// The Kubernetes object of `kind` named `name` in the file.
fn object(rel: &str, kind: &str, name: &str) -> Value {
    yaml_docs(rel).into_iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("{rel}: no {kind} {name}"))
}

fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or_else(|| panic!("no {pointer} in {v:#}"))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer).as_str().unwrap_or_else(|| panic!("{pointer} is not a string: {v:#}"))
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    at(v, pointer).as_u64().unwrap_or_else(|| panic!("{pointer} is not a number: {v:#}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().expect("a list").iter().map(|s| s.as_str().expect("a string")).collect()
}

/// JSON pointers of the leaves where `a` and `b` differ (a field present on
/// one side only counts as a difference at that field).
fn differences(a: &Value, b: &Value) -> BTreeSet<String> {
    fn walk(a: Option<&Value>, b: Option<&Value>, path: String, out: &mut BTreeSet<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                for key in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                    walk(x.get(key), y.get(key), format!("{path}/{key}"), out);
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(Some(p), Some(q), format!("{path}/{i}"), out);
                }
            }
            (x, y) if x == y => {}
            _ => {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(Some(a), Some(b), String::new(), &mut out);
    out
}

fn default_policy() -> Value {
    serde_json::from_str(&read("policies/mcp-gateway.json")).expect("policies/mcp-gateway.json")
}

/// Compiles a policy the way the filter does and returns its `global`.
fn compiled_global(policy: &Value, what: &str) -> Global {
    let policy = Policy::from_json(&policy.to_string()).unwrap_or_else(|e| panic!("{what}: the filter refuses the policy: {e:?}"));
    policy.global.unwrap_or_else(|| panic!("{what}: no `global`"))
}

/// `--flag value` from an argument list.
fn flag<'a>(args: &[&'a str], name: &str) -> &'a str {
    let i = args.iter().position(|a| *a == name).unwrap_or_else(|| panic!("{name} missing from {args:?}"));
    args.get(i + 1).unwrap_or_else(|| panic!("{name} has no value in {args:?}"))
}

/// The port of `host:port`.
fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr}"))
}

/// Every flag in `args` is one the counter documents (counter/README.md).
fn assert_counter_flags(args: &[&str], what: &str) {
    let readme = read("counter/README.md");
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(readme.contains(&format!("| `{a} ")) || readme.contains(&format!("| `{a}`")), "{what}: sluice-counter has no flag {a}");
    }
}

const WASMPLUGIN: &str = "deploy/istio/wasmplugin.yaml";
const COUNTER_TRAFFIC: &str = "deploy/istio/counter-traffic.yaml";
const K8S_COUNTER: &str = "deploy/k8s/counter.yaml";
const K8S_REDIS: &str = "deploy/k8s/redis.yaml";
const COMPOSE: &str = "deploy/docker-compose.yml";
const COMPOSE_ENVOY: &str = "deploy/compose/envoy.yaml";
const GATEWAY_SECRET: &str = "deploy/istio/gateway-secret.yaml";
const DOCKERFILE: &str = "deploy/counter.Dockerfile";

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy"), &mut files);
    let rels: BTreeSet<String> = files.iter().map(|p| p.strip_prefix(repo()).unwrap().to_string_lossy().into_owned()).collect();
    for expected in [WASMPLUGIN, COUNTER_TRAFFIC, K8S_COUNTER, K8S_REDIS, COMPOSE, COMPOSE_ENVOY] {
        assert!(rels.contains(expected), "{expected} is missing; found {rels:?}");
    }
    for rel in &rels {
        let docs = yaml_docs(rel);
        assert!(!docs.is_empty(), "{rel}: no document");
        // Kubernetes objects: complete, and all in the gateway's namespace,
        // which the Istio cluster names below depend on.
        if rel.starts_with("deploy/k8s/") || rel.starts_with("deploy/istio/") {
            for d in &docs {
                for field in ["/apiVersion", "/kind", "/metadata/name"] {
                    assert!(d.pointer(field).and_then(Value::as_str).is_some(), "{rel}: {field} missing in {d:#}");
                }
                assert_eq!(str_at(d, "/metadata/namespace"), NAMESPACE, "{rel}: {}", d["metadata"]["name"]);
            }
        }
    }
    assert!(yaml_docs(K8S_COUNTER).len() >= 2, "{K8S_COUNTER}: Deployment and Service in one multi-document file");
}

/// Where the Kubernetes counter reads its secret: `--secret-file` in a
/// volume of a Secret that must exist. Returns (Secret name, key).
fn counter_secret_source() -> (String, String) {
    let deployment = object(K8S_COUNTER, "Deployment", "sluice-counter");
    let c = at(&deployment, "/spec/template/spec/containers/0");
    let args = strings(at(c, "/args"));
    let file = flag(&args, "--secret-file");
    let mount = at(c, "/volumeMounts")
        .as_array()
        .unwrap()
        .iter()
        .find(|m| file.starts_with(&format!("{}/", str_at(m, "/mountPath"))))
        .unwrap_or_else(|| panic!("{K8S_COUNTER}: {file} is in no mounted volume"));
    let item = &file[str_at(mount, "/mountPath").len() + 1..];
    let volume = at(&deployment, "/spec/template/spec/volumes").as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).expect("the mounted volume");
    let secret = at(volume, "/secret");
    assert_ne!(secret["optional"], true, "{K8S_COUNTER}: the Secret must be required");
    let items = at(secret, "/items").as_array().unwrap();
    let key = items.iter().find(|i| i["path"] == item).unwrap_or_else(|| panic!("{K8S_COUNTER}: no item {item}"));
    (str_at(secret, "/secretName").to_owned(), str_at(key, "/key").to_owned())
}

/// The counter's Kubernetes Service: (name, namespace, port).
fn counter_service() -> (String, String, u64) {
    let svc = object(K8S_COUNTER, "Service", "sluice-counter");
    let ports = at(&svc, "/spec/ports").as_array().unwrap();
    assert_eq!(ports.len(), 1, "{K8S_COUNTER}: one Service port");
    (str_at(&svc, "/metadata/name").to_owned(), str_at(&svc, "/metadata/namespace").to_owned(), u64_at(&ports[0], "/port"))
}

#[test]
fn the_wasmplugin_carries_the_default_policy_with_istio_cluster_names() {
    let wp = object(WASMPLUGIN, "WasmPlugin", "sluice");
    assert_eq!(wp["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(at(&wp, "/spec/selector/matchLabels"), &json!({"app": "mcp-gateway"}));
    assert_eq!(str_at(&wp, "/spec/url"), format!("oci://registry.example/sluice:{VERSION}"));
    assert_eq!(str_at(&wp, "/spec/phase"), "AUTHZ");
    assert_eq!(str_at(&wp, "/spec/failStrategy"), "FAIL_CLOSE");
    assert_eq!(str_at(&wp, "/spec/pluginName"), "sluice");
    assert_eq!(at(&wp, "/spec/match"), &json!([{"mode": "SERVER"}]));

    let config = at(&wp, "/spec/pluginConfig");
    let global = compiled_global(config, WASMPLUGIN);
    let diff: Vec<String> = differences(config, &default_policy()).into_iter().collect();
    assert_eq!(
        diff,
        ["/global/authority", "/global/cluster", "/global/secret_env", "/trusted_hops"],
        "{WASMPLUGIN}: pluginConfig differs from policies/mcp-gateway.json elsewhere (run python3 deploy/sync_policy.py)"
    );
    // Envoy is the edge where the default policy runs (make run, compose):
    // no X-Forwarded-For entry is the client's. Behind the ingress gateway
    // the sidecar trusts the one entry the gateway appends.
    assert_eq!(u64_at(&default_policy(), "/trusted_hops"), 0);
    assert_eq!(u64_at(config, "/trusted_hops"), 1);

    // Istio names a Service's cluster outbound|port||fqdn.
    let (name, namespace, port) = counter_service();
    let fqdn = format!("{name}.{namespace}.svc.cluster.local");
    assert_eq!(global.cluster, format!("outbound|{port}||{fqdn}"));
    assert_eq!(global.authority, fqdn);
    // The counter's secret: in no manifest, from the sidecar's environment,
    // which the gateway patch fills from the Secret the counter mounts.
    assert_eq!(global.secret, None, "a secret written in the WasmPlugin");
    let var = global.secret_env.as_deref().expect("the WasmPlugin's policy names no secret_env");
    assert_eq!(at(&wp, "/spec/vmConfig/env"), &json!([{"name": var, "valueFrom": "HOST"}]));
    let patch = object(GATEWAY_SECRET, "Deployment", "mcp-gateway");
    let sidecar = at(&patch, "/spec/template/spec/containers/0");
    assert_eq!(str_at(sidecar, "/name"), "istio-proxy");
    assert_eq!(str_at(sidecar, "/image"), "auto", "Istio merges only a container with image: auto");
    assert_eq!(at(sidecar, "/env"), &json!([{"name": var, "valueFrom": {"secretKeyRef": {"name": "sluice-counter", "key": "secret"}}}]));
    assert_eq!(counter_secret_source(), ("sluice-counter".to_owned(), "secret".to_owned()));

    let rule = object(COUNTER_TRAFFIC, "DestinationRule", "sluice-counter");
    assert_eq!(str_at(&rule, "/spec/host"), fqdn);
    let authz = object(COUNTER_TRAFFIC, "AuthorizationPolicy", "sluice-counter");
    assert_eq!(at(&authz, "/spec/selector/matchLabels"), &json!({"app": "sluice-counter"}));
    let allowed = strings(at(&authz, "/spec/rules/0/from/0/source/namespaces"));
    assert!(allowed.contains(&str_at(&wp, "/metadata/namespace")), "the gateway's namespace may not call the counter: {allowed:?}");
}

/// The sluice Wasm filter's `config` in the compose Envoy.
fn compose_wasm_config(envoy: &Value) -> &Value {
    let filters = at(envoy, "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters");
    let sluice = filters.as_array().unwrap().iter().find(|f| f["name"] == "sluice").expect("no sluice filter");
    at(sluice, "/typed_config/config")
}

/// The compose Envoy's cluster `name`: (address, port) of its one endpoint.
fn compose_cluster(envoy: &Value, name: &str) -> (String, u64) {
    let clusters = at(envoy, "/static_resources/clusters").as_array().unwrap();
    let c = clusters.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{COMPOSE_ENVOY}: no cluster {name}"));
    let addr = at(c, "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address");
    (str_at(addr, "/address").to_owned(), u64_at(addr, "/port_value"))
}

#[test]
fn the_compose_envoy_runs_the_default_policy_against_the_compose_services() {
    let compose = yaml(COMPOSE);
    let services = at(&compose, "/services").as_object().unwrap();
    let envoy = yaml(COMPOSE_ENVOY);
    let config = compose_wasm_config(&envoy);
    assert_eq!(str_at(config, "/configuration/@type"), "type.googleapis.com/google.protobuf.StringValue");
    let policy: Value = serde_json::from_str(str_at(config, "/configuration/value")).expect("the compose policy is JSON");
    let global = compiled_global(&policy, COMPOSE_ENVOY);

    // One Envoy: the only difference is the instance count.
    let envoys = services.values().filter(|s| s["image"].as_str().is_some_and(|i| i.starts_with("envoyproxy/envoy:"))).count();
    let diff: Vec<String> = differences(&policy, &default_policy()).into_iter().collect();
    assert_eq!(
        diff,
        ["/global/expected_instances", "/global/secret_env"],
        "{COMPOSE_ENVOY}: the policy differs from policies/mcp-gateway.json elsewhere (run python3 deploy/sync_policy.py)"
    );
    assert_eq!(u64::from(global.expected_instances), envoys as u64);
    // Envoy publishes its listener: it is the edge, no X-Forwarded-For
    // entry is trusted, by the policy or by Envoy.
    assert_eq!(u64_at(&policy, "/trusted_hops"), 0);
    let hcm = at(&envoy, "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config");
    assert_eq!(u64_at(hcm, "/xff_num_trusted_hops"), 0);

    // The counter's secret: from deploy/.env (required), into the counter
    // and into Envoy, which hands it to the filter's VM; none in a file.
    assert_eq!(global.secret, None, "a secret written in {COMPOSE_ENVOY}");
    let var = global.secret_env.as_deref().expect("the compose policy names no secret_env");
    assert_eq!(var, "SLUICE_COUNTER_SECRET");
    assert_eq!(strings(at(config, "/vm_config/environment_variables/host_env_keys")), [var]);
    let required = format!("${{{var}:?");
    for service in ["sluice-counter", "envoy"] {
        let value = str_at(&services[service], &format!("/environment/{var}"));
        assert!(value.starts_with(&required), "{COMPOSE}: {service}'s {var} is {value:?}, not required from the environment");
    }

    // global.cluster -> the counter service, on the port it listens on.
    let counter = &services["sluice-counter"];
    let args = strings(at(counter, "/command"));
    assert!(!args.iter().any(|a| a.contains("secret") || a.contains("redis://")), "{COMPOSE}: a secret on the counter's command line: {args:?}");
    let (host, port) = compose_cluster(&envoy, &global.cluster);
    assert_eq!(host, "sluice-counter");
    assert_eq!(global.authority, "sluice-counter");
    assert_eq!(port, port_of(flag(&args, "--listen")));

    // The route goes to the gateway service.
    let route = at(&envoy, "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes/0/route/cluster");
    let (gw_host, gw_port) = compose_cluster(&envoy, route.as_str().unwrap());
    assert!(services.contains_key(&gw_host), "route to {gw_host}, not a compose service");
    assert_eq!(gw_port, 3000, "the gateway listens on 3000");

    // The module and the config are the mounted files.
    let e = &services["envoy"];
    let mounts = strings(at(e, "/volumes"));
    let wasm = str_at(config, "/vm_config/code/local/filename");
    let built = format!("../{}", makefile_var("WASM"));
    assert!(mounts.contains(&format!("{built}:{wasm}:ro").as_str()), "{wasm} is not {built} mounted: {mounts:?}");
    let cmd = strings(at(e, "/command"));
    assert!(mounts.contains(&format!("./compose/envoy.yaml:{}:ro", flag(&cmd, "-c")).as_str()), "{mounts:?} {cmd:?}");
    let listener = u64_at(&envoy, "/static_resources/listeners/0/address/socket_address/port_value");
    let admin = u64_at(&envoy, "/admin/address/socket_address/port_value");
    let published = strings(at(e, "/ports"));
    assert!(published.contains(&format!("{listener}:{listener}").as_str()), "{published:?}");
    assert!(published.contains(&format!("127.0.0.1:{admin}:{admin}").as_str()), "admin only on loopback: {published:?}");
}

/// `NAME := value` from the Makefile.
fn makefile_var(name: &str) -> String {
    let makefile = read("Makefile");
    let prefix = format!("{name} := ");
    makefile.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("Makefile: no {name} :=")).trim().to_owned()
}

#[test]
fn images_names_and_ports_agree() {
    // Kubernetes: the counter.
    let deployment = object(K8S_COUNTER, "Deployment", "sluice-counter");
    assert_eq!(u64_at(&deployment, "/spec/replicas"), 2);
    let pod_labels = at(&deployment, "/spec/template/metadata/labels");
    assert_eq!(at(&deployment, "/spec/selector/matchLabels"), pod_labels);
    let c = at(&deployment, "/spec/template/spec/containers/0");
    assert_eq!(str_at(c, "/image"), format!("registry.example/sluice-counter:{VERSION}"));
    let args = strings(at(c, "/args"));
    assert_counter_flags(&args, K8S_COUNTER);
    let port = port_of(flag(&args, "--listen"));
    assert_eq!(at(c, "/ports/0"), &json!({"name": "http", "containerPort": port}));
    assert_eq!(at(c, "/readinessProbe/httpGet"), &json!({"path": "/readyz", "port": "http"}));
    assert_eq!(at(c, "/livenessProbe/httpGet"), &json!({"path": "/healthz", "port": "http"}));
    let env = at(c, "/env").as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no env {name}"));
    assert!(!env.iter().any(|e| e["name"] == "SLUICE_COUNTER_SECRET"), "the secret comes from the mounted file");
    // The secret: required, from the mounted Secret (counter_secret_source).
    counter_secret_source();
    // Redis's URL, with its password, from the Secret the Redis pod takes
    // its password from; never on the command line.
    assert!(!args.contains(&"--redis-url"), "{args:?}");
    assert_eq!(at(var("SLUICE_COUNTER_REDIS_URL"), "/valueFrom/secretKeyRef"), &serde_json::json!({"name": "sluice-redis", "key": "url"}));
    let redis_svc = object(K8S_REDIS, "Service", "redis");
    let redis_port = u64_at(&redis_svc, "/spec/ports/0/port");
    assert_eq!(redis_port, 6379);
    assert_eq!(str_at(&redis_svc, "/spec/clusterIP"), "None", "Redis stays inside the cluster");

    let (_, _, svc_port) = counter_service();
    let svc = object(K8S_COUNTER, "Service", "sluice-counter");
    assert_eq!(svc_port, port);
    assert_eq!(at(&svc, "/spec/ports/0/targetPort"), "http");
    assert_eq!(at(&svc, "/spec/selector"), pod_labels);

    // Kubernetes: Redis, as in the analysis.
    let redis = object(K8S_REDIS, "StatefulSet", "redis");
    assert_eq!(str_at(&redis, "/spec/serviceName"), "redis");
    let r = at(&redis, "/spec/template/spec/containers/0");
    assert_eq!(str_at(r, "/image"), "redis:7-alpine");
    // The analysis's settings, and a password from the same Secret, which
    // the readiness probe uses too.
    assert_eq!(strings(at(r, "/command")), ["sh", "-c"]);
    assert_eq!(strings(at(r, "/args")), [format!("exec {ANALYSIS_REDIS_COMMAND} --requirepass \"$REDIS_PASSWORD\"")]);
    let password = at(r, "/env").as_array().unwrap().iter().find(|e| e["name"] == "REDIS_PASSWORD").expect("REDIS_PASSWORD");
    assert_eq!(at(password, "/valueFrom/secretKeyRef"), &serde_json::json!({"name": "sluice-redis", "key": "password"}));
    assert!(strings(at(r, "/readinessProbe/exec/command")).join(" ").contains("REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli ping"));
    assert_eq!(u64_at(r, "/ports/0/containerPort"), redis_port);
    assert_eq!(at(&redis_svc, "/spec/ports/0/targetPort"), at(r, "/ports/0/name"));
    assert_eq!(at(&redis_svc, "/spec/selector"), at(&redis, "/spec/template/metadata/labels"));
    assert_eq!(str_at(r, "/volumeMounts/0/mountPath"), "/data");

    // docker-compose.
    let compose = yaml(COMPOSE);
    let counter = at(&compose, "/services/sluice-counter");
    assert_eq!(str_at(counter, "/image"), format!("sluice-counter:{VERSION}"));
    assert_eq!(str_at(counter, "/build/context"), "..");
    assert_eq!(str_at(counter, "/build/dockerfile"), DOCKERFILE);
    let cargs = strings(at(counter, "/command"));
    assert_counter_flags(&cargs, COMPOSE);
    assert_eq!(port_of(flag(&cargs, "--listen")), port);
    // The Redis URL carries the password: from the environment.
    assert!(!cargs.contains(&"--redis-url"), "{COMPOSE}: {cargs:?}");
    let url = str_at(counter, "/environment/SLUICE_COUNTER_REDIS_URL");
    assert_eq!(url, "redis://:${SLUICE_REDIS_PASSWORD:?set SLUICE_REDIS_PASSWORD in deploy/.env}@redis:6379");
    assert!(at(&compose, "/services/redis").is_object());
    assert_eq!(str_at(&compose, "/services/envoy/image"), format!("envoyproxy/envoy:v{}", makefile_var("ENVOY_VERSION")));
    assert_eq!(str_at(&compose, "/services/envoy/image"), "envoyproxy/envoy:v1.40.0");
    assert_eq!(str_at(&compose, "/services/mcp-gateway/image"), "${MCP_GATEWAY_IMAGE:-connectors/gateway:latest}");

    // The counter's Dockerfile: builds the service, serves on the same port.
    let dockerfile = read(DOCKERFILE);
    assert!(dockerfile.contains("cargo build --release --locked -p sluice-counter"), "{DOCKERFILE} does not build sluice-counter");
    assert!(dockerfile.lines().any(|l| l.trim() == format!("EXPOSE {port}")), "{DOCKERFILE}: EXPOSE {port}");
    assert!(dockerfile.contains(&format!(r#"CMD ["--listen", "0.0.0.0:{port}"]"#)), "{DOCKERFILE}: CMD --listen 0.0.0.0:{port}");
    assert!(dockerfile.contains(&format!("-t sluice-counter:{VERSION}")), "{DOCKERFILE}: its build command tags another version");
    assert!(dockerfile.lines().filter(|l| l.starts_with("FROM ")).count() >= 2, "{DOCKERFILE}: multi-stage");
}

/// The Redis command of the rate-limiting analysis (section 9.2).
const ANALYSIS_REDIS_COMMAND: &str = "redis-server --maxmemory 512mb --maxmemory-policy allkeys-lru";

#[test]
fn compose_redis_is_the_analysis_redis_closed() {
    let compose = yaml(COMPOSE);
    let redis = at(&compose, "/services/redis");
    assert_eq!(str_at(redis, "/image"), "redis:7-alpine");
    assert_eq!(strings(at(redis, "/volumes")), ["redis-data:/data"]);
    assert!(at(&compose, "/volumes").get("redis-data").is_some(), "the redis-data volume is not declared");
    // Reachable on the compose network only.
    assert!(redis.get("ports").is_none(), "{COMPOSE}: Redis publishes a port: {redis:#}");
    for (name, service) in at(&compose, "/services").as_object().unwrap() {
        if name != "envoy" {
            assert!(service.get("ports").is_none(), "{COMPOSE}: {name} publishes a port");
        }
    }
    // The analysis's settings, plus a password from deploy/.env (never
    // written in the file), which the health check uses too.
    let command = strings(at(redis, "/command"));
    assert_eq!(command[..2], ["sh", "-c"]);
    assert_eq!(command[2], format!("exec {ANALYSIS_REDIS_COMMAND} --requirepass \"$$REDIS_PASSWORD\""));
    assert_eq!(str_at(redis, "/environment/REDIS_PASSWORD"), "${SLUICE_REDIS_PASSWORD:?set SLUICE_REDIS_PASSWORD in deploy/.env (see the top of this file)}");
    let check = strings(at(redis, "/healthcheck/test"));
    assert_eq!(check[0], "CMD-SHELL");
    assert!(check[1].contains("REDISCLI_AUTH=\"$$REDIS_PASSWORD\" redis-cli ping"), "{check:?}");
    // Everyone who talks to Redis has the password.
    for service in ["sluice-counter", "mcp-gateway"] {
        let env = at(&compose, &format!("/services/{service}/environment"));
        let url = env
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_str)
            .find(|v| v.starts_with("redis://"))
            .unwrap_or_else(|| panic!("{service}: no Redis URL"));
        assert!(url.starts_with("redis://:${SLUICE_REDIS_PASSWORD:?"), "{service}: {url}");
    }
    // deploy/.env holds the secrets and stays out of git.
    assert!(read(".gitignore").lines().any(|l| l == "/deploy/.env"));
}

#[test]
fn embedded_policies_are_current() {
    let out = python(&["deploy/sync_policy.py", "--check"]);
    assert!(out.status.success(), "run python3 deploy/sync_policy.py: {}", String::from_utf8_lossy(&out.stdout));
}

// ---- the OCI image layout ----

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn python(args: &[&str]) -> Output {
    Command::new("python3").args(args).current_dir(repo()).output().expect("python3")
}

fn oci(wasm: &Path, out: &Path, tag: &str) -> Output {
    python(&["deploy/oci.py", "--wasm", wasm.to_str().unwrap(), "--out", out.to_str().unwrap(), "--tag", tag])
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A small valid module: the header and one custom section of varied bytes.
fn module(seed: u32) -> Vec<u8> {
    let mut payload = vec![4u8];
    payload.extend_from_slice(b"test");
    let mut x = seed;
    for _ in 0..3000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        payload.push((x >> 16) as u8 % 16);
    }
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.push(0); // custom section
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            m.push(byte);
            break;
        }
        m.push(byte | 0x80);
    }
    m.extend_from_slice(&payload);
    m
}

/// The blob a descriptor names, after checking its digest and size.
fn blob(layout: &Path, desc: &Value) -> Vec<u8> {
    let digest = str_at(desc, "/digest");
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not sha256: {digest}"));
    let bytes = fs::read(layout.join("blobs/sha256").join(hex)).unwrap_or_else(|e| panic!("blob {digest}: {e}"));
    assert_eq!(sha256_hex(&bytes), hex, "blob {digest} does not hash to its name");
    assert_eq!(bytes.len() as u64, u64_at(desc, "/size"), "blob {digest}: size");
    bytes
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Checks the layout against the OCI image layout spec and Istio's compat
/// variant; returns the manifest digest.
fn check_layout(layout: &Path, module: &[u8], tag: &str) -> String {
    assert_eq!(json_file(&layout.join("oci-layout")), json!({"imageLayoutVersion": "1.0.0"}));
    let index = json_file(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], INDEX_TYPE);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let mdesc = &manifests[0];
    assert_eq!(mdesc["mediaType"], MANIFEST_TYPE);
    assert_eq!(str_at(mdesc, "/annotations/org.opencontainers.image.ref.name"), tag);

    let manifest: Value = serde_json::from_slice(&blob(layout, mdesc)).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], MANIFEST_TYPE);
    assert_eq!(str_at(&manifest, "/annotations/module.wasm.image~1variant"), "compat");
    assert_eq!(str_at(&manifest, "/config/mediaType"), CONFIG_TYPE);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "Istio's compat variant reads the last layer; one is expected");
    assert_eq!(layers[0]["mediaType"], LAYER_TYPE);

    // The layer: a gzip'd tar whose only entry is plugin.wasm, the module.
    let layer = blob(layout, &layers[0]);
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&layer[..]).read_to_end(&mut tar_bytes).expect("the layer is gzip");
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        assert!(entry.header().entry_type().is_file(), "{path} is not a file");
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        entries.push((path, content));
    }
    assert_eq!(entries.len(), 1, "{:?}", entries.iter().map(|e| &e.0).collect::<Vec<_>>());
    assert_eq!(entries[0].0, "plugin.wasm");
    assert!(entries[0].1 == module, "plugin.wasm is not the module");

    // The config: an image config whose one diff_id is the uncompressed layer.
    let config: Value = serde_json::from_slice(&blob(layout, &manifest["config"])).unwrap();
    assert_eq!(at(&config, "/rootfs"), &json!({"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar_bytes))]}));
    assert!(config["os"].is_string() && config["architecture"].is_string(), "{config}");

    // Nothing else in the blob store.
    let mut stored: Vec<String> = fs::read_dir(layout.join("blobs/sha256")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    stored.sort();
    let mut named: Vec<String> = [mdesc, &manifest["config"], &layers[0]].iter().map(|d| str_at(d, "/digest")[7..].to_owned()).collect();
    named.sort();
    assert_eq!(stored, named);
    str_at(mdesc, "/digest").to_owned()
}

#[test]
fn oci_py_writes_a_consistent_compat_image_of_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("m.wasm");
    let m = module(7);
    fs::write(&wasm, &m).unwrap();
    let out = dir.path().join("oci/sluice");

    let run = oci(&wasm, &out, "1.2.3-test");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let printed = String::from_utf8(run.stdout).unwrap().trim().to_owned();
    let digest = check_layout(&out, &m, "1.2.3-test");
    assert_eq!(printed, digest, "the printed digest is not the manifest's");

    // The same module and tag give the same image, in a fresh directory or
    // over an existing one (which is replaced, leaving no stale blobs).
    let again = dir.path().join("again");
    assert!(oci(&wasm, &again, "1.2.3-test").status.success());
    assert_eq!(check_layout(&again, &m, "1.2.3-test"), digest);
    let other = module(8);
    fs::write(&wasm, &other).unwrap();
    assert!(oci(&wasm, &out, "1.2.3-test").status.success());
    let changed = check_layout(&out, &other, "1.2.3-test");
    assert_ne!(changed, digest);
}

#[test]
fn oci_py_refuses_what_istio_could_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("m.wasm");
    fs::write(&not_wasm, b"#!/bin/sh\n").unwrap();
    let out = dir.path().join("layout");
    let run = oci(&not_wasm, &out, "1.0.0");
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("not a WebAssembly module"));
    assert!(!out.exists(), "a layout was written for a non-module");

    let wasm = dir.path().join("ok.wasm");
    fs::write(&wasm, module(1)).unwrap();
    let run = oci(&wasm, &out, "not a tag");
    assert!(!run.status.success());
    assert!(!out.exists());
}

#[test]
fn make_oci_packages_the_built_module() {
    let makefile = read("Makefile");
    let phony = makefile.lines().find(|l| l.starts_with(".PHONY:")).expect(".PHONY");
    assert!(phony.split_whitespace().any(|t| t == "oci"), "oci is not .PHONY: {phony}");
    let mut lines = makefile.lines().skip_while(|l| !l.starts_with("oci:"));
    let rule = lines.next().expect("no `oci:` target in the Makefile");
    assert!(rule["oci:".len()..].split_whitespace().any(|p| p == "build"), "`make oci` must build the module first: {rule}");
    let recipe: Vec<&str> = lines.take_while(|l| l.starts_with('\t')).collect();
    let call = recipe.iter().find(|l| l.contains("deploy/oci.py")).unwrap_or_else(|| panic!("the oci recipe does not run deploy/oci.py: {recipe:?}"));
    assert!(call.contains("--wasm $(WASM)"), "{call}");
    assert!(call.contains("--out target/oci/sluice"), "{call}");
    assert_eq!(makefile_var("WASM"), "target/wasm32-wasip1/release/sluice.wasm");
}
