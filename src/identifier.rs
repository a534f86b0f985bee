//! Rules for user and room identifiers: 1–128 characters, no control characters; and the
//! one shared copy of an id that many entries name.

use std::collections::HashMap;
use std::sync::Arc;

/// Longest identifier, in characters.
pub const MAX_CHARS: usize = 128;

/// The copy of `id` that `map` holds as a key, or a new one: an id many entries name (a
/// node's, a room's, a peer's) is then kept once rather than once per entry.
pub fn shared<V>(map: &HashMap<Arc<str>, V>, id: &str) -> Arc<str> {
    map.get_key_value(id)
        .map_or_else(|| Arc::from(id), |(key, _)| key.clone())
}

/// Checks one identifier; the error is a sentence fragment naming the problem.
pub fn check(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    if value.chars().count() > MAX_CHARS {
        return Err("must be at most 128 characters");
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn limits() {
        assert!(check("alice").is_ok());
        assert!(check(&"é".repeat(128)).is_ok());
        assert!(check(&"é".repeat(129)).is_err());
        assert!(check("").is_err());
        assert!(check("a\nb").is_err());
        assert!(check("a\u{7f}").is_err());
    }
}
