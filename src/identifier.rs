//! Rules for user and room identifiers: 1–128 characters, no control characters.

/// Longest identifier, in characters.
pub const MAX_CHARS: usize = 128;

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
