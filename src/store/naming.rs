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

/// The longest file or directory name Linux filesystems take (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// The longest template (`output.name`) taken.
pub const MAX_TEMPLATE_LEN: usize = 1024;
/// The longest camera name (`camera` in the config).
pub const MAX_CAMERA_LEN: usize = 64;

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
    #[error("the template is {0} bytes long; at most {MAX_TEMPLATE_LEN} are taken")]
    TooLongTemplate(usize),
    #[error("{{time:{0}}} cannot be read back exactly and shares a file or directory name with {{camera}}: one camera's files could be taken for another's; put it in a part of its own (between '/') or use numeric fields")]
    LooseBesideCamera(String),
    #[error("a rendered name has a part of {len} bytes ({name}); filesystems allow {NAME_MAX}: shorten the template or the camera name")]
    TooLong { name: String, len: usize },
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
    Seq {
        width: usize,
    },
    Time {
        items: Vec<Item<'static>>,
        /// As written, for messages.
        format: String,
    },
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
        if source.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError::TooLongTemplate(source.len()));
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
        // are read back: no two numbers of varying width in one run of digits.
        if two_varying_numbers_touch(&parts) {
            return Err(TemplateError::Ambiguous);
        }
        for pair in parts.windows(2) {
            let ambiguous = match pair {
                // A camera name may end in digits ("cam1"): "cam" + "1..." would
                // read as another camera's files.
                [Part::Camera, Part::Seq { .. }] => true,
                [Part::Camera, Part::Time { items, .. }] => {
                    matches!(items.first(), Some(Item::Numeric(..)))
                }
                _ => false,
            };
            if ambiguous {
                return Err(TemplateError::Ambiguous);
            }
        }
        // ... and begin with them ("5x"), with digits of the template between.
        if varying_number_beside_camera(&parts) {
            return Err(TemplateError::Ambiguous);
        }
        // A field read back loosely (a time zone name, a locale's format)
        // could swallow part of another camera's name beside it.
        if let Some(item) = loose_item_beside_camera(&parts) {
            return Err(TemplateError::LooseBesideCamera(item));
        }
        let template = Template {
            source: source.to_owned(),
            parts,
        };
        template.check_paths()?;
        Ok(template)
    }

    /// Whether names include the camera's (else every camera renders the
    /// same names, and the directory is one namespace).
    pub(crate) fn has_camera(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Camera))
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
    /// and refuses templates whose names could escape the directory, be
    /// hidden, or be too long for a filesystem (with the longest camera name).
    fn check_paths(&self) -> Result<(), TemplateError> {
        if self.source.starts_with('/') {
            return Err(TemplateError::LeavesDir(self.source.clone()));
        }
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
            // A Wednesday in September: the longest English day and month.
            (
                7,
                SystemTime::UNIX_EPOCH + std::time::Duration::new(1_726_654_000, 0),
            ),
        ];
        let longest_camera = "c".repeat(MAX_CAMERA_LEN);
        let mut name = String::new();
        for (seq, time) in samples {
            self.render("cam0", seq, time, TimeZone::Utc, "jpg", &mut name);
            for component in name.split('/') {
                if component == ".." {
                    return Err(TemplateError::LeavesDir(name));
                }
                if component.is_empty() || component.starts_with('.') || component.contains('\0') {
                    return Err(TemplateError::BadComponent(name));
                }
            }
            self.render(&longest_camera, seq, time, TimeZone::Utc, "jpg", &mut name);
            // The temp file's name is the longest: '.' + name + ".tmp".
            if let Some(long) = name.split('/').find(|c| c.len() + 5 > NAME_MAX) {
                return Err(TemplateError::TooLong {
                    len: long.len() + 5,
                    name: long.to_owned(),
                });
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
                Part::Time { items, .. } => {
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
        let seq_group = regex
            .capture_names()
            .position(|name| name == Some("seq"))
            .unwrap_or(0);
        let locations = std::sync::Mutex::new(regex.capture_locations());
        NameMatcher {
            regex,
            seq_group,
            locations,
        }
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
            Part::Time { items, .. } => {
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
            Ok(Part::Time {
                items,
                format: format.to_owned(),
            })
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
            // Years and Unix times: digits only (no sign: it would take in
            // a '-' that ends a camera's name).
            (None, Pad::Space) => "[ ]*[0-9]+".into(),
            (None, _) => "[0-9]+".into(),
        },
        Item::Fixed(Fixed::Nanosecond3) => r"\.[0-9]{3}".into(),
        Item::Fixed(Fixed::Nanosecond6) => r"\.[0-9]{6}".into(),
        Item::Fixed(Fixed::Nanosecond9) => r"\.[0-9]{9}".into(),
        Item::Fixed(Fixed::Nanosecond) => r"(?:\.[0-9]+)?".into(),
        Item::Fixed(Fixed::ShortMonthName) => {
            "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)".into()
        }
        Item::Fixed(Fixed::LongMonthName) => "(?:January|February|March|April|May|June|July|August|September|October|November|December)".into(),
        Item::Fixed(Fixed::ShortWeekdayName) => "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)".into(),
        Item::Fixed(Fixed::LongWeekdayName) => {
            "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)".into()
        }
        Item::Fixed(Fixed::LowerAmPm) => "(?:am|pm)".into(),
        Item::Fixed(Fixed::UpperAmPm) => "(?:AM|PM)".into(),
        Item::Fixed(
            Fixed::TimezoneOffset
            | Fixed::TimezoneOffsetColon
            | Fixed::TimezoneOffsetDoubleColon
            | Fixed::TimezoneOffsetTripleColon,
        ) => "[+-][0-9]{2}(?::?[0-9]{2}){0,2}".into(),
        Item::Fixed(Fixed::TimezoneOffsetZ | Fixed::TimezoneOffsetColonZ) => {
            "(?:Z|[+-][0-9]{2}(?::?[0-9]{2}){0,2})".into()
        }
        _ => LOOSE.into(),
    }
}

/// What a field nobody can read back exactly matches.
const LOOSE: &str = "[^/]+?";

/// The first time placeholder with a field read back loosely (such as `%Z`)
/// that shares a path component with `{camera}`, as written.
fn loose_item_beside_camera(parts: &[Part]) -> Option<String> {
    let mut component_has_camera = false;
    let mut loose: Option<String> = None;
    for part in parts {
        match part {
            Part::Literal(s) if s.contains('/') => {
                if component_has_camera && loose.is_some() {
                    return loose;
                }
                // A new component starts after the last '/'.
                component_has_camera = false;
                loose = None;
            }
            Part::Camera => component_has_camera = true,
            Part::Time { items, format } if items.iter().any(|i| item_pattern(i) == LOOSE) => {
                loose.get_or_insert_with(|| format.clone());
            }
            _ => {}
        }
    }
    (component_has_camera && loose.is_some())
        .then_some(loose)
        .flatten()
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

/// What a rendered name is made of, as far as reading it back goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    /// A digit of a number; `varying` when the number's width varies
    /// (`{seq}` once it outgrows its width, years, Unix times, unpadded
    /// fields, fractions of a second), so it can take in digits beside it.
    Digit { varying: bool },
    /// The camera's name.
    Camera,
    /// A '/' between directories.
    Slash,
    /// Anything else: letters, separators, names of months.
    Other,
}

/// The template as a sequence of [`Tok`]s (one for each field's digits).
fn tokens(parts: &[Part]) -> Vec<Tok> {
    let text = |out: &mut Vec<Tok>, text: &str| {
        out.extend(text.chars().map(|c| match c {
            '0'..='9' => Tok::Digit { varying: false },
            '/' => Tok::Slash,
            _ => Tok::Other,
        }))
    };
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Literal(s) => text(&mut out, s),
            Part::Camera => out.push(Tok::Camera),
            Part::Seq { .. } => out.push(Tok::Digit { varying: true }),
            Part::Ext => out.push(Tok::Other),
            Part::Time { items, .. } => {
                for item in items {
                    match item {
                        Item::Numeric(numeric, pad) => out.push(Tok::Digit {
                            varying: numeric_width(numeric).is_none() || *pad != Pad::Zero,
                        }),
                        Item::Literal(s) | Item::Space(s) => text(&mut out, s),
                        Item::OwnedLiteral(s) | Item::OwnedSpace(s) => text(&mut out, s),
                        // '.' then digits.
                        Item::Fixed(Fixed::Nanosecond) => {
                            out.extend([Tok::Other, Tok::Digit { varying: true }])
                        }
                        Item::Fixed(
                            Fixed::Nanosecond3 | Fixed::Nanosecond6 | Fixed::Nanosecond9,
                        ) => out.extend([Tok::Other, Tok::Digit { varying: false }]),
                        // Read back loosely: it may take digits too.
                        other if item_pattern(other) == LOOSE => {
                            out.push(Tok::Digit { varying: true })
                        }
                        // Names (months, days, AM/PM) and offsets start with
                        // a letter or a sign.
                        _ => out.push(Tok::Other),
                    }
                }
            }
        }
    }
    out
}

