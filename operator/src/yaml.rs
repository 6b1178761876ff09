//! YAML rendering with a stable layout: the value passes through `serde_json::Value` (keys
//! sorted) and then becomes a YAML value, each number an integer where it is one.
//!
//! It was written when serde_json's `arbitrary_precision` made numbers serialise as private
//! maps; that feature is gone from the workspace, and this stays because the committed CRD
//! YAML (`crds/`, the chart) is rendered in this layout.

use serde::Serialize;
use serde_json::Value as Json;
use serde_norway::{Mapping, Number, Value as Yaml};

/// Renders `value` as YAML with plain numbers.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_norway::Error> {
    let json =
        serde_json::to_value(value).map_err(<serde_norway::Error as serde::ser::Error>::custom)?;
    serde_norway::to_string(&convert(json))
}

fn convert(json: Json) -> Yaml {
    match json {
        Json::Null => Yaml::Null,
        Json::Bool(b) => Yaml::Bool(b),
        Json::Number(n) => Yaml::Number(number(&n)),
        Json::String(s) => Yaml::String(s),
        Json::Array(items) => Yaml::Sequence(items.into_iter().map(convert).collect()),
        Json::Object(map) => Yaml::Mapping(
            map.into_iter()
                .map(|(key, value)| (Yaml::String(key), convert(value)))
                .collect::<Mapping>(),
        ),
    }
}

fn number(n: &serde_json::Number) -> Number {
    if let Some(i) = n.as_i64() {
        Number::from(i)
    } else if let Some(u) = n.as_u64() {
        Number::from(u)
    } else {
        // Only schema bounds and the approval probability are fractional; none is money.
        Number::from(n.as_f64().unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_render_plainly() {
        let value = serde_json::json!({"int": 3, "neg": -2, "big": u64::MAX, "frac": 0.7});
        let yaml = super::to_string(&value).unwrap();
        assert_eq!(
            yaml,
            "big: 18446744073709551615\nfrac: 0.7\nint: 3\nneg: -2\n"
        );
    }
}
