//! The `paths` of an OpenAPI v3 group-version document: one path item per collection, object
//! and subresource, with an operation per verb the Registry serves. Each operation carries
//! `x-kubernetes-action` and `x-kubernetes-group-version-kind`, and its query parameters, as the
//! reference does — kubectl reads the `fieldValidation` parameter of PATCH to decide whether the
//! server validates fields itself.

use serde_json::{json, Map, Value};

use super::super::resource::ResourceInfo;
use super::catalogue::{DELETE_OPTIONS, PATCH, REF_PREFIX, STATUS};

/// Finds the component name of a kind: `(group, version, kind)`.
pub type KindLookup<'a> = &'a dyn Fn(&str, &str, &str) -> Option<String>;

/// The media types objects are served in.
const OBJECT_TYPES: &[&str] =
    &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"];
/// The media types a PATCH accepts.
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// The URL prefix of a group version: `/api/v1` or `/apis/<group>/<version>`.
pub fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// The group as it appears in operation IDs: `Core`, `Apps`, `RbacAuthorization`,
/// `StableExampleCom` (the `.k8s.io` suffix dropped, each part capitalised).
fn group_word(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    trimmed.split(['.', '-']).map(capitalise).collect()
}

/// The group as it appears in tags: `core`, `apps`, `rbacAuthorization`.
fn group_tag(group: &str) -> String {
    let word = group_word(group);
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => word,
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

fn query(name: &str, description: &str, type_: &str) -> Value {
    json!({"name": name, "in": "query", "description": description,
           "schema": {"type": type_, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true,
           "schema": {"type": "string", "uniqueItems": true}})
}

fn pretty() -> Value {
    query("pretty", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).", "string")
}

fn dry_run() -> Value {
    query("dryRun", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed", "string")
}

fn field_manager() -> Value {
    query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.", "string")
}

fn field_validation() -> Value {
    query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.", "string")
}

fn force() -> Value {
    query("force", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.", "boolean")
}

fn list_params(watchable: bool) -> Vec<Value> {
    let mut params = vec![
        query("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion.", "boolean"),
        query("continue", "The continue option should be set when retrieving more results from the server.", "string"),
        query("fieldSelector", "A selector to restrict the list of returned objects by their fields. Defaults to everything.", "string"),
        query("labelSelector", "A selector to restrict the list of returned objects by their labels. Defaults to everything.", "string"),
        query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
        query("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from. Defaults to unset", "string"),
        query("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to list calls. Defaults to unset", "string"),
        query("sendInitialEvents", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection.", "boolean"),
        query("timeoutSeconds", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.", "integer"),
    ];
    if watchable {
        params.push(query("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.", "boolean"));
    }
    params
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query("gracePeriodSeconds", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately.", "integer"),
        query("orphanDependents", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned.", "boolean"),
        query("propagationPolicy", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. Acceptable values are: 'Orphan', 'Background' and 'Foreground'.", "string"),
    ]
}

fn content(types: &[&str], schema: &Value) -> Value {
    let map: Map<String, Value> =
        types.iter().map(|t| (t.to_string(), json!({"schema": schema}))).collect();
    Value::Object(map)
}

fn responses(codes: &[(&str, &str)], schema: &Value) -> Value {
    let mut map = Map::new();
    for (code, description) in codes {
        map.insert(
            code.to_string(),
            json!({"description": description, "content": content(OBJECT_TYPES, schema)}),
        );
    }
    map.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(map)
}

/// What one operation needs besides its verb.
struct Op<'a> {
    action: &'static str,
    id: String,
    description: String,
    params: Vec<Value>,
    body: Option<(&'a [&'a str], Value)>,
    response: Value,
    codes: &'static [(&'static str, &'static str)],
    gvk: (&'a str, &'a str, &'a str),
    tag: &'a str,
}

impl Op<'_> {
    fn render(self) -> Value {
        let (group, version, kind) = self.gvk;
        let mut op = json!({
            "tags": [self.tag],
            "description": self.description,
            "operationId": self.id,
            "responses": responses(self.codes, &self.response),
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
        });
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some((types, schema)) = self.body {
            op["requestBody"] = json!({"content": content(types, &schema), "required": true});
        }
        op
    }
}

const OK: &[(&str, &str)] = &[("200", "OK")];
const CREATED: &[(&str, &str)] = &[("200", "OK"), ("201", "Created"), ("202", "Accepted")];
const REPLACED: &[(&str, &str)] = &[("200", "OK"), ("201", "Created")];
const DELETED: &[(&str, &str)] = &[("200", "OK"), ("202", "Accepted")];

/// Adds the path items of one resource (collection, object, all-namespaces list and the
/// subresources whose kinds have schemas) to `paths`.
pub fn add_resource(paths: &mut Map<String, Value>, info: &ResourceInfo, lookup: KindLookup<'_>) {
    let Some(kind_schema) = lookup(&info.group, &info.version, &info.kind) else { return };
    let (group, version, kind) = (info.group.as_str(), info.version.as_str(), info.kind.as_str());
    let tag = format!("{}_{version}", group_tag(group));
    let gv = format!("{}{}", group_word(group), capitalise(version));
    let scope = if info.namespaced { "Namespaced" } else { "" };
    let base = prefix(group, version);
    let ns = if info.namespaced { "/namespaces/{namespace}" } else { "" };
    let has = |verb: &str| info.verbs.iter().any(|v| v == verb);
    let object = reference(&kind_schema);
    let list = lookup(group, version, &info.list_kind).map(|n| reference(&n));
    let gvk = (group, version, kind);
    let mut common = vec![pretty()];
    if info.namespaced {
        common.insert(
            0,
            path_param("namespace", "object name and auth scope, such as for teams and projects"),
        );
    }

    // The collection.
    let mut collection = Map::new();
    if let (true, Some(list)) = (has("list"), &list) {
        let op = Op {
            action: "list",
            id: format!("list{gv}{scope}{kind}"),
            description: format!("list or watch objects of kind {kind}"),
            params: list_params(true),
            body: None,
            response: list.clone(),
            codes: OK,
            gvk,
            tag: &tag,
        };
        collection.insert("get".into(), op.render());
    }
    if has("create") {
        let op = Op {
            action: "post",
            id: format!("create{gv}{scope}{kind}"),
            description: format!("create a {kind}"),
            params: vec![dry_run(), field_manager(), field_validation()],
            body: Some((&["*/*"], object.clone())),
            response: object.clone(),
            codes: CREATED,
            gvk,
            tag: &tag,
        };
        collection.insert("post".into(), op.render());
    }
    if has("deletecollection") {
        let mut params = delete_params();
        params.extend(list_params(false));
        let op = Op {
            action: "deletecollection",
            id: format!("delete{gv}Collection{scope}{kind}"),
            description: format!("delete collection of {kind}"),
            params,
            body: Some((&["*/*"], reference(DELETE_OPTIONS))),
            response: reference(STATUS),
            codes: OK,
            gvk,
            tag: &tag,
        };
        collection.insert("delete".into(), op.render());
    }
    if !collection.is_empty() {
        collection.insert("parameters".into(), Value::Array(common.clone()));
        paths.insert(format!("{base}{ns}/{}", info.plural), Value::Object(collection));
    }

    // Across namespaces.
    if let (true, true, Some(list)) = (info.namespaced, has("list"), &list) {
        let op = Op {
            action: "list",
            id: format!("list{gv}{kind}ForAllNamespaces"),
            description: format!("list or watch objects of kind {kind}"),
            params: list_params(true),
            body: None,
            response: list.clone(),
            codes: OK,
            gvk,
            tag: &tag,
        };
        paths.insert(
            format!("{base}/{}", info.plural),
            json!({"get": op.render(), "parameters": [pretty()]}),
        );
    }

    // One object.
    let mut named_params = vec![path_param("name", &format!("name of the {kind}"))];
    named_params.extend(common.iter().cloned());
    let mut item = Map::new();
    if has("get") {
        let op = Op {
            action: "get",
            id: format!("read{gv}{scope}{kind}"),
            description: format!("read the specified {kind}"),
            params: Vec::new(),
            body: None,
            response: object.clone(),
            codes: OK,
            gvk,
            tag: &tag,
        };
        item.insert("get".into(), op.render());
    }
    add_writes(
        &mut item,
        has("update"),
        has("patch"),
        &object,
        &format!("{gv}{scope}{kind}"),
        kind,
        gvk,
        &tag,
    );
    if has("delete") {
        let op = Op {
            action: "delete",
            id: format!("delete{gv}{scope}{kind}"),
            description: format!("delete a {kind}"),
            params: delete_params(),
            body: Some((&["*/*"], reference(DELETE_OPTIONS))),
            response: reference(STATUS),
            codes: DELETED,
            gvk,
            tag: &tag,
        };
        item.insert("delete".into(), op.render());
    }
    if !item.is_empty() {
        item.insert("parameters".into(), Value::Array(named_params.clone()));
        paths.insert(format!("{base}{ns}/{}/{{name}}", info.plural), Value::Object(item));
    }

    // Subresources with a kind of their own (status, scale, eviction, …); streaming and proxy
    // subresources have no schema and are left out.
    for sub in &info.subresource_info {
        let (sg, sv) = if sub.group.is_empty() && sub.version.is_empty() {
            (group, version)
        } else {
            (sub.group.as_str(), sub.version.as_str())
        };
        let Some(sub_schema) = lookup(sg, sv, &sub.kind) else { continue };
        if matches!(sub.name.as_str(), "log" | "exec" | "attach" | "portforward" | "proxy") {
            continue;
        }
        let sub_object = reference(&sub_schema);
        let sub_gvk = (sg, sv, sub.kind.as_str());
        let suffix = capitalise(&sub.name);
        let id = format!("{gv}{scope}{kind}{suffix}");
        let verb = |v: &str| sub.verbs.iter().any(|x| x == v);
        let mut path = Map::new();
        if verb("get") {
            let op = Op {
                action: "get",
                id: format!("read{id}"),
                description: format!("read {} of the specified {kind}", sub.name),
                params: Vec::new(),
                body: None,
                response: sub_object.clone(),
                codes: OK,
                gvk: sub_gvk,
                tag: &tag,
            };
            path.insert("get".into(), op.render());
        }
        if verb("create") {
            let op = Op {
                action: "post",
                id: format!("create{id}"),
                description: format!("create {} of a {kind}", sub.name),
                params: vec![dry_run(), field_manager(), field_validation()],
                body: Some((&["*/*"], sub_object.clone())),
                response: sub_object.clone(),
                codes: CREATED,
                gvk: sub_gvk,
                tag: &tag,
            };
            path.insert("post".into(), op.render());
        }
        add_writes(&mut path, verb("update"), verb("patch"), &sub_object, &id, kind, sub_gvk, &tag);
        if !path.is_empty() {
            path.insert("parameters".into(), Value::Array(named_params.clone()));
            paths.insert(
                format!("{base}{ns}/{}/{{name}}/{}", info.plural, sub.name),
                Value::Object(path),
            );
        }
    }
}

/// PUT and PATCH of an object or subresource.
#[allow(clippy::too_many_arguments)]
fn add_writes(
    path: &mut Map<String, Value>,
    update: bool,
    patch: bool,
    object: &Value,
    id: &str,
    kind: &str,
    gvk: (&str, &str, &str),
    tag: &str,
) {
    if update {
        let op = Op {
            action: "put",
            id: format!("replace{id}"),
            description: format!("replace the specified {kind}"),
            params: vec![dry_run(), field_manager(), field_validation()],
            body: Some((&["*/*"], object.clone())),
            response: object.clone(),
            codes: REPLACED,
            gvk,
            tag,
        };
        path.insert("put".into(), op.render());
    }
    if patch {
        let op = Op {
            action: "patch",
            id: format!("patch{id}"),
            description: format!("partially update the specified {kind}"),
            params: vec![dry_run(), field_manager(), field_validation(), force()],
            body: Some((PATCH_TYPES, reference(PATCH))),
            response: object.clone(),
            codes: REPLACED,
            gvk,
            tag,
        };
        path.insert("patch".into(), op.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_and_tags_follow_the_reference() {
        assert_eq!(group_word(""), "Core");
        assert_eq!(group_word("rbac.authorization.k8s.io"), "RbacAuthorization");
        assert_eq!(group_word("stable.example.com"), "StableExampleCom");
        assert_eq!(group_tag("rbac.authorization.k8s.io"), "rbacAuthorization");
        assert_eq!(group_tag(""), "core");
    }
}
