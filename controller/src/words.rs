//! Words for messages that every layer writes: a count with its noun.

/// `1 node`, `2 nodes`: a count with its noun, plural when it is not one (`noun` and
/// `nouns` given whole, for `entry`/`entries`).
pub fn count(n: usize, noun: &str, nouns: &str) -> String {
    format!("{n} {}", if n == 1 { noun } else { nouns })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular() {
        assert_eq!(super::count(1, "entry", "entries"), "1 entry");
        assert_eq!(super::count(0, "node", "nodes"), "0 nodes");
    }
}
