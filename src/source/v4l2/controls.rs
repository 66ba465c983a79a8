//! Camera controls (exposure, white balance, focus ...) from
//! `[source.controls]`, by the names `v4l2-ctl` prints (`exposure_auto`,
//! `white_balance_temperature_auto`), with menus by item name or number.
//! Deciding is pure and table-tested here; `super::sys` does the ioctls.

use std::fmt;

/// What the config asks a control to be set to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlValue {
    Number(i64),
    /// A menu item by name (or `true`/`false` written as text).
    Name(String),
}

impl fmt::Display for ControlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlValue::Number(n) => write!(f, "{n}"),
            ControlValue::Name(name) => write!(f, "\"{name}\""),
        }
    }
}

/// One `[source.controls]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlSetting {
    pub name: String,
    pub value: ControlValue,
}

/// How a control is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlKind {
    Integer,
    Boolean,
    /// Items by index and name.
    Menu(Vec<(i64, String)>),
}

/// A control a camera offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlInfo {
    pub id: u32,
    /// As the driver names it ("Exposure, Auto").
    pub name: String,
    pub kind: ControlKind,
    pub min: i64,
    pub max: i64,
    pub step: i64,
    pub default: i64,
    /// Its value now, if it could be read.
    pub current: Option<i64>,
}

/// The name `v4l2-ctl` gives a control: lower case, every run of other
/// characters one '_' ("White Balance Temperature, Auto" →
/// "white_balance_temperature_auto").
pub fn ctl_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

impl ControlInfo {
    /// The name to write in `[source.controls]`.
    pub fn key(&self) -> String {
        ctl_name(&self.name)
    }

    /// The range, as a message shows it.
    pub fn range(&self) -> String {
        match &self.kind {
            ControlKind::Boolean => "0 or 1 (false or true)".to_owned(),
            ControlKind::Menu(items) => items
                .iter()
                .map(|(i, n)| format!("{i} ({n})"))
                .collect::<Vec<_>>()
                .join(", "),
            ControlKind::Integer if self.step > 1 => {
                format!("{} to {} in steps of {}", self.min, self.max, self.step)
            }
            ControlKind::Integer => format!("{} to {}", self.min, self.max),
        }
    }

    /// The value to set for `value`, or why it cannot be.
    pub fn resolve(&self, value: &ControlValue) -> Result<i64, String> {
        let out_of_range = |shown: &dyn fmt::Display| {
            format!(
                "{shown} is not a value of {}: use {}",
                self.key(),
                self.range()
            )
        };
        match (&self.kind, value) {
            (ControlKind::Menu(items), ControlValue::Name(name)) => items
                .iter()
                .find(|(_, item)| ctl_name(item) == ctl_name(name))
                .map(|(i, _)| *i)
                .ok_or_else(|| out_of_range(value)),
            (ControlKind::Menu(items), ControlValue::Number(n)) => items
                .iter()
                .any(|(i, _)| i == n)
                .then_some(*n)
                .ok_or_else(|| out_of_range(value)),
            (ControlKind::Boolean, ControlValue::Name(name)) => match name.as_str() {
                "true" | "on" => Ok(1),
                "false" | "off" => Ok(0),
                _ => Err(out_of_range(value)),
            },
            (ControlKind::Boolean, ControlValue::Number(n @ (0 | 1))) => Ok(*n),
            (ControlKind::Integer, ControlValue::Number(n))
                if (self.min..=self.max).contains(n)
                    && (self.step <= 1 || (n - self.min) % self.step == 0) =>
            {
                Ok(*n)
            }
            _ => Err(out_of_range(value)),
        }
    }
}

/// What to set: (control id, value), or the problems, each naming the
/// control and what it takes.
pub fn plan(
    wanted: &[ControlSetting],
    offered: &[ControlInfo],
) -> (Vec<(u32, i64, String)>, Vec<String>) {
    let mut set = Vec::new();
    let mut problems = Vec::new();
    for setting in wanted {
        let key = ctl_name(&setting.name);
        match offered.iter().find(|c| c.key() == key) {
            None => {
                let names: Vec<String> = offered.iter().map(ControlInfo::key).collect();
                problems.push(if names.is_empty() {
                    format!("the camera has no control {key} (it offers no controls)")
                } else {
                    format!(
                        "the camera has no control {key}; it has: {}",
                        names.join(", ")
                    )
                });
            }
            Some(control) => match control.resolve(&setting.value) {
                Ok(value) => set.push((control.id, value, key)),
                Err(problem) => problems.push(problem),
            },
        }
    }
    (set, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure_auto() -> ControlInfo {
        ControlInfo {
            id: 0x009a0901,
            name: "Exposure, Auto".into(),
            kind: ControlKind::Menu(vec![
                (1, "Manual Mode".into()),
                (3, "Aperture Priority Mode".into()),
            ]),
            min: 0,
            max: 3,
            step: 1,
            default: 3,
            current: Some(3),
        }
    }

    fn exposure_absolute() -> ControlInfo {
        ControlInfo {
            id: 0x009a0902,
            name: "Exposure (Absolute)".into(),
            kind: ControlKind::Integer,
            min: 3,
            max: 2047,
            step: 1,
            default: 250,
            current: Some(250),
        }
    }

    fn wb_auto() -> ControlInfo {
        ControlInfo {
            id: 0x0098090c,
            name: "White Balance Temperature, Auto".into(),
            kind: ControlKind::Boolean,
            min: 0,
            max: 1,
            step: 1,
            default: 1,
            current: Some(1),
        }
    }

    fn setting(name: &str, value: ControlValue) -> ControlSetting {
        ControlSetting {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn names_are_the_ones_v4l2_ctl_prints() {
        assert_eq!(ctl_name("Exposure, Auto"), "exposure_auto");
        assert_eq!(ctl_name("Exposure (Absolute)"), "exposure_absolute");
        assert_eq!(
            ctl_name("White Balance Temperature, Auto"),
            "white_balance_temperature_auto"
        );
        assert_eq!(ctl_name("Focus, Auto"), "focus_auto");
        assert_eq!(ctl_name("Power Line Frequency"), "power_line_frequency");
    }

    #[test]
    fn plans_menus_by_name_or_number_and_checks_ranges() {
        let offered = [exposure_auto(), exposure_absolute(), wb_auto()];
        let (set, problems) = plan(
            &[
                setting("exposure_auto", ControlValue::Name("manual mode".into())),
                setting("exposure_absolute", ControlValue::Number(250)),
                setting("white_balance_temperature_auto", ControlValue::Number(0)),
            ],
            &offered,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            set.iter().map(|(id, v, _)| (*id, *v)).collect::<Vec<_>>(),
            [(0x009a0901, 1), (0x009a0902, 250), (0x0098090c, 0)]
        );
        let (_, problems) = plan(
            &[
                setting("exposure_auto", ControlValue::Number(2)),
                setting("exposure_absolute", ControlValue::Number(5000)),
                setting("focus_auto", ControlValue::Number(0)),
                setting(
                    "white_balance_temperature_auto",
                    ControlValue::Name("maybe".into()),
                ),
            ],
            &offered,
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("1 (Manual Mode), 3 (Aperture Priority Mode)"));
        assert!(problems[1].contains("3 to 2047"), "{}", problems[1]);
        assert!(problems[2].contains("no control focus_auto"));
        assert!(problems[2].contains("exposure_absolute"), "{}", problems[2]);
        assert!(problems[3].contains("0 or 1"));
    }
}
