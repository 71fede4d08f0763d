//! Expiry times: parsing the `SECONDS` argument exactly as python-swiftclient 4.11's
//! `parse_timestamp` does, and formatting ISO-8601 expiries as `generate_temp_url` does.
//!
//! The rules, from `swiftclient/utils.py`:
//! 1. If the text parses as a Python `float` it must be a whole, non-negative number. It is
//!    relative seconds, or a Unix time when `--absolute` is given.
//! 2. Otherwise it may be `%Y-%m-%dT%H:%M:%SZ` (UTC), `%Y-%m-%dT%H:%M:%S` or `%Y-%m-%d`
//!    (both local time); any of these makes the expiry absolute.
//! 3. Otherwise, when not absolute, a number with a suffix `s`, `m`, `min`, `h`, `hr` or `d`
//!    (checked in that order with `endswith`) scales to seconds and is truncated.
//!
//! Nothing here reads the clock or the time zone: the caller passes `now` and a function
//! that turns a local civil time into a Unix time.

use std::fmt;

/// The message python-swiftclient gives for every malformed time.
pub const TIME_ERRMSG: &str = "time must either be a whole number or in specific ISO 8601 format.";

/// An expiry before the clock is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Seconds from now (may be negative when given with a suffix, as swiftclient allows).
    Relative(i64),
    /// A Unix time.
    Absolute(i64),
}

impl Expiry {
    /// The Unix time at which the URL expires, given the current Unix time.
    pub fn resolve(self, now: i64) -> i64 {
        match self {
            Expiry::Relative(s) => now.saturating_add(s),
            Expiry::Absolute(t) => t,
        }
    }
}

/// A civil date and time without a zone, as parsed from the ISO forms without `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    /// 0..=61, as strptime allows leap seconds.
    pub second: u32,
}

impl CivilTime {
    /// Seconds since the epoch when this civil time is read as UTC (Python's `calendar.timegm`).
    pub fn as_utc(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3_600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// Why a time argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// The same condition under which python-swiftclient raises its `TIME_ERRMSG`.
    #[error("{TIME_ERRMSG}")]
    Malformed,
    /// A whole number that does not fit in a signed 64-bit Unix time.
    #[error("time {0} is out of range: it must fit in a signed 64-bit Unix time")]
    OutOfRange(String),
    /// A local civil time (ISO form without `Z`) could not be placed in the local zone.
    #[error("cannot convert local time {0} to UTC: {1}")]
    LocalTime(String, String),
}

/// Parses a time argument the way `swiftclient.utils.parse_timestamp` does.
///
/// `local_to_unix` converts the zone-less ISO forms (Python's `time.mktime`).
pub fn parse(
    seconds: &str,
    absolute: bool,
    local_to_unix: &dyn Fn(CivilTime) -> Result<i64, String>,
) -> Result<Expiry, ExpiryError> {
    if let Some(value) = python_float(seconds) {
        if !value.is_finite() || value.fract() != 0.0 || value < 0.0 {
            return Err(ExpiryError::Malformed);
        }
        let whole = float_to_i64(value).ok_or_else(|| ExpiryError::OutOfRange(seconds.into()))?;
        return Ok(if absolute {
            Expiry::Absolute(whole)
        } else {
            Expiry::Relative(whole)
        });
    }
    if let Some(t) = strptime(seconds, Format::Full) {
        return Ok(Expiry::Absolute(t.as_utc()));
    }
    for format in [Format::NoZone, Format::Date] {
        if let Some(t) = strptime(seconds, format) {
            let unix =
                local_to_unix(t).map_err(|why| ExpiryError::LocalTime(seconds.to_string(), why))?;
            return Ok(Expiry::Absolute(unix));
        }
    }
    if absolute {
        return Err(ExpiryError::Malformed);
    }
    const SUFFIXES: [(&str, f64); 6] = [
        ("s", 1.0),
        ("m", 60.0),
        ("min", 60.0),
        ("h", 3_600.0),
        ("hr", 3_600.0),
        ("d", 86_400.0),
    ];
    for (suffix, multiplier) in SUFFIXES {
        if let Some(number) = seconds.strip_suffix(suffix) {
            let value = python_float(number).ok_or(ExpiryError::Malformed)?;
            let scaled = multiplier * value;
            if scaled.is_nan() {
                return Err(ExpiryError::Malformed);
            }
            let whole = float_to_i64(scaled.trunc())
                .ok_or_else(|| ExpiryError::OutOfRange(seconds.into()))?;
            return Ok(Expiry::Relative(whole));
        }
    }
    Err(ExpiryError::Malformed)
}

/// Formats a Unix time as `%Y-%m-%dT%H:%M:%SZ`, as `generate_temp_url(iso8601=True)` does.
pub fn iso8601(unix: i64) -> String {
    let mut out = String::with_capacity(20);
    write_iso8601(&mut out, unix);
    out
}

/// Appends the ISO-8601 form of `unix` to `out`.
pub fn write_iso8601(out: &mut String, unix: i64) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // glibc's strftime does not pad %Y; every other field is two digits.
    let _ = fmt::Write::write_fmt(
        out,
        format_args!(
            "{y}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3_600,
            secs % 3_600 / 60,
            secs % 60
        ),
    );
}

