//! What a field's value may be, in one place for the generator (defaults, backfills and
//! `where` values in the YAML) and the runtime (request bodies): the names a field may
//! not take, the largest integer, how a pattern is anchored, and what a UUID, a date and
//! a datetime are.

/// The metadata every record has; no field may take these names.
pub const RESERVED_FIELDS: &[&str] = &["id", "created_at", "updated_at", "version"];

/// The largest integer an `int` holds: every number is kept as a JSON number, which
/// clients read as a double, exact up to 2^53.
pub const MAX_SAFE_INT: i64 = 9_007_199_254_740_992;

/// Whether `i` fits an `int` (within ±2^53).
pub fn int_fits(i: i64) -> bool {
    i.unsigned_abs() <= MAX_SAFE_INT as u64
}

/// A `validate.pattern` as it is matched: against the whole value.
pub fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// Whether `s` is a UUID in its hyphenated form (`8-4-4-4-12` hex digits).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether `s` is a date written exactly `YYYY-MM-DD` (dates compare by their text, so
/// `2024-2-1`, a sign or a space would sort out of place).
pub fn is_date(s: &str) -> bool {
    s.len() == 10
        && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .is_ok_and(|d| d.format("%Y-%m-%d").to_string() == s)
}

/// Whether `s` is an RFC 3339 timestamp.
pub fn is_datetime(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_rules() {
        assert!(int_fits(MAX_SAFE_INT) && int_fits(-MAX_SAFE_INT));
        assert!(!int_fits(MAX_SAFE_INT + 1) && !int_fits(i64::MIN));
        assert!(is_date("2024-02-29") && !is_date("2023-02-29") && !is_date("2024-2-01"));
        assert!(is_datetime("2024-09-13T10:30:00Z") && is_datetime("2024-09-13T10:30:00.5+02:00"));
        assert!(!is_datetime("2024-09-13") && !is_datetime("2024-09-13T25:00:00Z"));
        assert!(is_uuid("67e55044-10b1-426f-9247-bb680e5fe0c8") && !is_uuid("67e55044"));
        assert_eq!(anchored("a|b"), "^(?:a|b)$");
    }
}
