//! File names: the `output.name` template, rendered per frame, and matched
//! back against the names on disk to find the files framerec owns.
//!
//! Placeholders: `{camera}`, `{seq}` (10 digits, zero-padded), `{seq:N}`
//! (N digits), `{time:FORMAT}` (chrono strftime of the capture time) and
//! `{ext}`. Rendering does no I/O and allocates nothing once the output
//! string has grown to its working size.

use std::fmt::Write as _;
use std::time::SystemTime;

use chrono::format::{Fixed, Item, Numeric, Pad, StrftimeItems};
use chrono::{DateTime, Local, Utc};
use regex::Regex;

use crate::frame::TimeZone;

/// The digits `{seq}` is padded to when no width is given.
pub(crate) const DEFAULT_SEQ_WIDTH: usize = 10;

/// A problem with a name template, reported by `check` with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "the template has no {{seq}}: without it, names would repeat and files be overwritten"
    )]
    NoSeq,
    #[error("unknown placeholder {{{0}}}: use {{camera}}, {{seq}}, {{seq:N}}, {{time:FORMAT}} or {{ext}}")]
    UnknownPlaceholder(String),
    #[error("a '{{' is never closed")]
    Unclosed,
    #[error("a '}}' has no matching '{{'")]
    Unopened,
    #[error("{{seq:{0}}} needs a width from 1 to 20 digits")]
    SeqWidth(String),
    #[error("invalid strftime format in {{time:{0}}}")]
    TimeFormat(String),
    #[error("{{seq}} or {{camera}} runs straight into another number: put a separator such as '-' or '_' between them")]
    Ambiguous,
    #[error("the template is empty")]
    Empty,
    #[error(
        "a rendered name would leave the output directory ({0}): use relative names without '..'"
    )]
    LeavesDir(String),
    #[error("a rendered name has an empty, '.' or hidden part ({0}): names starting with '.' are reserved for temporary files")]
    BadComponent(String),
}

