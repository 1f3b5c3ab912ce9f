//! Canonical JSON for the layout's documents: object keys sorted by their
//! bytes, no insignificant whitespace. oci-spec keeps annotations, labels
//! and port sets in `HashMap`s, whose order changes from run to run, so its
//! own serialisation cannot be hashed.

use serde::Serialize;
use serde_json::Value;

pub(crate) fn to_canonical_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write(&value, &mut out)?;
    Ok(out)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                write(value, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_are_sorted_at_every_depth_whatever_the_map_order() {
        let mut inner = HashMap::new();
        for k in ["zeta", "alpha", "Mid", "beta"] {
            inner.insert(k.to_string(), 1);
        }
        let value = serde_json::json!({"b": [inner.clone(), {"y": null, "x": "é\"\n"}], "a": inner});
        let got = String::from_utf8(to_canonical_vec(&value).unwrap()).unwrap();
        assert_eq!(
            got,
            r#"{"a":{"Mid":1,"alpha":1,"beta":1,"zeta":1},"b":[{"Mid":1,"alpha":1,"beta":1,"zeta":1},{"x":"é\"\n","y":null}]}"#
        );
    }
}
