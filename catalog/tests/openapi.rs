//! The catalog's OpenAPI document: OpenAPI 3.1 that an external validator accepts, listing
//! exactly the routes the router serves, and whose schemas say what the routes answer.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use catalog::http::{
    Authenticate, Caller, CatalogState, EvictRequest, FeedPage, PinRequest, PinView, PlacementAnswer, ProblemDocument,
    RuleRequest, SyncStatus,
};
use catalog::in_store::InStore;
use catalog::keeping::Evicted;
use catalog::quic::{PeerSync, SitePlacement};
use catalog::rules::{RuleState, RuleStatus};
use catalog::{Catalog, Event, EventBody, ReplicaState, Rule, RuleTarget, VersionId};
use federation::signing::SigningKey;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{Store, StoreConfig};
use tower::ServiceExt;

/// Every route of `catalog::http::router`, as (method, path template): the one list a new
/// route is added to. The document must describe exactly these, the router must serve
/// each, and the HTTP sources may declare no other.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/catalog/datasets"),
    ("GET", "/catalog/datasets/{ns}/{name}"),
    ("GET", "/catalog/sync"),
    ("GET", "/catalog/placement"),
    ("GET", "/catalog/feed"),
    ("GET", "/catalog/pins"),
    ("GET", "/catalog/rules"),
    ("GET", "/catalog/rules/{site}/{id}"),
    ("POST", "/catalog/datasets/{ns}/{name}/versions"),
    ("POST", "/catalog/datasets/{ns}/{name}/checkout"),
    ("PUT", "/catalog/datasets/{ns}/{name}/tags/{tag}"),
    ("PUT", "/catalog/namespaces/{ns}/sites"),
    ("PUT", "/catalog/datasets/{ns}/{name}/metadata"),
    ("POST", "/catalog/datasets/{ns}/{name}/evict"),
    ("POST", "/catalog/rules"),
    ("DELETE", "/catalog/rules/{id}"),
    ("POST", "/catalog/pins"),
    ("DELETE", "/catalog/pins/{id}"),
    ("POST", "/catalog/stage/in"),
    ("GET", "/catalog/stage/versions/{version}/files/{path}"),
    ("POST", "/catalog/stage/out"),
    ("POST", "/catalog/stage/out/{session}/missing"),
    ("POST", "/catalog/stage/out/{session}/chunks"),
    ("POST", "/catalog/stage/out/{session}/publish"),
    ("DELETE", "/catalog/stage/out/{session}"),
    ("GET", "/catalog/openapi.json"),
];

/// The one route that needs no token.
const OPEN: (&str, &str) = ("GET", "/catalog/openapi.json");

const PROBLEM_JSON: &str = "application/problem+json";

const TOKEN: &str = "the-operators-token";

/// [`TOKEN`] is the operator; no other token is anyone.
struct OneToken;

impl Authenticate for OneToken {
    fn caller(&self, token: &str) -> Option<Caller> {
        (token == TOKEN).then_some(Caller::Operator)
    }
}

/// Site `paris` over a new store in `dir`: the store, its catalog, and the catalog's routes.
async fn site(dir: &Path) -> (Arc<Store>, Arc<Catalog<InStore>>, Router) {
    let store = Store::open(StoreConfig::new(dir), hw_offload::Offload::cpu(1)).await.unwrap();
    let catalog = Arc::new(Catalog::new(InStore(store.clone()), "paris", SigningKey::generate().unwrap()));
    let state = CatalogState {
        catalog: catalog.clone(),
        sync: None,
        auth: Arc::new(OneToken),
        federation: None,
        rules: None,
        stager: Arc::new(catalog::stage::Stager::new(
            catalog.clone(),
            None,
            None,
            catalog::stage::stage_chunker(catalog::stage::STAGE_CHUNK_AVG_BYTES).unwrap(),
        )),
    };
    (store, catalog, catalog::http::router(Arc::new(state)))
}

async fn put(store: &Store, bucket: &str, key: &str, data: &[u8]) {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    store.put_object(bucket, key, Default::default(), body, &Default::default()).await.unwrap();
}

fn document() -> Value {
    serde_json::to_value(catalog::http::openapi()).unwrap()
}

