//! The raw config: what the file says, as serde structs with
//! `deny_unknown_fields` and every value with its span, so problems can be
//! placed. [`parse_raw`] reports unknown keys and values of the wrong type
//! key by key and keeps the rest, so validation still sees everything else.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::Problems;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) camera: Option<Spanned<String>>,
    pub(super) source: Option<RawSource>,
    pub(super) ring: Option<RawRing>,
    pub(super) snapshot: Option<RawSnapshot>,
    pub(super) output: Option<RawOutput>,
    pub(super) retention: Option<RawRetention>,
    pub(super) encoder: Option<RawEncoder>,
    pub(super) http: Option<RawHttp>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) device: Option<Spanned<StringOrInt>>,
    pub(super) width: Option<Spanned<i64>>,
    pub(super) height: Option<Spanned<i64>>,
    pub(super) fps: Option<Spanned<f64>>,
    pub(super) pixel_format: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) strict: Option<Spanned<bool>>,
    pub(super) max_frame_bytes: Option<Spanned<StringOrInt>>,
    pub(super) stall_timeout: Option<Spanned<String>>,
    pub(super) controls: Option<Spanned<BTreeMap<String, Spanned<RawControl>>>>,
}

/// A `[source.controls]` value: a number, a boolean, or a menu item's name.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum RawControl {
    Int(i64),
    Bool(bool),
    Str(String),
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRing {
    pub(super) frames: Option<Spanned<i64>>,
    pub(super) when_full: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSnapshot {
    pub(super) every: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) quality: Option<Spanned<i64>>,
    pub(super) subsampling: Option<Spanned<StringOrInt>>,
    pub(super) compression: Option<Spanned<String>>,
    pub(super) passthrough: Option<Spanned<bool>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    pub(super) dir: Option<Spanned<String>>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) fsync: Option<Spanned<bool>>,
    pub(super) manifest: Option<Spanned<bool>>,
    pub(super) file_mode: Option<Spanned<String>>,
    pub(super) dir_mode: Option<Spanned<String>>,
    pub(super) write_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) max_bytes: Option<Spanned<StringOrInt>>,
    pub(super) max_files: Option<Spanned<i64>>,
    pub(super) max_age: Option<Spanned<String>>,
    pub(super) min_free: Option<Spanned<StringOrInt>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncoder {
    pub(super) threads: Option<Spanned<i64>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) allow_remote: Option<Spanned<bool>>,
}

/// A value written either as a string or as a bare integer
/// (`subsampling = 420` or `"420"`, `device = 0` or `"/dev/video0"`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrInt {
    Str(String),
    Int(i64),
}

impl fmt::Display for StringOrInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringOrInt::Str(s) => f.write_str(s),
            StringOrInt::Int(i) => write!(f, "{i}"),
        }
    }
}

/// The field names serde knows for `T`, read from its `Deserialize` impl so
/// the unknown-key check can never disagree with the structs.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Introspect(Option<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &mut Introspect {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("introspection only"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("introspection only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut introspect = Introspect(None);
    let _ = T::deserialize(&mut introspect);
    introspect.0.unwrap_or(&[])
}

/// Deserializes one section (or the top-level `camera`) from a value, to
/// check it on its own.
fn check_section(name: &str, value: Spanned<DeValue<'_>>) -> Result<(), toml::de::Error> {
    let deserializer = toml::de::ValueDeserializer::from(value);
    match name {
        "camera" => Spanned::<String>::deserialize(deserializer).map(drop),
        "source" => RawSource::deserialize(deserializer).map(drop),
        "ring" => RawRing::deserialize(deserializer).map(drop),
        "snapshot" => RawSnapshot::deserialize(deserializer).map(drop),
        "output" => RawOutput::deserialize(deserializer).map(drop),
        "retention" => RawRetention::deserialize(deserializer).map(drop),
        "encoder" => RawEncoder::deserialize(deserializer).map(drop),
        "http" => RawHttp::deserialize(deserializer).map(drop),
        _ => Ok(()),
    }
}

/// Parses the text into raw structs. Unknown keys and values of the wrong
/// type are reported and left out, key by key, so the rest is still
/// validated and every problem is listed at once; only a syntax error stops
/// early.
pub(super) fn parse_raw(text: &str, problems: &mut Problems<'_>) -> Option<RawConfig> {
    let document = match toml::de::DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => {
            problems.add(error.span(), "", error.message().trim().to_owned());
            return None;
        }
    };
    let sections: [(&str, &'static [&'static str]); 7] = [
        ("source", field_names::<RawSource>()),
        ("ring", field_names::<RawRing>()),
        ("snapshot", field_names::<RawSnapshot>()),
        ("output", field_names::<RawOutput>()),
        ("retention", field_names::<RawRetention>()),
        ("encoder", field_names::<RawEncoder>()),
        ("http", field_names::<RawHttp>()),
    ];
    let top = field_names::<RawConfig>();
    let document_span = document.span();
    let mut clean = DeTable::new();
    for (key, value) in document.into_inner() {
        let name = key.get_ref().to_string();
        if !top.contains(&name.as_str()) {
            problems.add(
                Some(key.span()),
                &name,
                format!("unknown key; expected one of: {}", top.join(", ")),
            );
            continue;
        }
        let Some((_, fields)) = sections.iter().find(|(s, _)| *s == name) else {
            // A top-level value such as `camera`.
            match check_section(&name, value.clone()) {
                Ok(()) => {
                    clean.insert(key, value);
                }
                Err(error) => problems.add(
                    error.span().or(Some(value.span())),
                    &name,
                    error.message().trim().to_owned(),
                ),
            }
            continue;
        };
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            problems.add(Some(span), &name, format!("must be a table: [{name}]"));
            continue;
        };
        let mut kept = DeTable::new();
        for (inner, inner_value) in table {
            let inner_name = inner.get_ref().to_string();
            let key_path = format!("{name}.{inner_name}");
            if !fields.contains(&inner_name.as_str()) {
                problems.add(
                    Some(inner.span()),
                    &key_path,
                    format!("unknown key; [{name}] takes: {}", fields.join(", ")),
                );
                continue;
            }
            let mut single = DeTable::new();
            single.insert(inner.clone(), inner_value.clone());
            if let Err(error) =
                check_section(&name, Spanned::new(span.clone(), DeValue::Table(single)))
            {
                let at = error.span().unwrap_or(inner_value.span());
                problems.add(Some(at), &key_path, error.message().trim().to_owned());
                continue;
            }
            kept.insert(inner, inner_value);
        }
        clean.insert(key, Spanned::new(span, DeValue::Table(kept)));
    }
    let deserializer =
        toml::de::ValueDeserializer::from(Spanned::new(document_span, DeValue::Table(clean)));
    match RawConfig::deserialize(deserializer) {
        Ok(raw) => Some(raw),
        Err(error) => {
            problems.add(error.span(), "", error.message().trim().to_owned());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_come_from_serde() {
        assert_eq!(field_names::<RawRing>(), ["frames", "when_full"]);
    }
}