fn float_to_i64(value: f64) -> Option<i64> {
    // 2^63 is exactly representable; everything below it converts exactly when whole.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (value > -LIMIT && value < LIMIT).then_some(value as i64)
}

/// Python's `float(text)`: surrounding whitespace, an optional sign, `_` between digits,
/// `inf`/`infinity`/`nan` in any case. Returns `None` where Python raises `ValueError`.
pub(crate) fn python_float(text: &str) -> Option<f64> {
    // Rust's f64 grammar is Python's (sign, `inf`/`infinity`/`nan` in any case, `1.`, `.5`,
    // exponents) except for surrounding whitespace and `_` between digits.
    let trimmed = text.trim_matches(char::is_whitespace);
    if !trimmed.is_ascii() {
        return None;
    }
    let bytes = trimmed.as_bytes();
    let mut cleaned = String::with_capacity(trimmed.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let before = i > 0 && bytes[i - 1].is_ascii_digit();
            let after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(before && after) {
                return None;
            }
        } else {
            cleaned.push(b as char);
        }
    }
    cleaned.parse::<f64>().ok()
}

#[derive(Clone, Copy)]
enum Format {
    /// `%Y-%m-%dT%H:%M:%SZ`
    Full,
    /// `%Y-%m-%dT%H:%M:%S`
    NoZone,
    /// `%Y-%m-%d`
    Date,
}

#[derive(Clone, Copy)]
enum Field {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

enum Piece {
    Field(Field),
    Literal(u8),
}

fn pieces(format: Format) -> &'static [Piece] {
    use Field::*;
    use Piece::{Field as F, Literal as L};
    const FULL: &[Piece] = &[
        F(Year),
        L(b'-'),
        F(Month),
        L(b'-'),
        F(Day),
        L(b'T'),
        F(Hour),
        L(b':'),
        F(Minute),
        L(b':'),
        F(Second),
        L(b'Z'),
    ];
    const NO_ZONE: &[Piece] = &[
        F(Year),
        L(b'-'),
        F(Month),
        L(b'-'),
        F(Day),
        L(b'T'),
        F(Hour),
        L(b':'),
        F(Minute),
        L(b':'),
        F(Second),
    ];
    const DATE: &[Piece] = &[F(Year), L(b'-'), F(Month), L(b'-'), F(Day)];
    match format {
        Format::Full => FULL,
        Format::NoZone => NO_ZONE,
        Format::Date => DATE,
    }
}