/// The document's operations, as (METHOD, path template).
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let paths = doc["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            methods.iter().filter(|m| item.get(**m).is_some()).map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

fn listed() -> BTreeSet<(String, String)> {
    ROUTES.iter().map(|(method, path)| (method.to_string(), path.to_string())).collect()
}

/// The (method, path) of every `.route(PATH, METHODS)` call in the catalog's HTTP sources.
fn routes_in_sources() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("http.rs")];
    if let Ok(dir) = std::fs::read_dir(src.join("http")) {
        files.extend(dir.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "rs")));
    }
    let method = regex_lite::Regex::new(r"\b(get|post|put|delete|patch|head|options|trace)\(").unwrap();
    let mut routes = BTreeSet::new();
    for file in files {
        // Code only: comments may quote a route.
        let text = std::fs::read_to_string(&file).unwrap();
        let code: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
        let code = code.join("\n");
        for (at, call) in code.match_indices(".route(") {
            let rest = &code[at + call.len()..];
            let mut depth = 1;
            let end = rest
                .find(|c| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .unwrap_or_else(|| panic!("{}: unclosed .route( call", file.display()));
            let mut parts = rest[..end].splitn(3, '"');
            let (_, path, handlers) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
            let found: Vec<_> = method.captures_iter(handlers).map(|c| c[1].to_uppercase()).collect();
            assert!(!found.is_empty(), "{}: no method in .route({:?}, {handlers})", file.display(), path);
            // A catch-all (`{*path}`, the rest of the path) is a parameter like any in the document.
            let path = path.replace("{*", "{");
            routes.extend(found.into_iter().map(|m| (m, path.clone())));
        }
    }
    routes
}

/// `template` with each path parameter the operation declares filled from `values`.
fn fill(operation: &Value, template: &str, values: &[(&str, &str)]) -> String {
    let mut uri = template.to_owned();
    for parameter in operation["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
        let name = parameter["name"].as_str().unwrap();
        assert_eq!(parameter["required"], true, "path parameter {name} of {template} is not required");
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{template} has a path parameter {name} this test has no value for"))
            .1;
        uri = uri.replace(&format!("{{{name}}}"), value);
    }
    assert!(!uri.contains('{'), "{template}: a path parameter the document does not declare");
    uri
}

/// A request for `operation`, with the credentials its security asks for.
fn request(doc: &Value, operation: &Value, method: &str, uri: &str) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    for requirement in operation["security"].as_array().into_iter().flatten() {
        for scheme in requirement.as_object().unwrap().keys() {
            let described = &doc["components"]["securitySchemes"][scheme];
            assert_eq!((&described["type"], &described["scheme"]), (&json!("http"), &json!("bearer")), "{scheme}");
            request = request.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
    }
    request.body(Body::empty()).unwrap()
}

/// The status, content type (without parameters) and body of `router`'s answer.
async fn call(router: &Router, request: Request<Body>) -> (StatusCode, String, Bytes) {
    let response = router.clone().oneshot(request).await.unwrap();
    let content_type = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap()).unwrap_or_default();
    let content_type = content_type.split(';').next().unwrap().trim().to_owned();
    let status = response.status();
    (status, content_type, axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap())
}

