//! OpenAPI v2 in protobuf: the `openapi.v2.Document` message of gnostic (github.com/google/gnostic
//! `openapiv2/OpenAPIv2.proto`), which kubectl ≤ 1.26 asks for with
//! `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`. Only the messages and
//! fields a Kubernetes document uses are declared (field numbers as in the .proto); vendor
//! extensions, defaults and enums travel as `Any { yaml }` with JSON text, which is YAML.

use serde_json::Value;

/// `openapi.v2.Document`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(string, repeated, tag = "5")]
    pub schemes: Vec<String>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    #[prost(message, repeated, tag = "12")]
    pub security: Vec<SecurityRequirement>,
    #[prost(message, optional, tag = "13")]
    pub security_definitions: Option<SecurityDefinitions>,
}

/// `openapi.v2.Info`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `openapi.v2.Any`: a value as YAML text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

/// `openapi.v2.NamedAny`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// `openapi.v2.Paths`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

/// `openapi.v2.NamedPathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

/// `openapi.v2.PathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
}

/// `openapi.v2.Operation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.ParametersItem` (only the `parameter` arm is used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

/// `openapi.v2.Parameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
    pub oneof: Option<parameter::Oneof>,
}

/// The arms of `openapi.v2.Parameter`.
pub mod parameter {
    /// `oneof oneof`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    #[allow(clippy::large_enum_variant)] // prost's shape for a protobuf oneof
    pub enum Oneof {
        #[prost(message, tag = "1")]
        BodyParameter(super::BodyParameter),
        #[prost(message, tag = "2")]
        NonBodyParameter(super::NonBodyParameter),
    }
}

/// `openapi.v2.BodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
}

/// `openapi.v2.NonBodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
    pub oneof: Option<non_body_parameter::Oneof>,
}

/// The arms of `openapi.v2.NonBodyParameter` that Kubernetes uses.
pub mod non_body_parameter {
    /// `oneof oneof`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "3")]
        QueryParameterSubSchema(super::SimpleParameter),
        #[prost(message, tag = "4")]
        PathParameterSubSchema(super::PathParameter),
    }
}

/// `openapi.v2.QueryParameterSubSchema` (its first fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SimpleParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

/// `openapi.v2.PathParameterSubSchema` (its first fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

/// `openapi.v2.Responses`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

/// `openapi.v2.NamedResponseValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// `openapi.v2.ResponseValue` (only the `response` arm is used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

/// `openapi.v2.Response`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

/// `openapi.v2.SchemaItem` (only the `schema` arm is used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}

/// `openapi.v2.Definitions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedSchema` (also the element of `Properties`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

/// `openapi.v2.Properties`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.TypeItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// `openapi.v2.ItemsItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

/// `openapi.v2.AdditionalPropertiesItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

/// The arms of `openapi.v2.AdditionalPropertiesItem`.
pub mod additional_properties_item {
    /// `oneof oneof`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Schema(Box<super::Schema>),
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

/// `openapi.v2.Schema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.SecurityRequirement`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityRequirement {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedStringArray>,
}

/// `openapi.v2.NamedStringArray`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedStringArray {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<StringArray>,
}

/// `openapi.v2.StringArray`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringArray {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// `openapi.v2.SecurityDefinitions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityDefinitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSecurityDefinitionsItem>,
}

/// `openapi.v2.NamedSecurityDefinitionsItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSecurityDefinitionsItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<SecurityDefinitionsItem>,
}

/// `openapi.v2.SecurityDefinitionsItem` (only the API key arm, field 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityDefinitionsItem {
    #[prost(message, optional, tag = "2")]
    pub api_key_security: Option<ApiKeySecurity>,
}

/// `openapi.v2.ApiKeySecurity`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApiKeySecurity {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(string, tag = "4")]
    pub description: String,
}

/// Decodes a protobuf OpenAPI v2 document (what kubectl does with `/openapi/v2`).
pub fn decode(bytes: &[u8]) -> Result<Document, prost::DecodeError> {
    prost::Message::decode(bytes)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn any(v: &Value) -> Any {
    Any { yaml: v.to_string() }
}

fn extensions(v: &Value) -> Vec<NamedAny> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny { name: k.clone(), value: Some(any(v)) })
        .collect()
}