/// The alternatives of CPython's `_strptime` regex for each field, in the order the regex
/// tries them. Each is a list of byte-class patterns: `d` any digit, or an explicit set.
fn alternatives(field: Field) -> &'static [&'static [&'static [u8]]] {
    const DIGIT: &[u8] = b"0123456789";
    const D19: &[u8] = b"123456789";
    match field {
        Field::Year => &[&[DIGIT, DIGIT, DIGIT, DIGIT]],
        // 1[0-2]|0[1-9]|[1-9]
        Field::Month => &[&[b"1", b"012"], &[b"0", D19], &[D19]],
        // 3[01]|[12]\d|0[1-9]|[1-9]| [1-9]
        Field::Day => &[
            &[b"3", b"01"],
            &[b"12", DIGIT],
            &[b"0", D19],
            &[D19],
            &[b" ", D19],
        ],
        // 2[0-3]|[0-1]\d|\d
        Field::Hour => &[&[b"2", b"0123"], &[b"01", DIGIT], &[DIGIT]],
        // [0-5]\d|\d
        Field::Minute => &[&[b"012345", DIGIT], &[DIGIT]],
        // 6[0-1]|[0-5]\d|\d
        Field::Second => &[&[b"6", b"01"], &[b"012345", DIGIT], &[DIGIT]],
    }
}

/// A backtracking match of the format against the whole input, like `re.match` plus the
/// "unconverted data remains" check. Literals match case-insensitively (`re.IGNORECASE`).
fn strptime(input: &str, format: Format) -> Option<CivilTime> {
    let mut values = [0u32; 6];
    if !match_from(input.as_bytes(), pieces(format), &mut values) {
        return None;
    }
    let [year, month, day, hour, minute, second] = values;
    // datetime.date(year, month, day) must exist.
    if year == 0 || day > days_in_month(i64::from(year), month) {
        return None;
    }
    Some(CivilTime {
        year: i64::from(year),
        month,
        day,
        hour,
        minute,
        second,
    })
}