/// Whether two numbers of varying width fall into one run of digits, with
/// only fixed-width digits between them: their digits could not be told
/// apart when a name is read back.
fn two_varying_numbers_touch(parts: &[Part]) -> bool {
    let mut varying = 0;
    for tok in tokens(parts) {
        match tok {
            Tok::Digit { varying: true } => {
                varying += 1;
                if varying >= 2 {
                    return true;
                }
            }
            Tok::Digit { varying: false } => {}
            Tok::Camera | Tok::Slash | Tok::Other => varying = 0,
        }
    }
    false
}

/// Whether a number of varying width stands beside `{camera}` with only
/// digits between them (`{camera}{seq}`, `{camera}0{seq}`, `{seq}{camera}`):
/// a camera name may begin or end with digits, which that number would take
/// in, so camera "a0" would read as camera "a".
fn varying_number_beside_camera(parts: &[Part]) -> bool {
    fn reaches_varying<'a>(mut side: impl Iterator<Item = &'a Tok>) -> bool {
        side.find(|t| !matches!(t, Tok::Digit { varying: false }))
            .is_some_and(|t| *t == Tok::Digit { varying: true })
    }
    let toks = tokens(parts);
    toks.iter().enumerate().any(|(i, tok)| {
        *tok == Tok::Camera
            && (reaches_varying(toks[i + 1..].iter()) || reaches_varying(toks[..i].iter().rev()))
    })
}