/// A JSON schema in the gnostic message.
pub fn schema(v: &Value) -> Schema {
    let int = |key: &str| v.get(key).and_then(Value::as_i64).unwrap_or_default();
    let float = |key: &str| v.get(key).and_then(Value::as_f64).unwrap_or_default();
    let types = match v.get("type") {
        Some(Value::String(t)) => Some(TypeItem { value: vec![t.clone()] }),
        Some(Value::Array(_)) => Some(TypeItem { value: strings(v, "type") }),
        _ => None,
    };
    let additional_properties = match v.get("additionalProperties") {
        Some(Value::Bool(b)) => Some(additional_properties_item::Oneof::Boolean(*b)),
        Some(s @ Value::Object(_)) => {
            Some(additional_properties_item::Oneof::Schema(Box::new(schema(s))))
        }
        _ => None,
    }
    .map(|oneof| Box::new(AdditionalPropertiesItem { oneof: Some(oneof) }));
    Schema {
        r#ref: text(v, "$ref"),
        format: text(v, "format"),
        title: text(v, "title"),
        description: text(v, "description"),
        default: v.get("default").map(any),
        maximum: float("maximum"),
        minimum: float("minimum"),
        max_length: int("maxLength"),
        min_length: int("minLength"),
        pattern: text(v, "pattern"),
        max_items: int("maxItems"),
        min_items: int("minItems"),
        unique_items: v.get("uniqueItems").and_then(Value::as_bool).unwrap_or_default(),
        required: strings(v, "required"),
        r#enum: v.get("enum").and_then(Value::as_array).into_iter().flatten().map(any).collect(),
        additional_properties,
        r#type: types,
        items: v
            .get("items")
            .filter(|i| i.is_object())
            .map(|i| ItemsItem { schema: vec![schema(i)] }),
        all_of: v
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(schema)
            .collect(),
        properties: v.get("properties").and_then(Value::as_object).map(|props| Properties {
            additional_properties: props
                .iter()
                .map(|(name, s)| NamedSchema { name: name.clone(), value: Some(schema(s)) })
                .collect(),
        }),
        read_only: v.get("readOnly").and_then(Value::as_bool).unwrap_or_default(),
        example: v.get("example").map(any),
        vendor_extension: extensions(v),
    }
}

fn parameter(p: &Value) -> ParametersItem {
    let oneof = match p.get("in").and_then(Value::as_str) {
        Some("body") => parameter::Oneof::BodyParameter(BodyParameter {
            description: text(p, "description"),
            name: text(p, "name"),
            r#in: "body".into(),
            required: p.get("required").and_then(Value::as_bool).unwrap_or_default(),
            schema: p.get("schema").map(schema),
        }),
        Some("path") => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(non_body_parameter::Oneof::PathParameterSubSchema(PathParameter {
                required: true,
                r#in: "path".into(),
                description: text(p, "description"),
                name: text(p, "name"),
                r#type: text(p, "type"),
                unique_items: p.get("uniqueItems").and_then(Value::as_bool).unwrap_or_default(),
            })),
        }),
        _ => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(SimpleParameter {
                required: p.get("required").and_then(Value::as_bool).unwrap_or_default(),
                r#in: "query".into(),
                description: text(p, "description"),
                name: text(p, "name"),
                r#type: text(p, "type"),
                unique_items: p.get("uniqueItems").and_then(Value::as_bool).unwrap_or_default(),
            })),
        }),
    };
    ParametersItem { parameter: Some(Parameter { oneof: Some(oneof) }) }
}

fn parameters(v: &Value) -> Vec<ParametersItem> {
    v.get("parameters").and_then(Value::as_array).into_iter().flatten().map(parameter).collect()
}