fn match_from(input: &[u8], pieces: &[Piece], values: &mut [u32; 6]) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return input.is_empty();
    };
    match first {
        Piece::Literal(c) => match input.split_first() {
            Some((b, tail)) if b.eq_ignore_ascii_case(c) => match_from(tail, rest, values),
            _ => false,
        },
        Piece::Field(field) => {
            for alt in alternatives(*field) {
                if input.len() < alt.len() {
                    continue;
                }
                let (head, tail) = input.split_at(alt.len());
                if !head.iter().zip(alt.iter()).all(|(b, set)| set.contains(b)) {
                    continue;
                }
                let value = head
                    .iter()
                    .filter(|b| b.is_ascii_digit())
                    .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
                let saved = values[*field as usize];
                values[*field as usize] = value;
                if match_from(tail, rest, values) {
                    return true;
                }
                values[*field as usize] = saved;
            }
            false
        }
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(t: CivilTime) -> Result<i64, String> {
        Ok(t.as_utc())
    }

    fn p(s: &str, absolute: bool) -> Result<Expiry, ExpiryError> {
        parse(s, absolute, &utc)
    }

    #[test]
    fn whole_numbers_are_relative_unless_absolute() {
        assert_eq!(p("60", false), Ok(Expiry::Relative(60)));
        assert_eq!(p("60", true), Ok(Expiry::Absolute(60)));
        assert_eq!(p("0", false), Ok(Expiry::Relative(0)));
        // Python float() spellings
        assert_eq!(p(" 60 ", false), Ok(Expiry::Relative(60)));
        assert_eq!(p("+60", false), Ok(Expiry::Relative(60)));
        assert_eq!(p("60.0", false), Ok(Expiry::Relative(60)));
        assert_eq!(p("6e1", false), Ok(Expiry::Relative(60)));
        assert_eq!(p("1_000", false), Ok(Expiry::Relative(1000)));
        assert_eq!(p("007", false), Ok(Expiry::Relative(7)));
    }

    #[test]
    fn fractions_negatives_and_specials_are_refused() {
        for bad in [
            "60.5", "-1", "-0.5", "inf", "nan", "-inf", "1__0", "_1", "1_", "", " ", "0x10", "1e",
            "--1",
        ] {
            assert_eq!(p(bad, false), Err(ExpiryError::Malformed), "{bad:?}");
        }
        // -0.0 is a whole number that is not < 0 in Python either.
        assert_eq!(p("-0", false), Ok(Expiry::Relative(0)));
    }

    #[test]
    fn suffixes_scale_and_truncate() {
        assert_eq!(p("10s", false), Ok(Expiry::Relative(10)));
        assert_eq!(p("2m", false), Ok(Expiry::Relative(120)));
        assert_eq!(p("2min", false), Ok(Expiry::Relative(120)));
        assert_eq!(p("1h", false), Ok(Expiry::Relative(3600)));
        assert_eq!(p("1hr", false), Ok(Expiry::Relative(3600)));
        assert_eq!(p("1d", false), Ok(Expiry::Relative(86400)));
        assert_eq!(p("1.5h", false), Ok(Expiry::Relative(5400)));
        assert_eq!(p("0.1h", false), Ok(Expiry::Relative(360)));
        // swiftclient does not refuse negative suffixed values
        assert_eq!(p("-1m", false), Ok(Expiry::Relative(-60)));
        // a suffix is not allowed with --absolute
        assert_eq!(p("1h", true), Err(ExpiryError::Malformed));
        // "ms" ends with "s", and "2m" is not a float
        assert_eq!(p("2ms", false), Err(ExpiryError::Malformed));
        assert_eq!(p("h", false), Err(ExpiryError::Malformed));
        assert_eq!(p("nanh", false), Err(ExpiryError::Malformed));
    }

    #[test]
    fn iso8601_forms_are_absolute() {
        assert_eq!(
            p("2026-11-26T12:00:00Z", false),
            Ok(Expiry::Absolute(1_795_694_400))
        );
        assert_eq!(
            p("2026-11-26T12:00:00Z", true),
            Ok(Expiry::Absolute(1_795_694_400))
        );
        // strptime accepts one-digit fields, lowercase literals and leap seconds
        assert_eq!(
            p("2026-1-5T1:2:3z", false),
            Ok(Expiry::Absolute(1_767_574_923))
        );
        assert_eq!(p("1970-01-01T00:00:60Z", false), Ok(Expiry::Absolute(60)));
        // zone-less forms go through the local-time function
        assert_eq!(
            p("2026-11-26T12:00:00", false),
            Ok(Expiry::Absolute(1_795_694_400))
        );
        assert_eq!(p("2026-11-26", false), Ok(Expiry::Absolute(1_795_651_200)));
        // impossible dates and trailing data are refused
        for bad in [
            "2026-02-30T00:00:00Z",
            "0000-01-01",
            "2026-13-01",
            "2026-11-26T24:00:00Z",
            "2026-11-26T12:00:00+00:00",
            "2026-11-26T12:00:00.000Z",
            "2026-11-26 12:00:00Z",
            "26-11-26",
        ] {
            assert_eq!(p(bad, false), Err(ExpiryError::Malformed), "{bad:?}");
        }
        assert_eq!(p("2024-02-29", false), Ok(Expiry::Absolute(1_709_164_800)));
    }

    #[test]
    fn local_time_conversion_errors_are_reported() {
        let failing = |_: CivilTime| Err("no zone".to_string());
        assert!(matches!(
            parse("2026-11-26", false, &failing),
            Err(ExpiryError::LocalTime(..))
        ));
    }

    #[test]
    fn iso8601_output_round_trips() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_694_400), "2026-11-26T12:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59Z");
        assert_eq!(iso8601(253_402_300_800), "10000-01-01T00:00:00Z");
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn resolve_adds_now_to_relative_only() {
        assert_eq!(Expiry::Relative(60).resolve(1000), 1060);
        assert_eq!(Expiry::Absolute(60).resolve(1000), 60);
    }
}