#[derive(Clone, Debug)]
enum Part {
    Literal(String),
    Camera,
    Seq { width: usize },
    Time { items: Vec<Item<'static>> },
    Ext,
}

/// A parsed `output.name` template.
#[derive(Clone, Debug)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses and checks a template. It must contain `{seq}`, and no name it
    /// renders may leave the output directory or be hidden.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        if source.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            if rest.as_bytes()[i] == b'}' {
                return Err(TemplateError::Unopened);
            }
            let after = &rest[i + 1..];
            let end = after.find('}').ok_or(TemplateError::Unclosed)?;
            let inner = &after[..end];
            if inner.contains('{') {
                return Err(TemplateError::Unclosed);
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(parse_placeholder(inner)?);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| matches!(p, Part::Seq { .. })) {
            return Err(TemplateError::NoSeq);
        }
        // {seq}'s digits must be told apart from their neighbours' when names
        // are read back: no two numbers of varying width side by side.
        for pair in parts.windows(2) {
            let ambiguous = match pair {
                [Part::Seq { .. }, Part::Seq { .. }] => true,
                [Part::Time { items }, Part::Seq { .. }] => varying_digits_at(items, false),
                [Part::Seq { .. }, Part::Time { items }] => varying_digits_at(items, true),
                // A camera name may end in digits ("cam1"): "cam" + "1..." would
                // read as another camera's files.
                [Part::Camera, Part::Seq { .. }] => true,
                [Part::Camera, Part::Time { items }] => {
                    matches!(items.first(), Some(Item::Numeric(..)))
                }
                _ => false,
            };
            if ambiguous {
                return Err(TemplateError::Ambiguous);
            }
        }
        let template = Template {
            source: source.to_owned(),
            parts,
        };
        template.check_paths()?;
        Ok(template)
    }

    /// The template as written in the config.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// How many path components a rendered name has (directories + file).
    pub fn depth(&self) -> usize {
        let mut sample = String::new();
        self.render(
            "cam",
            1,
            SystemTime::UNIX_EPOCH,
            TimeZone::Utc,
            "jpg",
            &mut sample,
        );
        sample.split('/').count()
    }

    /// Renders the name of snapshot `seq` into `out` (cleared first), relative
    /// to the output directory, with '/' between components.
    pub(crate) fn render(
        &self,
        camera: &str,
        seq: u64,
        captured_at: SystemTime,
        tz: TimeZone,
        ext: &str,
        out: &mut String,
    ) {
        render_parts(&self.parts, camera, seq, captured_at, tz, ext, out);
    }

    /// The parts after the last '/' (the file name's own parts).
    fn file_parts(&self) -> &[Part] {
        let last_slash = self
            .parts
            .iter()
            .rposition(|p| matches!(p, Part::Literal(s) if s.contains('/')));
        match last_slash {
            Some(i) => &self.parts[i..],
            None => &self.parts,
        }
    }

    /// Whether a file's name (not its directory) follows from the camera,
    /// sequence number and extension alone, with no time in it.
    pub(crate) fn file_name_is_derivable(&self) -> bool {
        !self
            .file_parts()
            .iter()
            .any(|p| matches!(p, Part::Time { .. }))
    }

    /// Renders only the file name of snapshot `seq` (meaningful when
    /// [`Template::file_name_is_derivable`]).
    pub(crate) fn render_file_name(&self, camera: &str, seq: u64, ext: &str, out: &mut String) {
        render_parts(
            self.file_parts(),
            camera,
            seq,
            SystemTime::UNIX_EPOCH,
            TimeZone::Utc,
            ext,
            out,
        );
        if let Some(i) = out.rfind('/') {
            out.drain(..=i);
        }
    }

    /// Renders a few sample names (different times, large sequence numbers)
    /// and refuses templates whose names could escape the directory.
    fn check_paths(&self) -> Result<(), TemplateError> {
        let samples = [
            (1, SystemTime::UNIX_EPOCH),
            (
                u64::MAX,
                SystemTime::UNIX_EPOCH + std::time::Duration::new(4_102_444_799, 999_999_999),
            ),
            (
                42,
                SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 45_793_908),
            ),
        ];
        let mut name = String::new();
        for (seq, time) in samples {
            self.render("cam0", seq, time, TimeZone::Utc, "jpg", &mut name);
            if name.starts_with('/') {
                return Err(TemplateError::LeavesDir(name));
            }
            for component in name.split('/') {
                if component == ".." {
                    return Err(TemplateError::LeavesDir(name));
                }
                if component.is_empty() || component.starts_with('.') || component.contains('\0') {
                    return Err(TemplateError::BadComponent(name));
                }
            }
        }
        Ok(())
    }

    /// A matcher for the names this template renders for `camera`, with any
    /// of the given extensions.
    pub fn matcher(&self, camera: &str, extensions: &[&str]) -> NameMatcher {
        let mut pattern = String::from("^");
        let mut seq_seen = false;
        for part in &self.parts {
            match part {
                Part::Literal(s) => pattern.push_str(&regex::escape(s)),
                Part::Camera => pattern.push_str(&regex::escape(camera)),
                Part::Seq { width } => {
                    if seq_seen {
                        let _ = write!(pattern, "[0-9]{{{width},}}");
                    } else {
                        let _ = write!(pattern, "(?P<seq>[0-9]{{{width},}})");
                        seq_seen = true;
                    }
                }
                Part::Time { items } => {
                    for item in items {
                        pattern.push_str(&item_pattern(item));
                    }
                }
                Part::Ext => {
                    pattern.push_str("(?:");
                    let alts: Vec<String> = extensions.iter().map(|e| regex::escape(e)).collect();
                    pattern.push_str(&alts.join("|"));
                    pattern.push(')');
                }
            }
        }
        pattern.push('$');
        // The pattern is built from escaped literals and fixed fragments.
        let regex = Regex::new(&pattern).unwrap_or_else(|_| Regex::new("^$").expect("valid"));
        NameMatcher { regex }
    }
}

fn render_parts(
    parts: &[Part],
    camera: &str,
    seq: u64,
    captured_at: SystemTime,
    tz: TimeZone,
    ext: &str,
    out: &mut String,
) {
    out.clear();
    for part in parts {
        // Writing into a String cannot fail.
        let _ = match part {
            Part::Literal(s) => {
                out.push_str(s);
                Ok(())
            }
            Part::Camera => {
                out.push_str(camera);
                Ok(())
            }
            Part::Seq { width } => write!(out, "{seq:0width$}"),
            Part::Time { items } => {
                let utc: DateTime<Utc> = captured_at.into();
                match tz {
                    TimeZone::Utc => write!(out, "{}", utc.format_with_items(items.iter())),
                    TimeZone::Local => write!(
                        out,
                        "{}",
                        utc.with_timezone(&Local).format_with_items(items.iter())
                    ),
                }
            }
            Part::Ext => {
                out.push_str(ext);
                Ok(())
            }
        };
    }
}

