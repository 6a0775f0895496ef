//! The name rules. A player's (character's) name travels through every
//! process (a join command in the simulation, a session token's claims, the
//! platform's sign-in and operations routes), so each checks it here and
//! none needs escaping: the token format uses `.` as its separator. An
//! account's username is the platform's alone.

/// Longest player name, in bytes (all ASCII).
pub const NAME_MAX_LEN: usize = 24;

/// Player names: 1..=24 ASCII letters, digits, `_` or `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Shortest and longest username.
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=32;

/// An account's username as stored and compared: lowercase, so `Ann` and
/// `ann` are one account whatever the database's collation; `None` unless
/// it is 3..=32 ASCII letters, digits, `_`, `-` or `.`.
pub fn username_key(username: &str) -> Option<String> {
    let ok = USERNAME_LEN.contains(&username.len())
        && username.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    ok.then(|| username.to_ascii_lowercase())
}

/// Longest zone name, in bytes.
pub const ZONE_NAME_MAX_LEN: usize = 64;

/// A zone's name, in a configuration, the registry or a join: 1..=64 ASCII
/// letters, digits, `_`, `-` or `.`, so it is safe as a store key, in a URL
/// and in a web page whoever registered it.
pub fn valid_zone_name(name: &str) -> bool {
    (1..=ZONE_NAME_MAX_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A server's advertised version: 1..=64 ASCII letters, digits, `.`, `_`, `-` or `+`.
pub fn valid_version(version: &str) -> bool {
    (1..=64).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
}

/// Longest game-server id, in bytes.
pub const SERVER_ID_MAX_LEN: usize = 64;

/// A game server's id in the registry (a store key, part of its
/// credential, a Kubernetes pod name): 1..=64 of `a-z`, `0-9`, `-`, `_`, `.`.
pub fn valid_server_id(id: &str) -> bool {
    (1..=SERVER_ID_MAX_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// A character name's key for uniqueness: `Ann` and `ann` are one name.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
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

    #[test]
    fn zone_names_and_versions_keep_to_characters_safe_in_keys_urls_and_pages() {
        for good in ["meadow", "Caverns_2", "eu-1.arena", &"z".repeat(ZONE_NAME_MAX_LEN)] {
            assert!(valid_zone_name(good), "{good:?}");
        }
        let hostile = "<img src=x onerror=alert(1)>";
        for bad in ["", "a,b", "a b", hostile, "\"meadow\"", "é", &"z".repeat(ZONE_NAME_MAX_LEN + 1)] {
            assert!(!valid_zone_name(bad), "{bad:?}");
        }
        assert!(valid_version("0.1.0-next") && valid_version("1.2.3+build.4"));
        assert!(!valid_version("") && !valid_version(hostile) && !valid_version("1 0"));
    }

    #[test]
    fn server_ids_are_lowercase_pod_names_up_to_64_bytes() {
        for good in ["zone-1", "respawn-zone-0", "a.b_c", &"z".repeat(SERVER_ID_MAX_LEN)] {
            assert!(valid_server_id(good), "{good:?}");
        }
        for bad in ["", "Zone-1", "zone 1", "zone/1", "zone,1", &"z".repeat(SERVER_ID_MAX_LEN + 1)] {
            assert!(!valid_server_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn usernames_fold_to_lowercase_and_keep_to_their_alphabet() {
        assert_eq!(username_key("Ann.Lee_1").as_deref(), Some("ann.lee_1"));
        for bad in ["ab", &"a".repeat(33), "ann lee", "ann@x", "änn", ""] {
            assert_eq!(username_key(bad), None, "{bad:?}");
        }
        assert_eq!(name_key("Ann-1"), "ann-1");
    }
}