/// Recognises names that a template renders for one camera.
#[derive(Debug)]
pub struct NameMatcher {
    regex: Regex,
    /// The index of the `seq` group.
    seq_group: usize,
    /// Reused match positions.
    locations: std::sync::Mutex<regex::CaptureLocations>,
}

impl Clone for NameMatcher {
    fn clone(&self) -> Self {
        NameMatcher {
            regex: self.regex.clone(),
            seq_group: self.seq_group,
            locations: std::sync::Mutex::new(self.regex.capture_locations()),
        }
    }
}

impl NameMatcher {
    /// The sequence number in `relative` (a path below the output directory
    /// with '/' separators), or `None` when the template could not have
    /// produced that name.
    pub(crate) fn seq(&self, relative: &str) -> Option<u64> {
        // The match positions go in a buffer made once (captures() would
        // allocate one for every name).
        let mut locations = self.locations.lock().unwrap_or_else(|e| e.into_inner());
        self.regex.captures_read(&mut locations, relative)?;
        let (start, end) = locations.get(self.seq_group)?;
        relative[start..end].parse().ok()
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

    #[test]
    fn refuses_templates_that_cannot_tell_cameras_apart() {
        for template in [
            "{seq}{camera}.{ext}",
            "{time:%s}{camera}-{seq}.{ext}",
            "{time:%H%M%S%.f}{camera}-{seq}.{ext}",
            "{camera}-{time:%Z}-{seq}.{ext}",
            "{camera}0{seq}.{ext}",
            "{seq}0{camera}.{ext}",
            "{camera}{time:1%H%M}{seq}.{ext}",
            "{camera}{time:0%-H}-{seq}.{ext}",
        ] {
            assert!(
                matches!(
                    Template::parse(template),
                    Err(TemplateError::Ambiguous | TemplateError::LooseBesideCamera(_))
                ),
                "{template}"
            );
        }
        // A loose field in a part of its own is fine.
        assert!(Template::parse("{camera}/{time:%Z}/{camera}-{seq}.{ext}").is_ok());
    }

    #[test]
    fn a_year_after_a_dash_never_takes_in_a_cameras_dash() {
        for source in [
            "{camera}-{time:%Y%m%d}-{seq}.{ext}",
            "{camera}-{time:%s}-{seq}.{ext}",
        ] {
            let template = Template::parse(source).unwrap();
            let mut name = String::new();
            let time = at(1_700_000_000, 0);
            template.render("a-", 5, time, TimeZone::Utc, "jpg", &mut name);
            assert_eq!(template.matcher("a", &["jpg"]).seq(&name), None, "{name}");
            assert_eq!(template.matcher("a-", &["jpg"]).seq(&name), Some(5));
        }
    }

    #[test]
    fn path_problems_are_named_for_what_they_are() {
        // Nanoseconds render nothing when they are 0: an empty part, not an escape.
        assert!(matches!(
            Template::parse("{time:%.f}/{seq}.{ext}"),
            Err(TemplateError::BadComponent(_))
        ));
        assert!(Template::parse("{time:%H%M%S%.f}-{seq}.{ext}").is_ok());
        assert!(matches!(
            Template::parse("/srv/{seq}.{ext}"),
            Err(TemplateError::LeavesDir(_))
        ));
        assert!(matches!(
            Template::parse(&format!("{}/{{seq}}.{{ext}}", "a/".repeat(600))),
            Err(TemplateError::TooLongTemplate(_))
        ));
        let long = format!("{}-{{seq}}.{{ext}}", "x".repeat(250));
        assert!(matches!(
            Template::parse(&long),
            Err(TemplateError::TooLong { .. })
        ));
        // With the longest camera name (64) the part would be too long.
        let near = format!("{}{{camera}}-{{seq}}.{{ext}}", "x".repeat(170));
        assert!(matches!(
            Template::parse(&near),
            Err(TemplateError::TooLong { .. })
        ));
    }

    mod cameras_apart {
        use super::*;
        use proptest::prelude::*;

        fn token() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("{camera}".to_owned()),
                Just("{seq}".to_owned()),
                Just("{seq:3}".to_owned()),
                prop::sample::select(vec![
                    "%Y",
                    "%m%d",
                    "%H%M%S",
                    "%b",
                    "%a",
                    "%s",
                    "%.3f",
                    "%.f",
                    "%Y-%m-%d",
                    "%Z",
                    "%p",
                    "%j",
                    "%H%M%S%.3f",
                    "%B%e",
                    "%y%m%d_%H",
                ])
                .prop_map(|f| format!("{{time:{f}}}")),
                prop::sample::select(vec![
                    "-", "_", ".", "img", "x", "5", "0", "12", "a-b", "c.d", "9_", "-7",
                ])
                .prop_map(str::to_owned),
            ]
        }