fn parse_placeholder(inner: &str) -> Result<Part, TemplateError> {
    let (name, arg) = match inner.split_once(':') {
        Some((name, arg)) => (name, Some(arg)),
        None => (inner, None),
    };
    match (name, arg) {
        ("camera", None) => Ok(Part::Camera),
        ("ext", None) => Ok(Part::Ext),
        ("seq", None) => Ok(Part::Seq {
            width: DEFAULT_SEQ_WIDTH,
        }),
        ("seq", Some(width)) => match width.parse::<usize>() {
            Ok(w @ 1..=20) => Ok(Part::Seq { width: w }),
            _ => Err(TemplateError::SeqWidth(width.to_owned())),
        },
        ("time", Some(format)) => {
            let items: Vec<Item<'static>> = StrftimeItems::new(format)
                .map(|item| match item {
                    Item::Literal(s) => Item::OwnedLiteral(s.into()),
                    Item::Space(s) => Item::OwnedSpace(s.into()),
                    Item::OwnedLiteral(s) => Item::OwnedLiteral(s),
                    Item::OwnedSpace(s) => Item::OwnedSpace(s),
                    Item::Numeric(n, pad) => Item::Numeric(n, pad),
                    Item::Fixed(f) => Item::Fixed(f),
                    Item::Error => Item::Error,
                })
                .collect();
            if format.is_empty() || items.iter().any(|i| matches!(i, Item::Error)) {
                return Err(TemplateError::TimeFormat(format.to_owned()));
            }
            Ok(Part::Time { items })
        }
        _ => Err(TemplateError::UnknownPlaceholder(inner.to_owned())),
    }
}

/// The regex fragment for one strftime item: digits for numbers, anything but
/// '/' for names, the text itself for literals.
fn item_pattern(item: &Item<'_>) -> String {
    match item {
        Item::Literal(s) | Item::Space(s) => regex::escape(s),
        Item::OwnedLiteral(s) | Item::OwnedSpace(s) => regex::escape(s),
        Item::Numeric(numeric, pad) => match (numeric_width(numeric), pad) {
            (Some(w), Pad::Zero) => format!("[0-9]{{{w}}}"),
            (Some(w), Pad::Space) => format!("[ 0-9]{{{w}}}"),
            (Some(w), Pad::None) => format!("[0-9]{{1,{w}}}"),
            (None, _) => "[-+ ]*[0-9]+".into(),
        },
        Item::Fixed(Fixed::Nanosecond3) => r"\.[0-9]{3}".into(),
        Item::Fixed(Fixed::Nanosecond6) => r"\.[0-9]{6}".into(),
        Item::Fixed(Fixed::Nanosecond9) => r"\.[0-9]{9}".into(),
        Item::Fixed(Fixed::Nanosecond) => r"(?:\.[0-9]+)?".into(),
        _ => "[^/]+?".into(),
    }
}

/// The digits a numeric time field always takes, or `None` when it varies
/// (years, Unix timestamps).
fn numeric_width(numeric: &Numeric) -> Option<usize> {
    Some(match numeric {
        Numeric::YearDiv100
        | Numeric::YearMod100
        | Numeric::IsoYearDiv100
        | Numeric::IsoYearMod100 => 2,
        Numeric::Month
        | Numeric::Day
        | Numeric::WeekFromSun
        | Numeric::WeekFromMon
        | Numeric::IsoWeek => 2,
        Numeric::Hour | Numeric::Hour12 | Numeric::Minute | Numeric::Second => 2,
        Numeric::NumDaysFromSun | Numeric::WeekdayFromMon => 1,
        Numeric::Ordinal => 3,
        Numeric::Nanosecond => 9,
        _ => return None,
    })
}

