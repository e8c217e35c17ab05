//! Conversion of JSON claims to `google.protobuf.Struct`, the type of the
//! `claims` field of `ValidateJWTSVIDResponse`.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Value as Json};

/// Converts a JSON object to a protobuf `Struct`. Numbers become doubles,
/// as `google.protobuf.Value` has no integer type.
pub fn json_object_to_struct(object: &Map<String, Json>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect(),
    }
}

fn json_to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(prost_types::NullValue::NullValue.into()),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(object) => Kind::StructValue(json_object_to_struct(object)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_every_json_kind() {
        let json = serde_json::json!({
            "sub": "spiffe://example.org/web",
            "aud": ["a", "b"],
            "exp": 1700000000,
            "admin": false,
            "extra": null,
            "nested": { "k": 1.5 }
        });
        let Json::Object(object) = json else {
            panic!("object literal");
        };
        let converted = json_object_to_struct(&object);

        let kind = |key: &str| converted.fields.get(key).and_then(|v| v.kind.clone());
        assert_eq!(
            kind("sub"),
            Some(Kind::StringValue("spiffe://example.org/web".into()))
        );
        assert_eq!(kind("exp"), Some(Kind::NumberValue(1_700_000_000.0)));
        assert_eq!(kind("admin"), Some(Kind::BoolValue(false)));
        assert_eq!(kind("extra"), Some(Kind::NullValue(0)));
        let Some(Kind::ListValue(list)) = kind("aud") else {
            panic!("aud is a list");
        };
        assert_eq!(list.values.len(), 2);
        let Some(Kind::StructValue(nested)) = kind("nested") else {
            panic!("nested is a struct");
        };
        assert_eq!(
            nested.fields.get("k").and_then(|v| v.kind.clone()),
            Some(Kind::NumberValue(1.5))
        );
    }
}