        fn template() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::collection::vec(token(), 1..4), 1..4).prop_map(
                |components| {
                    let mut parts: Vec<String> =
                        components.into_iter().map(|c| c.concat()).collect();
                    let last = parts.last_mut().expect("at least one component");
                    if !last.contains("{seq") {
                        last.push_str("-{seq}");
                    }
                    last.push_str(".{ext}");
                    let mut template = parts.join("/");
                    if !template.contains("{camera}") {
                        template.insert_str(0, "{camera}_");
                    }
                    template
                },
            )
        }

        fn camera() -> impl Strategy<Value = String> {
            "[A-Za-z0-9][A-Za-z0-9._-]{0,7}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]
            /// No name rendered for one camera is taken for another camera's,
            /// and each camera reads its own names back, for every template
            /// that is accepted and has `{camera}` in it. (Templates without
            /// `{camera}` share one namespace: the lock covers the directory.)
            #[test]
            fn no_camera_reads_another_cameras_names(
                template in template(),
                a in camera(),
                other in camera(),
                // Names made from the first: the hard cases ("a" and "a0").
                affix in "[0-9A-Za-z._-]{1,3}",
                relation in 0..3u8,
                seq in prop_oneof![0u64..2000, any::<u64>()],
                secs in 0u64..4_102_444_800,
                nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
                ext in prop::sample::select(vec!["jpg", "png"]),
            ) {
                let b = match relation {
                    0 => other,
                    1 => format!("{a}{affix}"),
                    _ => format!("{}{a}", affix.trim_start_matches('.')),
                };
                prop_assume!(a != b && !b.starts_with('.') && !b.is_empty());
                let Ok(parsed) = Template::parse(&template) else {
                    return Ok(());
                };
                let time = at(secs, nanos);
                let mut name = String::new();
                parsed.render(&b, seq, time, TimeZone::Utc, ext, &mut name);
                let matcher_a = parsed.matcher(&a, &EXTENSIONS_FOR_TESTS);
                prop_assert_eq!(matcher_a.seq(&name), None, "{} for {} read as {}'s", name, b, a);
                let matcher_b = parsed.matcher(&b, &EXTENSIONS_FOR_TESTS);
                prop_assert_eq!(matcher_b.seq(&name), Some(seq), "{} not read back", name);
            }
        }

        const EXTENSIONS_FOR_TESTS: [&str; 2] = ["jpg", "png"];
    }
}
