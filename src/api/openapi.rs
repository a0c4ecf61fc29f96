//! The API's OpenAPI 3.1 document, served at `/openapi.json` and rendered at `/docs` (Swagger UI,
//! its assets inside the binary). The routes describe themselves (each handler's `utoipa::path`,
//! collected by utoipa-axum's `routes!` as the router is built, so a route and its description
//! cannot part) with the types of `api::types`; what the routes share comes from layers and
//! extractors, and is added here once, from what each operation is: the token and its 401, the
//! rate limits' 429 with `Retry-After`, a body's 400, 413 and 422, a query's 422, the admin
//! routes' 403, a change's 202 and headers, the body of every error (problem+json on v1, the old
//! envelope on the old routes), and the links from an answer to what it lets a client do next.

use std::collections::btree_map::Entry;

use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, ObjectBuilder, RefOr, Type};

use super::types::{Envelope, OperationView, Problem, ProblemExtra};
use super::v1::IDEMPOTENCY_KEY;

/// Where the document and its reference page are served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
pub const DOCS_PATH: &str = "/docs";

/// The content type of v1's errors.
const PROBLEM_JSON: &str = "application/problem+json";

/// The security schemes' names: a bearer token, or the bare token the old tool's clients send.
const BEARER: &str = "bearer";
const BARE_TOKEN: &str = "bare_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dbroker",
        description = "Self-service MySQL, Redis and PostgreSQL instances on a Docker host. Every route but \
            /healthz needs a token and is rate-limited. v1's errors are application/problem+json; the old \
            tool's routes (tag `legacy`) answer in their {\"code\",\"msg\",\"data\"} envelope, errors too, \
            with the same HTTP status in `code`.",
    ),
    components(schemas(Problem, ProblemExtra, Envelope<ProblemExtra>, OperationView)),
    tags(
        (name = "instances", description = "A user's own instances"),
        (name = "operations", description = "Changes, recorded and run to their end"),
        (name = "engines", description = "The catalogue"),
        (name = "admin", description = "For admins only: every user's instances, the quarantine, the reconciler, the pool"),
        (name = "users", description = "For admins only: users and their tokens and quotas"),
        (name = "health", description = "For monitors: no token, no rate limit"),
        (name = "legacy", description = "The old tool's routes, in its envelope"),
    ),
)]
struct Base;

/// The document, from the described routes' own (see `api::described_routes`).
pub fn finish(routes: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut document = Base::openapi();
    document.merge(routes);
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document.info.license = None;
    let components = document.components.get_or_insert_with(Default::default);
    components
        .add_security_scheme(BEARER, SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    components.add_security_scheme(
        BARE_TOKEN,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "The token alone, as the old tool's clients send it",
        ))),
    );
    for (path, item) in document.paths.paths.iter_mut() {
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            describe_shared(path, operation);
            add_links(operation);
        }
    }
    document
}

/// The document at `DOCUMENT_PATH`, and Swagger UI rendering it at `DOCS_PATH`, its assets from
/// the binary (the crate's `vendored` copy). Its validator badge is off: it would send the
/// document's address to a validator on the internet.
pub fn reference_page<S: Clone + Send + Sync + 'static>(document: utoipa::openapi::OpenApi) -> axum::Router<S> {
    let config = utoipa_swagger_ui::Config::default().validator_url("none");
    utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH).url(DOCUMENT_PATH, document).config(config).into()
}