/// Whether a time part begins (`first`) or ends with digits of varying
/// width, which would run into `{seq}`'s digits.
fn varying_digits_at(items: &[Item<'static>], first: bool) -> bool {
    let item = if first { items.first() } else { items.last() };
    match item {
        Some(Item::Numeric(numeric, pad)) => numeric_width(numeric).is_none() || *pad == Pad::None,
        Some(Item::Fixed(Fixed::Nanosecond)) => !first,
        _ => false,
    }
}

/// Recognises names that a template renders for one camera.
#[derive(Clone, Debug)]
pub struct NameMatcher {
    regex: Regex,
}

impl NameMatcher {
    /// The sequence number in `relative` (a path below the output directory
    /// with '/' separators), or `None` when the template could not have
    /// produced that name.
    pub(crate) fn seq(&self, relative: &str) -> Option<u64> {
        self.regex
            .captures(relative)?
            .name("seq")?
            .as_str()
            .parse()
            .ok()
    }
}

/// The hidden temporary name a file is written under before its rename.
pub(crate) fn temp_name(file_name: &str, out: &mut String) {
    out.clear();
    out.push('.');
    out.push_str(file_name);
    out.push_str(".tmp");
}

/// The final file name behind a temporary name, if `name` is one.
pub(crate) fn final_name_of_temp(name: &str) -> Option<&str> {
    name.strip_prefix('.')?.strip_suffix(".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn render(template: &str, seq: u64, time: SystemTime) -> String {
        let mut out = String::new();
        Template::parse(template).unwrap().render(
            "cam0",
            seq,
            time,
            TimeZone::Utc,
            "jpg",
            &mut out,
        );
        out
    }

    #[test]
    fn renders_the_default_template() {
        // 2024-03-05T06:07:08.123Z
        let t = at(1_709_618_828, 123_000_000);
        assert_eq!(
            render("{camera}/{time:%Y-%m-%d}/{camera}-{seq}.{ext}", 42, t),
            "cam0/2024-03-05/cam0-0000000042.jpg"
        );
        assert_eq!(
            render("{time:%Y%m%dT%H%M%S%.3f}_{seq:4}.{ext}", 7, t),
            "20240305T060708.123_0007.jpg"
        );
        // A number wider than the padding is written whole.
        assert_eq!(render("{seq:2}.{ext}", 12345, t), "12345.jpg");
    }

    #[test]
    fn refuses_bad_templates() {
        let cases = [
            ("", TemplateError::Empty),
            ("{camera}.jpg", TemplateError::NoSeq),
            (
                "{cam}-{seq}",
                TemplateError::UnknownPlaceholder("cam".into()),
            ),
            ("{seq", TemplateError::Unclosed),
            ("seq}", TemplateError::Unopened),
            ("{seq:0}", TemplateError::SeqWidth("0".into())),
            ("{seq:x}", TemplateError::SeqWidth("x".into())),
            ("{time:%Q}/{seq}", TemplateError::TimeFormat("%Q".into())),
        ];
        for (template, expected) in cases {
            assert_eq!(
                Template::parse(template).unwrap_err(),
                expected,
                "{template}"
            );
        }
        for escaping in [
            "../{seq}.jpg",
            "/tmp/{seq}.jpg",
            "a/../../{seq}",
            "{time:..}/{seq}",
        ] {
            assert!(
                matches!(Template::parse(escaping), Err(TemplateError::LeavesDir(_))),
                "{escaping}"
            );
        }
        for ambiguous in [
            "{time:%s}{seq}",
            "{seq}{time:%s}",
            "{seq}{seq}",
            "{time:%Y}{seq}.{ext}",
            "{seq}{time:%-H}",
        ] {
            assert_eq!(
                Template::parse(ambiguous).unwrap_err(),
                TemplateError::Ambiguous,
                "{ambiguous}"
            );
        }
        for hidden in [
            ".{seq}.jpg",
            "a//{seq}",
            "./{seq}",
            "{time:%.f}-{seq}.{ext}",
        ] {
            assert!(
                matches!(Template::parse(hidden), Err(TemplateError::BadComponent(_))),
                "{hidden}"
            );
        }
    }

    #[test]
    fn matcher_reads_back_what_render_writes() {
        let templates = [
            "{camera}/{time:%Y-%m-%d}/{camera}-{seq}.{ext}",
            "{time:%Y%m%dT%H%M%S%.3f}_{seq:4}.{ext}",
            "{time:%b %e %H:%M}/{seq}-{camera}.{ext}",
            "x{seq:3}y",
            "{time:%m%d%H%M%S}{seq:4}.{ext}",
            "{seq}{time:%H%M}.{ext}",
            "{time:%Y%m%dT%H%M%S%.3f}{seq:2}.{ext}",
        ];
        for source in templates {
            let template = Template::parse(source).unwrap();
            let matcher = template.matcher("cam0", &["jpg", "png"]);
            let mut name = String::new();
            for (seq, time) in [
                (0, at(0, 0)),
                (99_999, at(1_709_618_828, 5)),
                (7, at(2_000_000_000, 999_999_999)),
            ] {
                template.render("cam0", seq, time, TimeZone::Utc, "png", &mut name);
                assert_eq!(matcher.seq(&name), Some(seq), "{source} -> {name}");
            }
        }
    }

    #[test]
    fn matcher_refuses_what_is_not_ours() {
        let template = Template::parse("{camera}/{time:%Y-%m-%d}/{camera}-{seq}.{ext}").unwrap();
        let matcher = template.matcher("cam0", &["jpg"]);
        assert_eq!(matcher.seq("cam0/2024-03-05/cam0-0000000042.jpg"), Some(42));
        for foreign in [
            "cam1/2024-03-05/cam1-0000000042.jpg",
            "cam0/2024-03-05/cam0-0000000042.png",
            "cam0/2024-03-05/notes.txt",
            "cam0/2024-03-05/cam0-42.jpg",
            "cam0/2024-03-05/.cam0-0000000042.jpg.tmp",
            "cam0/cam0-0000000042.jpg",
        ] {
            assert_eq!(matcher.seq(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn temp_names_round_trip() {
        let mut tmp = String::new();
        temp_name("cam0-0000000001.jpg", &mut tmp);
        assert_eq!(tmp, ".cam0-0000000001.jpg.tmp");
        assert_eq!(final_name_of_temp(&tmp), Some("cam0-0000000001.jpg"));
        assert_eq!(final_name_of_temp("cam0-0000000001.jpg"), None);
    }
}