/// Checks `value` against `schema`, resolving `$ref`s in `doc`, for the keywords utoipa
/// writes: `$ref`, `type`, `enum`, `const`, `allOf`/`anyOf`/`oneOf`, `properties`,
/// `required`, `additionalProperties`, `items`, `prefixItems`, `minItems`, `maxItems`,
/// `minimum`, `maximum` and `pattern`. Stricter than JSON Schema in one way: an object
/// schema with `properties` takes no other property unless `additionalProperties` says
/// so, so that a field the document misses is found.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref") {
        let reference = reference.as_str().unwrap();
        let name = reference.strip_prefix("#/components/schemas/").ok_or(format!("{at}: $ref {reference}"))?;
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: $ref {reference} names no schema of the document"));
        }
        return check(doc, target, value, at);
    }
    let list = |key: &str| schema.get(key).and_then(Value::as_array);
    for part in list("allOf").into_iter().flatten() {
        check(doc, part, value, at)?;
    }
    if let Some(any) = list("anyOf") {
        let errors: Vec<_> = any.iter().filter_map(|s| check(doc, s, value, at).err()).collect();
        if errors.len() == any.len() {
            return Err(format!("{at}: matches none of anyOf: {errors:?}"));
        }
    }
    if let Some(one) = list("oneOf") {
        let errors: Vec<_> = one.iter().filter_map(|s| check(doc, s, value, at).err()).collect();
        if one.len() - errors.len() != 1 {
            return Err(format!(
                "{at}: matches {} of oneOf's {}, not one: {errors:?}",
                one.len() - errors.len(),
                one.len()
            ));
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::Array(types) => types.iter().map(|t| t.as_str().unwrap()).collect(),
            single => vec![single.as_str().unwrap()],
        };
        let is = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0),
            other => panic!("{at}: type {other:?}"),
        };
        if !types.iter().any(|t| is(t)) {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(options) = list("enum")
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} is none of {options:?}"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(format!("{at}: {value} is not {constant}"));
    }
    if let (Some(pattern), Some(text)) = (schema.get("pattern").and_then(Value::as_str), value.as_str())
        && !regex_lite::Regex::new(pattern).unwrap().is_match(text)
    {
        return Err(format!("{at}: {text:?} does not match {pattern}"));
    }
    if let Some(n) = value.as_f64() {
        if schema.get("minimum").and_then(Value::as_f64).is_some_and(|min| n < min) {
            return Err(format!("{at}: {n} is below the minimum {}", schema["minimum"]));
        }
        if schema.get("maximum").and_then(Value::as_f64).is_some_and(|max| n > max) {
            return Err(format!("{at}: {n} is above the maximum {}", schema["maximum"]));
        }
    }
    if let Some(object) = value.as_object() {
        for name in list("required").into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                return Err(format!("{at}: lacks the required property {name}"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, property) in object {
            let at = format!("{at}/{name}");
            match (properties.and_then(|p| p.get(name)), schema.get("additionalProperties")) {
                (Some(declared), _) => check(doc, declared, property, &at)?,
                (None, Some(Value::Bool(false))) => return Err(format!("{at}: a property the schema forbids")),
                (None, Some(Value::Bool(true))) => {}
                (None, Some(additional)) => check(doc, additional, property, &at)?,
                (None, None) if properties.is_some() => return Err(format!("{at}: a property the schema lacks")),
                (None, None) => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        let bound = |key: &str| schema.get(key).and_then(Value::as_u64).map(|n| n as usize);
        if bound("minItems").is_some_and(|min| items.len() < min)
            || bound("maxItems").is_some_and(|max| items.len() > max)
        {
            return Err(format!("{at}: {} items, outside minItems/maxItems", items.len()));
        }
        let prefix = list("prefixItems").map_or(&[][..], Vec::as_slice);
        for (i, item) in items.iter().enumerate() {
            let at = format!("{at}/{i}");
            match (prefix.get(i), schema.get("items")) {
                (Some(positional), _) => check(doc, positional, item, &at)?,
                (None, Some(Value::Bool(false))) => return Err(format!("{at}: more items than prefixItems")),
                (None, Some(each)) => check(doc, each, item, &at)?,
                (None, None) => {}
            }
        }
    }
    Ok(())
}

/// Checks `value` against the document's component schema `name`.
fn check_component(doc: &Value, name: &str, value: &impl serde::Serialize) {
    let value = serde_json::to_value(value).unwrap();
    let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
    if let Err(e) = check(doc, &schema, &value, name) {
        panic!("{e}\nvalue: {value:#}\nschema {name}: {:#}", doc["components"]["schemas"][name]);
    }
}

#[test]
fn the_document_is_openapi_3_1_and_describes_every_route() {
    let doc = document();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert_eq!(doc["info"]["title"], "clusster catalog API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let described = operations(&doc);
    let listed = listed();
    assert_eq!(listed.len(), ROUTES.len(), "a route listed twice");
    let undescribed: Vec<_> = listed.difference(&described).collect();
    let unlisted: Vec<_> = described.difference(&listed).collect();
    assert!(
        undescribed.is_empty() && unlisted.is_empty(),
        "routes the document does not describe: {undescribed:?}; operations of the document not in ROUTES: {unlisted:?}"
    );

    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!((&bearer["type"], &bearer["scheme"]), (&json!("http"), &json!("bearer")));
    assert!(bearer["description"].as_str().unwrap().contains("clusster token create"));
    for (method, path) in ROUTES {
        let operation = &doc["paths"][path][method.to_lowercase()];
        let what = format!("{method} {path}");
        // Its token and scope, when it needs one; then a 401 and a 403 as problem documents.
        let security = operation["security"].as_array().map_or(&[][..], Vec::as_slice);
        if (*method, *path) == OPEN {
            assert!(security.is_empty(), "{what} needs no token");
        } else {
            assert_eq!(security.len(), 1, "{what}: {security:?}");
            let scopes = security[0]["bearer"].as_array().unwrap_or_else(|| panic!("{what}: {security:?}"));
            let known = ["catalog:read", "catalog:write", "stage"];
            assert!(
                matches!(scopes.as_slice(), [s] if known.contains(&s.as_str().unwrap())),
                "{what}: scopes {scopes:?}"
            );
            for status in ["401", "403"] {
                assert!(operation["responses"][status].is_object(), "{what} answers no {status}");
            }
        }
        // Its path parameters, exactly.
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_path: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        assert_eq!(declared, in_path, "{what}: path parameters");
        // A schema for every body, and every error a problem document.
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2')), "{what}: no success");
        for (status, response) in responses {
            assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{what} {status}: no description");
            if status.starts_with('4') {
                let content = response["content"].as_object().unwrap();
                assert_eq!(content.keys().collect::<Vec<_>>(), [PROBLEM_JSON], "{what} {status}");
                assert_eq!(content[PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/ProblemDocument");
            }
        }
    }
}

#[tokio::test]
async fn the_router_serves_exactly_the_listed_routes() {
    let in_sources = routes_in_sources();
    let listed = listed();
    assert_eq!(
        in_sources,
        listed,
        "the HTTP sources declare routes not in ROUTES: {:?}; ROUTES has routes the sources do not declare: {:?}",
        in_sources.difference(&listed).collect::<Vec<_>>(),
        listed.difference(&in_sources).collect::<Vec<_>>(),
    );

    // Asked without a token, each route is there: a 401 (a 404 or 405 if it were not),
    // except the document's, which answers with the document.
    let dir = tempfile::tempdir().unwrap();
    let (_store, _catalog, router) = site(dir.path()).await;
    for (method, path) in ROUTES {
        let uri: String =
            path.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/");
        let request = Request::builder().method(*method).uri(&uri).body(Body::empty()).unwrap();
        let (status, content_type, body) = call(&router, request).await;
        if (*method, *path) == OPEN {
            assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/json"));
            assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), document());
        } else {
            assert_eq!((status, content_type.as_str()), (StatusCode::UNAUTHORIZED, PROBLEM_JSON), "{method} {uri}");
        }
    }
}

/// `openapi-spec-validator`: in the virtualenv `$CLUSSTER_PY` if set, else on `PATH`, else
/// in `/opt/clusster-py`.
fn spec_validator() -> PathBuf {
    const NAME: &str = "openapi-spec-validator";
    let install = "scripts/install-deps (or python3 -m venv /opt/clusster-py && /opt/clusster-py/bin/pip install openapi-spec-validator)";
    if let Some(venv) = std::env::var_os("CLUSSTER_PY") {
        let venv = Path::new(&venv);
        let path = venv.join("bin").join(NAME);
        let install = format!("python3 -m venv {0} && {0}/bin/pip install openapi-spec-validator", venv.display());
        assert!(path.is_file(), "no {} (CLUSSTER_PY is set): install it with\n    {install}", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/opt/clusster-py/bin")])
        .map(|dir| dir.join(NAME))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{NAME} is neither on PATH nor in /opt/clusster-py: install it with\n    {install}\n\
                 (or set CLUSSTER_PY to the virtualenv it is installed in)"
            )
        })
}

#[test]
fn the_document_passes_openapi_spec_validator() {
    let validator = spec_validator();
    let mut file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    serde_json::to_writer_pretty(&mut file, &document()).unwrap();
    let out = std::process::Command::new(&validator)
        .args(["--schema", "3.1", "--validation-errors", "all"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", validator.display()));
    assert!(
        out.status.success(),
        "{} refuses the document ({}):\n{}{}",
        validator.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[tokio::test]
async fn a_request_built_from_the_document_gets_the_answer_it_describes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, catalog, router) = site(dir.path()).await;
    store.create_bucket("data", "climate").await.unwrap();
    put(&store, "data", "run1/t2m.nc", &[7; 100_000]).await;
    put(&store, "data", "run1/notes.txt", b"kept inline").await;
    let published =
        catalog::publish::publish(&catalog, "data", "run1/", "paris.climate", "era5", Some("v1"), 1_000).await.unwrap();

    let doc = document();
    let template = "/catalog/datasets/{ns}/{name}";
    let operation = &doc["paths"][template]["get"];
    assert!(operation.is_object(), "the document has no GET {template}");

    let uri = fill(operation, template, &[("ns", "paris.climate"), ("name", "era5")]);
    let (status, content_type, body) = call(&router, request(&doc, operation, "GET", &uri)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let schema = &operation["responses"]["200"]["content"][&content_type]["schema"];
    assert!(schema.is_object(), "GET {template}: the document describes no 200 as {content_type}");
    let answer: Value = serde_json::from_slice(&body).unwrap();
    if let Err(e) = check(&doc, schema, &answer, "") {
        panic!("{e}\nanswer: {answer:#}");
    }
    let version = &answer["versions"][0];
    assert_eq!(
        (&answer["ns"], &answer["name"], &answer["project"]),
        (&json!("paris.climate"), &json!("era5"), &json!("climate"))
    );
    assert_eq!((&version["version"], &version["files"]), (&json!(published.version.to_hex()), &json!(2)));
    assert_eq!((&version["tags"], &version["replicas"][0]["state"]), (&json!(["v1"]), &json!("complete")));

    // A dataset the catalog does not have: a 404, as the problem document described.
    let uri = fill(operation, template, &[("ns", "paris.climate"), ("name", "no-such-dataset")]);
    let (status, content_type, body) = call(&router, request(&doc, operation, "GET", &uri)).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::NOT_FOUND, PROBLEM_JSON));
    let schema = &operation["responses"]["404"]["content"][PROBLEM_JSON]["schema"];
    assert!(schema.is_object(), "GET {template}: the document describes no 404 as {PROBLEM_JSON}");
    let problem: Value = serde_json::from_slice(&body).unwrap();
    if let Err(e) = check(&doc, schema, &problem, "") {
        panic!("{e}\nproblem: {problem:#}");
    }
    assert_eq!((&problem["status"], &problem["title"]), (&json!(404), &json!("not found")));
}

/// The schemas of the types that are not exercised above say what serde writes of real
/// values.
#[test]
fn the_schemas_say_what_serde_writes() {
    let doc = document();
    let version = VersionId([0xa7; 32]);
    let text = |s: &str| s.to_owned();

    check_component(
        &doc,
        "PinRequest",
        &PinRequest { version: text("paris.climate/era5@v1"), job: text("4242"), seconds: 60 },
    );
    let pin = PinView { id: text("p1"), site: text("paris"), version, job: text("4242"), until_ms: 9_000 };
    check_component(&doc, "PinView", &pin);
    check_component(&doc, "EvictRequest", &EvictRequest { version: text("v1") });
    for (version, dataset, until_ms) in
        [(Some("paris.climate/era5@v1"), None, Some(5)), (None, Some("paris.climate/era5"), None)]
    {
        let request = RuleRequest {
            id: text("two-hpc"),
            version: version.map(text),
            dataset: dataset.map(text),
            copies: 2,
            sites: text("tier=hpc"),
            until_ms,
        };
        check_component(&doc, "RuleRequest", &request);
    }
    check_component(&doc, "Evicted", &Evicted { version, site: text("paris") });

    let by_version = Rule { target: RuleTarget::Version(version), copies: 2, sites: text("*"), until_ms: Some(5) };
    let by_dataset = Rule {
        target: RuleTarget::Dataset { ns: text("paris.climate"), name: text("era5") },
        copies: 1,
        sites: text("country=fr"),
        until_ms: None,
    };
    for (rule, state) in [
        (&by_version, RuleState::Ok),
        (&by_version, RuleState::Replicating),
        (&by_dataset, RuleState::Stuck),
        (&by_dataset, RuleState::Lapsed),
    ] {
        let status = RuleStatus {
            site: text("paris"),
            id: text("r1"),
            rule: rule.clone(),
            state,
            copies: BTreeMap::from([(version.to_hex(), vec![text("paris"), text("julich")])]),
            transfers: BTreeMap::from([(version.to_hex(), vec![(text("julich"), text("t-17"))])]),
            reason: (state == RuleState::Stuck).then(|| text("no matching site has room")),
        };
        check_component(&doc, "RuleStatus", &status);
    }

    let placed = SitePlacement {
        site: text("julich"),
        bytes_present: Some(10),
        bytes_missing: Some(90),
        best_source: Some(text("paris")),
        estimated_secs: Some(1.5),
        measured_bytes_per_sec: Some(60e6),
        as_of_ms: 7,
        error: None,
    };
    let unreachable = SitePlacement {
        site: text("cern"),
        bytes_present: None,
        bytes_missing: None,
        best_source: None,
        estimated_secs: None,
        measured_bytes_per_sec: None,
        as_of_ms: 7,
        error: Some(text("unreachable")),
    };
    check_component(&doc, "PlacementAnswer", &PlacementAnswer { version, sites: vec![placed, unreachable] });

    let sync = SyncStatus {
        site: text("paris"),
        heads: BTreeMap::from([(text("paris"), 4), (text("julich"), 9)]),
        digest: hex::encode([1; 32]),
        peers: BTreeMap::from([
            (text("julich"), PeerSync { last_ok_ms: Some(3), last_error: None }),
            (text("cern"), PeerSync { last_ok_ms: None, last_error: Some(text("timed out")) }),
        ]),
        compacted_at: BTreeMap::from([(text("julich"), 7)]),
    };
    check_component(&doc, "SyncStatus", &sync);

    let (ns, name) = (text("paris.climate"), text("era5"));
    let bodies = [
        EventBody::NamespaceCreated { ns: ns.clone(), project: text("climate") },
        EventBody::VersionPublished { ns: ns.clone(), name: name.clone(), version, files: 2, bytes: 10 },
        EventBody::TagMoved { ns: ns.clone(), name: name.clone(), tag: text("v1"), version: Some(version) },
        EventBody::TagMoved { ns: ns.clone(), name, tag: text("v0"), version: None },
        EventBody::ReplicaChanged { version, state: ReplicaState::Partial, bytes_held: 5, chunks_held: 1 },
        EventBody::RuleSet { id: text("r1"), rule: by_version },
        EventBody::RuleSet { id: text("r2"), rule: by_dataset },
        EventBody::RuleRemoved { id: text("r1") },
        EventBody::PinSet { id: text("p1"), version, job: text("4242"), until_ms: 9 },
        EventBody::PinRemoved { id: text("p1") },
        EventBody::NamespaceShared { ns, sites: text("*") },
    ];
    let events = (1..).zip(bodies).map(|(seq, body)| Event { origin: text("paris"), seq, at_ms: 1_000 + seq, body });
    check_component(&doc, "FeedPage", &FeedPage { events: events.collect(), cursor: text("paris:11") });

    let problem = |field: Option<&str>| ProblemDocument {
        r#type: text("about:blank"),
        title: text("invalid query"),
        status: 400,
        detail: text("…"),
        field: field.map(text),
    };
    check_component(&doc, "ProblemDocument", &problem(Some("cursor")));
    check_component(&doc, "ProblemDocument", &problem(None));
}

/// [`check`] finds what the tests above rely on it to find.
#[test]
fn the_checker_refuses_what_a_schema_does_not_say() {
    let doc = document();
    let refused = |name: &str, value: Value| {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        assert!(check(&doc, &schema, &value, name).is_err(), "{name} took {value}");
    };
    let version = VersionId([0xa7; 32]).to_hex();
    let pin = json!({ "id": "p1", "site": "paris", "version": version, "job": "4242", "until_ms": 9 });
    check(&doc, &json!({ "$ref": "#/components/schemas/PinView" }), &pin, "PinView").unwrap();
    let with = |key: &str, value: Value| {
        let mut pin = pin.clone();
        pin[key] = value;
        pin
    };
    refused("PinView", with("extra", json!(1)));
    refused("PinView", with("until_ms", json!("9")));
    refused("PinView", with("until_ms", json!(-1)));
    refused("PinView", with("version", json!(version.to_uppercase())));
    let mut lacking = pin.clone();
    lacking.as_object_mut().unwrap().remove("job");
    refused("PinView", lacking);
    refused("EventBody", json!({ "PinRemoved": { "id": "p1" }, "RuleRemoved": { "id": "r1" } }));
    refused("EventBody", json!({ "NoSuchEvent": {} }));
    refused("ReplicaState", json!("complete"));
    refused("PeerSync", json!({ "last_ok_ms": 1.5, "last_error": null }));
    let mut status = json!({
        "site": "paris", "id": "r1", "state": "ok", "copies": {}, "reason": null,
        "rule": { "target": { "Version": version }, "copies": 1, "sites": "*", "until_ms": null },
        "transfers": { "v": [["julich", "t-17"]] },
    });
    check(&doc, &json!({ "$ref": "#/components/schemas/RuleStatus" }), &status, "RuleStatus").unwrap();
    status["transfers"]["v"][0] = json!(["julich", "t-17", "more"]);
    refused("RuleStatus", status);
}