/// Adds to one operation what it shares with others (see the module's comment).
fn describe_shared(path: &str, operation: &mut Operation) {
    let legacy = operation.tags.as_ref().is_some_and(|tags| tags.iter().any(|t| t == "legacy"));
    let parameters: Vec<(String, ParameterIn)> = operation
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some((p.name.clone(), p.parameter_in.clone())),
            RefOr::Ref(_) => None,
        })
        .collect();
    let responses = &mut operation.responses.responses;
    // A status the route describes already says what is particular to it; another cause is added.
    let mut add = |status: u16, description: &str| match responses.entry(status.to_string()) {
        Entry::Vacant(vacant) => {
            vacant.insert(ResponseBuilder::new().description(description).into());
        }
        Entry::Occupied(mut occupied) => {
            if let RefOr::T(response) = occupied.get_mut() {
                response.description = format!("{}; or {}", response.description, lowercase_first(description));
            }
        }
    };
    if path != "/healthz" {
        operation.security =
            Some(vec![SecurityRequirement::new(BEARER, [""; 0]), SecurityRequirement::new(BARE_TOKEN, [""; 0])]);
        add(401, "No token, an unknown one, or a disabled user's");
        add(429, "Beyond a rate limit: `Retry-After` says when to try again");
    }
    if path.starts_with("/v1/admin/") {
        add(403, "The caller is not an admin");
    }
    if let Some(body) = &mut operation.request_body {
        // The old tool's clients may send no body, every field being optional (see `JsonBody`).
        if let (true, RefOr::T(body)) = (legacy, body) {
            body.required = Some(utoipa::openapi::Required::False);
        }
        add(400, "The body is not JSON");
        add(413, "The body is over 64 KiB");
        add(422, "A field is unknown, missing, of the wrong type or out of bounds");
    }
    if parameters.iter().any(|(_, place)| *place == ParameterIn::Query) {
        add(422, "A query parameter is unknown or out of bounds");
    }
    if parameters.iter().any(|(name, _)| name == IDEMPOTENCY_KEY) {
        add(400, "The Idempotency-Key is not 1 to 255 visible ASCII characters");
        if path.contains("{id}") {
            add(409, "Another operation is in flight on the instance (`operation` names it)");
        }
        add(404, "The Idempotency-Key's first request made or changed an instance that has been deleted since");
        add(422, "The Idempotency-Key was used before for another request");
        responses.insert("202".into(), accepted().into());
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        let is_error = status.parse::<u16>().is_ok_and(|status| status >= 400);
        if is_error && response.content.is_empty() {
            let (content_type, schema) = if legacy {
                ("application/json", RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Envelope_ProblemExtra")))
            } else {
                (PROBLEM_JSON, RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem")))
            };
            response.content.insert(content_type.to_string(), Content::new(Some(schema)).into());
        }
        match status.as_str() {
            "401" => header(response, "WWW-Authenticate", "`Bearer`"),
            "429" => header(response, "Retry-After", "Whole seconds until the request would pass"),
            _ => {}
        }
    }
}

/// The operations on one instance, each taking its id as `id`.
const INSTANCE_OPERATIONS: &[&str] = &[
    "get_instance",
    "stop_instance",
    "start_instance",
    "restart_instance",
    "resize_instance",
    "rotate_password",
    "instance_logs",
    "instance_stats",
    "instance_events",
    "instance_operations",
    "delete_instance",
];

/// The operations on one user, each taking their name as `name`.
const USER_OPERATIONS: &[&str] = &["disable_user", "enable_user", "rotate_token", "change_quota", "remove_user"];

/// What an answer lets a client do next, as OpenAPI links (a client, or schemathesis's stateful
/// phase, follows them: create, then get, stop, start, resize, rotate, delete; a 202's operation,
/// polled): the schema of an answer's body, the operations its value leads to, the parameter they
/// take it as, and where it is in the body.
const LINKS: &[(&str, &[&str], &str, &str)] = &[
    ("InstanceView", INSTANCE_OPERATIONS, "id", "/id"),
    ("OperationView", &["get_operation"], "id", "/id"),
    ("OperationView", INSTANCE_OPERATIONS, "id", "/instance_id"),
    ("UserView", USER_OPERATIONS, "name", "/name"),
    ("UserWithToken", USER_OPERATIONS, "name", "/name"),
    ("Envelope_LegacyInstance", &["detail"], "docker_id", "/data/dockerId"),
];

/// Adds to each answer of `operation` the links its body's schema leads to (see `LINKS`).
fn add_links(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        let RefOr::T(response) = response else { continue };
        let Some(RefOr::T(content)) = response.content.get("application/json") else { continue };
        let Some(RefOr::Ref(body)) = &content.schema else { continue };
        let schema = body.ref_location.rsplit('/').next().unwrap_or_default();
        for (_, targets, parameter, pointer) in LINKS.iter().filter(|(name, ..)| *name == schema) {
            for target in *targets {
                let link =
                    LinkBuilder::new().operation_id(*target).parameter(*parameter, format!("$response.body#{pointer}"));
                response.links.insert(target.to_string(), link.build().into());
            }
        }
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// A change's answer with `Prefer: respond-async`.
fn accepted() -> Response {
    let mut response = ResponseBuilder::new()
        .description("Accepted (`Prefer: respond-async`): the operation, to follow at its `Location`")
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("OperationView")))),
        )
        .build();
    header(&mut response, "Location", "`/v1/operations/{id}`");
    header(&mut response, "Preference-Applied", "`respond-async`");
    response
}

fn header(response: &mut Response, name: &str, description: &str) {
    let header = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build();
    response.headers.insert(name.to_string(), header.into());
}
