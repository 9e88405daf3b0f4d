//! "Did you mean": the name a user most likely meant when they typed one that is not
//! there (a node, a cluster setting, a metric, a log source), as git and cargo offer.

/// The candidate closest to `word` by edits (insert, delete, replace, swap two
/// neighbours), if it is close enough to be a typo: at most one edit per three
/// characters, and at least one.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edits(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// `; did you mean NAME?` for a message, or nothing.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!("; did you mean {c}?"))
        .unwrap_or_default()
}

/// The optimal-string-alignment distance between `a` and `b`.
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_name_and_strangers_find_nothing() {
        let nodes = ["gluu1", "gluu2", "lb1"];
        assert_eq!(closest("glu1", nodes), Some("gluu1"));
        assert_eq!(closest("gulu2", nodes), Some("gluu2"), "a swap is one edit");
        assert_eq!(closest("lb", nodes), Some("lb1"));
        assert_eq!(closest("cache", nodes), None);
        assert_eq!(
            hint("hostnme", ["hostname", "gluu-root"]),
            "; did you mean hostname?"
        );
        assert_eq!(hint("zzz", ["hostname"]), "");
    }
}