fn operation(op: Option<&Value>) -> Option<Operation> {
    let op = op?;
    let responses = op.get("responses").and_then(Value::as_object).map(|codes| Responses {
        response_code: codes
            .iter()
            .map(|(code, r)| NamedResponseValue {
                name: code.clone(),
                value: Some(ResponseValue {
                    response: Some(Response {
                        description: text(r, "description"),
                        schema: r.get("schema").map(|s| SchemaItem { schema: Some(schema(s)) }),
                    }),
                }),
            })
            .collect(),
    });
    Some(Operation {
        tags: strings(op, "tags"),
        description: text(op, "description"),
        operation_id: text(op, "operationId"),
        produces: strings(op, "produces"),
        consumes: strings(op, "consumes"),
        parameters: parameters(op),
        responses,
        schemes: strings(op, "schemes"),
        vendor_extension: extensions(op),
    })
}

/// The v2 JSON document ([`super::v2::document`]) as a gnostic `Document`.
pub fn document(doc: &Value) -> Document {
    let paths = doc.get("paths").and_then(Value::as_object).map(|paths| Paths {
        path: paths
            .iter()
            .map(|(name, item)| NamedPathItem {
                name: name.clone(),
                value: Some(PathItem {
                    get: operation(item.get("get")),
                    put: operation(item.get("put")),
                    post: operation(item.get("post")),
                    delete: operation(item.get("delete")),
                    patch: operation(item.get("patch")),
                    parameters: parameters(item),
                }),
            })
            .collect(),
    });
    let definitions = doc.get("definitions").and_then(Value::as_object).map(|defs| Definitions {
        additional_properties: defs
            .iter()
            .map(|(name, s)| NamedSchema { name: name.clone(), value: Some(schema(s)) })
            .collect(),
    });
    Document {
        swagger: text(doc, "swagger"),
        info: doc
            .get("info")
            .map(|i| Info { title: text(i, "title"), version: text(i, "version") }),
        schemes: Vec::new(),
        paths,
        definitions,
        security: vec![SecurityRequirement {
            additional_properties: vec![NamedStringArray {
                name: "BearerToken".into(),
                value: Some(StringArray { value: Vec::new() }),
            }],
        }],
        security_definitions: Some(SecurityDefinitions {
            additional_properties: vec![NamedSecurityDefinitionsItem {
                name: "BearerToken".into(),
                value: Some(SecurityDefinitionsItem {
                    api_key_security: Some(ApiKeySecurity {
                        r#type: "apiKey".into(),
                        name: "authorization".into(),
                        r#in: "header".into(),
                        description: "Bearer Token authentication".into(),
                    }),
                }),
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::json;

    #[test]
    fn schemas_round_trip_through_the_wire_format() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": {"/api/v1/pods": {"get": {"operationId": "listCoreV1PodForAllNamespaces",
                "parameters": [{"name": "limit", "in": "query", "type": "integer", "uniqueItems": true}],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/io.k8s.api.core.v1.PodList"}}},
                "x-kubernetes-action": "list"}}},
            "definitions": {"io.k8s.api.core.v1.Pod": {
                "type": "object", "description": "Pod is a collection of containers.",
                "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.core.v1.PodSpec", "description": "spec"},
                               "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}]}},
        });
        let bytes = document(&doc).encode_to_vec();
        let decoded = Document::decode(bytes.as_slice()).unwrap();
        let pod = &decoded.definitions.unwrap().additional_properties[0];
        assert_eq!(pod.name, "io.k8s.api.core.v1.Pod");
        let pod = pod.value.as_ref().unwrap();
        assert_eq!(pod.r#type.as_ref().unwrap().value, ["object"]);
        let gvk = &pod.vendor_extension[0];
        assert_eq!(gvk.name, "x-kubernetes-group-version-kind");
        let yaml: Value = serde_yaml::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(yaml[0]["kind"], "Pod");
        let props = &pod.properties.as_ref().unwrap().additional_properties;
        let labels = props.iter().find(|p| p.name == "labels").unwrap().value.as_ref().unwrap();
        assert!(matches!(
            labels.additional_properties.as_deref().and_then(|a| a.oneof.as_ref()),
            Some(additional_properties_item::Oneof::Schema(_))
        ));
        let list = decoded.paths.unwrap().path[0].value.as_ref().unwrap().get.clone().unwrap();
        assert_eq!(list.operation_id, "listCoreV1PodForAllNamespaces");
    }
}
