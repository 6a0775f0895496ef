//! The player-name rule. A name travels through every process (a join
//! command in the simulation, a session token's claims, the platform's
//! sign-in and operations routes), so each checks it here and none needs
//! escaping: the token format uses `.` as its separator.

/// Longest player name, in bytes (all ASCII).
pub const NAME_MAX_LEN: usize = 24;

/// Player names: 1..=24 ASCII letters, digits, `_` or `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_letters_digits_underscores_and_dashes_up_to_24_bytes_are_valid() {
        assert!(valid_name("a"));
        assert!(valid_name("Player_1-x"));
        assert!(valid_name(&"n".repeat(NAME_MAX_LEN)));
    }

    #[test]
    fn empty_long_and_punctuated_names_are_refused() {
        assert!(!valid_name(""));
        assert!(!valid_name(&"n".repeat(NAME_MAX_LEN + 1)));
        for bad in ["a.b", "a b", "é", "a,b", "a\n", "<img>"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
