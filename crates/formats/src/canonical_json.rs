//! Canonical JSON: the bytes farm hashes and writes for digest-bearing
//! documents (the build manifest, OCI configs, manifests and indexes, the
//! lock's farm.toml section keys).
//!
//! Object keys are sorted by their UTF-8 bytes at every depth; strings and
//! numbers are written as serde_json writes them. [`to_vec`] has no
//! insignificant whitespace; [`to_vec_pretty`] (for files people read) has
//! serde_json's two-space indent and a trailing newline.
//!
//! The order does not depend on the value's own: struct fields come in
//! declaration order, `HashMap`s (oci-spec's annotations, labels, port
//! sets) in a different order every run, and `serde_json::Map` itself keeps
//! insertion order as soon as any crate in the build turns on serde_json's
//! `preserve_order` feature. So every object is re-built with its keys
//! inserted in sorted order, which a `Map` of either kind then iterates in.

use serde::Serialize;
use serde_json::{Map, Value};

/// Compact canonical JSON: sorted keys, no whitespace. The bytes to hash.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&sorted(serde_json::to_value(value)?))
}

/// Canonical JSON for a file: sorted keys, two-space indent, a trailing
/// newline.
pub fn to_vec_pretty<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec_pretty(&sorted(serde_json::to_value(value)?))?;
    out.push(b'\n');
    Ok(out)
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let mut out = Map::with_capacity(entries.len());
            for (key, value) in entries {
                out.insert(key, sorted(value));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        scalar => scalar,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Serialize;

    use super::*;

    #[test]
    fn keys_are_sorted_at_every_depth_whatever_the_map_order() {
        let mut inner = HashMap::new();
        for k in ["zeta", "alpha", "Mid", "beta"] {
            inner.insert(k.to_string(), 1);
        }
        let value = serde_json::json!({"b": [inner.clone(), {"y": null, "x": "é\"\n"}], "a": inner});
        let got = String::from_utf8(to_vec(&value).unwrap()).unwrap();
        assert_eq!(
            got,
            r#"{"a":{"Mid":1,"alpha":1,"beta":1,"zeta":1},"b":[{"Mid":1,"alpha":1,"beta":1,"zeta":1},{"x":"é\"\n","y":null}]}"#
        );
    }

    #[derive(Serialize)]
    struct Document {
        zebra: u32,
        #[serde(rename = "Upper")]
        upper: bool,
        apple: Vec<Inner>,
        empty: HashMap<String, u8>,
        nothing: Vec<u8>,
    }

    #[derive(Serialize)]
    struct Inner {
        é: &'static str,
        e: f64,
    }

    fn document() -> Document {
        Document {
            zebra: 1,
            upper: true,
            apple: vec![Inner { é: "x", e: 0.5 }],
            empty: HashMap::new(),
            nothing: vec![],
        }
    }

    #[test]
    fn struct_fields_are_sorted_by_bytes_not_declaration_order() {
        // "U" (0x55) sorts before "a"; "é" (0xC3 0xA9) after "e".
        assert_eq!(
            String::from_utf8(to_vec(&document()).unwrap()).unwrap(),
            r#"{"Upper":true,"apple":[{"e":0.5,"é":"x"}],"empty":{},"nothing":[],"zebra":1}"#
        );
    }

    #[test]
    fn pretty_is_two_space_indented_with_a_trailing_newline() {
        assert_eq!(
            String::from_utf8(to_vec_pretty(&document()).unwrap()).unwrap(),
            "{\n  \"Upper\": true,\n  \"apple\": [\n    {\n      \"e\": 0.5,\n      \"é\": \"x\"\n    }\n  ],\n  \
             \"empty\": {},\n  \"nothing\": [],\n  \"zebra\": 1\n}\n"
        );
    }

    #[test]
    fn scalars_at_the_top_are_written_as_they_are() {
        assert_eq!(to_vec("a\u{1}").unwrap(), br#""a\u0001""#);
        assert_eq!(to_vec(&[3, 1, 2]).unwrap(), b"[3,1,2]", "arrays keep their order");
        assert_eq!(to_vec_pretty(&Option::<u8>::None).unwrap(), b"null\n");
    }
}
